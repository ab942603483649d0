//! `ganglion sim`: the planet simulated for an hour (or more), every strategy facing the same
//! failures; a table, JSON and an SVG chart of what robots got.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context};
use ganglion_sim::churn::Churn;
use ganglion_sim::tally::{Row, ROBOT_TARGET};
use ganglion_sim::{Config, Progress, Results};
use ganglion_types::MicroTokens;

/// Largest planet and run the command accepts (memory grows with robots × strategies).
const ROBOTS_MAX: u32 = 2_000_000;
const GPUS_MAX: u64 = 10_000_000;
const HOURS_MAX: f64 = 24.0 * 30.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Robots, placed in proportion to city population.
    #[arg(long, default_value_t = 100_000)]
    robots: u32,
    /// GPUs on the planet, in 4- and 8-GPU machines.
    #[arg(long, default_value_t = 435_000)]
    gpus: u64,
    /// Provider sites: the largest city of every country first, then the largest others.
    #[arg(long, default_value_t = 250)]
    sites: usize,
    /// Simulated time, hours.
    #[arg(long, default_value_t = 1.0)]
    hours: f64,
    /// Long-run share of time each provider is up.
    #[arg(long, default_value_t = ganglion_sim::churn::UPTIME_DEFAULT)]
    uptime: f64,
    /// Mean outage, seconds (log-normal: most are short, a few long).
    #[arg(long, default_value_t = ganglion_sim::churn::MEAN_OUTAGE_S_DEFAULT)]
    mean_outage_s: f64,
    /// Seconds from a provider's failure to the robot replacing it (disconnect, missed
    /// deadlines or heartbeats gone).
    #[arg(long, default_value_t = 1.0)]
    detect_s: f64,
    /// What the central cloud charges per answer, micro-tokens.
    #[arg(long, default_value_t = Config::default().cloud_price.0)]
    cloud_price: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the results as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write a chart of the results (SVG) to this file.
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
}

