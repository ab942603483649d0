//! Pay per answer over real sessions: robots sign a cumulative voucher after every answer,
//! providers keep the latest, and the two sets of books agree to the micro-unit; a robot that
//! stops paying is cut off; bad terms and bad vouchers are refused and counted.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests read the clock and unwrap

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_client::{Payment, ProviderAddr, RequestError, Session, SessionConfig};
use ganglion_net::{clock, Endpoint, TransportConfig};
use ganglion_node::{EchoService, PayConfig, Provider, ProviderStats};
use ganglion_settle::{Binding, Domain, Ledger, PayKey, Voucher};
use ganglion_types::proto::{
    Outcome, PayTerms, Refusal, Request, RequestId, ServeError, SessionId, SessionOpen, ToProvider,
    ToRobot,
};
use ganglion_types::{DType, Envelope, MicroTokens, NodeKey, Tensor};

const PRICE: MicroTokens = MicroTokens(10);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn domain() -> Domain {
    Domain {
        chain_id: 31_337,
        contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"
            .parse()
            .unwrap(),
    }
}

struct Paid {
    addr: ProviderAddr,
    stats: Arc<ProviderStats>,
    ledger: Arc<Mutex<Ledger>>,
}

async fn paid_provider() -> Paid {
    paid_provider_allowing(ganglion_node::ALLOWANCE_ANSWERS_DEFAULT).await
}

async fn paid_provider_allowing(allowance_answers: u64) -> Paid {
    let key = Arc::new(NodeKey::generate());
    let provider = Provider::bind(Arc::clone(&key), loopback(), EchoService)
        .unwrap()
        .with_pay(PayConfig {
            address: PayKey::generate().unwrap().address(),
            domain: domain(),
            price: PRICE,
            allowance_answers,
        });
    let paid = Paid {
        addr: ProviderAddr {
            id: key.id(),
            addr: provider.local_addr().unwrap(),
        },
        stats: provider.stats(),
        ledger: provider.ledger(),
    };
    tokio::spawn(provider.serve());
    paid
}

fn payment(node: &NodeKey, budget: u64) -> Payment {
    let key = Arc::new(PayKey::generate().unwrap());
    Payment {
        binding: Binding::new(node, &key, &domain()).unwrap(),
        key,
        domain: domain(),
        price: PRICE,
        budget: MicroTokens(budget),
    }
}

async fn robot(k: usize, budget: u64, providers: Vec<ProviderAddr>) -> Session {
    let key = Arc::new(NodeKey::generate());
    let endpoint =
        Endpoint::client(Arc::clone(&key), loopback(), TransportConfig::default()).unwrap();
    let config = SessionConfig {
        model: EchoService::model(),
        redundancy: k,
        deadline: Duration::from_secs(2),
        hedging: ganglion_client::Hedging::AllAtOnce,
        pay: Some(payment(&key, budget)),
    };
    Session::open(key, endpoint, config, providers)
        .await
        .unwrap()
}

fn bytes() -> Vec<Tensor> {
    vec![Tensor {
        dtype: DType::U8,
        shape: vec![4],
        data: vec![1, 2, 3, 4],
    }]
}

fn held(providers: &[Paid]) -> MicroTokens {
    providers.iter().fold(MicroTokens::ZERO, |sum, p| {
        sum.checked_add(p.ledger.lock().unwrap().total_paid().unwrap())
            .unwrap()
    })
}

