//! Ed25519 signing with nonces made ahead of time, for a provider's answers.
//!
//! An Ed25519 signature is (R, s) with R = \[r\]B and s = r + H(R ‖ A ‖ M)·a. Computing R, a
//! scalar multiplication of the base point, is nearly all of a signature's cost, and it does
//! not depend on the message. A [`Presigner`] keeps a pool of (r, R) made in advance, off the
//! request path (a provider refills it from a thread of its own), and signs with one of them:
//! two SHA-512 blocks and a scalar multiply-add, about a microsecond. The signatures are
//! ordinary Ed25519 signatures; every verifier accepts them (`verify_strict` included).
//!
//! RFC 8032 derives r from the message, so that a broken random generator cannot leak the key.
//! Here r = SHA-512(domain ‖ the key's secret hash prefix ‖ 32 bytes from the OS ‖ a counter)
//! mod ℓ: secret (the prefix is), unpredictable (the OS's randomness is), and never the same
//! twice from one signer even if the OS gave the same bytes twice (the counter). Each nonce
//! leaves the pool when it is used and is wiped; a signature made when the pool is empty makes
//! its nonce on the spot.
//!
//! The limit of nonces made ahead: a copy of the process's memory that runs on (a `fork` that
//! keeps signing, a restored or cloned VM snapshot) holds the same unused nonces, and two
//! signatures with one R give the key away. RFC 8032's deterministic signing has no such risk.
//! A provider that may be snapshotted while serving should sign with a pool of 0 (every nonce
//! made on the spot from fresh OS randomness) or restart after a restore.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::hazmat::ExpandedSecretKey;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, Zeroizing};

use crate::id::{signed_bytes, NodeId, NodeKey, Signature};

/// Nonces a provider keeps ready: more than a burst of answers needs between two refills.
pub const POOL_DEFAULT: usize = 128;

const NONCE_DOMAIN: &[u8] = b"ganglion/presign-nonce/v1\0";

/// A secret nonce r and its public commitment R = \[r\]B.
struct Nonce {
    r: Scalar,
    commitment: [u8; 32],
}

impl Drop for Nonce {
    fn drop(&mut self) {
        self.r.zeroize();
    }
}

/// Signs with precomputed nonces (see the module notes).
pub struct Presigner {
    secret: ExpandedSecretKey,
    verifying: VerifyingKey,
    pool: Mutex<Vec<Nonce>>,
    low: Condvar,
    capacity: usize,
    made: AtomicU64,
}

impl std::fmt::Debug for Presigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presigner")
            .field("id", &self.id())
            .field("ready", &self.ready())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Presigner {
    /// A signer for `key` that keeps up to `capacity` nonces. The pool starts empty: call
    /// [`Presigner::refill`].
    pub fn new(key: &NodeKey, capacity: usize) -> Self {
        let signing = key.signing_key();
        let seed = Zeroizing::new(signing.to_bytes());
        Self {
            secret: ExpandedSecretKey::from(&*seed),
            verifying: signing.verifying_key(),
            pool: Mutex::new(Vec::with_capacity(capacity)),
            low: Condvar::new(),
            capacity,
            made: AtomicU64::new(0),
        }
    }

    /// The identity whose signatures this makes.
    pub fn id(&self) -> NodeId {
        NodeId::from_bytes(self.verifying.to_bytes())
    }

    /// Nonces ready in the pool.
    pub fn ready(&self) -> usize {
        self.pool.lock().map_or(0, |p| p.len())
    }

    /// Fills the pool up to its capacity and returns how many nonces it made (fewer only when
    /// the OS gives no randomness). Each costs a scalar multiplication (the bulk of a
    /// signature): call this off the request path.
    pub fn refill(&self) -> usize {
        let mut made = 0;
        while self.ready() < self.capacity {
            let Some(nonce) = self.make() else {
                break;
            };
            match self.pool.lock() {
                Ok(mut pool) if pool.len() < self.capacity => pool.push(nonce),
                _ => break,
            }
            made += 1;
        }
        made
    }

    /// Keeps the pool full until `stop` says so: refills, then waits up to `every` for the pool
    /// to fall to half. A refill that made nothing (no randomness from the OS) waits the whole
    /// `every` before it tries again, instead of spinning.
    pub fn keep_full(&self, every: Duration, stop: impl Fn() -> bool) {
        while !stop() {
            let made = self.refill();
            let Ok(pool) = self.pool.lock() else {
                return;
            };
            let half = self.capacity / 2;
            let waited = if made == 0 && pool.len() <= half {
                self.low.wait_timeout_while(pool, every, |_| true)
            } else {
                self.low.wait_timeout_while(pool, every, |p| p.len() > half)
            };
            if waited.is_err() {
                return;
            }
        }
    }

    /// Signs `message` for `domain`, exactly as [`NodeKey::sign`] would be checked (the same
    /// signed bytes), with a nonce from the pool.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Signature {
        let taken = match self.pool.lock() {
            Ok(mut pool) => {
                // Moved out with its slot zeroed: no copy of r stays behind in the pool's
                // spare capacity.
                let nonce = pool.last_mut().map(|slot| Nonce {
                    r: std::mem::replace(&mut slot.r, Scalar::ZERO),
                    commitment: slot.commitment,
                });
                pool.pop();
                if pool.len() <= self.capacity / 2 {
                    self.low.notify_one();
                }
                nonce
            }
            Err(_) => None,
        };
        let nonce = taken.or_else(|| self.make());
        let bytes = signed_bytes(domain, message);
        let Some(nonce) = nonce else {
            // No randomness from the OS: RFC 8032's deterministic nonce instead.
            let signature =
                ed25519_dalek::hazmat::raw_sign::<Sha512>(&self.secret, &bytes, &self.verifying);
            return Signature(signature.to_bytes());
        };
        let k = wide_scalar(
            Sha512::new()
                .chain_update(nonce.commitment)
                .chain_update(self.verifying.as_bytes())
                .chain_update(&bytes),
        );
        let s = k * self.secret.scalar + nonce.r;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&nonce.commitment);
        out[32..].copy_from_slice(s.as_bytes());
        Signature(out)
    }

    /// A fresh nonce, or `None` if the OS has no randomness to give.
    fn make(&self) -> Option<Nonce> {
        let mut random = [0u8; 32];
        getrandom::getrandom(&mut random).ok()?;
        let counter = self.made.fetch_add(1, Ordering::Relaxed);
        let r = wide_scalar(
            Sha512::new()
                .chain_update(NONCE_DOMAIN)
                .chain_update(self.secret.hash_prefix)
                .chain_update(random)
                .chain_update(counter.to_le_bytes()),
        );
        random.zeroize();
        let commitment = EdwardsPoint::mul_base(&r).compress().to_bytes();
        Some(Nonce { r, commitment })
    }
}

