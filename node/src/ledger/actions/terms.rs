//! The money rules of a listing, as pure functions: what a stopped job pays (the listing's
//! `price_per_gpu_second` and `minimum_charge` parameters) and what a rental lease pays for the
//! time held (its `duration_secs` term).

use crate::ledger::apply::TxError;
use aitbc_protocol::model::Listing;
use aitbc_protocol::receipt::Usage;
use aitbc_protocol::Amount;

/// Listing parameter: AIT per GPU-second a stopped job pays.
pub const PER_GPU_SECOND: &str = "price_per_gpu_second";
/// Listing parameter: AIT a stopped job pays at least.
pub const MINIMUM_CHARGE: &str = "minimum_charge";
/// Listing parameter: a rental lease's term in seconds.
pub const LEASE_TERM: &str = "duration_secs";
/// A rental listing that states no term leases for an hour.
pub const DEFAULT_LEASE_SECS: u64 = 3600;

/// How a listing charges for a job the customer stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopRule {
    pub per_gpu_second: Amount,
    pub minimum: Amount,
}

fn param<'l>(params: &'l [(String, String)], name: &str) -> Option<&'l str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
}

fn amount_param(params: &[(String, String)], name: &str) -> Result<Amount, TxError> {
    match param(params, name) {
        None => Ok(Amount::ZERO),
        Some(v) => v.parse().map_err(|_| {
            TxError::Invalid(format!(
                "listing parameter {name}={v:?} is not an AIT amount"
            ))
        }),
    }
}

fn secs_param(params: &[(String, String)], name: &str) -> Result<Option<u64>, TxError> {
    param(params, name)
        .map(|v| {
            v.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
                TxError::Invalid(format!(
                    "listing parameter {name}={v:?} is not a positive number of seconds"
                ))
            })
        })
        .transpose()
}

impl StopRule {
    /// The rule stated by listing parameters; an error names a malformed one.
    pub fn from_params(params: &[(String, String)]) -> Result<StopRule, TxError> {
        Ok(StopRule {
            per_gpu_second: amount_param(params, PER_GPU_SECOND)?,
            minimum: amount_param(params, MINIMUM_CHARGE)?,
        })
    }

    /// The rule of a stored listing (one stored before the parameters were checked pays only
    /// what parses; nothing when no listing).
    pub fn of(listing: Option<&Listing>) -> StopRule {
        listing
            .and_then(|l| StopRule::from_params(&l.parameters).ok())
            .unwrap_or_default()
    }

    /// What a stopped job with `usage` pays: the usage at the rate, at least the minimum, at
    /// most the job's price.
    pub fn charge(&self, usage: &Usage, price: Amount) -> Amount {
        let used = Amount(
            self.per_gpu_second
                .0
                .saturating_mul(u128::from(usage.gpu_seconds)),
        );
        used.max(self.minimum).min(price)
    }
}

/// Checks the money parameters of a new listing.
pub fn check_listing_params(params: &[(String, String)]) -> Result<(), TxError> {
    StopRule::from_params(params)?;
    secs_param(params, LEASE_TERM)?;
    Ok(())
}

/// A rental listing's lease term in milliseconds.
pub fn lease_term_ms(listing: &Listing) -> u64 {
    secs_param(&listing.parameters, LEASE_TERM)
        .ok()
        .flatten()
        .unwrap_or(DEFAULT_LEASE_SECS)
        .saturating_mul(1000)
}

/// What a lease of `amount` from `start_ms` to `end_ms` pays when it ends at `now_ms`: the share
/// of the term held, all of it once the term is over.
pub fn lease_pay(amount: Amount, start_ms: u64, end_ms: u64, now_ms: u64) -> Amount {
    let term = end_ms.saturating_sub(start_ms);
    if term == 0 || now_ms >= end_ms {
        return amount;
    }
    let held = now_ms.saturating_sub(start_ms);
    // amount * held / term without overflow: amount < 2^128 and held < term < 2^64.
    let whole = amount.0 / u128::from(term) * u128::from(held);
    let part = amount.0 % u128::from(term) * u128::from(held) / u128::from(term);
    Amount(whole + part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn fair_exchange_stop_rule_charges_usage_between_minimum_and_price() {
        let rule =
            StopRule::from_params(&[p(PER_GPU_SECOND, "0.5"), p(MINIMUM_CHARGE, "2")]).unwrap();
        let usage = |gpu_seconds| Usage {
            gpu_seconds,
            ..Default::default()
        };
        let price = Amount::from_ait(10).unwrap();
        assert_eq!(rule.charge(&usage(1), price), Amount::from_ait(2).unwrap());
        assert_eq!(rule.charge(&usage(10), price), Amount::from_ait(5).unwrap());
        assert_eq!(rule.charge(&usage(1000), price), price);
        assert_eq!(
            StopRule::default().charge(&usage(1000), price),
            Amount::ZERO
        );
        assert!(StopRule::from_params(&[p(MINIMUM_CHARGE, "lots")]).is_err());
        assert!(check_listing_params(&[p(LEASE_TERM, "0")]).is_err());
    }

    #[test]
    fn fair_exchange_lease_pays_the_share_held() {
        let a = Amount::from_ait(20).unwrap();
        assert_eq!(lease_pay(a, 1000, 11_000, 1000), Amount::ZERO);
        assert_eq!(
            lease_pay(a, 1000, 11_000, 6000),
            Amount::from_ait(10).unwrap()
        );
        assert_eq!(lease_pay(a, 1000, 11_000, 11_000), a);
        assert_eq!(lease_pay(a, 1000, 11_000, 99_000), a);
        assert_eq!(lease_pay(Amount(u128::MAX), 0, 2, 1), Amount(u128::MAX / 2));
        assert!(lease_pay(Amount(u128::MAX), 0, u64::MAX, u64::MAX - 1) < Amount(u128::MAX));
    }
}
