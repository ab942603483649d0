//! The `ganglion` binary as a user runs it: the devnet, and providers and a robot as separate
//! processes with a provider killed by SIGKILL in the middle.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // tests read the clock to bound waits

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The tests that start many nodes measure deadlines: run them one at a time under `cargo test`
/// too (nextest runs them in their own group, see `.config/nextest.toml`).
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ganglion() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ganglion"))
}

fn read_report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The run succeeded, made at least `min_requests` requests, and every one was answered.
fn every_request_answered(
    out: &std::process::Output,
    json: &std::path::Path,
    min_requests: u64,
) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = read_report(json);
    let requests = report["requests"].as_u64().unwrap();
    assert!(requests >= min_requests, "{report}");
    assert_eq!(report["answered"].as_u64(), Some(requests), "{report}");
    report
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ganglion-test-{}-{name}", std::process::id()))
}

#[test]
fn devnet_answers_every_request_while_a_provider_is_killed() {
    let _heavy = heavy();
    let json = temp_path("devnet.json");
    let out = ganglion()
        .args([
            "devnet",
            "--providers",
            "4",
            "--robots",
            "2",
            "--rate-hz",
            "8",
            "--duration-s",
            "4",
        ])
        .args([
            "--kill-after-s",
            "2",
            "--deadline-ms",
            "200",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let report = every_request_answered(&out, &json, 50);
    assert_eq!(report["deadline_misses"].as_u64(), Some(0), "{report}");
    assert_eq!(report["providers_killed"].as_u64(), Some(1), "{report}");
    // Robot 0 used the killed provider: it failed over to a spare.
    assert!(report["failovers"].as_u64().unwrap() >= 1, "{report}");
    let p99 = report["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 <= 200.0, "{report}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("== ganglion report =="), "{text}");
    settled_exactly(&report);
    let _ = std::fs::remove_file(json);
}

/// The devnet's settlement: every voucher the providers hold was redeemed on chain, and the
/// channels, the providers' and the treasury's balances moved by exactly that.
fn settled_exactly(report: &serde_json::Value) {
    let s = &report["settlement"];
    assert_eq!(s["exact"].as_bool(), Some(true), "{s}");
    let held = report["vouchers_held_micro"].as_u64().unwrap();
    assert!(held > 0, "{report}");
    assert_eq!(s["vouchers_micro"].as_u64(), Some(held), "{s}");
    assert_eq!(s["redeemed_micro"].as_u64(), Some(held), "{s}");
    let fees = s["fees_micro"].as_u64().unwrap();
    assert_eq!(s["to_providers_micro"].as_u64(), Some(held - fees), "{s}");
    let deposited = s["deposited_micro"].as_u64().unwrap();
    assert_eq!(
        s["left_in_channels_micro"].as_u64(),
        Some(deposited - held),
        "{s}"
    );
    let gained: i64 = s["balances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["who"].as_str().unwrap().starts_with("provider"))
        .map(|b| b["change_micro"].as_i64().unwrap())
        .sum();
    assert_eq!(gained, (held - fees) as i64, "{s}");
    assert!(s["gas_used"].as_u64().unwrap() > 0, "{s}");
}

/// The same devnet settling on a real anvil node over JSON-RPC instead of the embedded EVM
/// (`scripts/test` installs anvil and names it in GANGLION_ANVIL; without it, this says why it
/// did not run, and `GANGLION_REQUIRE_ANVIL=1` makes that a failure).
#[test]
fn devnet_settles_on_an_anvil_node_too() {
    let Ok(anvil) = std::env::var("GANGLION_ANVIL") else {
        assert!(
            std::env::var("GANGLION_REQUIRE_ANVIL").as_deref() != Ok("1"),
            "GANGLION_REQUIRE_ANVIL=1 but GANGLION_ANVIL is not set"
        );
        eprintln!("SKIPPED: GANGLION_ANVIL is not set (scripts/test sets it)");
        return;
    };
    let _heavy = heavy();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _node = Proc(
        Command::new(anvil)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--chain-id", "31337", "--silent", "--hardfork", "cancun"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "anvil did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let json = temp_path("devnet-anvil.json");
    let out = ganglion()
        .args([
            "devnet",
            "--providers",
            "3",
            "--robots",
            "1",
            "--checkers",
            "0",
        ])
        .args([
            "--rate-hz",
            "8",
            "--duration-s",
            "3",
            "--redeem-every-s",
            "1",
        ])
        .args(["--chain-rpc", &url, "--quiet", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let report = every_request_answered(&out, &json, 20);
    assert!(
        report["settlement"]["chain"]
            .as_str()
            .unwrap()
            .contains(&url),
        "{report}"
    );
    settled_exactly(&report);
    let _ = std::fs::remove_file(json);
}

#[test]
fn devnet_rejects_impossible_settings_with_a_reason() {
    for (args, needle) in [
        (&["--redundancy", "9"][..], "--redundancy"),
        (&["--rate-hz", "0"][..], "--rate-hz"),
        (&["--deadline-ms", "0"][..], "--deadline-ms"),
        (&["--model", "nope"][..], "nope"),
        (&["--redeem-every-s", "0"][..], "--redeem-every-s"),
        (
            &["--chain-rpc", "https://example.invalid"][..],
            "https is not supported",
        ),
        (
            &["--chain-rpc", "http://127.0.0.1:1"][..],
            "cannot reach the chain node",
        ),
    ] {
        let out = ganglion().arg("devnet").args(args).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Robots that need a GPU are placed only on providers that have one: on a machine without a
/// GPU the devnet says why no placement exists; on one with a GPU the sessions are placed.
#[test]
fn devnet_places_gpu_sessions_only_on_gpu_providers() {
    let _heavy = heavy();
    let out = ganglion()
        .args([
            "devnet",
            "--accelerator",
            "gpu",
            "--duration-s",
            "1",
            "--quiet",
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if ganglion_runtime::accel::Gpus::detect()
        .accelerators()
        .is_empty()
    {
        assert!(!out.status.success());
        assert!(err.contains("none has a gpu accelerator"), "{err}");
    } else {
        assert!(out.status.success(), "{err}");
    }
    let bad = ganglion()
        .args(["devnet", "--accelerator", "tpu"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("datacenter-gpu"));
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ganglion provider` on a free port asking `price` per answer, joining through
/// `bootstrap` (none: it is the first node), and returns it with its control-plane address.
fn start_provider(price: u32, bootstrap: Option<&str>) -> (Proc, String) {
    let mut cmd = ganglion();
    cmd.args([
        "provider",
        "--listen",
        "127.0.0.1:0",
        "--heartbeat-ms",
        "500",
    ])
    .args(["--price", &price.to_string()])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(boot) = bootstrap {
        cmd.args(["--bootstrap", boot]);
    }
    let mut child = Proc(cmd.spawn().unwrap());
    let rx = lines(&mut child.0);
    let control = wait_for(&rx, "control plane:", Duration::from_secs(60));
    wait_for(&rx, "robots can use it with", Duration::from_secs(10));
    let control = control.trim_start_matches("control plane: ").to_owned();
    (child, control)
}

/// Three providers and a robot as separate processes that find each other through one
/// bootstrap address only: the robot places its session from its own view (the two cheapest,
/// then the third as a spare), and a SIGKILLed provider costs it no request.
#[test]
fn separate_processes_find_each_other_and_survive_a_sigkilled_provider() {
    let _heavy = heavy();
    let first = start_provider(100, None);
    let boot = first.1.clone();
    let mut providers = vec![first];
    for price in [110, 120] {
        providers.push(start_provider(price, Some(&boot)));
    }
    let json = temp_path("robot.json");
    // The robot ends by itself after its run; a failed assertion leaves it to do so.
    let mut robot = ganglion()
        .args(["robot", "--bootstrap", &boot, "--heartbeat-ms", "500"])
        .args([
            "--rate-hz",
            "10",
            "--duration-s",
            "4",
            "--deadline-ms",
            "300",
        ])
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let robot_lines = lines(&mut robot);
    let placed = wait_for(&robot_lines, "placed on", Duration::from_secs(20));
    assert!(placed.contains("spares: 1"), "{placed}");
    wait_for(&robot_lines, "robot session open", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1_000));
    // SIGKILL the cheapest provider: it is in the robot's active pair.
    providers[0].0 .0.kill().unwrap();
    let out = robot.wait_with_output().unwrap();
    let report = every_request_answered(&out, &json, 30);
    assert_eq!(report["failovers"].as_u64(), Some(1), "{report}");
    let spare = &report["providers"][2];
    assert!(
        spare["answers_won"].as_u64().unwrap() > 0,
        "the spare took over: {report}"
    );
    providers.clear();
    let _ = std::fs::remove_file(json);
}

#[test]
fn a_robot_with_nowhere_to_go_says_so() {
    let out = ganglion()
        .args(["robot", "--duration-s", "1"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--bootstrap"), "{err}");
}

#[test]
fn keys_are_created_once_and_shown() {
    let path = temp_path("node.key");
    let _ = std::fs::remove_file(&path);
    let out = ganglion()
        .args(["keys", "new", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let did = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(did.starts_with("did:key:z6Mk"), "{did}");
    let shown = ganglion()
        .args(["keys", "show", "--key"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), did);
    let again = ganglion()
        .args(["keys", "new", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "an existing key must never be overwritten"
    );
    std::fs::write(&path, "garbage").unwrap();
    let bad = ganglion()
        .args(["keys", "show", "--key"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a Ganglion key file"));
    let _ = std::fs::remove_file(path);
}

#[test]
fn sim_prints_a_table_json_and_a_chart() {
    let svg = temp_path("sim.svg");
    let small = [
        "sim", "--robots", "400", "--gpus", "5000", "--hours", "2", "--svg",
    ];
    let out = ganglion()
        .args(small)
        .arg(&svg)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = results["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 40, "8 strategies × 5 lines");
    assert!(rows.iter().any(|r| r["strategy"] == "central cloud"));
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("ganglion k=2"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("placing sessions"), "progress: {stderr}");

    let table = ganglion().args(&small[..7]).output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("nearest only") && text.contains("target (k=2"),
        "{text}"
    );

    for (flag, value) in [("--uptime", "1.5"), ("--hours", "0"), ("--robots", "0")] {
        let out = ganglion().args(["sim", flag, value]).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{flag}: {err}");
    }
}

/// Reads lines from a child's stdout on a thread, so that a test can wait for one.
fn lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for(rx: &std::sync::mpsc::Receiver<String>, what: &str, limit: Duration) -> String {
    let start = std::time::Instant::now();
    loop {
        let left = limit
            .checked_sub(start.elapsed())
            .unwrap_or_else(|| panic!("no {what:?} within {limit:?}"));
        if let Ok(line) = rx.recv_timeout(left) {
            if line.contains(what) {
                return line;
            }
        }
    }
}

/// Five processes on loopback: two watchers and providers that find each other through one
/// bootstrap address; a provider killed with SIGKILL leaves both views within three heartbeat
/// intervals, and comes back when restarted.
#[test]
fn providers_and_watchers_find_each_other_and_notice_a_killed_provider() {
    let _heavy = heavy();
    let beat = ["--heartbeat-ms", "500"];
    let mut first = Proc(
        ganglion()
            .args(["watch"])
            .args(beat)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let first_lines = lines(&mut first.0);
    let boot = wait_for(&first_lines, "control plane:", Duration::from_secs(10));
    let boot = boot.trim_start_matches("control plane: ").to_owned();
    let key = temp_path("watched-provider.key");
    let _ = std::fs::remove_file(&key);
    let provider = |key: Option<&std::path::Path>| {
        let mut cmd = ganglion();
        cmd.args(["provider", "--listen", "127.0.0.1:0", "--bootstrap", &boot])
            .args(beat)
            .stdout(Stdio::piped());
        if let Some(key) = key {
            cmd.arg("--key").arg(key);
        }
        Proc(cmd.spawn().unwrap())
    };
    let gen = ganglion()
        .args(["keys", "new", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(gen.status.success());
    let mut victim = provider(Some(&key));
    let victim_lines = lines(&mut victim.0);
    let did = wait_for(&victim_lines, "provider did:key", Duration::from_secs(60));
    let did = did.split_whitespace().nth(1).unwrap().to_owned();
    let _other = provider(None);
    let mut second = Proc(
        ganglion()
            .args(["watch", "--bootstrap", &boot])
            .args(beat)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let second_lines = lines(&mut second.0);
    for rx in [&first_lines, &second_lines] {
        wait_for(rx, &format!("+ {did}"), Duration::from_secs(20));
    }
    victim.0.kill().unwrap(); // SIGKILL
    let _ = victim.0.wait();
    for rx in [&first_lines, &second_lines] {
        wait_for(
            rx,
            &format!("- {did}"),
            Duration::from_millis(1_500 + 3_000),
        );
    }
    // A (re)started provider's offer reaches every node within 2 s of its start-up line.
    let mut back = provider(Some(&key));
    let back_lines = lines(&mut back.0);
    wait_for(&back_lines, "provider did:key", Duration::from_secs(60));
    let started = std::time::Instant::now();
    for rx in [&first_lines, &second_lines] {
        wait_for(rx, &format!("+ {did}"), Duration::from_secs(2));
    }
    eprintln!(
        "restarted provider in every view after {:?}",
        started.elapsed()
    );
}

/// The chaos suite, short: provider and robot processes; a provider SIGKILLed, one frozen, a
/// degraded link and a partition (emulated at the robot's UDP layer). With k = 2 and a warm
/// standby no request is lost, redundancy comes back after every fault that cost a provider,
/// hedging sends exactly the copies its policy says, and the live providers hold vouchers for
/// exactly what the robot signed.
#[test]
fn chaos_loses_no_request_and_the_books_agree() {
    chaos_run(&[]);
}

/// The same with every provider in a network namespace of its own and a real partition (its
/// veth down). Needs root and iproute2, as CI has: the harness says so when it cannot.
#[test]
fn chaos_across_network_namespaces_loses_no_request_through_a_real_partition() {
    let report = chaos_run(&["--netns"]);
    let partition = &report["rows"].as_array().unwrap()[4];
    assert_eq!(partition["phase"], "partition (veth down)", "{report}");
    // No namespace or bridge is left behind.
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.contains("gchaos"), "namespaces left behind: {left}");
}

fn chaos_run(extra: &[&str]) -> serde_json::Value {
    let _heavy = heavy();
    let json = temp_path(&format!("chaos{}.json", extra.len()));
    let out = ganglion()
        .args(["chaos", "--phase-s", "2.5", "--json"])
        .arg(&json)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = read_report(&json);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{report}");
    for row in rows {
        assert!(row["requests"].as_u64().unwrap() >= 30, "{report}");
        assert_eq!(row["lost"].as_u64(), Some(0), "{report}");
    }
    // The kill and the freeze each cost the session a provider; it is whole again in-phase.
    for row in &rows[1..3] {
        let restored = row["restored_ms"].as_u64();
        assert!(restored.is_some_and(|ms| ms < 2_500), "{report}");
    }
    // Hedging adds no more load than its policy (both providers); a request sent in the
    // moment between a provider's death and the standby's promotion goes to one.
    let copies = report["copies_per_request"].as_f64().unwrap();
    assert!(copies <= 2.0 && copies > 1.9, "{report}");
    assert_eq!(report["books_agree"].as_bool(), Some(true), "{report}");
    let _ = std::fs::remove_file(json);
    report
}

/// The devnet's checkers: provider 1 answers wrong on half its requests and provider 0 is
/// killed halfway; robot 0's reputation flags the one for wrong results and the other as
/// down, excludes both, and leaves the honest ones alone; the probes are paid and the books
/// still agree; the evidence the checkers wrote re-checks from the command line.
#[test]
fn devnet_checkers_flag_a_wrong_provider_and_a_dead_one_and_their_evidence_rechecks() {
    let _heavy = heavy();
    let json = temp_path("devnet-checkers.json");
    let evidence = temp_path("evidence");
    let _ = std::fs::remove_dir_all(&evidence);
    let out = ganglion()
        .args([
            "devnet",
            "--providers",
            "4",
            "--robots",
            "2",
            "--rate-hz",
            "10",
        ])
        .args([
            "--duration-s",
            "6",
            "--kill-after-s",
            "2",
            "--deadline-ms",
            "200",
        ])
        .args(["--misbehave-wrong", "0.5", "--quiet", "--evidence"])
        .arg(&evidence)
        // The dead provider and the wrong one are both among every robot's two cheapest, and
        // the kill may land just as the wrong one is excluded: k=2 survives one loss at a time,
        // so a third provider per session keeps every request answered through both.
        .args(["--redundancy", "3"])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let report = every_request_answered(&out, &json, 50);
    let ids: Vec<String> = report["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    let standing = |id: &str| {
        report["reputation"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no reputation for {id}: {report}"))
            .clone()
    };
    let dead = standing(&ids[0]);
    assert_eq!(dead["down"].as_bool(), Some(true), "{report}");
    assert_eq!(dead["excluded"].as_bool(), Some(true), "{report}");
    let wrong = standing(&ids[1]);
    assert_eq!(wrong["wrong_results"].as_bool(), Some(true), "{report}");
    assert_eq!(wrong["excluded"].as_bool(), Some(true), "{report}");
    // Both staked checkers re-ran the evidence and signed: the wrong provider, and only it,
    // lost the most one slash may take (10% of its 100-token stake) to the treasury.
    settled_exactly(&report);
    let slashes = report["settlement"]["slashes"].as_array().unwrap();
    assert_eq!(slashes.len(), 1, "{report}");
    let short = &ids[1][ids[1].len() - 8..];
    assert!(
        slashes[0]["provider"].as_str().unwrap().contains(short),
        "{report}"
    );
    assert_eq!(
        slashes[0]["taken_micro"].as_u64(),
        Some(10_000_000),
        "{report}"
    );
    assert_eq!(slashes[0]["signers"].as_u64(), Some(2), "{report}");
    for id in &ids[2..] {
        let honest = standing(id);
        assert_eq!(honest["excluded"].as_bool(), Some(false), "{report}");
        assert_eq!(
            honest["location"].as_str(),
            Some("location consistent"),
            "{report}"
        );
    }
    assert_eq!(report["checkers"].as_array().unwrap().len(), 2, "{report}");
    assert!(report["sampled"].as_u64().unwrap() > 0, "{report}");
    let robots = report["spent_micro"].as_u64().unwrap();
    let checkers = report["checkers_spent_micro"].as_u64().unwrap();
    assert!(checkers > 0, "{report}");
    // The ledgers are read from the devnet's memory. Every live provider holds exactly what
    // was signed to it. The killed one may have died with the last voucher of each payer
    // (two robots, two checkers) still on its way, each for at most the market's top price
    // (the devnet's `market::MAX_PRICE`).
    const TOP_PRICE_MICRO: u64 = 1_000;
    let (mut signed_total, mut held) = (0, 0);
    for line in report["providers"].as_array().unwrap() {
        let signed = line["robots_signed_micro"].as_u64().unwrap();
        let holds = line["vouchers_held_micro"].as_u64().unwrap();
        signed_total += signed;
        held += holds;
        if line["killed"].as_bool() == Some(true) {
            assert!(holds <= signed, "{report}");
            assert!(signed - holds <= 4 * TOP_PRICE_MICRO, "{report}");
        } else {
            assert_eq!(holds, signed, "{report}");
        }
    }
    assert_eq!(
        report["vouchers_held_micro"].as_u64(),
        Some(held),
        "{report}"
    );
    assert_eq!(signed_total, robots + checkers, "{report}");
    let file = std::fs::read_dir(&evidence)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "evidence"))
        .expect("an evidence file");
    let recheck = ganglion()
        .args(["checker", "--model", "blazeface", "--recheck"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&recheck.stdout);
    assert!(recheck.status.success(), "{text}");
    assert!(text.contains("the provider's answer is wrong"), "{text}");
    // Cut short, the evidence is refused with a reason.
    let bytes = std::fs::read(&file).unwrap();
    let cut = temp_path("cut.evidence");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let refused = ganglion()
        .args(["checker", "--recheck"])
        .arg(&cut)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not evidence"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let _ = std::fs::remove_dir_all(&evidence);
    let _ = std::fs::remove_file(json);
    let _ = std::fs::remove_file(cut);
}

/// `ganglion checker` as its own process: it joins through a provider process, probes it, and
/// says what it measured and what the network concluded; without a place or a network it says
/// what is missing.
#[test]
fn a_checker_process_probes_a_provider_process_and_reports_it_up() {
    let _heavy = heavy();
    let beat = ["--heartbeat-ms", "500"];
    let mut provider = Proc(
        ganglion()
            .args(["provider", "--listen", "127.0.0.1:0", "--price", "0"])
            .args(beat)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let provider_lines = lines(&mut provider.0);
    let boot = wait_for(&provider_lines, "control plane:", Duration::from_secs(60));
    let boot = boot.trim_start_matches("control plane: ").to_owned();
    let out = ganglion()
        .args(["checker", "--at", "48.857,2.352", "--listen", "127.0.0.1:0"])
        .args([
            "--bootstrap",
            &boot,
            "--status-every-s",
            "1",
            "--duration-s",
            "5",
        ])
        .args(beat)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("checker did:key:"), "{text}");
    // Its own window says the provider is up and answers; one checker alone flags nothing.
    let last = text
        .lines()
        .rev()
        .find(|l| l.contains(": UP up"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        last.contains("rtt min") && !last.contains("excluded"),
        "{last}"
    );
    for (args, needle) in [
        (vec!["checker", "--bootstrap", &boot], "--at"),
        (vec!["checker", "--at", "48.8,2.3"], "--bootstrap"),
        (vec!["checker", "--at", "200,2"], "latitude"),
    ] {
        let out = ganglion().args(&args).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

fn run_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = ganglion().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ganglion {:?}: {}{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_err<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = ganglion().args(args).output().unwrap();
    assert!(!out.status.success(), "ganglion {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first "tokens" line `ganglion balance` printed, in micro-tokens.
fn tokens_in(balance: &str) -> u64 {
    let line = balance
        .lines()
        .find(|l| l.starts_with("tokens"))
        .unwrap_or_else(|| panic!("no tokens line in {balance}"));
    let text = line.trim_start_matches("tokens").trim();
    text.parse::<ganglion_types::MicroTokens>().unwrap().0
}

/// The settlement commands on the embedded chain kept in a state file, with a provider and a
/// robot as separate processes in between: deploy, bind and stake, fund a channel, serve paid
/// requests, write the vouchers out, redeem them (a second time pays nothing), and the
/// balances show exactly the vouchers less the 1% fee.
#[test]
fn deploy_stake_deposit_serve_redeem_and_balance_from_the_cli() {
    let _heavy = heavy();
    let dir = temp_path("chain");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (state, deployment) = (path("chain.json"), path("deployment.json"));
    let chain = [
        "--chain-state",
        state.as_str(),
        "--deployment",
        deployment.as_str(),
    ];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().chain(&chain).map(|a| (*a).to_owned()).collect()
    };
    for who in ["provider", "robot"] {
        run_ok(&["keys", "new", "--out", &path(&format!("{who}.key"))]);
    }
    let pay = |who: &str| {
        run_ok(&[
            "keys",
            "show",
            "--key",
            &path(&format!("{who}.key")),
            "--pay-address",
        ])
        .trim()
        .to_owned()
    };
    let (provider, robot) = (pay("provider"), pay("robot"));
    let deployed = run_ok(&with(&[
        "deploy",
        "--mint",
        &format!("{provider}=200"),
        "--mint",
        &format!("{robot}=50"),
    ]));
    assert!(
        deployed
            .to_lowercase()
            .contains(&ganglion_settle::settle::DEV_ESCROW.to_lowercase()),
        "the escrow lands where the voucher domain's default says: {deployed}"
    );
    // A second deployment never overwrites the record of the first.
    assert!(run_err(&with(&["deploy", "--mint", &format!("{robot}=1")])).contains("exists"));

    let staked = run_ok(&with(&[
        "stake",
        "--key",
        &path("provider.key"),
        "--role",
        "provider",
        "--amount",
        "100",
    ]));
    assert!(
        staked.contains("bound") && staked.contains("100.000000 as provider"),
        "{staked}"
    );
    let deposited = run_ok(&with(&[
        "deposit",
        "--key",
        &path("robot.key"),
        "--provider",
        &provider,
        "--amount",
        "10",
    ]));
    assert!(deposited.contains(": 10.000000"), "{deposited}");
    let refused = run_err(&with(&[
        "deposit",
        "--key",
        &path("robot.key"),
        "--provider",
        &provider,
        "--amount",
        "1000",
    ]));
    assert!(refused.contains("ERC20InsufficientBalance"), "{refused}");

    // The provider serves paid requests and writes its vouchers out when stopped.
    let vouchers = path("vouchers.json");
    let mut server = Proc(
        ganglion()
            .args(["provider", "--listen", "127.0.0.1:0", "--price", "1000"])
            .args(["--key", &path("provider.key"), "--vouchers-out", &vouchers])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rx = lines(&mut server.0);
    let line = wait_for(&rx, "robots can use it with", Duration::from_secs(60));
    let at = line.rsplit(' ').next().unwrap().to_owned();
    let json = path("robot-report.json");
    let out = ganglion()
        .args(["robot", "--provider", &at, "--redundancy", "1"])
        .args([
            "--rate-hz",
            "10",
            "--duration-s",
            "2",
            "--deadline-ms",
            "500",
        ])
        .args(["--key", &path("robot.key"), "--json", &json])
        .output()
        .unwrap();
    let report = every_request_answered(&out, std::path::Path::new(&json), 10);
    let spent = report["spent_micro"].as_u64().unwrap();
    assert!(spent >= 10_000, "{report}");
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(&rx, "not yet redeemed written", Duration::from_secs(10));
    let held = wait_for(&rx, "vouchers held:", Duration::from_secs(10));
    let held: u64 = held
        .trim_start_matches("vouchers held: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(held, spent, "the provider holds what the robot signed");
    drop(server);

    let redeemed = run_ok(&with(&[
        "redeem",
        "--key",
        &path("robot.key"),
        "--vouchers",
        &vouchers,
    ]));
    assert!(redeemed.contains("paid      session"), "{redeemed}");
    let again = run_ok(&with(&[
        "redeem",
        "--key",
        &path("robot.key"),
        "--vouchers",
        &vouchers,
    ]));
    assert!(again.contains("were paid before"), "{again}");
    let fee = held / 100;
    let balance = run_ok(&with(&["balance", "--key", &path("provider.key")]));
    assert_eq!(tokens_in(&balance), 100_000_000 + held - fee, "{balance}");
    assert!(balance.contains("100.000000 as provider"), "{balance}");
    let channel = run_ok(&with(&[
        "balance",
        "--key",
        &path("robot.key"),
        "--channel-to",
        &provider,
    ]));
    let left = channel.lines().find(|l| l.starts_with("channel")).unwrap();
    assert!(
        left.ends_with(&ganglion_types::MicroTokens(10_000_000 - held).to_string()),
        "{channel}"
    );
    // Bad input is refused with a reason: an unknown deployment, a garbled vouchers file.
    let missing = run_err(&[
        "balance",
        &robot,
        "--chain-state",
        &state,
        "--deployment",
        &path("none.json"),
    ]);
    assert!(missing.contains("run `ganglion deploy` first"), "{missing}");
    std::fs::write(path("garbage.json"), b"[{\"voucher\": 1}]").unwrap();
    let garbled = run_err(&with(&[
        "redeem",
        "--key",
        &path("robot.key"),
        "--vouchers",
        &path("garbage.json"),
    ]));
    assert!(garbled.contains("is not valid"), "{garbled}");
    let not_evidence = run_err(&with(&[
        "slash",
        "sign",
        "--key",
        &path("robot.key"),
        "--evidence",
        &path("garbage.json"),
        "--provider",
        &provider,
        "--deadline",
        "4000000000",
    ]));
    assert!(not_evidence.contains("is not evidence"), "{not_evidence}");
    let _ = std::fs::remove_dir_all(&dir);
}
