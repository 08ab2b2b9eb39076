//! Bid: places the escrowed bid, mirrors the chain's bid status, cancels (refunds) a pending
//! bid on deletion. Acceptance is the provider's side: the ServiceListing reconciler.

use super::finalizer;
use super::{
    amount, condition, follow_recorded, namespace, pending_hash, send_recorded, wallet_key,
    write_status, Followed, Managed,
};
use crate::context::Context;
use crate::error::{Error, Result};
use aitbc_crds::bid::ACCEPT_ANNOTATION;
use aitbc_crds::{Bid, BidPhase, BidSpec, BidStatus, ServiceListing};
use aitbc_protocol::model::BidStatus as ChainBidStatus;
use aitbc_protocol::tx::{object_id, Action};
use kube::runtime::controller::Action as Requeue;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

super::managed!(Bid, BidStatus, "bid", "Placed");

/// Pure: the chain transaction that places a bid.
pub fn place_action(spec: &BidSpec, listing_id: &str) -> Result<Action> {
    Ok(Action::PlaceBid {
        listing_id: listing_id.to_string(),
        amount: amount("spec.amount", &spec.amount)?,
    })
}

/// Pure: the chain transaction that withdraws a bid (only while pending).
pub fn cancel_action(bid_id: &str) -> Action {
    Action::CancelBid {
        bid_id: bid_id.to_string(),
    }
}

/// Pure: the phase shown for a chain bid status.
pub fn phase_from_chain(s: ChainBidStatus) -> BidPhase {
    match s {
        ChainBidStatus::Pending => BidPhase::Placed,
        ChainBidStatus::Accepted => BidPhase::Accepted,
        ChainBidStatus::Rejected => BidPhase::Rejected,
        ChainBidStatus::Cancelled => BidPhase::Cancelled,
        ChainBidStatus::Settled => BidPhase::Settled,
        ChainBidStatus::UsedByJob => BidPhase::UsedByJob,
    }
}

