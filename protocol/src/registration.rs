//! Proof that an agent registration was made by the holder of the agent key.
//!
//! An agent's public key is public (the agent's status, the chain), so a `RegisterAgent`
//! that named only the key would let anyone bind it to their own wallet first. The action
//! therefore carries `proof`: the agent key's signature over
//!
//! ```text
//! "aitbc/agent-registration/v1" || 0x00 || borsh((chain_id, owner, agent_id, serves))
//! ```
//!
//! with `owner` the address of the wallet that sends the registration. Binding the chain id and
//! the owner means a proof cannot be replayed on another chain or by another wallet; binding
//! `agent_id` and `serves` means an intercepted proof cannot be altered. The domain keeps the
//! signature from ever being valid as a transaction, job receipt or consensus message.

use crate::crypto::{Address, KeyError, Keypair, PublicKey, Signature};
use crate::tx::{Action, Serves};

/// Domain of the bytes an agent key signs to consent to its registration.
pub const AGENT_REGISTRATION_DOMAIN: &str = "aitbc/agent-registration/v1";

/// The canonical bytes the agent key signs to be registered to `owner` on `chain_id` as
/// `agent_id`, serving `serves`: the domain, a zero byte, then the borsh encoding of
/// `(chain_id, owner, agent_id, serves)` (borsh is canonical: one encoding per value).
pub fn registration_signing_bytes(
    chain_id: &str,
    owner: &Address,
    agent_id: &str,
    serves: &Serves,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + chain_id.len() + agent_id.len());
    out.extend_from_slice(AGENT_REGISTRATION_DOMAIN.as_bytes());
    out.push(0);
    // Writing into a Vec cannot fail.
    borsh::to_writer(&mut out, &(chain_id, owner, agent_id, serves))
        .expect("borsh encoding into a Vec");
    out
}

/// The agent's proof of possession for its registration to `owner` (see the module docs).
pub fn sign_registration(
    agent: &Keypair,
    chain_id: &str,
    owner: &Address,
    agent_id: &str,
    serves: &Serves,
) -> Signature {
    agent.sign(&registration_signing_bytes(
        chain_id, owner, agent_id, serves,
    ))
}

/// Checks that `proof` is `agent_key`'s signature over the registration of that key to `owner`
/// on `chain_id` as `agent_id` serving `serves`.
pub fn verify_registration(
    agent_key: &PublicKey,
    chain_id: &str,
    owner: &Address,
    agent_id: &str,
    serves: &Serves,
    proof: &Signature,
) -> Result<(), KeyError> {
    agent_key.verify(
        &registration_signing_bytes(chain_id, owner, agent_id, serves),
        proof,
    )
}

/// The `RegisterAgent` action that `owner` sends (signed as a transaction by the owner wallet)
/// to register `agent`, with the agent's proof for this chain, owner, id and serves.
pub fn register_agent_action(
    agent: &Keypair,
    chain_id: &str,
    owner: &Address,
    agent_id: &str,
    serves: &Serves,
) -> Action {
    Action::RegisterAgent {
        agent_key: agent.public(),
        agent_id: agent_id.to_string(),
        serves: serves.clone(),
        proof: sign_registration(agent, chain_id, owner, agent_id, serves),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(agent: &PublicKey, c: &str, o: &Address, id: &str, s: &Serves, p: &Signature) -> bool {
        verify_registration(agent, c, o, id, s, p).is_ok()
    }

    #[test]
    fn proof_verifies_only_for_its_chain_owner_id_and_serves() {
        let agent = Keypair::generate();
        let owner = Keypair::generate().address();
        let other = Keypair::generate().address();
        let any = Serves::AnyProvider;
        let p = sign_registration(&agent, "aitbc-test", &owner, "node-1", &any);
        let k = agent.public();
        assert!(check(&k, "aitbc-test", &owner, "node-1", &any, &p));
        assert!(!check(&k, "aitbc-main", &owner, "node-1", &any, &p));
        assert!(!check(&k, "aitbc-test", &other, "node-1", &any, &p));
        assert!(!check(&k, "aitbc-test", &owner, "node-2", &any, &p));
        let only = Serves::Providers(vec![other]);
        assert!(!check(&k, "aitbc-test", &owner, "node-1", &only, &p));
        // another key, or a garbage signature
        let thief = Keypair::generate();
        assert!(!check(
            &thief.public(),
            "aitbc-test",
            &owner,
            "node-1",
            &any,
            &p
        ));
        assert!(!check(
            &k,
            "aitbc-test",
            &owner,
            "node-1",
            &any,
            &Signature([0; 64])
        ));
        let forged = sign_registration(&thief, "aitbc-test", &owner, "node-1", &any);
        assert!(!check(&k, "aitbc-test", &owner, "node-1", &any, &forged));
    }

    #[test]
    fn signing_bytes_are_domain_separated_and_unambiguous() {
        let owner = Keypair::generate().address();
        let b = registration_signing_bytes("c", &owner, "a", &Serves::AnyProvider);
        assert!(b.starts_with(b"aitbc/agent-registration/v1\0"));
        // Length-prefixed strings: moving a character between chain id and agent id changes
        // the bytes.
        assert_ne!(
            registration_signing_bytes("ab", &owner, "c", &Serves::AnyProvider),
            registration_signing_bytes("a", &owner, "bc", &Serves::AnyProvider)
        );
        // A registration proof is never a valid transaction signature (different domain).
        assert!(!b.starts_with(crate::tx::TX_SIGNING_DOMAIN.as_bytes()));
    }

    #[test]
    fn action_carries_a_proof_that_verifies() {
        let agent = Keypair::generate();
        let owner = Keypair::generate().address();
        let serves = Serves::Providers(vec![owner]);
        match register_agent_action(&agent, "aitbc-test", &owner, "node-1", &serves) {
            Action::RegisterAgent {
                agent_key,
                agent_id,
                serves: s,
                proof,
            } => {
                assert_eq!(agent_key, agent.public());
                assert_eq!((agent_id.as_str(), &s), ("node-1", &serves));
                assert!(check(
                    &agent_key,
                    "aitbc-test",
                    &owner,
                    &agent_id,
                    &s,
                    &proof
                ));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
