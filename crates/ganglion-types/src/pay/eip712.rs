//! EIP-712 typed structured data hashing (<https://eips.ethereum.org/EIPS/eip-712>), for the
//! few static types Ganglion signs: every field is a 32-byte word (addresses left-padded,
//! unsigned integers big-endian), so a struct hash is `keccak256(typeHash ‖ words…)`.

use sha3::{Digest, Keccak256};

/// Keccak-256 (Ethereum's hash, not NIST SHA3-256).
pub fn keccak256(bytes: &[u8]) -> [u8; 32] {
    Keccak256::digest(bytes).into()
}

/// A 20-byte address as a 32-byte word.
pub fn word_address(address: &[u8; 20]) -> [u8; 32] {
    let mut word = [0u8; 32];
    word[12..].copy_from_slice(address);
    word
}

/// An unsigned integer as a 32-byte big-endian word.
pub fn word_u128(value: u128) -> [u8; 32] {
    let mut word = [0u8; 32];
    word[16..].copy_from_slice(&value.to_be_bytes());
    word
}

/// `keccak256(typeHash ‖ words…)`.
pub fn hash_struct(type_hash: &[u8; 32], words: &[[u8; 32]]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update(type_hash);
    for word in words {
        hasher.update(word);
    }
    hasher.finalize().into()
}

/// The type hash of `EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)`.
pub fn domain_type_hash() -> [u8; 32] {
    keccak256(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
}

/// The domain separator for a contract.
pub fn domain_separator(name: &str, version: &str, chain_id: u64, contract: &[u8; 20]) -> [u8; 32] {
    hash_struct(
        &domain_type_hash(),
        &[
            keccak256(name.as_bytes()),
            keccak256(version.as_bytes()),
            word_u128(u128::from(chain_id)),
            word_address(contract),
        ],
    )
}

/// The digest a wallet signs: `keccak256(0x19 0x01 ‖ domainSeparator ‖ structHash)`.
pub fn digest(domain_separator: &[u8; 32], struct_hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update([0x19, 0x01]);
    hasher.update(domain_separator);
    hasher.update(struct_hash);
    hasher.finalize().into()
}