impl Args {
    fn config(&self) -> anyhow::Result<Config> {
        ensure!(
            (1..=ROBOTS_MAX).contains(&self.robots),
            "--robots must be 1 to {ROBOTS_MAX}"
        );
        ensure!(
            (8..=GPUS_MAX).contains(&self.gpus),
            "--gpus must be 8 to {GPUS_MAX}"
        );
        ensure!(
            (1..=10_000).contains(&self.sites),
            "--sites must be 1 to 10000"
        );
        ensure!(
            self.hours > 0.0 && self.hours <= HOURS_MAX,
            "--hours must be above 0 and at most {HOURS_MAX}"
        );
        ensure!(
            self.uptime > 0.0 && self.uptime < 1.0,
            "--uptime must be between 0 and 1 (exclusive), e.g. 0.9892"
        );
        ensure!(
            self.mean_outage_s > 0.0 && self.mean_outage_s.is_finite(),
            "--mean-outage-s must be positive"
        );
        ensure!(
            self.detect_s >= 0.0 && self.detect_s.is_finite(),
            "--detect-s must be zero or positive"
        );
        Ok(Config {
            gpus: self.gpus,
            sites: self.sites,
            robots: self.robots,
            horizon_s: self.hours * 3600.0,
            seed: self.seed,
            churn: Churn {
                uptime: self.uptime,
                mean_outage_s: self.mean_outage_s,
            },
            detect_s: self.detect_s,
            cloud_price: MicroTokens(self.cloud_price),
            ..Config::default()
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    let started = Instant::now();
    let mut bar = Bar::new();
    let results = ganglion_sim::simulate(&config, &mut |p| bar.show(p))?;
    bar.done();
    let elapsed = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print_table(&results, elapsed);
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&results))
            .with_context(|| format!("writing the chart to {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

/// A progress line on stderr: redrawn in place on a terminal, a line per quarter otherwise.
struct Bar {
    tty: bool,
    last: Option<(&'static str, u64)>,
}

impl Bar {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, p: Progress) {
        let percent = (p.done * 100).checked_div(p.total).unwrap_or(100);
        let step = if self.tty { percent } else { percent / 25 * 25 };
        if self.last == Some((p.stage, step)) {
            return;
        }
        self.last = Some((p.stage, step));
        let filled = (percent / 4) as usize;
        let line = format!(
            "{:<22} [{}{}] {percent:>3}%",
            p.stage,
            "#".repeat(filled),
            " ".repeat(25 - filled.min(25))
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn percent(share: f64) -> String {
    if (0.999_999_5..1.0).contains(&share) {
        format!("{:.6}%", share * 100.0)
    } else {
        format!("{:.4}%", share * 100.0)
    }
}

fn print_table(r: &Results, elapsed_s: f64) {
    println!(
        "{} GPUs in {} machines at {} sites in {} countries; {} robots; {:.1} h simulated in {:.0} s",
        r.gpus,
        r.machines,
        r.sites,
        r.countries,
        r.robots,
        r.horizon_s / 3600.0,
        elapsed_s
    );
    println!(
        "providers up {} of the time as simulated (configured {}); {} failures; detection {} s",
        percent(r.uptime_measured),
        percent(r.uptime_configured),
        r.failures,
        r.detect_s
    );
    println!();
    println!(
        "{:<24} {:<11} {:>7} {:>8} {:>13} {:>13} {:>9} {:>13} {:>9} {:>7}",
        "strategy",
        "class",
        "robots",
        "physics",
        "in deadline",
        "(placed)",
        "<99.99%",
        "availability",
        "cost/1k",
        "extra"
    );
    let mut last = "";
    for row in &r.rows {
        if row.strategy != last && !last.is_empty() {
            println!();
        }
        last = &row.strategy;
        println!(
            "{:<24} {:<11} {:>7} {:>8} {:>13} {:>13} {:>9} {:>13} {:>9.0} {:>6.1}%",
            row.strategy,
            row.class,
            row.robots,
            row.ruled_out_by_physics,
            percent(row.within_deadline),
            percent(row.within_deadline_placed),
            row.robots_below_target,
            percent(row.availability),
            row.cost_per_1000,
            // Requests sent nowhere (every provider known dead) can take it below zero.
            (row.extra_load * 100.0).max(0.0)
        );
    }
    println!();
    println!("physics: robots that no placement can serve within the class deadline");
    println!("in deadline: share of all requests answered within the deadline; (placed): among robots the strategy placed");
    println!(
        "<99.99%: placed robots below {} within deadline; cost/1k: micro-tokens per 1,000 requests; extra: copies beyond one per request",
        percent(ROBOT_TARGET)
    );
    if let Some(verdict) = target(r) {
        println!("{verdict}");
    }
}

/// The issue's target: with k = 2, at least 99.99% within deadline for every placed robot.
fn target(r: &Results) -> Option<String> {
    let k2: Vec<&Row> = r
        .rows
        .iter()
        .filter(|row| row.strategy == "ganglion k=2" && row.class != "all")
        .collect();
    let all = r
        .rows
        .iter()
        .find(|row| row.strategy == "ganglion k=2" && row.class == "all")?;
    let ruled: Vec<String> = k2
        .iter()
        .map(|row| format!("{} {}", row.ruled_out_by_physics, row.class))
        .collect();
    Some(format!(
        "target (k=2, every robot physics allows ≥ 99.99% within deadline): {}; worst robot {}, {} robots below; physics rules out {} robots",
        if all.robots_below_target == 0 { "met" } else { "MISSED" },
        percent(all.worst_robot),
        all.robots_below_target,
        ruled.join(", ")
    ))
}

/// Two panels: requests within deadline (as nines) and cost, per class, one bar per strategy.
fn svg(r: &Results) -> String {
    const W: f64 = 960.0;
    const PANEL_H: f64 = 260.0;
    const COLORS: [&str; 8] = [
        "#9ecae1", "#3182bd", "#08519c", "#756bb1", "#31a354", "#e6550d", "#969696", "#d62728",
    ];
    let strategies: Vec<&str> = r
        .rows
        .iter()
        .filter(|row| row.class == "all")
        .map(|row| row.strategy.as_str())
        .collect();
    let classes = ["reflex", "perception", "planning", "language"];
    let nines = |share: f64| (-(1.0 - share).max(1e-7).log10()).clamp(0.0, 7.0);
    let value = |s: &str, c: &str, panel: usize| {
        r.rows
            .iter()
            .find(|row| row.strategy == s && row.class == c)
            .map_or(0.0, |row| {
                if panel == 0 {
                    nines(row.within_deadline)
                } else {
                    row.cost_per_1000
                }
            })
    };
    let max_cost = r
        .rows
        .iter()
        .map(|row| row.cost_per_1000)
        .fold(1.0, f64::max);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
"#,
        2.0 * PANEL_H + 120.0
    );
    let titles = [
        "requests within deadline (nines: 2 = 99%, 4 = 99.99%)",
        "cost per 1,000 requests (micro-tokens)",
    ];
    for (panel, title) in titles.iter().enumerate() {
        let top = 30.0 + panel as f64 * (PANEL_H + 30.0);
        let (left, plot_w, plot_h) = (60.0, W - 80.0, PANEL_H - 50.0);
        let base = top + plot_h;
        out += &format!(
            "<text x=\"{left}\" y=\"{}\" font-weight=\"bold\">{title}</text>\n",
            top - 10.0
        );
        out += &format!(
            "<line x1=\"{left}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"black\"/>\n",
            left + plot_w
        );
        let max = if panel == 0 { 7.0 } else { max_cost };
        let group_w = plot_w / classes.len() as f64;
        let bar_w = group_w / (strategies.len() as f64 + 1.0);
        for (ci, class) in classes.iter().enumerate() {
            let gx = left + ci as f64 * group_w;
            out += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{class}</text>\n",
                gx + group_w / 2.0,
                base + 16.0
            );
            for (si, s) in strategies.iter().enumerate() {
                let v = value(s, class, panel);
                let h = plot_h * v / max;
                out += &format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{s}: {v:.2}</title></rect>\n",
                    gx + (si as f64 + 0.5) * bar_w,
                    base - h,
                    bar_w * 0.9,
                    h,
                    COLORS[si % COLORS.len()]
                );
            }
        }
        if panel == 0 {
            let y = base - plot_h * 4.0 / 7.0;
            out += &format!(
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{:.1}\" fill=\"#d62728\" text-anchor=\"end\">99.99%</text>\n",
                left + plot_w,
                left - 4.0,
                y + 4.0
            );
        }
    }
    let legend_top = 2.0 * PANEL_H + 70.0;
    for (si, s) in strategies.iter().enumerate() {
        let x = 60.0 + (si % 4) as f64 * 220.0;
        let y = legend_top + (si / 4) as f64 * 18.0;
        out += &format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{y}\">{s}</text>\n",
            y - 10.0,
            COLORS[si % COLORS.len()],
            x + 16.0
        );
    }
    out += "</svg>\n";
    out
}
