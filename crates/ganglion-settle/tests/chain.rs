//! The settlement contracts driven from Rust, on both hosts: the embedded EVM (always) and a
//! real anvil node over JSON-RPC. anvil comes from `scripts/contracts-env` (which
//! `scripts/test` runs first and points `GANGLION_ANVIL` at); run alone without it, the anvil
//! half says why it did not run, unless `GANGLION_REQUIRE_ANVIL=1` (set by `scripts/test`)
//! makes that a failure.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ganglion_settle::chain::ChainError;
use ganglion_settle::settle::{ParamsConfig, Role, SkipReason, DEV_DEPLOYER_KEY};
use ganglion_settle::{Address, DeployConfig, Host, Ledger, PayKey, Redeemer, Settlement, Voucher};
use ganglion_types::{MicroTokens, NodeKey};

const TOKEN: u64 = 1_000_000;

fn key(byte: u8) -> PayKey {
    PayKey::from_bytes(&[byte; 32]).expect("key")
}

/// Deploys the contracts from the development deployer, minting to `holders`.
async fn deploy(host: Host, holders: Vec<(Address, MicroTokens)>, treasury: Address) -> Settlement {
    let deployer = PayKey::from_bytes(&DEV_DEPLOYER_KEY).expect("dev key");
    Settlement::deploy(
        host,
        &deployer,
        &DeployConfig {
            holders,
            params: ParamsConfig::defaults(treasury),
            governance: Default::default(),
        },
    )
    .await
    .expect("deploy")
}

