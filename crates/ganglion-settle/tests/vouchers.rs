//! The EIP-712 implementation against the standard's own worked example, and vouchers,
//! bindings and the provider's ledger against every bad input the issue names.
#![allow(clippy::unwrap_used)]

use ganglion_settle::eip712::{self, keccak256, word_address};
use ganglion_settle::voucher::EthSignature;
use ganglion_settle::{Address, Binding, Domain, Ledger, LedgerError, PayKey, Voucher};
use ganglion_types::{MicroTokens, NodeKey};
use proptest::prelude::*;

fn hex32(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 + 2 * i..4 + 2 * i], 16).unwrap();
    }
    out
}

/// The "Ether Mail" example of EIP-712 (eips.ethereum.org/EIPS/eip-712, assets/eip-712/Example.js):
/// its domain separator, struct hash, digest, and the signature by keccak256("cow").
#[test]
fn the_eip712_example_hashes_and_signs_as_the_standard_says() {
    let contract: Address = "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
        .parse()
        .unwrap();
    let separator = eip712::domain_separator("Ether Mail", "1", 1, &contract.0);
    assert_eq!(
        separator,
        hex32("0xf2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f")
    );
    let person = |name: &str, wallet: &str| {
        let wallet: Address = wallet.parse().unwrap();
        eip712::hash_struct(
            &keccak256(b"Person(string name,address wallet)"),
            &[keccak256(name.as_bytes()), word_address(&wallet.0)],
        )
    };
    let mail = eip712::hash_struct(
        &keccak256(
            b"Mail(Person from,Person to,string contents)Person(string name,address wallet)",
        ),
        &[
            person("Cow", "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"),
            person("Bob", "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"),
            keccak256(b"Hello, Bob!"),
        ],
    );
    assert_eq!(
        mail,
        hex32("0xc52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e")
    );
    let digest = eip712::digest(&separator, &mail);
    assert_eq!(
        digest,
        hex32("0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2")
    );
    let cow = PayKey::from_bytes(&keccak256(b"cow")).unwrap();
    assert_eq!(
        cow.address(),
        "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
            .parse()
            .unwrap()
    );
    let signature = cow.sign_digest(&digest).unwrap();
    assert_eq!(
        signature.0[..32],
        hex32("0x4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d")
    );
    assert_eq!(
        signature.0[32..64],
        hex32("0x07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562")
    );
    assert_eq!(signature.0[64], 28);
    assert_eq!(signature.recover(&digest).unwrap(), cow.address());
}

fn domain() -> Domain {
    Domain {
        chain_id: 31_337,
        contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"
            .parse()
            .unwrap(),
    }
}

struct World {
    robot: PayKey,
    provider: Address,
    ledger: Ledger,
}

fn world() -> World {
    let provider = PayKey::from_bytes(&[2u8; 32]).unwrap().address();
    World {
        robot: PayKey::from_bytes(&[1u8; 32]).unwrap(),
        provider,
        ledger: Ledger::new(provider, domain()),
    }
}

fn voucher(w: &World, session: u64, amount: u64) -> ganglion_settle::SignedVoucher {
    Voucher {
        robot: w.robot.address(),
        provider: w.provider,
        session,
        cumulative: MicroTokens(amount),
    }
    .sign(&w.robot, &domain())
    .unwrap()
}

