//! A link emulator at the UDP layer: an EMULATION of distance and bad links, for laptops and
//! test machines whose kernels have no netem qdisc.
//!
//! It wraps the UDP socket quinn sends through. Each datagram this endpoint sends to a
//! destination in the [`Links`] table is held for the link's added delay plus a uniform jitter,
//! but never past an earlier datagram to the same destination (a path's queues vary the delay
//! without reordering, and QUIC reads reordering as loss), or dropped with the link's loss
//! probability; datagrams to other destinations, and everything received, pass untouched. The
//! delay is added on one side only, so a robot's table with `delay = d` makes its round trips
//! to that provider `d` longer. The table may change while connections are up (a harness
//! partitions a link with loss 1 and heals it by replacing the table).
//!
//! Emulated datagrams wait in one queue served by one task; each is copied once. Sends never
//! block the caller: a queue over [`QUEUE_MAX`] datagrams drops, like a full router buffer.

use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Datagrams that may wait in the emulator at once.
pub const QUEUE_MAX: usize = 65_536;

/// Destinations whose last due time is remembered (past this, those already sent are forgotten).
const LAST_DUE_MAX: usize = 4_096;

/// Longest delay or jitter a link may add.
pub const DELAY_MAX: Duration = Duration::from_secs(10);

/// One emulated link's conditions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Added to every datagram's trip (so to the round trip, as the other side adds nothing).
    pub delay: Duration,
    /// Each datagram waits up to this much more, uniformly at random.
    pub jitter: Duration,
    /// Probability that a datagram is dropped, 0 to 1 (1: the link is cut).
    pub loss: f64,
}

impl Link {
    pub const CUT: Self = Self {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 1.0,
    };

    /// Checks the bounds: delays at most [`DELAY_MAX`], loss within 0 to 1.
    pub fn check(&self) -> Result<(), String> {
        if self.delay > DELAY_MAX || self.jitter > DELAY_MAX {
            return Err(format!("delay and jitter must be at most {DELAY_MAX:?}"));
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(format!("loss must be 0 to 1, got {}", self.loss));
        }
        Ok(())
    }
}

impl std::str::FromStr for Link {
    type Err = String;

    /// `DELAY_MS[,JITTER_MS[,LOSS_PERCENT]]`, or `cut`.
    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "cut" {
            return Ok(Self::CUT);
        }
        let mut parts = text.split(',').map(str::trim);
        let ms = |p: Option<&str>| -> Result<Duration, String> {
            let v: f64 = p
                .unwrap_or("0")
                .parse()
                .map_err(|e| format!("{text:?}: {e}"))?;
            if !(0.0..=DELAY_MAX.as_millis() as f64).contains(&v) {
                return Err(format!("{text:?}: {v} ms is out of range"));
            }
            Ok(Duration::from_secs_f64(v / 1000.0))
        };
        let delay = ms(parts.next())?;
        let jitter = ms(parts.next())?;
        let loss: f64 = parts
            .next()
            .unwrap_or("0")
            .parse()
            .map_err(|e| format!("{text:?}: {e}"))?;
        let link = Self {
            delay,
            jitter,
            loss: loss / 100.0,
        };
        link.check()?;
        Ok(link)
    }
}

/// The emulated links of one endpoint, by destination; shared so that it can change live.
#[derive(Debug, Clone, Default)]
pub struct Links(Arc<Mutex<HashMap<SocketAddr, Link>>>);

impl Links {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, to: SocketAddr, link: Link) {
        if let Ok(mut links) = self.0.lock() {
            links.insert(to, link);
        }
    }

    /// Replaces the whole table.
    pub fn replace(&self, table: HashMap<SocketAddr, Link>) {
        if let Ok(mut links) = self.0.lock() {
            *links = table;
        }
    }

    fn get(&self, to: &SocketAddr) -> Option<Link> {
        self.0.lock().ok()?.get(to).copied()
    }
}

/// Counters of what the emulator did.
#[derive(Debug, Default)]
pub struct EmulatorStats {
    pub delayed: AtomicU64,
    pub dropped: AtomicU64,
}

