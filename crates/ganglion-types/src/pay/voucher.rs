//! Vouchers and the keys that sign them.
//!
//! Formats (stable: the settlement contract checks them):
//!
//! ```text
//! domain   EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
//!          name "Ganglion", version "1", the chain's id, the escrow contract's address
//! voucher  Voucher(address robot,address provider,uint64 session,uint256 cumulative)
//!          cumulative: micro-tokens owed for the whole session so far
//! binding  PayKeyBinding(bytes32 node)
//!          node: the robot's Ed25519 public key; signed by the pay key (EIP-712), while the
//!          node key signs the address (Ganglion domain "pay-key-binding")
//! signature 65 bytes r ‖ s ‖ v, v = 27 or 28, s in the lower half of the curve order (what
//!          Solidity's ecrecover and OpenZeppelin's ECDSA.recover accept)
//! ```

use std::fmt;
use std::str::FromStr;

use crate::{MicroTokens, NodeId, NodeKey, Signature};
use k256::ecdsa::{RecoveryId, Signature as EcdsaSignature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::pay::eip712::{self, keccak256, word_address, word_u128};

/// The EIP-712 domain name.
pub const DOMAIN_NAME: &str = "Ganglion";

/// The EIP-712 domain version.
pub const DOMAIN_VERSION: &str = "1";

/// The signing domain of the node key's half of a binding.
pub const BINDING_DOMAIN: &str = "pay-key-binding";

const VOUCHER_TYPE: &[u8] =
    b"Voucher(address robot,address provider,uint64 session,uint256 cumulative)";
const BINDING_TYPE: &[u8] = b"PayKeyBinding(bytes32 node)";

/// An Ethereum address: the last 20 bytes of the Keccak-256 of a secp256k1 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address(pub [u8; 20]);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = VoucherError;
    fn from_str(text: &str) -> Result<Self, VoucherError> {
        let hex = text.strip_prefix("0x").unwrap_or(text);
        if hex.len() != 40 || !hex.is_ascii() {
            return Err(VoucherError::BadAddress(text.chars().take(64).collect()));
        }
        let mut bytes = [0u8; 20];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| VoucherError::BadAddress(text.chars().take(64).collect()))?;
        }
        Ok(Self(bytes))
    }
}

impl Address {
    fn of(key: &VerifyingKey) -> Self {
        let point = key.to_encoded_point(false);
        let hash = keccak256(&point.as_bytes()[1..]);
        let mut bytes = [0u8; 20];
        bytes.copy_from_slice(&hash[12..]);
        Self(bytes)
    }
}

/// Where vouchers are redeemed: the chain and the escrow contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub chain_id: u64,
    pub contract: Address,
}

impl Domain {
    pub fn separator(&self) -> [u8; 32] {
        eip712::domain_separator(DOMAIN_NAME, DOMAIN_VERSION, self.chain_id, &self.contract.0)
    }
}

/// A 65-byte recoverable secp256k1 signature, r ‖ s ‖ v with v = 27 or 28.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EthSignature(#[serde(with = "serde_bytes")] pub [u8; 65]);

impl fmt::Debug for EthSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EthSignature(0x")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl EthSignature {
    /// The address whose key signed `digest`, or why none did.
    pub fn recover(&self, digest: &[u8; 32]) -> Result<Address, VoucherError> {
        let v = self.0[64];
        let recovery = match v {
            27 | 28 => RecoveryId::from_byte(v - 27),
            _ => None,
        }
        .ok_or(VoucherError::BadSignature)?;
        let signature =
            EcdsaSignature::from_slice(&self.0[..64]).map_err(|_| VoucherError::BadSignature)?;
        // High-s signatures are malleable copies: the contract refuses them, so do we.
        if signature.normalize_s().is_some() {
            return Err(VoucherError::BadSignature);
        }
        let key = VerifyingKey::recover_from_prehash(digest, &signature, recovery)
            .map_err(|_| VoucherError::BadSignature)?;
        Ok(Address::of(&key))
    }
}

/// A secp256k1 key that signs vouchers (a robot's) or receives payment (a provider's).
pub struct PayKey(SigningKey);

impl fmt::Debug for PayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PayKey").field(&self.address()).finish()
    }
}