#[test]
fn a_provider_keeps_the_latest_voucher_and_refuses_every_bad_one() {
    let mut w = world();
    let me = w.robot.address();
    w.ledger.open(me, 7, MicroTokens(1_000)).unwrap();
    w.ledger.open(me, 8, MicroTokens(1_000)).unwrap();
    for _ in 0..3 {
        w.ledger.answered(me, 7, MicroTokens(100)).unwrap();
    }
    assert_eq!(w.ledger.behind(me, 7), MicroTokens(300));
    assert_eq!(
        w.ledger.accept(me, 7, &voucher(&w, 7, 200)),
        Ok(MicroTokens(200))
    );
    assert_eq!(w.ledger.behind(me, 7), MicroTokens(100));
    assert_eq!(
        w.ledger.accept(me, 7, &voucher(&w, 7, 300)),
        Ok(MicroTokens(100))
    );

    // Lower than, or equal to (a replay of), the last one kept.
    let stale = w.ledger.accept(me, 7, &voucher(&w, 7, 250)).unwrap_err();
    assert!(
        matches!(stale, LedgerError::NotIncreasing { .. }),
        "{stale}"
    );
    let replay = w.ledger.accept(me, 7, &voucher(&w, 7, 300)).unwrap_err();
    assert!(
        matches!(replay, LedgerError::NotIncreasing { .. }),
        "{replay}"
    );
    // Reused for another session.
    let other = w.ledger.accept(me, 8, &voucher(&w, 7, 400)).unwrap_err();
    assert!(matches!(other, LedgerError::OtherSession { .. }), "{other}");
    // Over budget.
    let over = w.ledger.accept(me, 7, &voucher(&w, 7, 1_001)).unwrap_err();
    assert!(matches!(over, LedgerError::OverBudget { .. }), "{over}");
    // Forged: the amount raised after signing, or signed by someone else.
    let mut raised = voucher(&w, 7, 400);
    raised.voucher.cumulative = MicroTokens(900);
    let forged = w.ledger.accept(me, 7, &raised).unwrap_err();
    assert!(matches!(forged, LedgerError::Forged(_)), "{forged}");
    let thief = PayKey::from_bytes(&[9u8; 32]).unwrap();
    let mut stolen = voucher(&w, 7, 500);
    stolen.signature = thief
        .sign_digest(&stolen.voucher.digest(&domain()))
        .unwrap();
    assert!(matches!(
        w.ledger.accept(me, 7, &stolen),
        Err(LedgerError::Forged(_))
    ));
    // For another provider, or from a robot the session is not.
    let mut elsewhere = voucher(&w, 7, 500);
    elsewhere.voucher.provider = thief.address();
    assert!(matches!(
        w.ledger.accept(me, 7, &elsewhere),
        Err(LedgerError::OtherProvider { .. })
    ));
    assert!(matches!(
        w.ledger.accept(thief.address(), 7, &voucher(&w, 7, 500)),
        Err(LedgerError::OtherRobot { .. })
    ));
    // A signature with the high s of a malleated copy is refused like the contract would.
    let mut malleated = voucher(&w, 7, 500);
    malleated.signature = flip_s(malleated.signature);
    assert!(matches!(
        w.ledger.accept(me, 7, &malleated),
        Err(LedgerError::Forged(_))
    ));
    // None of that changed what is kept.
    assert_eq!(
        w.ledger.latest(me, 7).unwrap().voucher.cumulative,
        MicroTokens(300)
    );
    assert_eq!(w.ledger.total_paid(), Some(MicroTokens(300)));
    w.ledger.close(me, 7);
    let closed = w.ledger.take_closed();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].voucher.cumulative, MicroTokens(300));
    assert!(matches!(
        w.ledger.accept(me, 7, &voucher(&w, 7, 400)),
        Err(LedgerError::UnknownSession(7))
    ));
}

#[test]
fn a_renewal_raises_the_budget_and_never_lowers_it() {
    let mut w = world();
    let me = w.robot.address();
    w.ledger.open(me, 7, MicroTokens(500)).unwrap();
    assert!(matches!(
        w.ledger.accept(me, 7, &voucher(&w, 7, 600)),
        Err(LedgerError::OverBudget { .. })
    ));
    w.ledger.renew(me, 7, MicroTokens(1_000)).unwrap();
    assert_eq!(
        w.ledger.accept(me, 7, &voucher(&w, 7, 600)),
        Ok(MicroTokens(600))
    );
    let lowered = w.ledger.renew(me, 7, MicroTokens(800)).unwrap_err();
    assert!(
        matches!(lowered, LedgerError::BudgetLowered { .. }),
        "{lowered}"
    );
    assert!(matches!(
        w.ledger.accept(me, 7, &voucher(&w, 7, 1_001)),
        Err(LedgerError::OverBudget { .. })
    ));
    assert!(matches!(
        w.ledger.renew(me, 8, MicroTokens(1_000)),
        Err(LedgerError::UnknownSession(8))
    ));
    w.ledger.close(me, 7);
    assert!(matches!(
        w.ledger.renew(me, 7, MicroTokens(2_000)),
        Err(LedgerError::UnknownSession(7))
    ));
}

/// The same signature with s replaced by n − s and v flipped: valid for plain ECDSA, refused
/// by Ethereum's rules.
fn flip_s(signature: EthSignature) -> EthSignature {
    // secp256k1's group order, big-endian.
    let n = hex32("0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
    let mut out = signature.0;
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(n[i]) - i16::from(signature.0[32 + i]) - borrow;
        out[32 + i] = (d.rem_euclid(256)) as u8;
        borrow = i16::from(d < 0);
    }
    out[64] = if signature.0[64] == 27 { 28 } else { 27 };
    EthSignature(out)
}