/// Whether the provider approved the bid under a manual policy.
pub fn accepted_by_annotation(bid: &Bid) -> bool {
    bid.annotations()
        .get(ACCEPT_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// The on-chain listing id a Bid is on: `spec.listingId`, or the ServiceListing's `serviceId`.
pub async fn listing_id(
    ctx: &Context,
    ns: &str,
    listing: Option<&str>,
    listing_id: Option<&str>,
) -> Result<String> {
    if let Some(id) = listing_id {
        return Ok(id.to_string());
    }
    let name = listing.ok_or_else(|| Error::InvalidSpec("give listing or listingId".into()))?;
    let api: Api<ServiceListing> = Api::namespaced(ctx.client.clone(), ns);
    let l = api.get_opt(name).await?.ok_or_else(|| Error::MissingRef {
        kind: "ServiceListing",
        name: name.into(),
        namespace: ns.into(),
    })?;
    l.status
        .and_then(|s| s.service_id)
        .ok_or_else(|| Error::NotReady {
            kind: "ServiceListing",
            name: name.into(),
            what: "it is not on the chain yet".into(),
        })
}

pub async fn reconcile(bid: Arc<Bid>, ctx: Arc<Context>) -> Result<Requeue> {
    let ns = namespace(&*bid)?;
    let api: Api<Bid> = Api::namespaced(ctx.client.clone(), &ns);
    if bid.metadata.deletion_timestamp.is_some() {
        return cleanup(bid, ctx, api).await;
    }
    if !bid.finalizers().iter().any(|f| f == finalizer::BID) {
        finalizer::add(&api, &*bid, finalizer::BID).await?;
        return Ok(Requeue::await_change());
    }
    let mut st = bid.status_or_default();
    st.observed_generation = bid.metadata.generation;
    let lid = listing_id(
        &ctx,
        &ns,
        bid.spec.listing.as_deref(),
        bid.spec.listing_id.as_deref(),
    )
    .await?;
    st.listing_id = Some(lid.clone());
    let (wallet, key) = wallet_key(&ctx, &ns, &bid.spec.wallet).await?;
    let chain = ctx.chain(&ns, wallet.spec.node.as_deref()).await?;
    let mut requeue = Duration::from_secs(10);

    match follow_recorded(&ctx, &*bid, &mut st, &*chain).await? {
        Followed::Applied(p) => {
            st.tx_hashes.insert(p.action.clone(), p.hash.clone());
            if p.action == "place-bid" {
                let id = object_id("bid", &pending_hash(&p)?);
                st.bid_id = Some(id.clone());
                st.phase = BidPhase::Placed;
                condition(
                    &*bid,
                    &mut st,
                    "Placed",
                    true,
                    "Placed",
                    format!("bid {id} escrows {} AIT", bid.spec.amount),
                );
                ctx.event(
                    &*bid,
                    "BidPlaced",
                    "PlaceBid",
                    format!(
                        "bid {id} placed on {lid} for {} AIT (escrowed)",
                        bid.spec.amount
                    ),
                )
                .await;
            }
        }
        Followed::Rejected(p, _) => {
            st.tx_hashes.insert(p.action.clone(), p.hash.clone());
            if st.bid_id.is_none() {
                st.phase = BidPhase::Failed;
            }
        }
        Followed::Waiting(d) => requeue = d,
        Followed::Dead(_) => {}
        Followed::Nothing if st.bid_id.is_none() && st.phase == BidPhase::Pending => {
            let action = place_action(&bid.spec, &lid)?;
            requeue = send_recorded(&ctx, &*bid, &mut st, &*chain, &key, action, |_, _| {}).await?;
        }
        Followed::Nothing => {}
    }

    if let Some(id) = st.bid_id.clone() {
        let onchain = chain.bid(&id).await?;
        let phase = phase_from_chain(onchain.status);
        if phase != st.phase {
            ctx.event(
                &*bid,
                &format!("Bid{phase:?}"),
                "Observe",
                format!("bid {id} is {}", onchain.status.as_str()),
            )
            .await;
            st.phase = phase;
        }
        if !matches!(phase, BidPhase::Placed | BidPhase::Accepted) {
            requeue = Duration::from_secs(300);
        }
    }
    let ready = st.bid_id.is_some();
    let msg = match &st.bid_id {
        Some(id) => format!("bid {id} is {:?}", st.phase),
        None => "placing the bid".into(),
    };
    condition(
        &*bid,
        &mut st,
        "Ready",
        ready,
        if ready { "OnChain" } else { "Placing" },
        msg,
    );
    write_status(&ctx, &*bid, &st).await?;
    Ok(Requeue::requeue(requeue))
}

/// Deleting a Bid cancels it on chain while it is pending (the escrow is refunded).
async fn cleanup(bid: Arc<Bid>, ctx: Arc<Context>, api: Api<Bid>) -> Result<Requeue> {
    if !bid.finalizers().iter().any(|f| f == finalizer::BID) {
        return Ok(Requeue::await_change());
    }
    let ns = namespace(&*bid)?;
    let mut st = bid.status_or_default();
    let keyed = match wallet_key(&ctx, &ns, &bid.spec.wallet).await {
        Ok(k) => Some(k),
        Err(
            e @ (Error::MissingRef { .. }
            | Error::NotReady { .. }
            | Error::BadKey { .. }
            | Error::ForeignKey { .. }),
        ) => {
            ctx.warning(
                &*bid,
                e.reason(),
                "CancelBid",
                format!("cannot cancel the bid on chain: {e}"),
            )
            .await;
            None
        }
        Err(e) => return Err(e),
    };
    if let Some((wallet, key)) = keyed {
        let chain = ctx.chain(&ns, wallet.spec.node.as_deref()).await?;
        match follow_recorded(&ctx, &*bid, &mut st, &*chain).await? {
            Followed::Waiting(d) => return Ok(Requeue::requeue(d)),
            Followed::Applied(p) => {
                st.tx_hashes.insert(p.action.clone(), p.hash.clone());
                if p.action == "place-bid" {
                    st.bid_id = Some(object_id("bid", &pending_hash(&p)?));
                } else if p.action == "cancel-bid" {
                    ctx.event(
                        &*bid,
                        "BidCancelled",
                        "CancelBid",
                        format!("escrow refunded by {}", p.hash),
                    )
                    .await;
                }
                write_status(&ctx, &*bid, &st).await?;
            }
            Followed::Rejected(..) | Followed::Dead(_) => write_status(&ctx, &*bid, &st).await?,
            Followed::Nothing => {}
        }
        if let Some(id) = st.bid_id.clone() {
            let onchain = chain.bid(&id).await?;
            if onchain.status == ChainBidStatus::Pending {
                let again = send_recorded(
                    &ctx,
                    &*bid,
                    &mut st,
                    &*chain,
                    &key,
                    cancel_action(&id),
                    |_, _| {},
                )
                .await?;
                return Ok(Requeue::requeue(again));
            }
            if onchain.status == ChainBidStatus::Accepted {
                ctx.warning(&*bid, "EscrowKept", "CancelBid", format!("bid {id} is accepted: its escrow stays until an AIJob or settle-payment uses it")).await;
            }
        }
    }
    finalizer::remove(&api, &*bid, finalizer::BID).await?;
    Ok(Requeue::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::Amount;

    fn spec(amount: &str) -> BidSpec {
        BidSpec {
            listing: Some("l".into()),
            listing_id: None,
            wallet: "w".into(),
            amount: amount.into(),
        }
    }

    #[test]
    fn transactions_from_a_bid() {
        assert_eq!(
            place_action(&spec("12.5"), "svc-0123456789abcdef").unwrap(),
            Action::PlaceBid {
                listing_id: "svc-0123456789abcdef".into(),
                amount: Amount(12_500_000)
            }
        );
        assert!(matches!(
            place_action(&spec("1.2345678"), "svc-x"),
            Err(Error::InvalidSpec(_))
        ));
        assert_eq!(
            cancel_action("bid-1"),
            Action::CancelBid {
                bid_id: "bid-1".into()
            }
        );
    }

    #[test]
    fn phases_mirror_the_chain() {
        assert_eq!(phase_from_chain(ChainBidStatus::Pending), BidPhase::Placed);
        assert_eq!(
            phase_from_chain(ChainBidStatus::UsedByJob),
            BidPhase::UsedByJob
        );
        assert_eq!(
            phase_from_chain(ChainBidStatus::Accepted),
            BidPhase::Accepted
        );
    }
}
