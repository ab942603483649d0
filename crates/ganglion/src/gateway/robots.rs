//! The robots of `ganglion gateway --devnet`: each has its own key, stands in its own city and
//! places its own sessions from the network's view (a [`Pool`] like the gateway's), and sends
//! the bundled camera frames to the face detector at a steady rate, so that the dashboard shows
//! a network at work before anyone calls the API. Their requests count in the gateway's
//! metrics with everything else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ganglion_types::Tensor;

use super::api::{infer_counted, Gateway};
use super::pool::{ModelRef, Pool};

/// A devnet robot.
#[derive(Debug)]
pub struct Robot {
    pub name: String,
    pub city: &'static str,
    pub pool: Pool,
    pub model: ModelRef,
    pub rate_hz: f64,
    pub deadline_ms: u64,
    pub redundancy: usize,
    pub requests: AtomicU64,
    pub answered: AtomicU64,
}

/// Sends `inputs` in turn at the robot's rate until `stop` says so. A request that is still
/// out when the next is due does not hold the next one up.
pub async fn drive(
    gateway: Arc<Gateway>,
    robot: Arc<Robot>,
    inputs: Arc<Vec<Tensor>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / robot.rate_hz));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if inputs.is_empty() {
            return;
        }
        let input = inputs[n % inputs.len()].clone();
        n += 1;
        let gateway = Arc::clone(&gateway);
        let robot = Arc::clone(&robot);
        tokio::spawn(async move {
            robot.requests.fetch_add(1, Ordering::Relaxed);
            let done = infer_counted(
                &robot.pool,
                &gateway.metrics,
                &robot.model,
                vec![input],
                robot.deadline_ms,
                robot.redundancy,
            )
            .await;
            if done.is_ok() {
                robot.answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}
