//! Money as integer micro-tokens: one token is 1,000,000 micro-tokens. Never a float, and every
//! operation that could overflow says so instead of wrapping.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Micro-tokens in one token.
pub const MICROS_PER_TOKEN: u64 = 1_000_000;

/// An amount of money in micro-tokens.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MicroTokens(pub u64);

impl MicroTokens {
    pub const ZERO: Self = Self(0);

    /// `tokens` whole tokens, or `None` if that overflows.
    pub fn from_tokens(tokens: u64) -> Option<Self> {
        tokens.checked_mul(MICROS_PER_TOKEN).map(Self)
    }

    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).map(Self)
    }

    /// `self × count`, e.g. a per-answer price times answers.
    pub fn checked_mul(self, count: u64) -> Option<Self> {
        self.0.checked_mul(count).map(Self)
    }
}

impl fmt::Display for MicroTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}",
            self.0 / MICROS_PER_TOKEN,
            self.0 % MICROS_PER_TOKEN
        )
    }
}

impl fmt::Debug for MicroTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MicroTokens({self})")
    }
}

/// Why a string is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid amount {input:?}: expected tokens with at most 6 decimals, like 12 or 0.000150, below 2^64 micro-tokens")]
pub struct AmountError {
    input: String,
}

impl FromStr for MicroTokens {
    type Err = AmountError;

    /// Parses "12", "12.5" or "0.000150" (tokens).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || AmountError {
            input: s.chars().take(40).collect(),
        };
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (s.contains('.') && !digits(frac)) || frac.len() > 6 {
            return Err(err());
        }
        let whole: u64 = whole.parse().map_err(|_| err())?;
        let frac_micros: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<6}").parse().map_err(|_| err())?
        };
        Self::from_tokens(whole)
            .and_then(|w| w.checked_add(Self(frac_micros)))
            .ok_or_else(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_checked() {
        let max = MicroTokens(u64::MAX);
        assert_eq!(max.checked_add(MicroTokens(1)), None);
        assert_eq!(MicroTokens::ZERO.checked_sub(MicroTokens(1)), None);
        assert_eq!(MicroTokens(3).checked_mul(u64::MAX), None);
        assert_eq!(MicroTokens(150).checked_mul(4), Some(MicroTokens(600)));
    }

    #[test]
    fn parses_and_prints_decimal_tokens() {
        assert_eq!("12".parse(), Ok(MicroTokens(12_000_000)));
        assert_eq!("0.000150".parse(), Ok(MicroTokens(150)));
        assert_eq!("1.5".parse(), Ok(MicroTokens(1_500_000)));
        assert_eq!(MicroTokens(1_500_000).to_string(), "1.500000");
        for bad in [
            "",
            "1.",
            ".5",
            "1.0000001",
            "-1",
            "1e6",
            "18446744073709.551616",
            "abc",
        ] {
            assert!(
                bad.parse::<MicroTokens>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
