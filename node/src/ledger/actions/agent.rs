//! Agents: registration by the owner wallet with the agent key's proof.

use super::listing::misrouted;
use super::{ensure, invalid, Exec, MAX_NAME};
use crate::ledger::apply::TxError;
use crate::ledger::state::StateRead;
use aitbc_protocol::model::{AgentRecord, Event};
use aitbc_protocol::registration::verify_registration;
use aitbc_protocol::tx::Action;

impl<S: StateRead + ?Sized> Exec<'_, '_, '_, S> {
    pub(super) fn register_agent(&mut self, action: &Action) -> Result<(), TxError> {
        let Action::RegisterAgent {
            agent_key,
            agent_id,
            serves,
            proof,
        } = action
        else {
            return Err(misrouted("register-agent"));
        };
        ensure(
            !agent_id.trim().is_empty() && agent_id.len() <= MAX_NAME,
            || invalid("agent id must be 1-128 characters"),
        )?;
        agent_key
            .verifying_key()
            .map_err(|_| invalid("agent key is not a valid ed25519 key"))?;
        // Proof of possession: the agent key consents to this owner, chain, id and serves,
        // so knowing an agent's (public) key is not enough to register it.
        verify_registration(
            agent_key,
            &self.ctx.params.chain_id,
            &self.sender,
            agent_id,
            serves,
            proof,
        )
        .map_err(|_| TxError::BadAgentProof(*agent_key))?;
        if let Some(existing) = self.ov.agent(agent_key)? {
            ensure(existing.owner == self.sender, || {
                TxError::NotAllowed(format!(
                    "agent key {agent_key} is registered to {}",
                    existing.owner
                ))
            })?;
        }
        self.ov.put_agent(&AgentRecord {
            key: *agent_key,
            agent_id: agent_id.trim().to_string(),
            owner: self.sender,
            serves: serves.clone(),
            registered_height: self.ctx.height,
        });
        self.events.push(Event::AgentRegistered {
            agent_key: *agent_key,
            owner: self.sender,
        });
        Ok(())
    }
}
