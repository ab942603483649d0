//! `ganglion chaos`: providers and robots (`--robots`, two by default, each with its own
//! session) as separate processes of this binary, on loopback, finding each other through the
//! control plane, and faults made for real:
//!
//! 1. steady state;
//! 2. `kill -9` of an active provider;
//! 3. SIGSTOP of the other active provider (frozen: its sockets stay open, nothing answers),
//!    SIGCONT at the end of the phase;
//! 4. delay, jitter and loss on robot 0's link to an active provider (its UDP-layer link
//!    emulator: an EMULATION, as this kernel has no netem), healed at the end of the phase;
//! 5. a partition of robot 0 from an active provider (the emulated link cut), healed;
//! 6. steady state again.
//!
//! With `--netns`, every provider runs in a network namespace of its own (a separate network
//! stack), joined to the robot's by a veth pair on one bridge, and the partition is real: the
//! provider's veth is taken down (`ip link set … down`), which cuts it from the robot and from
//! every other node, and brought up again to heal. The harness sets the namespaces up and tears
//! them down itself (root and iproute2 needed; it says so when it cannot). Delay, jitter and
//! loss stay the emulator's: these kernels have no netem qdisc.
//!
//! Then it prints, per phase, the requests made, lost and late, the p99 latency against the
//! steady state's, the time until the session had k active providers and a standby again, the
//! copies sent per request, and the books: what the robot signed to each provider against
//! what the provider's ledger says it holds when stopped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use serde::Serialize;

/// Providers the harness starts.
const PROVIDERS: usize = 5;

/// Most robot processes.
const ROBOTS_MAX: usize = 8;

/// Heartbeat interval of every node, ms.
const HEARTBEAT_MS: u64 = 500;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds each phase lasts.
    #[arg(long, default_value_t = 4.0)]
    phase_s: f64,
    /// Requests per second.
    #[arg(long, default_value_t = 20.0)]
    rate_hz: f64,
    /// Time each request may take, end to end.
    #[arg(long, default_value_t = 200)]
    deadline_ms: u64,
    /// Link degradation in phase 4: DELAY_MS,JITTER_MS,LOSS_PERCENT.
    #[arg(long, default_value = "30,10,10")]
    degrade: String,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the run's files (traces, links, reports) in this folder instead of a temporary one.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Robot processes, each with its own session on the same providers (the link faults
    /// are robot 0's; the kill, the freeze and a namespace partition hit every robot).
    #[arg(long, default_value_t = 2)]
    robots: usize,
    /// Run each provider in a network namespace of its own, and partition for real (the
    /// provider's veth down). Needs root and iproute2.
    #[arg(long)]
    netns: bool,
}