fn wide_scalar(hash: Sha512) -> Scalar {
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&hash.finalize());
    let scalar = Scalar::from_bytes_mod_order_wide(&wide);
    wide.zeroize();
    scalar
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn presigned_signatures_verify_strictly_and_never_share_a_nonce() {
        let key = NodeKey::from_seed([7; 32]);
        let signer = Presigner::new(&key, 16);
        assert_eq!(signer.id(), key.id());
        assert_eq!(signer.refill(), 16);
        assert_eq!(signer.ready(), 16);
        let public = key.id().public_key().unwrap();
        let mut commitments = HashSet::new();
        // Past the pool's size: the last ones make their nonce on the spot.
        for i in 0..40u32 {
            let message = i.to_le_bytes();
            let signature = signer.sign("test/v1", &message);
            public.verify("test/v1", &message, &signature).unwrap();
            assert!(
                commitments.insert(signature.0[..32].to_vec()),
                "nonce reused"
            );
            // Bound to its message and domain.
            assert!(public.verify("test/v1", b"other", &signature).is_err());
            assert!(public.verify("test/v2", &message, &signature).is_err());
        }
        assert_eq!(signer.ready(), 0);
    }

    #[test]
    fn the_same_message_signed_twice_gives_two_valid_signatures() {
        let key = NodeKey::from_seed([9; 32]);
        let signer = Presigner::new(&key, 0);
        let a = signer.sign("test/v1", b"hello");
        let b = signer.sign("test/v1", b"hello");
        assert_ne!(a, b);
        for s in [a, b] {
            key.id().verify("test/v1", b"hello", &s).unwrap();
        }
        // A signature by another key does not pass as this one's.
        let other = Presigner::new(&NodeKey::from_seed([10; 32]), 0);
        let forged = other.sign("test/v1", b"hello");
        assert!(key.id().verify("test/v1", b"hello", &forged).is_err());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test's own stopwatch: woken, not timed out
    fn a_refiller_is_woken_when_the_pool_runs_low_and_stops_when_told() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let signer = Arc::new(Presigner::new(&NodeKey::from_seed([3; 32]), 8));
        let stop = Arc::new(AtomicBool::new(false));
        let refiller = {
            let (signer, stop) = (Arc::clone(&signer), Arc::clone(&stop));
            std::thread::spawn(move || {
                signer.keep_full(Duration::from_secs(30), || stop.load(Ordering::Relaxed));
            })
        };
        let started = std::time::Instant::now();
        let full = || {
            while signer.ready() < 8 {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "never refilled"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        full();
        for _ in 0..6 {
            signer.sign("test/v1", b"x");
        }
        // Woken once the pool fell to half, long before its 30 s timeout.
        full();
        stop.store(true, Ordering::Relaxed);
        // Signing down to half wakes it to see the stop. (It may have been refilling still,
        // past the signatures that woke nobody: sign on until it has stopped.)
        while !refiller.is_finished() {
            assert!(started.elapsed() < Duration::from_secs(10), "never stopped");
            signer.sign("test/v1", b"x");
            std::thread::sleep(Duration::from_millis(1));
        }
        refiller.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
