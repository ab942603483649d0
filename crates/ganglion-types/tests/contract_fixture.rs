//! The voucher and pay-key binding formats, pinned against the settlement contracts: this test
//! signs a voucher and a binding from fixed keys (ECDSA with RFC 6979 nonces and Ed25519 are
//! deterministic) and checks them against `contracts/test/fixtures/rust-signed.json`, which
//! the contracts' test suite (`contracts/test/rust-fixture.test.mjs`) redeems and binds on a
//! real anvil node. A change to either side's encoding breaks one of the two.
//!
//! `GANGLION_WRITE_FIXTURES=1 cargo test -p ganglion-types --test contract_fixture` writes the
//! file afresh (then run the contracts' tests: they must still pass).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ganglion_types::pay::{Address, Binding, Domain, PayKey, Voucher};
use ganglion_types::{MicroTokens, NodeKey};

/// Where the contracts' test puts the Escrow (anvil_setCode) for this fixture.
const ESCROW: &str = "0x00000000000000000000000000000000006a6e67";
const CHAIN_ID: u64 = 31_337;

fn hex(bytes: &[u8]) -> String {
    let mut out = String::from("0x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn fixture() -> String {
    let domain = Domain {
        chain_id: CHAIN_ID,
        contract: ESCROW.parse().unwrap(),
    };
    let node = NodeKey::from_seed([7; 32]);
    let robot = PayKey::from_bytes(&[0x11; 32]).unwrap();
    let provider: Address = PayKey::from_bytes(&[0x22; 32]).unwrap().address();
    let voucher = Voucher {
        robot: robot.address(),
        provider,
        session: 7,
        cumulative: MicroTokens(1_234_567),
    };
    let signed = voucher.sign(&robot, &domain).unwrap();
    assert_eq!(signed.verify(&domain), Ok(()));
    let binding = Binding::new(&node, &robot, &domain).unwrap();
    assert_eq!(binding.verify(&domain), Ok(()));
    format!(
        concat!(
            "{{\n",
            "  \"chain_id\": {chain_id},\n",
            "  \"escrow\": \"{escrow}\",\n",
            "  \"voucher\": {{\n",
            "    \"robot\": \"{robot}\",\n",
            "    \"provider\": \"{provider}\",\n",
            "    \"session\": {session},\n",
            "    \"cumulative\": {cumulative},\n",
            "    \"digest\": \"{digest}\",\n",
            "    \"signature\": \"{signature}\"\n",
            "  }},\n",
            "  \"binding\": {{\n",
            "    \"node\": \"{node}\",\n",
            "    \"address\": \"{address}\",\n",
            "    \"pay_key_signature\": \"{key_signature}\",\n",
            "    \"node_signature\": \"{node_signature}\"\n",
            "  }}\n",
            "}}\n"
        ),
        chain_id = CHAIN_ID,
        escrow = ESCROW,
        robot = voucher.robot,
        provider = voucher.provider,
        session = voucher.session,
        cumulative = voucher.cumulative.0,
        digest = hex(&voucher.digest(&domain)),
        signature = hex(&signed.signature.0),
        node = hex(node.id().as_bytes()),
        address = binding.address,
        key_signature = hex(&binding.key_signature.0),
        node_signature = hex(&binding.node_signature.0),
    )
}

#[test]
fn vouchers_and_bindings_signed_here_are_the_ones_the_contracts_redeem() {
    // The runner's CARGO_MANIFEST_DIR first: a reused target folder may hold this binary as
    // another checkout built it, and the compile-time path would read that checkout's fixture.
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let path = package.join("../../contracts/test/fixtures/rust-signed.json");
    let made = fixture();
    if std::env::var_os("GANGLION_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &made).unwrap();
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the contracts' fixture {}: {e}", path.display()));
    assert_eq!(
        committed,
        made,
        "the signed formats changed: the contracts' fixture {} no longer matches",
        path.display()
    );
}
