//! AIT amounts: integers in base units with a fixed number of decimals.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Number of decimals of one AIT. `1 AIT = 10^DECIMALS` base units.
pub const DECIMALS: u32 = 6;
const UNIT: u128 = 10u128.pow(DECIMALS);

/// An amount of AIT in base units. Arithmetic is checked: overflow is an error, never a wrap.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Amount(pub u128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty; give a number of AIT such as 100 or 0.5")]
    Empty,
    #[error("amount {0:?} is negative; amounts must be zero or more")]
    Negative(String),
    #[error("amount {0:?} has more than {DECIMALS} decimals")]
    TooManyDecimals(String),
    #[error("amount {0:?} is not a number of AIT such as 100 or 0.5")]
    Malformed(String),
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub fn from_ait(whole: u128) -> Option<Amount> {
        whole.checked_mul(UNIT).map(Amount)
    }
    pub fn base_units(self) -> u128 {
        self.0
    }
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
    /// `self * bps / 10_000`, rounded down.
    pub fn basis_points(self, bps: u32) -> Amount {
        // u128 cannot overflow here for any realistic supply: split to stay exact anyway.
        let bps = bps as u128;
        Amount((self.0 / 10_000) * bps + (self.0 % 10_000) * bps / 10_000)
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl FromStr for Amount {
    type Err = AmountError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AmountError::Empty);
        }
        if s.starts_with('-') {
            return Err(AmountError::Negative(input.to_string()));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty())
            || !digits(whole)
            || !digits(frac)
            || (s.contains('.') && frac.is_empty())
        {
            return Err(AmountError::Malformed(input.to_string()));
        }
        if frac.len() > DECIMALS as usize {
            return Err(AmountError::TooManyDecimals(input.to_string()));
        }
        let overflow = || AmountError::Overflow(input.to_string());
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| overflow())?
        };
        let mut frac_units: u128 = 0;
        if !frac.is_empty() {
            frac_units = frac
                .parse()
                .map_err(|_| AmountError::Malformed(input.to_string()))?;
            frac_units *= 10u128.pow(DECIMALS - frac.len() as u32);
        }
        whole
            .checked_mul(UNIT)
            .and_then(|w| w.checked_add(frac_units))
            .map(Amount)
            .ok_or_else(overflow)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / UNIT;
        let frac = self.0 % UNIT;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let s = format!("{frac:0width$}", width = DECIMALS as usize);
            write!(f, "{whole}.{}", s.trim_end_matches('0'))
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_whole_and_fractional_amounts_exactly() {
        assert_eq!("100".parse::<Amount>().unwrap(), Amount(100 * UNIT));
        assert_eq!("0.5".parse::<Amount>().unwrap(), Amount(UNIT / 2));
        assert_eq!(".5".parse::<Amount>().unwrap(), Amount(UNIT / 2));
        assert_eq!("0.000001".parse::<Amount>().unwrap(), Amount(1));
        assert_eq!("1.25".parse::<Amount>().unwrap().to_string(), "1.25");
    }

    #[test]
    fn rejects_bad_amounts_with_the_reason() {
        assert!(matches!(
            "-1".parse::<Amount>(),
            Err(AmountError::Negative(_))
        ));
        assert!(matches!(
            "0.0000001".parse::<Amount>(),
            Err(AmountError::TooManyDecimals(_))
        ));
        assert!(matches!(
            "abc".parse::<Amount>(),
            Err(AmountError::Malformed(_))
        ));
        assert!(matches!(
            "1.".parse::<Amount>(),
            Err(AmountError::Malformed(_))
        ));
        assert!(matches!(
            "1e5".parse::<Amount>(),
            Err(AmountError::Malformed(_))
        ));
        assert!(matches!("".parse::<Amount>(), Err(AmountError::Empty)));
        let huge = "9".repeat(40);
        assert!(matches!(
            huge.parse::<Amount>(),
            Err(AmountError::Overflow(_))
        ));
    }

    #[test]
    fn basis_points_rounds_down() {
        assert_eq!(Amount(10_000).basis_points(250), Amount(250));
        assert_eq!(
            Amount(u128::MAX).basis_points(10_000),
            Amount(u128::MAX - u128::MAX % 10_000 + (u128::MAX % 10_000))
        );
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(units in any::<u128>()) {
            let a = Amount(units);
            prop_assert_eq!(a.to_string().parse::<Amount>().unwrap(), a);
        }
    }
}
