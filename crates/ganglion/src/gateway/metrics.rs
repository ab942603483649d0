//! What the gateway counts, for `/metrics` (Prometheus text format 0.0.4, written by hand: a
//! few counters and histograms need no client library) and for the dashboard's snapshots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use ganglion_market::hedge::Class;
use ganglion_types::NodeId;

/// Upper bounds of the latency histogram's buckets, milliseconds (a last bucket takes the rest).
pub const BOUNDS_MS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// Distinct (model, class) series kept; further models share one `other` series, so that a
/// caller naming many hashes cannot grow the gateway's memory.
const SERIES_MAX: usize = 64;

/// A latency histogram: counts per bucket, the sum and the count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// One more than [`BOUNDS_MS`]: the last counts what is over the last bound.
    pub counts: [u64; BOUNDS_MS.len() + 1],
    pub sum_s: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, latency: Duration) {
        let ms = latency.as_secs_f64() * 1e3;
        let bucket = BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BOUNDS_MS.len());
        self.counts[bucket] += 1;
        self.sum_s += latency.as_secs_f64();
        self.count += 1;
    }

    fn add(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_s += other.sum_s;
        self.count += other.count;
    }
}

/// Counts for one model and deadline class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub latency: Histogram,
    pub deadline_misses: u64,
    /// Failures other than a missed deadline, by cause.
    pub errors: BTreeMap<&'static str, u64>,
}

/// Everything the gateway counts. One lock: each request touches it once or twice, far from
/// the cost of an inference.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// By (model alias, class).
    pub series: BTreeMap<(String, &'static str), Series>,
    /// HTTP answers by (route, status).
    /// (Routes are the router's own patterns, or `unmatched`: a bounded set.)
    pub http: BTreeMap<(String, u16), u64>,
    /// Winning answers per provider.
    pub won: BTreeMap<NodeId, u64>,
}

impl Counts {
    /// Every series added up.
    pub fn total(&self) -> Series {
        let mut total = Series::default();
        for s in self.series.values() {
            total.latency.add(&s.latency);
            total.deadline_misses += s.deadline_misses;
            for (k, v) in &s.errors {
                *total.errors.entry(k).or_default() += v;
            }
        }
        total
    }
}

/// The name of a deadline class in metrics.
pub fn class_name(deadline: Duration) -> &'static str {
    match Class::of_deadline(u32::try_from(deadline.as_micros()).unwrap_or(u32::MAX)) {
        Class::Reflex => "reflex",
        Class::Perception => "perception",
        Class::Planning => "planning",
        Class::Language => "language",
    }
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Counts) -> R) -> R {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            // A panic elsewhere while holding the lock leaves counts, not invariants.
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn series<'a>(counts: &'a mut Counts, model: &str, class: &'static str) -> &'a mut Series {
        let known = counts.series.contains_key(&(model.to_owned(), class));
        let name = if known || counts.series.len() < SERIES_MAX {
            model.to_owned()
        } else {
            "other".to_owned()
        };
        counts.series.entry((name, class)).or_default()
    }

    pub fn answered(&self, model: &str, deadline: Duration, latency: Duration, provider: NodeId) {
        self.with(|c| {
            Self::series(c, model, class_name(deadline))
                .latency
                .observe(latency);
            *c.won.entry(provider).or_default() += 1;
        });
    }

    pub fn missed(&self, model: &str, deadline: Duration) {
        self.with(|c| Self::series(c, model, class_name(deadline)).deadline_misses += 1);
    }

    pub fn failed(&self, model: &str, deadline: Duration, cause: &'static str) {
        self.with(|c| {
            *Self::series(c, model, class_name(deadline))
                .errors
                .entry(cause)
                .or_default() += 1;
        });
    }

    pub fn http(&self, route: String, status: u16) {
        self.with(|c| *c.http.entry((route, status)).or_default() += 1);
    }

    pub fn snapshot(&self) -> Counts {
        self.with(|c| c.clone())
    }
}

