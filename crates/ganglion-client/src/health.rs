//! When is a provider down? A sans-IO rule, fed with what happened to each request.
//!
//! - A disconnect or an answer that fails its checks (bad signature, wrong shape): down at once.
//!   A provider that signs garbage is not given a second chance within a session.
//! - Missed deadlines (no answer in time, while the session waited for it): down after
//!   [`MISSES_DOWN`] in a row. One slow answer is noise; three in a row is a stalled provider.
//! - Errors (internal failures, refused requests): down after [`ERRORS_DOWN`] in a row.
//! - "Busy" is an honest, instant refusal: counted, never a reason to drop the provider.
//!
//! An answer in time resets the counts.

/// Consecutive missed deadlines that mark a provider down.
pub const MISSES_DOWN: u32 = 3;

/// Consecutive errors that mark a provider down.
pub const ERRORS_DOWN: u32 = 5;

/// Something that happened to one request sent to one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A valid answer arrived; `on_time` if within the request's deadline.
    Answered { on_time: bool },
    /// No answer within the deadline.
    Missed,
    /// The provider refused at once because it is loaded.
    Busy,
    /// The provider answered with an error.
    Error,
    /// The provider refused the request's inputs (the sender's fault, not the provider's).
    Rejected,
    /// The answer failed its signature or shape check.
    BadAnswer,
    /// The connection or stream is gone.
    Disconnected,
}

/// Why a provider was marked down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    Disconnected,
    BadAnswer,
    Stalled,
    Failing,
    /// Its heartbeats stopped: it left the robot's view of the control plane.
    Silent,
    /// Checkers of the network flagged it (wrong results, a false location, down): the
    /// robot's reputation excludes it.
    Excluded,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Disconnected => "disconnected",
            Self::BadAnswer => "bad answer",
            Self::Stalled => "stalled (missed deadlines)",
            Self::Failing => "failing (repeated errors)",
            Self::Silent => "silent (its heartbeats stopped)",
            Self::Excluded => "excluded by the checkers' attestations",
        })
    }
}

/// The health of one provider within a session.
#[derive(Debug, Clone, Default)]
pub struct Health {
    misses: u32,
    errors: u32,
    busy: u64,
    down: Option<DownReason>,
}

impl Health {
    /// Records `event`; returns the reason if this event marks the provider down (only once).
    pub fn record(&mut self, event: Event) -> Option<DownReason> {
        if self.down.is_some() {
            return None;
        }
        let down = match event {
            Event::Answered { on_time: true } => {
                self.misses = 0;
                self.errors = 0;
                None
            }
            Event::Answered { on_time: false } | Event::Missed => {
                self.misses += 1;
                (self.misses >= MISSES_DOWN).then_some(DownReason::Stalled)
            }
            Event::Busy => {
                self.busy += 1;
                None
            }
            Event::Rejected => None,
            Event::Error => {
                self.errors += 1;
                (self.errors >= ERRORS_DOWN).then_some(DownReason::Failing)
            }
            Event::BadAnswer => Some(DownReason::BadAnswer),
            Event::Disconnected => Some(DownReason::Disconnected),
        };
        self.down = down;
        down
    }

    pub fn is_down(&self) -> bool {
        self.down.is_some()
    }

    pub fn busy_count(&self) -> u64 {
        self.busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_inputs_never_drop_the_provider() {
        let mut h = Health::default();
        for _ in 0..(ERRORS_DOWN * 4) {
            assert_eq!(h.record(Event::Rejected), None);
        }
        assert!(!h.is_down());
        for _ in 0..ERRORS_DOWN - 1 {
            h.record(Event::Error);
        }
        assert_eq!(h.record(Event::Error), Some(DownReason::Failing));
    }

    #[test]
    fn stalls_need_consecutive_misses() {
        let mut h = Health::default();
        assert_eq!(h.record(Event::Missed), None);
        assert_eq!(h.record(Event::Missed), None);
        assert_eq!(h.record(Event::Answered { on_time: true }), None);
        assert_eq!(h.record(Event::Missed), None);
        assert_eq!(h.record(Event::Answered { on_time: false }), None);
        assert_eq!(h.record(Event::Missed), Some(DownReason::Stalled));
        assert!(h.is_down());
        assert_eq!(h.record(Event::Disconnected), None, "reported once");
    }

    #[test]
    fn busy_never_marks_down_but_garbage_does_at_once() {
        let mut h = Health::default();
        for _ in 0..1000 {
            assert_eq!(h.record(Event::Busy), None);
        }
        assert_eq!(h.busy_count(), 1000);
        assert_eq!(h.record(Event::BadAnswer), Some(DownReason::BadAnswer));
    }

    #[test]
    fn repeated_errors_mark_down() {
        let mut h = Health::default();
        for _ in 1..ERRORS_DOWN {
            assert_eq!(h.record(Event::Error), None);
        }
        assert_eq!(h.record(Event::Error), Some(DownReason::Failing));
    }
}
