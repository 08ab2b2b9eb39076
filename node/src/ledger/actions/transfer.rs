//! Moving funds between accounts.

use super::{ensure, invalid, Exec};
use crate::ledger::apply::TxError;
use crate::ledger::state::StateRead;
use aitbc_protocol::model::Event;
use aitbc_protocol::{Address, Amount};

impl<S: StateRead + ?Sized> Exec<'_, '_, '_, S> {
    pub(super) fn transfer(&mut self, to: Address, amount: Amount) -> Result<(), TxError> {
        ensure(!amount.is_zero(), || {
            invalid("transfer amount must be greater than zero")
        })?;
        let mut from = self.ov.account(&self.sender)?;
        from.balance = from
            .balance
            .checked_sub(amount)
            .ok_or(TxError::InsufficientFunds {
                balance: from.balance,
                needed: amount,
            })?;
        self.ov.put_account(&self.sender, &from);
        let mut dest = self.ov.account(&to)?;
        dest.balance = dest.balance.checked_add(amount).ok_or(TxError::Overflow)?;
        self.ov.put_account(&to, &dest);
        self.events.push(Event::Transferred {
            from: self.sender,
            to,
            amount,
        });
        Ok(())
    }
}
