//! The actions of the state machine, one method each, grouped by the object they act on. An
//! action runs inside [`Exec`], which holds the block's overlay, the sender and the events it
//! emits; `apply_tx` rolls the overlay back when the action returns an error.

mod agent;
mod bid;
mod job;
mod listing;
mod terms;
mod transfer;

use super::apply::{BlockContext, TxError};
use super::state::{Overlay, StateRead};
use aitbc_protocol::model::{Event, Totals};
use aitbc_protocol::tx::Action;
use aitbc_protocol::{Address, Amount, Hash};

pub(crate) const MAX_NAME: usize = 128;
pub(crate) const MAX_TEXT: usize = 4096;
pub(crate) const MAX_PARAMS: usize = 32;
pub(crate) const MAX_GPUS: u32 = 64;

/// One transaction's action being applied.
pub(crate) struct Exec<'o, 'a, 'c, S: StateRead + ?Sized> {
    pub ov: &'o mut Overlay<'a, S>,
    pub ctx: &'c BlockContext<'c>,
    pub sender: Address,
    pub hash: Hash,
    pub events: Vec<Event>,
}

pub(crate) fn ensure(cond: bool, e: impl FnOnce() -> TxError) -> Result<(), TxError> {
    if cond {
        Ok(())
    } else {
        Err(e())
    }
}

pub(crate) fn invalid(msg: &str) -> TxError {
    TxError::Invalid(msg.to_string())
}

impl<S: StateRead + ?Sized> Exec<'_, '_, '_, S> {
    /// Dispatches an action to its method.
    pub fn action(&mut self, action: &Action) -> Result<(), TxError> {
        match action {
            Action::Transfer { to, amount } => self.transfer(*to, *amount),
            Action::CreateListing { .. } => self.create_listing(action),
            Action::UpdateListing { .. } => self.update_listing(action),
            Action::CloseListing { listing_id } => self.close_listing(listing_id),
            Action::PlaceBid { listing_id, amount } => self.place_bid(listing_id, *amount),
            Action::AcceptBid { bid_id } => self.accept_bid(bid_id),
            Action::RejectBid { bid_id } => self.reject_bid(bid_id),
            Action::CancelBid { bid_id } => self.cancel_bid(bid_id),
            Action::SettleBid { bid_id } => self.settle_bid(bid_id),
            Action::SubmitJob { .. } => self.submit_job(action),
            Action::CancelJob { job_id } => self.cancel_job(job_id),
            Action::RegisterAgent { .. } => self.register_agent(action),
            Action::AssignJob { job_id, agent_key } => self.assign_job(job_id, agent_key),
            Action::ReportResult { receipt } => self.report_result(receipt),
            Action::SettleJob { job_id } => self.settle_job(job_id),
            Action::RefundJob { job_id } => self.refund_job_action(job_id),
        }
    }

    fn totals(&self) -> Result<Totals, TxError> {
        Ok(self.ov.totals()?)
    }

    /// Moves `amount` from `who`'s balance into escrow.
    pub(crate) fn lock(&mut self, who: &Address, amount: Amount) -> Result<(), TxError> {
        let mut a = self.ov.account(who)?;
        a.balance = a
            .balance
            .checked_sub(amount)
            .ok_or(TxError::InsufficientFunds {
                balance: a.balance,
                needed: amount,
            })?;
        a.escrowed = a.escrowed.checked_add(amount).ok_or(TxError::Overflow)?;
        self.ov.put_account(who, &a);
        let mut t = self.totals()?;
        t.escrowed = t.escrowed.checked_add(amount).ok_or(TxError::Overflow)?;
        self.ov.put_totals(&t);
        Ok(())
    }

    /// Takes `amount` out of `funder`'s escrow (without crediting anyone yet).
    fn unlock(&mut self, funder: &Address, amount: Amount) -> Result<(), TxError> {
        let mut a = self.ov.account(funder)?;
        a.escrowed = a
            .escrowed
            .checked_sub(amount)
            .ok_or_else(|| TxError::Corrupt(format!("escrow of {funder} below {amount}")))?;
        self.ov.put_account(funder, &a);
        let mut t = self.totals()?;
        t.escrowed = t
            .escrowed
            .checked_sub(amount)
            .ok_or_else(|| TxError::Corrupt("chain escrow total underflow".into()))?;
        self.ov.put_totals(&t);
        Ok(())
    }

    /// Returns escrow to its funder.
    pub(crate) fn release(&mut self, funder: &Address, amount: Amount) -> Result<(), TxError> {
        self.unlock(funder, amount)?;
        self.credit(funder, amount)
    }

    pub(crate) fn credit(&mut self, who: &Address, amount: Amount) -> Result<(), TxError> {
        let mut a = self.ov.account(who)?;
        a.balance = a.balance.checked_add(amount).ok_or(TxError::Overflow)?;
        self.ov.put_account(who, &a);
        Ok(())
    }

    /// Pays escrow to a provider, burning the marketplace fee. Returns (paid, burned).
    pub(crate) fn pay_from_escrow(
        &mut self,
        funder: &Address,
        provider: &Address,
        amount: Amount,
    ) -> Result<(Amount, Amount), TxError> {
        self.unlock(funder, amount)?;
        let fee = amount.basis_points(self.ctx.params.marketplace_fee_bps);
        let paid = amount.checked_sub(fee).ok_or(TxError::Overflow)?;
        self.credit(provider, paid)?;
        let mut t = self.totals()?;
        t.burned = t.burned.checked_add(fee).ok_or(TxError::Overflow)?;
        self.ov.put_totals(&t);
        Ok((paid, fee))
    }
}
