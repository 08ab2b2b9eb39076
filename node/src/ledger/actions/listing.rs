//! Listings: create, update, close.

use super::terms::check_listing_params;
use super::{ensure, invalid, Exec, MAX_NAME, MAX_PARAMS, MAX_TEXT};
use crate::ledger::apply::TxError;
use crate::ledger::state::StateRead;
use aitbc_protocol::model::{Event, Listing};
use aitbc_protocol::tx::{object_id, Action};
use aitbc_protocol::Amount;

/// The action handed to a method is not the one it handles: a dispatch bug, never user input.
pub(super) fn misrouted(what: &str) -> TxError {
    TxError::Corrupt(format!("{what}: action dispatched to the wrong method"))
}

impl<S: StateRead + ?Sized> Exec<'_, '_, '_, S> {
    pub(super) fn create_listing(&mut self, action: &Action) -> Result<(), TxError> {
        let Action::CreateListing {
            name,
            service_type,
            price,
            description,
            parameters,
            runtime,
        } = action
        else {
            return Err(misrouted("create-listing"));
        };
        ensure(!name.trim().is_empty() && name.len() <= MAX_NAME, || {
            invalid("listing name must be 1-128 characters")
        })?;
        ensure(description.len() <= MAX_TEXT, || {
            invalid("description is longer than 4096 bytes")
        })?;
        ensure(parameters.len() <= MAX_PARAMS, || {
            invalid("more than 32 parameters")
        })?;
        ensure(!price.is_zero(), || {
            invalid("price must be greater than zero")
        })?;
        check_listing_params(parameters)?;
        let id = object_id("svc", &self.hash);
        ensure(self.ov.listing(&id)?.is_none(), || {
            TxError::WrongState(format!("listing {id} exists"))
        })?;
        self.ov.put_listing(&Listing {
            id: id.clone(),
            owner: self.sender,
            name: name.trim().to_string(),
            service_type: *service_type,
            price: *price,
            description: description.clone(),
            parameters: parameters.clone(),
            runtime: runtime.clone(),
            active: true,
            created_height: self.ctx.height,
            bids: 0,
            jobs: 0,
            revenue: Amount::ZERO,
        });
        self.events.push(Event::ListingCreated {
            listing_id: id,
            owner: self.sender,
        });
        Ok(())
    }

    pub(super) fn update_listing(&mut self, action: &Action) -> Result<(), TxError> {
        let Action::UpdateListing {
            listing_id,
            price,
            description,
            runtime,
        } = action
        else {
            return Err(misrouted("update-listing"));
        };
        let mut l = self.open_owned_listing(listing_id)?;
        if let Some(p) = price {
            ensure(!p.is_zero(), || invalid("price must be greater than zero"))?;
            l.price = *p;
        }
        if let Some(d) = description {
            ensure(d.len() <= MAX_TEXT, || {
                invalid("description is longer than 4096 bytes")
            })?;
            l.description = d.clone();
        }
        if let Some(r) = runtime {
            l.runtime = r.clone();
        }
        self.ov.put_listing(&l);
        self.events.push(Event::ListingUpdated {
            listing_id: listing_id.clone(),
        });
        Ok(())
    }

    pub(super) fn close_listing(&mut self, listing_id: &str) -> Result<(), TxError> {
        let mut l = self.open_owned_listing(listing_id)?;
        l.active = false;
        self.ov.put_listing(&l);
        self.events.push(Event::ListingClosed {
            listing_id: listing_id.to_string(),
        });
        Ok(())
    }

    pub(crate) fn listing(&self, id: &str) -> Result<Listing, TxError> {
        self.ov
            .listing(id)?
            .ok_or_else(|| TxError::UnknownListing(id.into()))
    }

    /// A listing the sender owns and that is still open.
    fn open_owned_listing(&self, id: &str) -> Result<Listing, TxError> {
        let l = self.listing(id)?;
        ensure(l.owner == self.sender, || {
            TxError::NotAllowed(format!(
                "only the listing's owner {} may change it",
                l.owner
            ))
        })?;
        ensure(l.active, || TxError::ListingClosed(id.into()))?;
        Ok(l)
    }
}