#[test]
fn a_binding_ties_the_pay_key_to_the_node_and_cannot_be_borrowed() {
    let node = NodeKey::from_seed([5u8; 32]);
    let pay = PayKey::generate().unwrap();
    let binding = Binding::new(&node, &pay, &domain()).unwrap();
    binding.verify(&domain()).unwrap();
    // Someone else's node claiming this pay key, or this node claiming someone else's key.
    let mut borrowed = binding;
    borrowed.node = NodeKey::from_seed([6u8; 32]).id();
    assert!(borrowed.verify(&domain()).is_err());
    let mut swapped = binding;
    swapped.address = PayKey::generate().unwrap().address();
    assert!(swapped.verify(&domain()).is_err());
    // Bound for another chain: not valid here.
    let other_chain = Domain {
        chain_id: 1,
        ..domain()
    };
    assert!(binding.verify(&other_chain).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However vouchers arrive (reordered, repeated), the ledger keeps the highest within
    /// budget, and what it says was paid never goes down.
    #[test]
    fn the_ledger_keeps_the_highest_voucher_whatever_the_order(
        amounts in proptest::collection::vec(1u64..2_000, 1..20)
    ) {
        let mut w = world();
        let me = w.robot.address();
        w.ledger.open(me, 1, MicroTokens(1_500)).unwrap();
        let mut paid = MicroTokens::ZERO;
        for a in &amounts {
            let _ = w.ledger.accept(me, 1, &voucher(&w, 1, *a));
            let now = w.ledger.total_paid().unwrap();
            prop_assert!(now >= paid);
            paid = now;
        }
        let best = amounts.iter().copied().filter(|a| *a <= 1_500).max().unwrap_or(0);
        prop_assert_eq!(paid, MicroTokens(best));
    }
}

/// What a redemption is due: each session's latest voucher above what the escrow paid, and
/// what the escrow paid never goes backwards.
#[test]
fn the_ledger_hands_out_what_is_unsettled_and_remembers_what_was_paid() {
    let mut w = world();
    let me = w.robot.address();
    for session in [3, 4] {
        w.ledger.open(me, session, MicroTokens(1_000)).unwrap();
        w.ledger.answered(me, session, MicroTokens(100)).unwrap();
        w.ledger
            .accept(me, session, &voucher(&w, session, 100))
            .unwrap();
    }
    w.ledger.answered(me, 3, MicroTokens(100)).unwrap();
    w.ledger.accept(me, 3, &voucher(&w, 3, 200)).unwrap();
    let mut due: Vec<_> = w
        .ledger
        .unsettled()
        .iter()
        .map(|v| (v.voucher.session, v.voucher.cumulative.0))
        .collect();
    due.sort_unstable();
    assert_eq!(due, vec![(3, 200), (4, 100)]);
    // Paid up to an older voucher: the latest is still due.
    w.ledger.settled(me, 3, MicroTokens(100));
    assert_eq!(w.ledger.unsettled().len(), 2);
    w.ledger.settled(me, 3, MicroTokens(200));
    w.ledger.settled(me, 4, MicroTokens(100));
    assert!(w.ledger.unsettled().is_empty());
    // Settling never goes backwards.
    w.ledger.settled(me, 3, MicroTokens(50));
    assert!(w.ledger.unsettled().is_empty());
    // A closed session paid in full is reduced to what it was paid; the totals keep it, and
    // a robot coming back to it with an old voucher is told apart from one with a new voucher.
    w.ledger.close(me, 3);
    w.ledger.settled(me, 3, MicroTokens(200));
    assert!(w.ledger.latest(me, 3).is_none(), "forgotten");
    assert_eq!(w.ledger.total_paid(), Some(MicroTokens(300)));
    w.ledger.open(me, 3, MicroTokens(1_000)).unwrap();
    assert!(matches!(
        w.ledger.accept(me, 3, &voucher(&w, 3, 200)),
        Err(LedgerError::NotIncreasing { .. })
    ));
    assert_eq!(w.ledger.behind(me, 3), MicroTokens::ZERO);
    w.ledger.answered(me, 3, MicroTokens(100)).unwrap();
    assert_eq!(w.ledger.behind(me, 3), MicroTokens(100));
    assert_eq!(
        w.ledger.accept(me, 3, &voucher(&w, 3, 300)),
        Ok(MicroTokens(100))
    );
    assert_eq!(w.ledger.total_paid(), Some(MicroTokens(400)));
    assert_eq!(w.ledger.unsettled().len(), 1, "the new voucher is due");
    // An open one is kept: more answers and vouchers may come.
    w.ledger.answered(me, 4, MicroTokens(100)).unwrap();
    w.ledger.accept(me, 4, &voucher(&w, 4, 200)).unwrap();
    assert_eq!(w.ledger.unsettled().len(), 2);
}
