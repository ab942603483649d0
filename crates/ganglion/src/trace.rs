//! What a robot run records for the chaos harness (`--trace`), the link table it follows
//! (`--links`), and the signals that stop a node cleanly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use ganglion_client::{RequestError, Session};
use ganglion_net::emulate::{Link, Links};
use ganglion_types::NodeId;

/// Events a trace keeps; past this, later ones are dropped (a 1 kHz robot fills it in ~15 min).
pub const EVENTS_MAX: usize = 1_000_000;

/// How often the session's active providers are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Largest links file read.
pub const LINKS_BYTES_MAX: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
enum Event {
    Answer {
        latency_us: u64,
        provider: NodeId,
    },
    Miss(String),
    Active {
        count: usize,
        standby: bool,
    },
    Failover(u64),
    /// The session's make-before-break moves so far (a drifted provider replaced).
    Moved(u64),
}

/// A robot's run, event by event, timed in Unix milliseconds (so that a harness in another
/// process can line it up with what it did when).
#[derive(Debug)]
pub struct Trace {
    started: Instant,
    started_unix_ms: u64,
    events: Mutex<Vec<(u64, Event)>>,
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}

impl Trace {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            started_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            events: Mutex::new(Vec::new()),
        }
    }

    fn push(&self, at: Instant, event: Event) {
        let ms =
            self.started_unix_ms + at.saturating_duration_since(self.started).as_millis() as u64;
        if let Ok(mut events) = self.events.lock() {
            if events.len() < EVENTS_MAX {
                events.push((ms, event));
            }
        }
    }

    pub fn answered(&self, sent: Instant, latency: Duration, provider: NodeId) {
        let latency_us = latency.as_micros() as u64;
        self.push(
            sent,
            Event::Answer {
                latency_us,
                provider,
            },
        );
    }

    pub fn missed(&self, sent: Instant, error: &RequestError) {
        self.push(sent, Event::Miss(error.to_string().replace(',', ";")));
    }

    /// Writes `t_ms,kind,value,detail` lines (t in Unix ms; for requests, when sent): `answer,LATENCY_US,PROVIDER`,
    /// `miss,0,ERROR`, `active,COUNT,STANDBY(0|1)`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut events = self.events.lock().map(|e| e.clone()).unwrap_or_default();
        events.sort_by_key(|(t, _)| *t);
        let mut out = String::from("t_ms,kind,value,detail\n");
        for (t, event) in events {
            let line = match event {
                Event::Answer {
                    latency_us,
                    provider,
                } => format!("{t},answer,{latency_us},{provider}\n"),
                Event::Miss(error) => format!("{t},miss,0,{error}\n"),
                Event::Active { count, standby } => {
                    format!("{t},active,{count},{}\n", u8::from(standby))
                }
                Event::Failover(n) => format!("{t},failover,{n},\n"),
                Event::Moved(n) => format!("{t},moved,{n},\n"),
            };
            out.push_str(&line);
        }
        std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Samples the session's active providers and standby every [`SAMPLE_EVERY`].
pub async fn watch_session(trace: Arc<Trace>, session: Arc<Session>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let (mut failovers, mut moves) = (0, 0);
    loop {
        tick.tick().await;
        let status = session.status();
        if status.failovers > failovers {
            failovers = status.failovers;
            trace.push(Instant::now(), Event::Failover(failovers));
        }
        if status.moves.len() as u64 > moves {
            moves = status.moves.len() as u64;
            trace.push(Instant::now(), Event::Moved(moves));
        }
        trace.push(
            Instant::now(),
            Event::Active {
                count: status.active.len(),
                standby: status.standby.is_some(),
            },
        );
    }
}

/// Reads a links file: `HOST:PORT DELAY_MS[,JITTER_MS[,LOSS_PERCENT]]` or `HOST:PORT cut` per
/// line; blank lines and `#` comments are skipped.
pub fn read_links(path: &Path) -> anyhow::Result<HashMap<SocketAddr, Link>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read links file {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= LINKS_BYTES_MAX,
        "links file {} is {len} bytes, over {LINKS_BYTES_MAX}",
        path.display()
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read links file {}", path.display()))?;
    let mut links = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (addr, link) = line
            .split_once(char::is_whitespace)
            .with_context(|| format!("{}:{}: expected HOST:PORT LINK", path.display(), n + 1))?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("{}:{}: bad address {addr:?}", path.display(), n + 1))?;
        let link: Link = link
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
        links.insert(addr, link);
    }
    Ok(links)
}

/// Re-reads the links file when it changes (checked every 50 ms); a file that does not parse
/// is reported and the table left as it was.
pub async fn follow_links(path: PathBuf, links: Links) {
    let modified = |p: &Path| -> Option<SystemTime> { std::fs::metadata(p).ok()?.modified().ok() };
    let mut seen = modified(&path);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let now = modified(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match read_links(&path) {
            Ok(table) => links.replace(table),
            Err(e) => eprintln!("links file: {e:#}; keeping the previous links"),
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