/// Separate network stacks for `--netns`: a namespace per provider, each joined by a veth
/// pair to one bridge in the robot's namespace. Torn down when dropped.
struct Netns {
    tag: String,
    subnet: String,
    bridge: String,
    spaces: Vec<String>,
    /// veth pairs made (their host ends are deleted too, in case a setup stopped halfway).
    veths: usize,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip(8): --netns needs iproute2")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Netns {
    fn setup(providers: usize) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let tag = format!("{}", pid % 100_000);
        let mut me = Self {
            subnet: format!("10.201.{}", pid % 250),
            bridge: format!("gcb{tag}"),
            tag,
            spaces: Vec::new(),
            veths: 0,
        };
        ip(&["link", "add", &me.bridge, "type", "bridge"]).context(
            "cannot make network namespaces here (root and iproute2 are needed; run without --netns for the emulator only)",
        )?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", me.subnet),
            "dev",
            &me.bridge,
        ])?;
        ip(&["link", "set", &me.bridge, "up"])?;
        for i in 0..providers {
            let ns = format!("gchaos{}-{i}", me.tag);
            ip(&["netns", "add", &ns])?;
            me.spaces.push(ns.clone());
            let (host, inner) = (me.host_if(i), format!("gc{}n{i}", me.tag));
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            me.veths += 1;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &me.bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", me.addr(i)),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(me)
    }

    /// Provider `i`'s address in its namespace.
    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 10 + i)
    }

    /// The robot's address, on the bridge.
    fn robot_addr(&self) -> String {
        format!("{}.1", self.subnet)
    }

    fn host_if(&self, i: usize) -> String {
        format!("gc{}h{i}", self.tag)
    }

    /// Cuts provider `i` off (its veth down), or heals it.
    fn cut(&self, i: usize, cut: bool) -> anyhow::Result<()> {
        ip(&[
            "link",
            "set",
            &self.host_if(i),
            if cut { "down" } else { "up" },
        ])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.spaces {
            // Deleting a namespace deletes its end of the veth pair, and so the pair.
            let _ = ip(&["netns", "del", ns]);
        }
        for i in 0..self.veths {
            // Gone with its namespace when it got there; left in this one if setup stopped.
            let _ = Command::new("ip")
                .args(["link", "del", &self.host_if(i)])
                .stderr(Stdio::null())
                .status();
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// One node process; killed when dropped.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    did: String,
    addr: String,
    control: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A robot process, killed if the harness stops before it finished.
struct RobotProc(Option<Child>);

impl Drop for RobotProc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_lines(child: &mut Child) -> anyhow::Result<mpsc::Receiver<String>> {
    let out = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

fn wait_line(rx: &mpsc::Receiver<String>, prefix: &str, limit: Duration) -> anyhow::Result<String> {
    let until = std::time::Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(prefix) => return Ok(line),
            Ok(_) => {}
            Err(_) => bail!("no {prefix:?} line within {limit:?}"),
        }
    }
}

fn signal(child: &Child, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .context("cannot run kill(1) to send a signal (procps)")?;
    anyhow::ensure!(status.success(), "kill -{sig} failed");
    Ok(())
}

fn start_provider(
    index: usize,
    bootstrap: Option<&str>,
    netns: Option<&Netns>,
) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let mut cmd = match netns {
        Some(n) => {
            // `ip netns exec` execs the command: the child's pid is the provider's.
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &n.spaces[index]]).arg(exe);
            let at = n.addr(index);
            cmd.args(["provider", "--listen", &format!("{at}:0")])
                .args(["--p2p-listen", &format!("/ip4/{at}/udp/0/quic-v1")])
                .args(["--p2p-listen", &format!("/ip4/{at}/tcp/0")]);
            cmd
        }
        None => {
            let mut cmd = Command::new(exe);
            cmd.args(["provider", "--listen", "127.0.0.1:0"]);
            cmd
        }
    };
    cmd.args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
        .args(["--price", &(100 + 10 * index).to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let mut child = cmd.spawn().context("cannot start a provider")?;
    let lines = spawn_lines(&mut child)?;
    let control = wait_line(&lines, "control plane:", Duration::from_secs(60))?
        .trim_start_matches("control plane: ")
        .to_owned();
    let listening = wait_line(&lines, "listening on", Duration::from_secs(30))?;
    // "provider DID listening on ADDR"
    let words: Vec<&str> = listening.split_whitespace().collect();
    let (did, addr) = match (words.get(1), words.last()) {
        (Some(d), Some(a)) => ((*d).to_owned(), (*a).to_owned()),
        _ => bail!("unexpected provider line {listening:?}"),
    };
    Ok(Proc {
        child,
        lines,
        did,
        addr,
        control,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub phase: String,
    pub requests: u64,
    pub lost: u64,
    pub late: u64,
    pub p99_ms: f64,
    pub p99_vs_steady: f64,
    /// From the fault to k active providers and a standby again, ms, sampled every 50 ms
    /// (None: no failover in the phase).
    pub restored_ms: Option<u64>,
    /// Make-before-break moves in the phase (a drifted provider replaced by the standby), over
    /// every robot.
    pub moved: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Books {
    pub provider: String,
    pub robot_signed_micro: u64,
    pub provider_holds_micro: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub rows: Vec<Row>,
    pub copies_per_request: f64,
    pub books: Vec<Books>,
    pub books_agree: bool,
}

struct Sample {
    t: u64,
    kind: String,
    value: u64,
    detail: String,
}

impl Sample {
    /// An `active` sample with k providers and a standby.
    fn redundant(&self) -> bool {
        self.value >= 2 && self.detail == "1"
    }
}

fn read_trace(path: &Path) -> anyhow::Result<Vec<Sample>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the robot's trace {}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut parts = line.splitn(4, ',');
            Some(Sample {
                t: parts.next()?.parse().ok()?,
                kind: parts.next()?.to_owned(),
                value: parts.next()?.parse().ok()?,
                detail: parts.next().unwrap_or("").to_owned(),
            })
        })
        .collect())
}

