//! Legacy (type 0) transactions with EIP-155 replay protection: the one format every EVM
//! chain accepts. `rlp([nonce, gasPrice, gas, to, value, data, chainId, 0, 0])` is hashed and
//! signed; the sent transaction is `rlp([nonce, gasPrice, gas, to, value, data, v, r, s])` with
//! `v = recovery id + 2 × chainId + 35`.

use alloy_primitives::{keccak256, U256};
use alloy_rlp::{Encodable, Header};

use ganglion_types::pay::{Address, PayKey, VoucherError};

/// What a transaction does, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyTx {
    pub chain_id: u64,
    pub nonce: u64,
    pub gas_price: u128,
    pub gas: u64,
    /// `None`: create a contract.
    pub to: Option<Address>,
    pub value: U256,
    pub data: Vec<u8>,
}

struct To<'a>(&'a Option<Address>);

impl Encodable for To<'_> {
    fn encode(&self, out: &mut dyn alloy_rlp::BufMut) {
        match self.0 {
            Some(address) => address.0.as_slice().encode(out),
            None => out.put_u8(alloy_rlp::EMPTY_STRING_CODE),
        }
    }

    fn length(&self) -> usize {
        match self.0 {
            Some(address) => address.0.as_slice().length(),
            None => 1,
        }
    }
}

fn list(fields: &[&dyn Encodable]) -> Vec<u8> {
    let payload_length = fields.iter().map(|f| f.length()).sum();
    let mut out = Vec::with_capacity(payload_length + 9);
    Header {
        list: true,
        payload_length,
    }
    .encode(&mut out);
    for field in fields {
        field.encode(&mut out);
    }
    out
}

impl LegacyTx {
    /// The EIP-155 signing hash.
    pub fn signing_hash(&self) -> [u8; 32] {
        keccak256(self.encode([&self.chain_id, &0u8, &0u8])).0
    }

    /// `rlp([nonce, gasPrice, gas, to, value, data, …tail])`.
    fn encode(&self, tail: [&dyn Encodable; 3]) -> Vec<u8> {
        let to = To(&self.to);
        let data = self.data.as_slice();
        let [a, b, c] = tail;
        list(&[
            &self.nonce,
            &self.gas_price,
            &self.gas,
            &to,
            &self.value,
            &data,
            a,
            b,
            c,
        ])
    }

    /// Signs with `key` and returns the raw transaction for `eth_sendRawTransaction`.
    pub fn sign(&self, key: &PayKey) -> Result<Vec<u8>, VoucherError> {
        let signature = key.sign_digest(&self.signing_hash())?.0;
        let recovery = u64::from(signature[64].saturating_sub(27));
        let v = self
            .chain_id
            .checked_mul(2)
            .and_then(|v| v.checked_add(35 + recovery))
            .ok_or(VoucherError::BadSignature)?;
        let r = U256::from_be_slice(&signature[..32]);
        let s = U256::from_be_slice(&signature[32..64]);
        Ok(self.encode([&v, &r, &s]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of EIP-155 itself: nonce 9, 20 gwei, 21000 gas, 1 ether to 0x3535…35 on
    /// chain 1, signed by the key 0x4646…46.
    #[test]
    fn the_eip155_example_signs_to_the_published_bytes() {
        let tx = LegacyTx {
            chain_id: 1,
            nonce: 9,
            gas_price: 20_000_000_000,
            gas: 21_000,
            to: Some(Address([0x35; 20])),
            value: U256::from(1_000_000_000_000_000_000u128),
            data: Vec::new(),
        };
        assert_eq!(
            alloy_primitives::hex::encode(tx.signing_hash()),
            "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53"
        );
        let key = PayKey::from_bytes(&[0x46; 32]).expect("key");
        let raw = tx.sign(&key).expect("sign");
        assert_eq!(
            alloy_primitives::hex::encode(raw),
            "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
        );
    }
}