/// Gauges read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Providers by state (`active`, `standby`, `idle`, `down`).
    pub providers: BTreeMap<&'static str, u64>,
    pub sessions: u64,
    pub spent_micro: u64,
    pub budget_micro: u64,
    pub allocated_micro: u64,
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of `counts` and `gauges`.
pub fn render(counts: &Counts, gauges: &Gauges) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ganglion_gateway_inference_seconds Time from the gateway sending a request to the first valid answer."
    );
    let _ = writeln!(out, "# TYPE ganglion_gateway_inference_seconds histogram");
    for ((model, class), s) in &counts.series {
        let labels = format!("model=\"{}\",class=\"{class}\"", escape(model));
        let mut cumulative = 0;
        for (bound, n) in BOUNDS_MS.iter().zip(s.latency.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "ganglion_gateway_inference_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}",
                bound / 1e3
            );
        }
        let _ = writeln!(
            out,
            "ganglion_gateway_inference_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            s.latency.count
        );
        let _ = writeln!(
            out,
            "ganglion_gateway_inference_seconds_sum{{{labels}}} {}",
            s.latency.sum_s
        );
        let _ = writeln!(
            out,
            "ganglion_gateway_inference_seconds_count{{{labels}}} {}",
            s.latency.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP ganglion_gateway_deadline_misses_total Requests with no valid answer within their deadline."
    );
    let _ = writeln!(out, "# TYPE ganglion_gateway_deadline_misses_total counter");
    for ((model, class), s) in &counts.series {
        let _ = writeln!(
            out,
            "ganglion_gateway_deadline_misses_total{{model=\"{}\",class=\"{class}\"}} {}",
            escape(model),
            s.deadline_misses
        );
    }
    let _ = writeln!(
        out,
        "# HELP ganglion_gateway_inference_errors_total Requests that failed for another cause."
    );
    let _ = writeln!(
        out,
        "# TYPE ganglion_gateway_inference_errors_total counter"
    );
    for ((model, class), s) in &counts.series {
        for (cause, n) in &s.errors {
            let _ = writeln!(
                out,
                "ganglion_gateway_inference_errors_total{{model=\"{}\",class=\"{class}\",cause=\"{cause}\"}} {n}",
                escape(model)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ganglion_gateway_http_requests_total HTTP answers by route and status."
    );
    let _ = writeln!(out, "# TYPE ganglion_gateway_http_requests_total counter");
    for ((route, status), n) in &counts.http {
        let _ = writeln!(
            out,
            "ganglion_gateway_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP ganglion_gateway_providers Providers this gateway knows, by state."
    );
    let _ = writeln!(out, "# TYPE ganglion_gateway_providers gauge");
    for state in ["active", "standby", "idle", "down"] {
        let _ = writeln!(
            out,
            "ganglion_gateway_providers{{state=\"{state}\"}} {}",
            gauges.providers.get(state).copied().unwrap_or(0)
        );
    }
    for (name, help, value) in [
        (
            "ganglion_gateway_sessions",
            "Sessions the gateway holds open.",
            gauges.sessions,
        ),
        (
            "ganglion_gateway_spent_micro_tokens",
            "What the gateway's vouchers add up to.",
            gauges.spent_micro,
        ),
        (
            "ganglion_gateway_budget_micro_tokens",
            "The gateway's whole budget.",
            gauges.budget_micro,
        ),
        (
            "ganglion_gateway_allocated_micro_tokens",
            "Budget set aside for the sessions opened so far.",
            gauges.allocated_micro,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_the_count() {
        let m = Metrics::default();
        let id = ganglion_types::NodeKey::generate().id();
        for ms in [0.5, 3.0, 3.0, 40.0, 9000.0] {
            m.answered(
                "blazeface",
                Duration::from_millis(100),
                Duration::from_secs_f64(ms / 1e3),
                id,
            );
        }
        m.missed("blazeface", Duration::from_millis(100));
        let text = render(&m.snapshot(), &Gauges::default());
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let labels = "model=\"blazeface\",class=\"planning\"";
        assert_eq!(
            line(&format!(
                "ganglion_gateway_inference_seconds_bucket{{{labels},le=\"0.001\"}}"
            )),
            "1"
        );
        assert_eq!(
            line(&format!(
                "ganglion_gateway_inference_seconds_bucket{{{labels},le=\"0.005\"}}"
            )),
            "3"
        );
        assert_eq!(
            line(&format!(
                "ganglion_gateway_inference_seconds_bucket{{{labels},le=\"5\"}}"
            )),
            "4"
        );
        assert_eq!(
            line(&format!(
                "ganglion_gateway_inference_seconds_bucket{{{labels},le=\"+Inf\"}}"
            )),
            "5"
        );
        assert_eq!(
            line(&format!(
                "ganglion_gateway_inference_seconds_count{{{labels}}}"
            )),
            "5"
        );
        assert_eq!(
            line(&format!(
                "ganglion_gateway_deadline_misses_total{{{labels}}}"
            )),
            "1"
        );
    }

    #[test]
    fn many_models_share_one_overflow_series() {
        let m = Metrics::default();
        for i in 0..(SERIES_MAX * 3) {
            m.missed(&format!("model-{i}"), Duration::from_millis(5));
        }
        let counts = m.snapshot();
        assert!(counts.series.len() <= SERIES_MAX + 1);
        assert_eq!(counts.total().deadline_misses, (SERIES_MAX * 3) as u64);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
