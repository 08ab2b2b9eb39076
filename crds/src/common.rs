//! Types shared by several resources: conditions and the record of a transaction in flight.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Status of a condition, as in Kubernetes' own `metav1.Condition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observation of a resource's state (`metav1.Condition` shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type in CamelCase, e.g. `Ready`, `Funded`, `Accepted`.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    /// One CamelCase word saying why, e.g. `WalletNotFound`.
    pub reason: String,
    /// What a person needs to know, in a sentence.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time the status last changed.
    pub last_transition_time: String,
    /// The `.metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub fn new(
        type_: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
        generation: Option<i64>,
        now: &str,
    ) -> Condition {
        Condition {
            type_: type_.to_string(),
            status: if status {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: now.to_string(),
            observed_generation: generation,
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// Sets `new` in `conditions`, replacing the condition of the same type. The transition time
/// of the old condition is kept when the status did not change, as Kubernetes does.
/// Returns whether anything but the time changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = old.status != new.status
                || old.reason != new.reason
                || old.message != new.message
                || old.observed_generation != new.observed_generation;
            *old = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Finds the condition of type `type_`.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A signed transaction the operator recorded in status before submitting it, so that a restart
/// resubmits the very same bytes (same hash: the chain never applies it twice) instead of
/// signing a second payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingTx {
    /// The chain action, e.g. `place-bid`, `submit-job`.
    pub action: String,
    /// Hex hash of the signed transaction (its id on the chain).
    pub hash: String,
    /// The sender's nonce in the transaction.
    pub nonce: u64,
    /// Hex of the borsh-encoded signed transaction: public data, no key material.
    pub signed_tx: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_condition_keeps_the_transition_time_when_the_status_holds() {
        let mut cs = vec![];
        assert!(set_condition(
            &mut cs,
            Condition::new("Ready", false, "Waiting", "x", Some(1), "t1")
        ));
        assert!(set_condition(
            &mut cs,
            Condition::new("Ready", false, "Waiting", "y", Some(1), "t2")
        ));
        assert_eq!(cs[0].last_transition_time, "t1");
        assert!(!set_condition(
            &mut cs,
            Condition::new("Ready", false, "Waiting", "y", Some(1), "t3")
        ));
        assert!(set_condition(
            &mut cs,
            Condition::new("Ready", true, "Done", "", Some(1), "t4")
        ));
        assert_eq!(cs[0].last_transition_time, "t4");
        assert_eq!(cs.len(), 1);
        assert!(find_condition(&cs, "Ready").is_some_and(Condition::is_true));
    }
}