struct Anvil {
    child: Child,
    url: String,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn anvil() -> Option<Anvil> {
    let bin = std::env::var("GANGLION_ANVIL").ok();
    let required = std::env::var("GANGLION_REQUIRE_ANVIL").is_ok_and(|v| v == "1");
    let Some(bin) = bin.filter(|b| std::path::Path::new(b).exists()) else {
        assert!(
            !required,
            "GANGLION_REQUIRE_ANVIL=1 but GANGLION_ANVIL does not name an anvil binary"
        );
        eprintln!(
            "SKIPPED the anvil half: GANGLION_ANVIL is not set (scripts/test sets it, after \
             scripts/contracts-env installs anvil)"
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new(bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--chain-id",
            "31337",
            "--silent",
            "--hardfork",
            "cancun",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("anvil starts");
    Some(Anvil {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

async fn connect(url: &str) -> Host {
    for _ in 0..300 {
        if let Ok(host) = Host::rpc(url).await {
            return host;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("anvil did not answer at {url} within 30 s");
}

/// Everything a provider and a robot do on chain, with the sums checked at each step.
async fn settles_end_to_end(host: Host) {
    let deployer = PayKey::from_bytes(&DEV_DEPLOYER_KEY).expect("dev key");
    let (robot, provider, sender, stranger) = (key(1), key(2), key(3), key(4));
    let checkers = [key(5), key(6)];
    let treasury = Address([0x7e; 20]);
    for k in [
        &deployer,
        &robot,
        &provider,
        &sender,
        &stranger,
        &checkers[0],
        &checkers[1],
    ] {
        host.fund_gas(k.address(), alloy_primitives::U256::from(10u128.pow(20)))
            .await
            .expect("gas");
    }
    let holders = vec![
        (deployer.address(), MicroTokens(1_000 * TOKEN)),
        (robot.address(), MicroTokens(50 * TOKEN)),
        (provider.address(), MicroTokens(200 * TOKEN)),
        (checkers[0].address(), MicroTokens(60 * TOKEN)),
        (checkers[1].address(), MicroTokens(60 * TOKEN)),
    ];
    let supply: u64 = holders.iter().map(|(_, v)| v.0).sum();
    let chain = Arc::new(deploy(host, holders, treasury).await);
    let d = chain.deployment().clone();
    // The deployer's eighth transaction creates the escrow: the address the CLI's default
    // voucher domain names, on the embedded chain and on a fresh anvil alike.
    assert_eq!(
        d.escrow.to_string().to_lowercase(),
        ganglion_settle::settle::DEV_ESCROW.to_lowercase()
    );
    let balance = |who: Address| {
        let chain = &chain;
        async move { chain.balance(who).await.expect("balance").0 }
    };
    let held = || async {
        let mut sum = 0;
        for who in [
            deployer.address(),
            robot.address(),
            provider.address(),
            sender.address(),
            checkers[0].address(),
            checkers[1].address(),
            treasury,
            d.escrow,
            d.registry,
        ] {
            sum += balance(who).await;
        }
        sum
    };
    assert_eq!(held().await, supply);

    // The provider binds its node identity and stakes.
    let node = NodeKey::from_seed([9; 32]);
    chain.bind(&node, &provider).await.expect("bind");
    assert_eq!(
        chain.node_of(provider.address()).await.expect("node"),
        Some(*node.id().as_bytes())
    );
    chain
        .stake(&provider, Role::Provider, MicroTokens(100 * TOKEN))
        .await
        .expect("stake");
    let stake = chain.stake_of(provider.address()).await.expect("stake");
    assert_eq!(
        (stake.role, stake.active.0),
        (Some(Role::Provider), 100 * TOKEN)
    );
    // Staking without a binding is refused, with the contract's reason.
    let refused = chain
        .stake(&robot, Role::Checker, MicroTokens(TOKEN))
        .await
        .expect_err("unbound stake");
    assert!(refused.to_string().contains("NotBound"), "{refused}");

    // The robot funds its channel to the provider; more than it has is refused.
    chain
        .deposit(
            &robot,
            robot.address(),
            provider.address(),
            MicroTokens(10 * TOKEN),
        )
        .await
        .expect("deposit");
    let too_much = chain
        .deposit(
            &robot,
            robot.address(),
            provider.address(),
            MicroTokens(100 * TOKEN),
        )
        .await
        .expect_err("over balance");
    assert!(matches!(too_much, ChainError::Reverted(_)), "{too_much}");
    assert!(
        too_much.to_string().contains("ERC20InsufficientBalance"),
        "{too_much}"
    );
    let channel = chain
        .channel(robot.address(), provider.address())
        .await
        .expect("channel");
    assert_eq!(channel.balance.0, 10 * TOKEN);
    assert_eq!(held().await, supply);

    // Vouchers for 1, 2 and 3 tokens on session 7 reach the provider's ledger; one round of
    // the redeemer pays the latest, less the 1% fee.
    let domain = chain.domain();
    let sign = |session, cumulative| {
        Voucher {
            robot: robot.address(),
            provider: provider.address(),
            session,
            cumulative: MicroTokens(cumulative),
        }
        .sign(&robot, &domain)
        .expect("sign")
    };
    let ledger = Arc::new(Mutex::new(Ledger::new(provider.address(), domain)));
    {
        let mut l = ledger.lock().expect("ledger");
        l.open(robot.address(), 7, MicroTokens(10 * TOKEN))
            .expect("open");
        for n in 1..=3 {
            l.answered(robot.address(), 7, MicroTokens(TOKEN))
                .expect("answer");
            l.accept(robot.address(), 7, &sign(7, n * TOKEN))
                .expect("voucher");
        }
    }
    let mut redeemer = Redeemer::new(Arc::clone(&chain), Arc::new(key(3)), Arc::clone(&ledger));
    let before = balance(provider.address()).await;
    let round = redeemer.round().await.expect("round");
    assert_eq!(round.redeemed.len(), 1);
    assert_eq!(round.gross().0, 3 * TOKEN);
    assert_eq!(round.redeemed[0].fee.0, 3 * TOKEN / 100);
    assert_eq!(
        balance(provider.address()).await - before,
        3 * TOKEN - 3 * TOKEN / 100
    );
    assert_eq!(balance(treasury).await, 3 * TOKEN / 100);
    assert!(round.gas_used > 30_000, "gas {}", round.gas_used);
    // Nothing is due twice: the next round sends nothing.
    assert!(ledger.lock().expect("ledger").unsettled().is_empty());
    let next = redeemer.round().await.expect("round");
    assert_eq!((next.transactions, redeemer.totals().transactions), (0, 1));

    // A replayed voucher pays nothing; a forged one and an uncovered one are skipped.
    let replay = chain
        .redeem(&sender, &[sign(7, 2 * TOKEN)])
        .await
        .expect("replay");
    assert!(replay.redeemed.is_empty() && replay.skipped.is_empty());
    // A voucher whose amount was raised after the robot signed it no longer recovers to the
    // robot.
    let mut forged = sign(8, TOKEN);
    forged.voucher.cumulative = MicroTokens(2 * TOKEN);
    let uncovered = sign(9, 50 * TOKEN);
    let skipped = chain
        .redeem(&sender, &[forged, uncovered])
        .await
        .expect("batch");
    assert!(skipped.redeemed.is_empty());
    assert_eq!(
        skipped.skipped.iter().map(|s| s.2).collect::<Vec<_>>(),
        vec![SkipReason::BadSignature, SkipReason::Uncovered]
    );
    assert_eq!(held().await, supply);

    // Two staked checkers slash the provider by 10% for a piece of evidence: one signature
    // is not a quorum, the challenge window must pass, then the stake goes to the treasury.
    for (i, c) in checkers.iter().enumerate() {
        chain
            .bind(&NodeKey::from_seed([20 + i as u8; 32]), c)
            .await
            .expect("bind checker");
        chain
            .stake(c, Role::Checker, MicroTokens(50 * TOKEN))
            .await
            .expect("stake checker");
    }
    let evidence = ganglion_settle::eip712::keccak256(b"the evidence file");
    let deadline = chain.host().now().await.expect("now") + 3_600;
    let digest = chain.slash_digest(provider.address(), evidence, 1_000, deadline);
    let on_chain = chain
        .host()
        .call(
            d.slashing,
            alloy_sol_types::SolCall::abi_encode(
                &ganglion_settle::contracts::Slashing::slashDigestCall {
                    provider: alloy_primitives::Address::from(provider.address().0),
                    evidenceHash: evidence.into(),
                    fraction: alloy_primitives::U256::from(1_000),
                    deadline,
                },
            ),
        )
        .await
        .expect("digest");
    assert_eq!(
        on_chain.as_ref(),
        &digest[..],
        "the Rust slash digest is the contract's"
    );
    let signatures: Vec<_> = checkers
        .iter()
        .map(|c| {
            (
                c.address(),
                chain
                    .sign_slash(c, provider.address(), evidence, 1_000, deadline)
                    .expect("sign"),
            )
        })
        .collect();
    let alone = chain
        .propose_slash(
            &sender,
            provider.address(),
            evidence,
            1_000,
            deadline,
            &signatures[..1],
        )
        .await
        .expect_err("one checker");
    assert!(alone.to_string().contains("NoQuorum"), "{alone}");
    let id = chain
        .propose_slash(
            &sender,
            provider.address(),
            evidence,
            1_000,
            deadline,
            &signatures,
        )
        .await
        .expect("propose");
    let early = chain.execute_slash(&sender, id).await.expect_err("window");
    assert!(early.to_string().contains("InChallengeWindow"), "{early}");
    let (from, _) = chain.slash_window(id).await.expect("window");
    let now = chain.host().now().await.expect("now");
    chain.host().advance(from - now + 1).await.expect("advance");
    let treasury_before = balance(treasury).await;
    let taken = chain.execute_slash(&sender, id).await.expect("execute");
    assert_eq!(taken.0, 10 * TOKEN);
    assert_eq!(balance(treasury).await - treasury_before, 10 * TOKEN);
    let stake = chain.stake_of(provider.address()).await.expect("stake");
    assert_eq!(stake.active.0, 90 * TOKEN);
    assert_eq!(held().await, supply);

    // The robot takes the rest back after the withdrawal delay.
    let rest = chain
        .channel(robot.address(), provider.address())
        .await
        .expect("channel")
        .balance;
    assert_eq!(rest.0, 7 * TOKEN);
    chain
        .request_withdrawal(&robot, provider.address(), rest)
        .await
        .expect("request");
    let early = chain
        .withdraw(&robot, provider.address())
        .await
        .expect_err("early");
    assert!(early.to_string().contains("TooEarly"), "{early}");
    chain.host().advance(2 * 86_400 + 1).await.expect("advance");
    let robot_before = balance(robot.address()).await;
    chain
        .withdraw(&robot, provider.address())
        .await
        .expect("withdraw");
    assert_eq!(balance(robot.address()).await - robot_before, 7 * TOKEN);
    assert_eq!(balance(d.escrow).await, 0);
    assert_eq!(held().await, supply);
}

#[tokio::test]
async fn the_embedded_chain_settles_end_to_end() {
    settles_end_to_end(Host::embedded()).await;
}

#[tokio::test]
async fn an_anvil_node_settles_end_to_end() {
    let Some(anvil) = anvil() else { return };
    let host = connect(&anvil.url).await;
    assert_eq!(host.chain_id(), 31_337);
    settles_end_to_end(host).await;
}

#[tokio::test]
async fn the_embedded_chain_survives_in_its_state_file() {
    let dir = std::env::temp_dir().join(format!("ganglion-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("chain.json");
    let _ = std::fs::remove_file(&path);
    let deployer = PayKey::from_bytes(&DEV_DEPLOYER_KEY).expect("key");
    let robot = key(1);
    let deployment = {
        let chain = deploy(
            Host::embedded_at(&path).expect("open"),
            vec![(robot.address(), MicroTokens(5 * TOKEN))],
            Address([0x7e; 20]),
        )
        .await;
        chain
            .transfer(&robot, deployer.address(), MicroTokens(TOKEN))
            .await
            .expect("transfer");
        chain.deployment().clone()
    };
    // A later process opens the same file and finds the contracts and the balances.
    let chain = Settlement::at(Host::embedded_at(&path).expect("reopen"), deployment)
        .await
        .expect("at");
    assert_eq!(
        chain.balance(robot.address()).await.expect("balance").0,
        4 * TOKEN
    );
    assert_eq!(
        chain.balance(deployer.address()).await.expect("balance").0,
        TOKEN
    );
    // One process at a time: a second user of the file is refused while the first holds it.
    let busy = Host::embedded_at(&path).expect_err("in use");
    assert!(
        busy.to_string().contains("in use by another process"),
        "{busy}"
    );
    drop(chain);
    // A file that is not a chain is refused with a reason, not a panic.
    std::fs::write(&path, b"{\"chain_id\": 1").expect("write");
    let err = Host::embedded_at(&path).expect_err("garbage");
    assert!(
        err.to_string().contains("not an embedded chain state"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// More sessions than one batch holds go out in several transactions; vouchers the escrow
/// had already paid (an earlier round whose answer was lost) pay nothing in the batch and are
/// booked from its storage, and the totals still add up to what the provider received.
#[tokio::test]
async fn the_redeemer_splits_batches_and_books_what_was_paid_behind_its_back() {
    let (robot, provider) = (key(1), key(2));
    let chain = Arc::new(
        deploy(
            Host::embedded(),
            vec![(robot.address(), MicroTokens(10 * TOKEN))],
            Address([0x7e; 20]),
        )
        .await,
    );
    chain
        .deposit(
            &robot,
            robot.address(),
            provider.address(),
            MicroTokens(10 * TOKEN),
        )
        .await
        .expect("deposit");
    let domain = chain.domain();
    let ledger = Arc::new(Mutex::new(Ledger::new(provider.address(), domain)));
    let sessions: Vec<u64> = (1..=130).collect();
    let mut vouchers = Vec::new();
    {
        let mut l = ledger.lock().expect("ledger");
        for &s in &sessions {
            l.open(robot.address(), s, MicroTokens(TOKEN))
                .expect("open");
            l.answered(robot.address(), s, MicroTokens(1_000))
                .expect("answer");
            let v = Voucher {
                robot: robot.address(),
                provider: provider.address(),
                session: s,
                cumulative: MicroTokens(1_000),
            }
            .sign(&robot, &domain)
            .expect("sign");
            l.accept(robot.address(), s, &v).expect("voucher");
            vouchers.push(v);
        }
    }
    // Ten of them were redeemed by someone else before the provider's round.
    chain.redeem(&robot, &vouchers[..10]).await.expect("early");
    let mut redeemer = Redeemer::new(Arc::clone(&chain), Arc::new(key(2)), Arc::clone(&ledger));
    let round = redeemer.round().await.expect("round");
    assert_eq!(round.redeemed.len(), 120);
    assert_eq!(round.transactions, 2, "130 vouchers, at most 100 a batch");
    let t = redeemer.totals().clone();
    assert_eq!((t.vouchers, t.found_paid), (130, 10));
    assert_eq!(t.paid.0, 130_000);
    assert_eq!(t.fees.0, 130 * 10);
    let received = chain.balance(provider.address()).await.expect("balance").0;
    assert_eq!(received, t.paid.0 - t.fees.0);
    assert!(ledger.lock().expect("ledger").unsettled().is_empty());
    // A voucher its channel cannot cover is skipped once, then not sent again every round.
    {
        let mut l = ledger.lock().expect("ledger");
        l.open(robot.address(), 500, MicroTokens(20 * TOKEN))
            .expect("open");
        l.answered(robot.address(), 500, MicroTokens(20 * TOKEN))
            .expect("answer");
        let v = Voucher {
            robot: robot.address(),
            provider: provider.address(),
            session: 500,
            cumulative: MicroTokens(20 * TOKEN),
        }
        .sign(&robot, &domain)
        .expect("sign");
        l.accept(robot.address(), 500, &v).expect("voucher");
    }
    redeemer.round().await.expect("round");
    assert_eq!(
        (redeemer.totals().uncovered, redeemer.totals().transactions),
        (1, 3)
    );
    let again = redeemer.round().await.expect("round");
    assert_eq!(
        again.transactions, 0,
        "a skipped voucher waits before it is sent again"
    );
    assert_eq!(
        ledger.lock().expect("ledger").unsettled().len(),
        1,
        "it stays due"
    );
}