impl PayKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<Self, VoucherError> {
        loop {
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes).map_err(|e| VoucherError::Random(e.to_string()))?;
            // Fails only for zero or values past the curve order (probability ~2^-128).
            if let Ok(key) = Self::from_bytes(&bytes) {
                return Ok(key);
            }
        }
    }

    /// The key with this 32-byte secret scalar.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, VoucherError> {
        SigningKey::from_slice(bytes)
            .map(Self)
            .map_err(|_| VoucherError::BadKey)
    }

    /// The secret scalar, for a key file.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes().into()
    }

    pub fn address(&self) -> Address {
        Address::of(self.0.verifying_key())
    }

    /// Signs a 32-byte digest (low s, v = 27 or 28).
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<EthSignature, VoucherError> {
        let (signature, recovery) = self
            .0
            .sign_prehash_recoverable(digest)
            .map_err(|_| VoucherError::BadSignature)?;
        let mut bytes = [0u8; 65];
        bytes[..64].copy_from_slice(&signature.to_bytes());
        bytes[64] = 27 + recovery.to_byte();
        Ok(EthSignature(bytes))
    }
}

/// What a voucher says: `robot` owes `provider` `cumulative` for the whole of `session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voucher {
    pub robot: Address,
    pub provider: Address,
    pub session: u64,
    pub cumulative: MicroTokens,
}

impl Voucher {
    pub fn struct_hash(&self) -> [u8; 32] {
        eip712::hash_struct(
            &keccak256(VOUCHER_TYPE),
            &[
                word_address(&self.robot.0),
                word_address(&self.provider.0),
                word_u128(u128::from(self.session)),
                word_u128(u128::from(self.cumulative.0)),
            ],
        )
    }

    /// The EIP-712 digest the robot's key signs.
    pub fn digest(&self, domain: &Domain) -> [u8; 32] {
        eip712::digest(&domain.separator(), &self.struct_hash())
    }

    /// Signs the voucher with the robot's key (whose address must be `self.robot`).
    pub fn sign(self, key: &PayKey, domain: &Domain) -> Result<SignedVoucher, VoucherError> {
        if key.address() != self.robot {
            return Err(VoucherError::NotSigner {
                signer: key.address(),
                robot: self.robot,
            });
        }
        Ok(SignedVoucher {
            voucher: self,
            signature: key.sign_digest(&self.digest(domain))?,
        })
    }
}

/// A voucher and the robot's signature over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVoucher {
    pub voucher: Voucher,
    pub signature: EthSignature,
}

impl SignedVoucher {
    /// Checks that the robot named in the voucher signed it for `domain`.
    pub fn verify(&self, domain: &Domain) -> Result<(), VoucherError> {
        let signer = self.signature.recover(&self.voucher.digest(domain))?;
        if signer == self.voucher.robot {
            Ok(())
        } else {
            Err(VoucherError::NotSigner {
                signer,
                robot: self.voucher.robot,
            })
        }
    }
}

/// Why a voucher or key is not good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoucherError {
    #[error("not a secp256k1 signature (or a malleable high-s one)")]
    BadSignature,
    #[error("signed by {signer}, not by the robot it names ({robot})")]
    NotSigner { signer: Address, robot: Address },
    #[error("not a secp256k1 secret key")]
    BadKey,
    #[error("not a 0x-prefixed 20-byte hex address: {0:?}")]
    BadAddress(String),
    #[error("the operating system gave no randomness: {0}")]
    Random(String),
}

/// A node identity and a pay key, each having signed the other: a provider that checks the
/// binding knows that vouchers from this address are the robot's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub node: NodeId,
    pub address: Address,
    /// The node key over the address (domain [`BINDING_DOMAIN`]).
    pub node_signature: Signature,
    /// The pay key over `PayKeyBinding(bytes32 node)` (EIP-712, so a contract can check it).
    pub key_signature: EthSignature,
}

/// Why a binding does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    #[error("the node key did not sign this address")]
    Node,
    #[error("the pay key did not sign this node: {0}")]
    Key(VoucherError),
}

fn binding_digest(node: &NodeId, domain: &Domain) -> [u8; 32] {
    let struct_hash = eip712::hash_struct(&keccak256(BINDING_TYPE), &[*node.as_bytes()]);
    eip712::digest(&domain.separator(), &struct_hash)
}

impl Binding {
    pub fn new(node: &NodeKey, pay: &PayKey, domain: &Domain) -> Result<Self, VoucherError> {
        let address = pay.address();
        Ok(Self {
            node: node.id(),
            address,
            node_signature: node.sign(BINDING_DOMAIN, &address.0),
            key_signature: pay.sign_digest(&binding_digest(&node.id(), domain))?,
        })
    }

    pub fn verify(&self, domain: &Domain) -> Result<(), BindingError> {
        self.node
            .verify(BINDING_DOMAIN, &self.address.0, &self.node_signature)
            .map_err(|_| BindingError::Node)?;
        let signer = self
            .key_signature
            .recover(&binding_digest(&self.node, domain))
            .map_err(BindingError::Key)?;
        if signer == self.address {
            Ok(())
        } else {
            Err(BindingError::Key(VoucherError::NotSigner {
                signer,
                robot: self.address,
            }))
        }
    }
}
