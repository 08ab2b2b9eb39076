//! Who may join the peer network: validators of the current validator set, and the listener
//! keys the operator allows (`--allow-peer`). Everyone else is refused at HELLO, and a refused
//! key that keeps trying is refused for a growing while without being looked at again.

use aitbc_protocol::PublicKey;
use foldhash::{HashMap, HashSet};
use parking_lot::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// Why a peer holds a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// In the validator set: may send every consensus message.
    Validator,
    /// An allowed listener: may sync blocks and gossip transactions, not vote or propose.
    Listener,
}

/// Why a HELLO was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("key {0} is neither a validator of this chain nor an allowed peer (--allow-peer)")]
    NotAllowed(PublicKey),
    #[error("key {key} was refused recently; refused for another {remaining:?}")]
    BackedOff { key: PublicKey, remaining: Duration },
}

struct Strikes {
    count: u32,
    until: Instant,
}

/// First and longest wait before a refused key is looked at again.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Refused keys remembered at most (strangers can make new keys at will: this only bounds
/// memory, the refusal itself costs no signature check either way).
const MAX_REMEMBERED: usize = 4096;

pub struct PeerPolicy {
    validators: RwLock<HashSet<[u8; 32]>>,
    listeners: HashSet<[u8; 32]>,
    refused: Mutex<HashMap<[u8; 32], Strikes>>,
}

impl PeerPolicy {
    pub fn new(
        validators: impl IntoIterator<Item = PublicKey>,
        listeners: impl IntoIterator<Item = PublicKey>,
    ) -> PeerPolicy {
        PeerPolicy {
            validators: RwLock::new(validators.into_iter().map(|k| k.0).collect()),
            listeners: listeners.into_iter().map(|k| k.0).collect(),
            refused: Mutex::new(HashMap::default()),
        }
    }

    pub fn set_validators(&self, keys: impl IntoIterator<Item = [u8; 32]>) {
        *self.validators.write() = keys.into_iter().collect();
    }

    pub fn add_validator(&self, key: [u8; 32]) {
        self.validators.write().insert(key);
    }

    pub fn remove_validator(&self, key: &[u8; 32]) {
        self.validators.write().remove(key);
    }

    pub fn is_validator(&self, key: &[u8; 32]) -> bool {
        self.validators.read().contains(key)
    }

    /// The key's role, without touching the refusal record (for a key we dialled ourselves).
    pub fn role(&self, key: &[u8; 32]) -> Option<Role> {
        if self.is_validator(key) {
            Some(Role::Validator)
        } else if self.listeners.contains(key) {
            Some(Role::Listener)
        } else {
            None
        }
    }

    /// Decides a HELLO from `key` at `now`: its role, or why it is refused (and the refusal is
    /// remembered, doubling the wait each time).
    pub fn admit(&self, key: &PublicKey, now: Instant) -> Result<Role, Refusal> {
        let mut refused = self.refused.lock();
        if let Some(s) = refused.get(&key.0) {
            if now < s.until {
                return Err(Refusal::BackedOff {
                    key: *key,
                    remaining: s.until - now,
                });
            }
        }
        if let Some(role) = self.role(&key.0) {
            refused.remove(&key.0);
            return Ok(role);
        }
        if refused.len() >= MAX_REMEMBERED {
            refused.retain(|_, s| s.until > now);
            if refused.len() >= MAX_REMEMBERED {
                refused.clear();
            }
        }
        let s = refused.entry(key.0).or_insert(Strikes {
            count: 0,
            until: now,
        });
        let wait = FIRST_BACKOFF
            .saturating_mul(1u32 << s.count.min(6))
            .min(MAX_BACKOFF);
        s.count = s.count.saturating_add(1);
        s.until = now + wait;
        Err(Refusal::NotAllowed(*key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    #[test]
    fn hostile_only_validators_and_allowed_listeners_are_admitted() {
        let p = PeerPolicy::new([key(1)], [key(2)]);
        let now = Instant::now();
        assert_eq!(p.admit(&key(1), now), Ok(Role::Validator));
        assert_eq!(p.admit(&key(2), now), Ok(Role::Listener));
        assert_eq!(p.admit(&key(3), now), Err(Refusal::NotAllowed(key(3))));
        p.set_validators([[3u8; 32]]);
        assert_eq!(p.role(&[1; 32]), None, "a removed validator loses its role");
        assert_eq!(p.role(&[3; 32]), Some(Role::Validator));
    }

    #[test]
    fn hostile_a_refused_key_is_backed_off_longer_each_time() {
        let p = PeerPolicy::new([], []);
        let t0 = Instant::now();
        assert!(matches!(p.admit(&key(9), t0), Err(Refusal::NotAllowed(_))));
        assert!(matches!(
            p.admit(&key(9), t0 + Duration::from_millis(500)),
            Err(Refusal::BackedOff { .. })
        ));
        // After the first second it is looked at again (and refused, now for two seconds).
        let t1 = t0 + Duration::from_millis(1001);
        assert!(matches!(p.admit(&key(9), t1), Err(Refusal::NotAllowed(_))));
        match p.admit(&key(9), t1 + Duration::from_millis(1500)) {
            Err(Refusal::BackedOff { remaining, .. }) => {
                assert!(remaining <= Duration::from_millis(500))
            }
            other => panic!("expected a back-off, got {other:?}"),
        }
    }

    #[test]
    fn hostile_many_strangers_do_not_grow_memory_without_bound() {
        let p = PeerPolicy::new([], []);
        let now = Instant::now();
        for i in 0..(MAX_REMEMBERED as u32 + 100) {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            let _ = p.admit(&PublicKey(k), now);
        }
        assert!(p.refused.lock().len() <= MAX_REMEMBERED);
    }
}