/// Waits until the providers hold vouchers for what the robot signed (the last vouchers are a
/// round trip behind the last answers).
async fn books_agree(session: &Session, providers: &[Paid]) -> MicroTokens {
    let start = Instant::now();
    loop {
        let spent = session.status().spent;
        if held(providers) == spent {
            return spent;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "robot spent {spent}, providers hold {}",
            held(providers)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_paid_and_the_books_agree_to_the_micro_unit() {
    let providers = vec![paid_provider().await, paid_provider().await];
    let session = robot(2, 1_000_000, providers.iter().map(|p| p.addr).collect()).await;
    for _ in 0..40 {
        session.request(bytes()).await.unwrap();
    }
    // Both providers answer every request, the losers of the race too: 2 × 40 answers paid
    // (the last loser may still be on its way when the last request returns).
    let answered = || -> u64 {
        providers
            .iter()
            .map(|p| p.stats.answered.load(Ordering::Relaxed))
            .sum()
    };
    let start = Instant::now();
    while answered() < 80 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answered = answered();
    assert_eq!(answered, 80);
    // The providers have sent every answer; the last may still be on its way to the robot,
    // which pays it when it arrives.
    let owed = PRICE.checked_mul(answered).unwrap();
    while session.status().spent < owed && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let spent = books_agree(&session, &providers).await;
    assert_eq!(spent, PRICE.checked_mul(answered).unwrap());
    for p in &providers {
        assert_eq!(p.stats.vouchers_refused.load(Ordering::Relaxed), 0);
        assert_eq!(p.stats.unpaid.load(Ordering::Relaxed), 0);
    }
    let per_provider = session.status().paid;
    assert_eq!(per_provider.len(), 2);
    assert!(per_provider.iter().all(|(_, a)| *a == MicroTokens(400)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stops_at_its_budget() {
    let providers = vec![paid_provider().await];
    let session = robot(1, 50, vec![providers[0].addr]).await;
    for _ in 0..5 {
        session.request(bytes()).await.unwrap();
    }
    books_agree(&session, &providers).await;
    let err = session.request(bytes()).await.unwrap_err();
    assert!(matches!(err, RequestError::Budget { .. }), "{err}");
    assert_eq!(session.status().spent, MicroTokens(50));
}

/// Renewal: a session at the end of its budget raises it; the provider takes the signed
/// renewal on the session's stream, serves on, and holds vouchers past the first budget; a
/// renewal that does not raise the budget is refused by the robot itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_session_goes_on_past_its_first_budget() {
    let providers = vec![paid_provider().await];
    let session = robot(1, 50, vec![providers[0].addr]).await;
    for _ in 0..5 {
        session.request(bytes()).await.unwrap();
    }
    books_agree(&session, &providers).await;
    assert!(matches!(
        session.request(bytes()).await,
        Err(RequestError::Budget { .. })
    ));
    assert_eq!(session.renew(MicroTokens(120)).await, Ok(1));
    for _ in 0..7 {
        session.request(bytes()).await.unwrap();
    }
    assert_eq!(books_agree(&session, &providers).await, MicroTokens(120));
    assert_eq!(providers[0].stats.renewals.load(Ordering::Relaxed), 1);
    assert_eq!(
        providers[0].stats.vouchers_refused.load(Ordering::Relaxed),
        0
    );
    assert!(matches!(
        session.request(bytes()).await,
        Err(RequestError::Budget { .. })
    ));
    assert!(matches!(
        session.renew(MicroTokens(120)).await,
        Err(ganglion_client::RenewError::NotHigher { .. })
    ));
}

async fn raw(
    provider: ProviderAddr,
    node: &Arc<NodeKey>,
    terms: Option<PayTerms>,
) -> (
    ganglion_net::Connection,
    ganglion_net::endpoint::FramedStream,
    ToRobot,
) {
    let endpoint =
        Endpoint::client(Arc::clone(node), loopback(), TransportConfig::default()).unwrap();
    let connection = endpoint.connect(provider.addr, provider.id).await.unwrap();
    let (mut writer, mut reader) = connection.open_stream().await.unwrap();
    let open = SessionOpen {
        session: SessionId(99),
        provider: provider.id,
        model: EchoService::model(),
        pay: terms,
    };
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let envelope = Envelope::seal(node, seq, clock::unix_ms() + 30_000, &open);
    writer.send(&ToProvider::Open(envelope)).await.unwrap();
    let reply = ToRobot::decode(reader.next().await.unwrap().unwrap()).unwrap();
    (connection, (writer, reader), reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_underpriced_or_borrowed_terms_are_refused() {
    let provider = paid_provider().await;
    let node = Arc::new(NodeKey::generate());
    let pay = payment(&node, 1_000);
    let terms = PayTerms {
        binding: pay.binding,
        price: PRICE,
        budget: MicroTokens(1_000),
    };
    let (_, _, reply) = raw(provider.addr, &node, None).await;
    assert_eq!(reply, ToRobot::Refused(Refusal::Unpaid));
    let cheap = PayTerms {
        price: MicroTokens(9),
        ..terms
    };
    let (_, _, reply) = raw(provider.addr, &node, Some(cheap)).await;
    assert_eq!(
        reply,
        ToRobot::Refused(Refusal::PriceTooLow { asked: PRICE })
    );
    // Another node presenting this robot's binding.
    let thief = Arc::new(NodeKey::generate());
    let (_, _, reply) = raw(provider.addr, &thief, Some(terms)).await;
    assert!(
        matches!(reply, ToRobot::Refused(Refusal::BadPayment(ref why)) if why.contains("another node")),
        "{reply:?}"
    );
    let (_, _, reply) = raw(provider.addr, &node, Some(terms)).await;
    assert!(
        matches!(reply, ToRobot::Opened(ref o) if o.pay_to.is_some()),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_that_stops_paying_is_cut_off_and_bad_vouchers_are_refused() {
    let provider = paid_provider_allowing(4).await;
    let node = Arc::new(NodeKey::generate());
    let pay = payment(&node, 1_000);
    let terms = PayTerms {
        binding: pay.binding,
        price: PRICE,
        budget: MicroTokens(1_000),
    };
    let (_connection, (mut writer, mut reader), reply) =
        raw(provider.addr, &node, Some(terms)).await;
    let ToRobot::Opened(opened) = reply else {
        panic!("{reply:?}")
    };
    let pay_to = opened.pay_to.unwrap();
    let mut next = 0u64;
    let mut ask =
        async |writer: &mut ganglion_net::FrameWriter<ganglion_net::SendStream>,
               reader: &mut ganglion_net::FrameReader<ganglion_net::RecvStream>| {
            next += 1;
            let request = Request {
                id: RequestId(next),
                budget_us: 2_000_000,
                inputs: bytes(),
            };
            writer.send(&ToProvider::Request(request)).await.unwrap();
            let ToRobot::Answer(answer) =
                ToRobot::decode(reader.next().await.unwrap().unwrap()).unwrap()
            else {
                panic!("not an answer")
            };
            answer.outcome
        };
    // The allowance is 4 answers: the fifth request is refused as unpaid.
    for _ in 0..4 {
        assert!(matches!(
            ask(&mut writer, &mut reader).await,
            Outcome::Done(_)
        ));
    }
    let cut = ask(&mut writer, &mut reader).await;
    assert!(
        matches!(cut, Outcome::Failed(ServeError::Unpaid { behind }) if behind == MicroTokens(40)),
        "{cut:?}"
    );
    assert_eq!(provider.stats.unpaid.load(Ordering::Relaxed), 1);

    let voucher = |amount: u64, session: u64| {
        Voucher {
            robot: pay.key.address(),
            provider: pay_to,
            session,
            cumulative: MicroTokens(amount),
        }
        .sign(&pay.key, &domain())
        .unwrap()
    };
    // Forged (amount raised after signing), for another session, over budget: refused.
    let mut forged = voucher(10, 99);
    forged.voucher.cumulative = MicroTokens(40);
    for bad in [forged, voucher(40, 98), voucher(1_010, 99)] {
        writer.send(&ToProvider::Voucher(bad)).await.unwrap();
    }
    // Paying up restores service; a lower voucher after it changes nothing.
    writer
        .send(&ToProvider::Voucher(voucher(40, 99)))
        .await
        .unwrap();
    writer
        .send(&ToProvider::Voucher(voucher(30, 99)))
        .await
        .unwrap();
    assert!(matches!(
        ask(&mut writer, &mut reader).await,
        Outcome::Done(_)
    ));
    assert_eq!(provider.stats.vouchers_refused.load(Ordering::Relaxed), 4);
    assert_eq!(provider.stats.vouchers.load(Ordering::Relaxed), 1);
    let latest = provider
        .ledger
        .lock()
        .unwrap()
        .latest(pay.key.address(), 99)
        .copied()
        .unwrap();
    assert_eq!(latest.voucher.cumulative, MicroTokens(40));
}