fn p99_ms(latencies_us: &mut [u64]) -> f64 {
    if latencies_us.is_empty() {
        return 0.0;
    }
    latencies_us.sort_unstable();
    let i = ((latencies_us.len() - 1) as f64 * 0.99).round() as usize;
    latencies_us[i] as f64 / 1000.0
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.phase_s >= 1.0 && args.phase_s <= 600.0,
        "--phase-s must be 1 to 600"
    );
    crate::nodes::check_run(args.rate_hz, args.phase_s * 6.0, args.deadline_ms)?;
    anyhow::ensure!(
        (1..=ROBOTS_MAX).contains(&args.robots),
        "--robots must be 1 to {ROBOTS_MAX}"
    );
    let degrade: ganglion_net::emulate::Link = args
        .degrade
        .parse()
        .map_err(|e| anyhow::anyhow!("--degrade: {e}"))?;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => std::env::temp_dir().join(format!("ganglion-chaos-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    // Each robot follows its own link table; the link faults are robot 0's.
    let files: Vec<(PathBuf, PathBuf, PathBuf)> = (0..args.robots)
        .map(|r| {
            (
                dir.join(format!("links-{r}")),
                dir.join(format!("trace-{r}.csv")),
                dir.join(format!("robot-{r}.json")),
            )
        })
        .collect();
    for (links, _, _) in &files {
        std::fs::write(links, "")?;
    }
    let links = files[0].0.clone();

    let netns = if args.netns {
        let n = Netns::setup(PROVIDERS)?;
        println!(
            "chaos: network namespaces {}-0..{} on bridge {} ({}.0/24): every provider has a network stack of its own; the partition is a veth taken down",
            n.spaces[0].trim_end_matches("-0"),
            PROVIDERS - 1,
            n.bridge,
            n.subnet
        );
        Some(n)
    } else {
        println!("chaos: one network stack (loopback); the partition and the degraded link are EMULATED at the robot's UDP layer (--netns for real separate stacks)");
        None
    };
    println!("chaos: starting {PROVIDERS} provider processes…");
    let mut providers = vec![start_provider(0, None, netns.as_ref())?];
    let boot = providers[0].control.clone();
    for i in 1..PROVIDERS {
        providers.push(start_provider(i, Some(&boot), netns.as_ref())?);
    }
    let phase = Duration::from_secs_f64(args.phase_s);
    let duration_s = args.phase_s * 6.0;
    let exe = std::env::current_exe()?;
    let mut robots = Vec::new();
    for (r, (links, trace, report)) in files.iter().enumerate() {
        let mut robot = Command::new(&exe);
        robot.arg("robot");
        if let Some(n) = &netns {
            let at = n.robot_addr();
            robot
                .args(["--p2p-listen", &format!("/ip4/{at}/udp/0/quic-v1")])
                .args(["--p2p-listen", &format!("/ip4/{at}/tcp/0")]);
        }
        let mut robot = robot
            .args(["--bootstrap", &boot])
            .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .args(["--rate-hz", &args.rate_hz.to_string()])
            .args(["--duration-s", &duration_s.to_string()])
            .args(["--deadline-ms", &args.deadline_ms.to_string()])
            .arg("--links")
            .arg(links)
            .arg("--trace")
            .arg(trace)
            .arg("--json")
            .arg(report)
            .env("RUST_LOG", "ganglion_client=info,ganglion=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(
                dir.join(format!("robot-{r}.log")),
            )?))
            .spawn()
            .context("cannot start a robot")?;
        let robot_lines = spawn_lines(&mut robot)?;
        robots.push((RobotProc(Some(robot)), robot_lines));
    }
    // The cheapest two are active, the third the standby (every provider declares the same
    // place, so the market goes by price): fault the active ones, and then their successors.
    let by_suffix =
        |line: &str, i: usize| line.contains(&providers[i].did[providers[i].did.len() - 8..]);
    for (r, (_, lines)) in robots.iter().enumerate() {
        let open = wait_line(lines, "robot session open", Duration::from_secs(30))?;
        println!("  robot {r}: {open}");
        anyhow::ensure!(
            by_suffix(&open, 0) && by_suffix(&open, 1),
            "robot {r} did not place on the two cheapest providers: {open}"
        );
    }
    let mut marks: Vec<(String, u64)> = vec![("steady".into(), now_ms())];
    std::thread::sleep(phase);

    marks.push(("kill -9 an active provider".into(), now_ms()));
    providers[0].child.kill()?; // SIGKILL
    std::thread::sleep(phase);

    marks.push(("SIGSTOP an active provider".into(), now_ms()));
    signal(&providers[1].child, "STOP")?;
    std::thread::sleep(phase);
    signal(&providers[1].child, "CONT")?;

    // The standby took over at the first fault, the first spare at the second.
    let write_links = |i: usize, link: &str| -> anyhow::Result<()> {
        std::fs::write(&links, format!("{} {link}\n", providers[i].addr))?;
        Ok(())
    };
    marks.push((
        format!(
            "+{:.0}±{:.0} ms, {:.0}% loss on a link",
            degrade.delay.as_secs_f64() * 1e3,
            degrade.jitter.as_secs_f64() * 1e3,
            degrade.loss * 100.0
        ),
        now_ms(),
    ));
    write_links(2, &args.degrade)?;
    std::thread::sleep(phase);
    std::fs::write(&links, "")?;

    match &netns {
        Some(n) => {
            marks.push(("partition (veth down)".into(), now_ms()));
            n.cut(3, true)?;
            std::thread::sleep(phase);
            n.cut(3, false)?;
        }
        None => {
            marks.push(("partition robot | provider".into(), now_ms()));
            write_links(3, "cut")?;
            std::thread::sleep(phase);
            std::fs::write(&links, "")?;
        }
    }

    marks.push(("healed".into(), now_ms()));
    for (r, (mut robot, _)) in robots.into_iter().enumerate() {
        let Some(child) = robot.0.take() else {
            continue;
        };
        let out = child.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "robot {r} failed");
    }
    let end = now_ms();

    // Stop the live providers cleanly: each prints what its ledger holds.
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    for p in providers.iter_mut().skip(1) {
        signal(&p.child, "INT")?;
        if let Ok(line) = wait_line(&p.lines, "vouchers held:", Duration::from_secs(10)) {
            let micro = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            held.insert(p.did.clone(), micro);
        }
    }

    let mut traces = Vec::new();
    let mut reports = Vec::new();
    for (_, trace, report) in &files {
        traces.push(read_trace(trace)?);
        let text = std::fs::read_to_string(report)
            .with_context(|| format!("cannot read {}", report.display()))?;
        reports.push(serde_json::from_str::<serde_json::Value>(&text)?);
    }
    let mut rows = Vec::new();
    let mut steady_p99 = None;
    for (i, (name, start)) in marks.iter().enumerate() {
        let stop = marks.get(i + 1).map_or(end, |(_, t)| *t);
        // Every robot's samples of one kind in this phase.
        let of_kind = |kind: &'static str| {
            traces
                .iter()
                .flatten()
                .filter(move |s| s.kind == kind && s.t >= *start && s.t < stop)
        };
        let mut latencies: Vec<u64> = of_kind("answer").map(|s| s.value).collect();
        let lost = of_kind("miss").count() as u64;
        let late = latencies
            .iter()
            .filter(|l| **l > args.deadline_ms * 1000)
            .count() as u64;
        let requests = latencies.len() as u64 + lost;
        let p99 = p99_ms(&mut latencies);
        let steady = *steady_p99.get_or_insert(p99);
        // Restored: from the fault to the first sample with k active and a standby again
        // after the session noticed (its first failover in the phase); the slowest robot's.
        // None: no robot failed over.
        let restored_ms = (i > 0 && i < marks.len() - 1)
            .then(|| {
                traces
                    .iter()
                    .filter_map(|samples| {
                        let noticed = samples
                            .iter()
                            .find(|s| s.kind == "failover" && s.t >= *start && s.t < stop)?;
                        let back = samples
                            .iter()
                            .find(|s| s.kind == "active" && s.t >= noticed.t && s.redundant())?;
                        Some(back.t.saturating_sub(*start))
                    })
                    .max()
            })
            .flatten();
        let moved = of_kind("moved").count() as u64;
        rows.push(Row {
            moved,
            phase: name.clone(),
            requests,
            lost,
            late,
            p99_ms: p99,
            p99_vs_steady: if steady > 0.0 { p99 / steady } else { 0.0 },
            restored_ms,
        });
    }
    // Copies per request over every robot's requests.
    let (requests, copies) = reports.iter().fold((0.0, 0.0), |(r, c), report| {
        let n = report["requests"].as_f64().unwrap_or(0.0);
        (
            r + n,
            c + n * report["copies_per_request"].as_f64().unwrap_or(0.0),
        )
    });
    let copies = if requests > 0.0 {
        copies / requests
    } else {
        0.0
    };
    // What every robot signed to each provider, added up.
    let mut signed_by: BTreeMap<String, u64> = BTreeMap::new();
    for report in &reports {
        for line in report["providers"].as_array().into_iter().flatten() {
            let id = line["id"].as_str().unwrap_or("").to_owned();
            *signed_by.entry(id).or_default() += line["robots_signed_micro"].as_u64().unwrap_or(0);
        }
    }
    let mut books = Vec::new();
    let mut agree = true;
    for (id, signed) in signed_by {
        let holds = held.get(&id).copied();
        if holds.is_some_and(|h| h != signed) {
            agree = false;
        }
        books.push(Books {
            provider: id,
            robot_signed_micro: signed,
            provider_holds_micro: holds,
        });
    }
    let result = ChaosReport {
        rows,
        copies_per_request: copies,
        books,
        books_agree: agree,
    };
    print(&result, &args);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn print(r: &ChaosReport, args: &Args) {
    println!();
    println!(
        "== chaos: {} robots, k=2, {} Hz each, deadline {} ms, {} s phases, heartbeats {HEARTBEAT_MS} ms{} ==",
        args.robots,
        args.rate_hz,
        args.deadline_ms,
        args.phase_s,
        if args.netns { ", providers in network namespaces" } else { "" }
    );
    println!(
        "{:<34} {:>8} {:>5} {:>5} {:>9} {:>10} {:>12} {:>6}",
        "phase", "requests", "lost", "late", "p99 ms", "vs steady", "restored ms", "moved"
    );
    for row in &r.rows {
        println!(
            "{:<34} {:>8} {:>5} {:>5} {:>9.2} {:>9.2}× {:>12} {:>6}",
            row.phase,
            row.requests,
            row.lost,
            row.late,
            row.p99_ms,
            row.p99_vs_steady,
            row.restored_ms
                .map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
            row.moved
        );
    }
    println!(
        "copies per request {:.2} (policy: every request to both providers: 2.00)",
        r.copies_per_request
    );
    for b in &r.books {
        let short = &b.provider[b.provider.len().saturating_sub(8)..];
        match b.provider_holds_micro {
            Some(h) => println!(
                "books …{short}: robot signed {} µ, provider holds {h} µ{}",
                b.robot_signed_micro,
                if h == b.robot_signed_micro {
                    ""
                } else {
                    "  MISMATCH"
                }
            ),
            None => println!(
                "books …{short}: robot signed {} µ, provider killed (its ledger died with it)",
                b.robot_signed_micro
            ),
        }
    }
    println!(
        "books of the live providers {}",
        if r.books_agree {
            "agree to the micro-unit"
        } else {
            "DISAGREE"
        }
    );
}