struct Held {
    due: Instant,
    order: u64,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    // Earliest first out of a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

/// The wrapped socket.
pub struct Emulated {
    inner: Arc<dyn AsyncUdpSocket>,
    links: Links,
    queue: mpsc::Sender<Held>,
    order: AtomicU64,
    random: Mutex<u64>,
    /// When the last datagram to each destination is due: jitter varies each datagram's
    /// delay, but never lets one overtake another to the same place (a path's queues do not
    /// reorder, and QUIC would read reordering as loss).
    last_due: Mutex<HashMap<SocketAddr, Instant>>,
    stats: Arc<EmulatorStats>,
}

impl fmt::Debug for Emulated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulated")
            .field("links", &self.links)
            .finish()
    }
}

impl Emulated {
    /// Wraps `inner`; must be called within a tokio runtime (it starts the delay task).
    pub fn wrap(inner: Arc<dyn AsyncUdpSocket>, links: Links) -> (Arc<Self>, Arc<EmulatorStats>) {
        let (queue, rx) = mpsc::channel(QUEUE_MAX);
        let stats = Arc::new(EmulatorStats::default());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        tokio::spawn(deliver(Arc::clone(&inner), rx, Arc::clone(&stats)));
        let socket = Arc::new(Self {
            inner,
            links,
            queue,
            order: AtomicU64::new(0),
            random: Mutex::new(seed),
            last_due: Mutex::new(HashMap::new()),
            stats: Arc::clone(&stats),
        });
        (socket, stats)
    }

    /// A uniform number in [0, 1).
    fn uniform(&self) -> f64 {
        let Ok(mut state) = self.random.lock() else {
            return 0.5;
        };
        // xorshift64*: plenty for emulated loss and jitter.
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let x = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn deliver(
    socket: Arc<dyn AsyncUdpSocket>,
    mut rx: mpsc::Receiver<Held>,
    stats: Arc<EmulatorStats>,
) {
    let mut heap: BinaryHeap<Held> = BinaryHeap::new();
    loop {
        let next_due = heap.peek().map(|h| h.due);
        tokio::select! {
            held = rx.recv() => match held {
                Some(held) => heap.push(held),
                None => return,
            },
            () = async {
                match next_due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                while heap.peek().is_some_and(|h| h.due <= now) {
                    let Some(held) = heap.pop() else { break };
                    let transmit = Transmit {
                        destination: held.to,
                        ecn: None,
                        contents: &held.bytes,
                        segment_size: None,
                        src_ip: None,
                    };
                    // A full socket buffer drops, like a full router queue.
                    if socket.try_send(&transmit).is_err() {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

impl AsyncUdpSocket for Emulated {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Arc::clone(&self.inner).create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let Some(link) = self.links.get(&transmit.destination) else {
            return self.inner.try_send(transmit);
        };
        // One datagram per transmit (max_transmit_segments is 1), so loss and jitter apply to
        // each datagram.
        if link.loss > 0.0 && self.uniform() < link.loss {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let jitter = link.jitter.mul_f64(self.uniform());
        let mut due = Instant::now() + link.delay + jitter;
        if let Ok(mut last) = self.last_due.lock() {
            if last.len() >= LAST_DUE_MAX && !last.contains_key(&transmit.destination) {
                let now = Instant::now();
                last.retain(|_, d| *d > now);
            }
            let entry = last.entry(transmit.destination).or_insert(due);
            due = due.max(*entry);
            *entry = due;
        }
        let held = Held {
            due,
            order: self.order.fetch_add(1, Ordering::Relaxed),
            to: transmit.destination,
            bytes: transmit.contents.to_vec(),
        };
        if self.queue.try_send(held).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.delayed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_with_clear_errors() {
        let link: Link = "20,5,2.5".parse().unwrap_or(Link::CUT);
        assert_eq!(link.delay, Duration::from_millis(20));
        assert_eq!(link.jitter, Duration::from_millis(5));
        assert!((link.loss - 0.025).abs() < 1e-12);
        assert_eq!("cut".parse::<Link>(), Ok(Link::CUT));
        assert!("20,5,150".parse::<Link>().is_err(), "loss over 100 %");
        assert!("-1".parse::<Link>().is_err());
        assert!("99999999".parse::<Link>().is_err());
        assert!("fast".parse::<Link>().is_err());
    }
}
