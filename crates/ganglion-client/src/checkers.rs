//! Forwarding samples to checkers. A session picks its samples ([`crate::Session::sample_to`]);
//! this task sends each to one checker, chosen at random among those the caller knows (from
//! the checkers' attestations in its view), over an authenticated QUIC connection kept open
//! per checker. Samples are best effort: a checker that cannot be reached costs the robot
//! nothing but that sample.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ganglion_net::{Connection, Endpoint, FrameWriter, SendStream};
use ganglion_types::verify::{Sample, ToChecker};
use ganglion_types::NodeId;
use tokio::sync::mpsc;
use tracing::debug;

use crate::ProviderAddr;

/// Longest a connection to a checker, or one sample's sending, may take: a checker that
/// stalls is dropped (and tried again on a later sample), never waited on.
pub const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Samples waiting to go out; past this, new ones are dropped.
pub const FORWARD_QUEUE_MAX: usize = 64;

/// Where the checkers are, asked for each sample.
pub type CheckerSource = Arc<dyn Fn() -> Vec<ProviderAddr> + Send + Sync>;

/// What the forwarder did.
#[derive(Debug, Default)]
pub struct ForwardStats {
    pub sent: AtomicU64,
    /// No checker known, or none reachable.
    pub dropped: AtomicU64,
}

/// Starts the forwarder on the current runtime; returns the sink sessions sample into.
pub fn spawn_forwarder(
    endpoint: Endpoint,
    checkers: CheckerSource,
) -> (mpsc::Sender<Sample>, Arc<ForwardStats>) {
    let (tx, rx) = mpsc::channel(FORWARD_QUEUE_MAX);
    let stats = Arc::new(ForwardStats::default());
    tokio::spawn(forward(endpoint, checkers, rx, Arc::clone(&stats)));
    (tx, stats)
}

async fn forward(
    endpoint: Endpoint,
    checkers: CheckerSource,
    mut rx: mpsc::Receiver<Sample>,
    stats: Arc<ForwardStats>,
) {
    let mut streams: HashMap<NodeId, (Connection, FrameWriter<SendStream>)> = HashMap::new();
    let mut turn: u64 = 0;
    while let Some(sample) = rx.recv().await {
        let known = checkers();
        if known.is_empty() {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        turn = turn.wrapping_add(1);
        let random = ganglion_types::random_u64().unwrap_or(0);
        let start = (random ^ turn) as usize % known.len();
        let frame = ToChecker::Sample(sample);
        // The chosen checker first, then the others, until one takes it.
        let mut sent = false;
        for i in 0..known.len() {
            let checker = known[(start + i) % known.len()];
            let writer = match streams.entry(checker.id) {
                std::collections::hash_map::Entry::Occupied(e) => &mut e.into_mut().1,
                std::collections::hash_map::Entry::Vacant(e) => {
                    match tokio::time::timeout(FORWARD_TIMEOUT, open(&endpoint, checker)).await {
                        Ok(Some(opened)) => &mut e.insert(opened).1,
                        _ => continue,
                    }
                }
            };
            if matches!(
                tokio::time::timeout(FORWARD_TIMEOUT, writer.send(&frame)).await,
                Ok(Ok(()))
            ) {
                sent = true;
                break;
            }
            streams.remove(&checker.id);
        }
        let counter = if sent { &stats.sent } else { &stats.dropped };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

async fn open(
    endpoint: &Endpoint,
    checker: ProviderAddr,
) -> Option<(Connection, FrameWriter<SendStream>)> {
    let connection = match endpoint.connect(checker.addr, checker.id).await {
        Ok(c) => c,
        Err(e) => {
            debug!(checker = %checker.id, error = %e, "cannot reach checker");
            return None;
        }
    };
    let (writer, _reader) = connection.open_stream().await.ok()?;
    Some((connection, writer))
}
