//! Bids: place, accept, reject, cancel, settle.

use super::terms::{lease_pay, lease_term_ms};
use super::{ensure, Exec};
use crate::ledger::apply::TxError;
use crate::ledger::keys;
use crate::ledger::state::StateRead;
use aitbc_protocol::model::{Bid, BidStatus, Event, Lease, Listing};
use aitbc_protocol::tx::{object_id, ServiceType};
use aitbc_protocol::{Address, Amount};

impl<S: StateRead + ?Sized> Exec<'_, '_, '_, S> {
    pub(super) fn place_bid(&mut self, listing_id: &str, amount: Amount) -> Result<(), TxError> {
        let mut l = self.listing(listing_id)?;
        ensure(l.active, || TxError::ListingClosed(listing_id.into()))?;
        ensure(amount >= l.price, || TxError::BidBelowPrice {
            bid: amount,
            price: l.price,
        })?;
        ensure(l.owner != self.sender, || {
            TxError::NotAllowed("a provider cannot bid on its own listing".into())
        })?;
        let id = object_id("bid", &self.hash);
        ensure(self.ov.bid(&id)?.is_none(), || {
            TxError::WrongState(format!("bid {id} exists"))
        })?;
        self.lock(&self.sender.clone(), amount)?;
        l.bids += 1;
        self.ov.put_listing(&l);
        self.ov.put_bid(&Bid {
            id: id.clone(),
            listing_id: listing_id.into(),
            bidder: self.sender,
            amount,
            status: BidStatus::Pending,
            created_height: self.ctx.height,
            updated_height: self.ctx.height,
        });
        self.events.push(Event::BidPlaced {
            bid_id: id,
            listing_id: listing_id.into(),
            bidder: self.sender,
            amount,
        });
        Ok(())
    }

    pub(super) fn accept_bid(&mut self, bid_id: &str) -> Result<(), TxError> {
        let (mut bid, l) = self.pending_bid_of_own_listing(bid_id, "accept")?;
        ensure(l.active, || TxError::ListingClosed(l.id.clone()))?;
        bid.status = BidStatus::Accepted;
        bid.updated_height = self.ctx.height;
        self.ov.put_bid(&bid);
        self.events.push(Event::BidAccepted {
            bid_id: bid_id.into(),
            listing_id: l.id.clone(),
        });
        if l.service_type == ServiceType::GpuRental {
            self.start_lease(bid_id, &l);
        }
        Ok(())
    }

    /// An accepted rental bid is a lease from now for the listing's term.
    fn start_lease(&mut self, bid_id: &str, l: &Listing) {
        let start_ms = self.ctx.time_ms;
        let end_ms = start_ms.saturating_add(lease_term_ms(l));
        self.ov.write(
            keys::lease(bid_id),
            &Lease {
                bid_id: bid_id.into(),
                start_ms,
                end_ms,
            },
        );
        self.events.push(Event::LeaseStarted {
            bid_id: bid_id.into(),
            start_ms,
            end_ms,
        });
    }

    pub(crate) fn lease(&self, bid_id: &str) -> Result<Option<Lease>, TxError> {
        Ok(self.ov.read(&keys::lease(bid_id))?)
    }

    pub(super) fn reject_bid(&mut self, bid_id: &str) -> Result<(), TxError> {
        let (mut bid, _) = self.pending_bid_of_own_listing(bid_id, "reject")?;
        let refunded = self.refund_bid(&mut bid, BidStatus::Rejected)?;
        self.events.push(Event::BidRejected {
            bid_id: bid_id.into(),
            refunded,
        });
        Ok(())
    }

    pub(super) fn cancel_bid(&mut self, bid_id: &str) -> Result<(), TxError> {
        let mut bid = self.bid(bid_id)?;
        ensure(bid.bidder == self.sender, || {
            TxError::NotAllowed(format!("only the bidder may cancel bid {bid_id}"))
        })?;
        ensure(bid.status == BidStatus::Pending, || {
            TxError::WrongState(format!(
                "bid {bid_id} is {}; only a pending bid can be cancelled",
                bid.status.as_str()
            ))
        })?;
        let refunded = self.refund_bid(&mut bid, BidStatus::Cancelled)?;
        self.events.push(Event::BidCancelled {
            bid_id: bid_id.into(),
            refunded,
        });
        Ok(())
    }

    /// The bidder pays an accepted bid in full. A lease also ends by its provider (paid for the
    /// time held, the rest refunded) or, once its term is over, by anyone (paid in full).
    pub(super) fn settle_bid(&mut self, bid_id: &str) -> Result<(), TxError> {
        let (bid, l) = self.bid_and_listing(bid_id)?;
        ensure(bid.status == BidStatus::Accepted, || {
            TxError::WrongState(format!(
                "bid {bid_id} is {}; only an accepted bid can be settled",
                bid.status.as_str()
            ))
        })?;
        let pay = match self.lease(bid_id)? {
            _ if bid.bidder == self.sender => bid.amount,
            Some(lease) if l.owner == self.sender || self.ctx.time_ms >= lease.end_ms => {
                lease_pay(bid.amount, lease.start_ms, lease.end_ms, self.ctx.time_ms)
            }
            Some(_) => {
                return Err(TxError::NotAllowed(format!(
                    "lease {bid_id} runs until its term ends; only its provider or bidder may end it before"
                )))
            }
            None => {
                return Err(TxError::NotAllowed(format!(
                    "only the bidder may settle bid {bid_id}"
                )))
            }
        };
        self.pay_bid(bid, l, pay)
    }

    /// Pays `pay` of a bid's escrow to the listing's owner and the rest back to the bidder.
    fn pay_bid(&mut self, mut bid: Bid, mut l: Listing, pay: Amount) -> Result<(), TxError> {
        let bid_id = bid.id.clone();
        let rest = bid.amount.checked_sub(pay).ok_or(TxError::Overflow)?;
        let (paid, fee) = self.pay_from_escrow(&bid.bidder, &l.owner, pay)?;
        if !rest.is_zero() {
            self.refund_lease_rest(&bid_id, bid.bidder, rest)?;
        }
        bid.status = BidStatus::Settled;
        bid.updated_height = self.ctx.height;
        self.ov.put_bid(&bid);
        l.revenue = l.revenue.checked_add(paid).ok_or(TxError::Overflow)?;
        self.ov.put_listing(&l);
        self.events.push(Event::BidSettled {
            bid_id,
            provider: l.owner,
            paid,
            fee_burned: fee,
        });
        Ok(())
    }

    fn refund_lease_rest(
        &mut self,
        bid_id: &str,
        bidder: Address,
        rest: Amount,
    ) -> Result<(), TxError> {
        self.release(&bidder, rest)?;
        self.events.push(Event::LeaseRefunded {
            bid_id: bid_id.into(),
            bidder,
            refunded: rest,
        });
        Ok(())
    }

    pub(crate) fn bid(&self, bid_id: &str) -> Result<Bid, TxError> {
        self.ov
            .bid(bid_id)?
            .ok_or_else(|| TxError::UnknownBid(bid_id.into()))
    }

    pub(crate) fn bid_and_listing(&self, bid_id: &str) -> Result<(Bid, Listing), TxError> {
        let bid = self.bid(bid_id)?;
        let l = self.listing(&bid.listing_id)?;
        Ok((bid, l))
    }

    /// A pending bid on a listing the sender owns (to accept or reject it).
    fn pending_bid_of_own_listing(
        &self,
        bid_id: &str,
        verb: &str,
    ) -> Result<(Bid, Listing), TxError> {
        let (bid, l) = self.bid_and_listing(bid_id)?;
        ensure(l.owner == self.sender, || {
            TxError::NotAllowed(format!(
                "only the listing's owner {} may {verb} bid {bid_id}",
                l.owner
            ))
        })?;
        ensure(bid.status == BidStatus::Pending, || {
            TxError::WrongState(format!(
                "bid {bid_id} is {}, not pending",
                bid.status.as_str()
            ))
        })?;
        Ok((bid, l))
    }

    /// Returns a bid's escrow to its bidder and closes it with `status`; returns the amount.
    fn refund_bid(&mut self, bid: &mut Bid, status: BidStatus) -> Result<Amount, TxError> {
        self.release(&bid.bidder, bid.amount)?;
        bid.status = status;
        bid.updated_height = self.ctx.height;
        self.ov.put_bid(bid);
        Ok(bid.amount)
    }
}
