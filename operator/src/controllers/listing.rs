//! ServiceListing: creates the on-chain listing, keeps price/description/runtime in step,
//! accepts bids by the listing's policy, and closes the listing on deletion (finalizer).

use super::finalizer;
use super::{
    amount, condition, follow_recorded, namespace, pending_hash, send_recorded, wallet_key,
    write_status, Followed, Managed, IN_FLIGHT_RETRY,
};
use crate::chain::ChainApi;
use crate::context::Context;
use crate::error::{Error, Result};
use aitbc_crds::bid::ACCEPT_ANNOTATION;
use aitbc_crds::PendingTx;
use aitbc_crds::{
    AcceptPolicy, Bid as BidCr, ListingPhase, ListingRuntime, ServiceListing, ServiceListingSpec,
    ServiceListingStatus, ServiceType as CrdType,
};
use aitbc_protocol::model::{Bid, Listing};
use aitbc_protocol::tx::{object_id, Action, Runtime, ServiceType};
use aitbc_protocol::{Amount, Keypair};
use kube::api::ListParams;
use kube::runtime::controller::Action as Requeue;
use kube::{Api, ResourceExt};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

super::managed!(
    ServiceListing,
    ServiceListingStatus,
    "servicelisting",
    "Synced"
);

pub fn service_type(t: CrdType) -> ServiceType {
    match t {
        CrdType::AiInference => ServiceType::AiInference,
        CrdType::AiTraining => ServiceType::AiTraining,
        CrdType::GpuRental => ServiceType::GpuRental,
        CrdType::DataProcessing => ServiceType::DataProcessing,
    }
}

pub fn runtime(r: &ListingRuntime) -> Runtime {
    Runtime {
        command: r.command.clone(),
        image: r.image.clone(),
        env: r.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// Pure: the transaction that creates the listing.
pub fn create_action(spec: &ServiceListingSpec) -> Result<Action> {
    Ok(Action::CreateListing {
        name: spec.name.clone(),
        service_type: service_type(spec.service_type),
        price: amount("spec.price", &spec.price)?,
        description: spec.description.clone(),
        parameters: spec
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        runtime: runtime(&spec.runtime),
    })
}

/// Pure: the update that brings the on-chain listing to the spec, if any is needed.
pub fn update_action(spec: &ServiceListingSpec, onchain: &Listing) -> Result<Option<Action>> {
    let price = amount("spec.price", &spec.price)?;
    let rt = runtime(&spec.runtime);
    let price = (price != onchain.price).then_some(price);
    let description = (spec.description != onchain.description).then(|| spec.description.clone());
    let rt = (rt != onchain.runtime).then_some(rt);
    if price.is_none() && description.is_none() && rt.is_none() {
        return Ok(None);
    }
    Ok(Some(Action::UpdateListing {
        listing_id: onchain.id.clone(),
        price,
        description,
        runtime: rt,
    }))
}

/// Pure: the next pending bid the provider accepts. `auto`: amount at least the price;
/// `manual`: bids approved with the `aitbc.io/accept: "true"` annotation on their Bid.
pub fn bid_to_accept<'a>(
    policy: AcceptPolicy,
    price: Amount,
    pending: &'a [Bid],
    approved: &BTreeSet<String>,
) -> Option<&'a Bid> {
    pending.iter().find(|b| match policy {
        AcceptPolicy::Auto => b.amount >= price,
        AcceptPolicy::Manual => approved.contains(&b.id),
    })
}

/// Bid ids approved by annotation on the Bids of `namespace`.
async fn approved_bids(ctx: &Context, ns: &str) -> Result<BTreeSet<String>> {
    let bids: Api<BidCr> = Api::namespaced(ctx.client.clone(), ns);
    Ok(bids
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|b| {
            b.annotations()
                .get(ACCEPT_ANNOTATION)
                .is_some_and(|v| v == "true")
        })
        .filter_map(|b| b.status.and_then(|s| s.bid_id))
        .collect())
}

/// Records the effect of a committed transaction; returns a sooner requeue when one is due.
async fn applied(
    ctx: &Context,
    l: &ServiceListing,
    st: &mut ServiceListingStatus,
    p: &PendingTx,
) -> Result<Option<Duration>> {
    match p.action.as_str() {
        "create-listing" => {
            let id = object_id("svc", &pending_hash(p)?);
            st.service_id = Some(id.clone());
            st.tx_hash = Some(p.hash.clone());
            st.phase = ListingPhase::Active;
            ctx.event(
                l,
                "ListingCreated",
                "CreateListing",
                format!("listing {id} is on the marketplace"),
            )
            .await;
        }
        "update-listing" => {
            st.update_tx_hash = Some(p.hash.clone());
            ctx.event(
                l,
                "ListingUpdated",
                "UpdateListing",
                format!("listing updated by {}", p.hash),
            )
            .await;
        }
        "accept-bid" => {
            ctx.event(
                l,
                "BidAccepted",
                "AcceptBid",
                format!("bid accepted by {}", p.hash),
            )
            .await;
            return Ok(Some(IN_FLIGHT_RETRY));
        }
        _ => {}
    }
    Ok(None)
}

/// With no transaction in flight: create the listing, bring it to the spec, or accept a bid.
async fn next_transaction(
    ctx: &Context,
    l: &ServiceListing,
    st: &mut ServiceListingStatus,
    chain: &dyn ChainApi,
    key: &Keypair,
    ns: &str,
) -> Result<Option<Duration>> {
    if st.service_id.is_none() && st.phase == ListingPhase::Pending {
        let action = create_action(&l.spec)?;
        return Ok(Some(
            send_recorded(ctx, l, st, chain, key, action, |_, _| {}).await?,
        ));
    }
    let Some(id) = st.service_id.clone() else {
        return Ok(None);
    };
    let onchain = chain.listing(&id).await?;
    if !onchain.active {
        st.phase = ListingPhase::Closed;
        return Ok(None);
    }
    if let Some(update) = update_action(&l.spec, &onchain)? {
        return Ok(Some(
            send_recorded(ctx, l, st, chain, key, update, |_, _| {}).await?,
        ));
    }
    condition(
        l,
        st,
        "Synced",
        true,
        "Synced",
        format!("listing {id} matches the spec"),
    );
    let pending = chain.bids(&id, "pending").await?;
    let approved = if l.spec.accept_policy == AcceptPolicy::Manual {
        approved_bids(ctx, ns).await?
    } else {
        BTreeSet::new()
    };
    match bid_to_accept(l.spec.accept_policy, onchain.price, &pending, &approved) {
        Some(b) => {
            let accept = Action::AcceptBid {
                bid_id: b.id.clone(),
            };
            Ok(Some(
                send_recorded(ctx, l, st, chain, key, accept, |_, _| {}).await?,
            ))
        }
        None => Ok(None),
    }
}

pub async fn reconcile(l: Arc<ServiceListing>, ctx: Arc<Context>) -> Result<Requeue> {
    let ns = namespace(&*l)?;
    let api: Api<ServiceListing> = Api::namespaced(ctx.client.clone(), &ns);
    if l.metadata.deletion_timestamp.is_some() {
        return cleanup(l, ctx, api).await;
    }
    if !l.finalizers().iter().any(|f| f == finalizer::LISTING) {
        finalizer::add(&api, &*l, finalizer::LISTING).await?;
        return Ok(Requeue::await_change());
    }
    let mut st = l.status_or_default();
    st.observed_generation = l.metadata.generation;
    let (wallet, key) = wallet_key(&ctx, &ns, &l.spec.wallet).await?;
    st.owner = Some(key.address().to_string());
    let chain = ctx.chain(&ns, wallet.spec.node.as_deref()).await?;
    let mut requeue = Duration::from_secs(10);

    match follow_recorded(&ctx, &*l, &mut st, &*chain).await? {
        Followed::Applied(p) => {
            requeue = applied(&ctx, &l, &mut st, &p).await?.unwrap_or(requeue);
        }
        Followed::Rejected(p, _) => {
            if p.action == "create-listing" {
                st.tx_hash = Some(p.hash.clone());
                st.phase = ListingPhase::Failed;
            }
        }
        Followed::Waiting(d) => requeue = d,
        Followed::Dead(_) => {}
        Followed::Nothing => {
            if let Some(d) = next_transaction(&ctx, &l, &mut st, &*chain, &key, &ns).await? {
                requeue = d;
            }
        }
    }
    let ready = st.phase == ListingPhase::Active;
    let msg = match &st.service_id {
        Some(id) => format!("listing {id} is {:?}", st.phase),
        None => "creating the listing".into(),
    };
    condition(
        &*l,
        &mut st,
        "Ready",
        ready,
        if ready { "Active" } else { "NotActive" },
        msg,
    );
    write_status(&ctx, &*l, &st).await?;
    Ok(Requeue::requeue(requeue))
}

/// Deleting a ServiceListing closes it on chain.
async fn cleanup(
    l: Arc<ServiceListing>,
    ctx: Arc<Context>,
    api: Api<ServiceListing>,
) -> Result<Requeue> {
    if !l.finalizers().iter().any(|f| f == finalizer::LISTING) {
        return Ok(Requeue::await_change());
    }
    let ns = namespace(&*l)?;
    let mut st = l.status_or_default();
    match wallet_key(&ctx, &ns, &l.spec.wallet).await {
        Ok((wallet, key)) => {
            let chain = ctx.chain(&ns, wallet.spec.node.as_deref()).await?;
            match follow_recorded(&ctx, &*l, &mut st, &*chain).await? {
                Followed::Waiting(d) => return Ok(Requeue::requeue(d)),
                Followed::Applied(p) if p.action == "create-listing" => {
                    st.service_id = Some(object_id("svc", &pending_hash(&p)?));
                    write_status(&ctx, &*l, &st).await?;
                }
                Followed::Applied(p) if p.action == "close-listing" => {
                    st.close_tx_hash = Some(p.hash.clone());
                    ctx.event(
                        &*l,
                        "ListingClosed",
                        "CloseListing",
                        format!("listing closed by {}", p.hash),
                    )
                    .await;
                    write_status(&ctx, &*l, &st).await?;
                }
                Followed::Nothing => {}
                _ => write_status(&ctx, &*l, &st).await?,
            }
            if let Some(id) = st.service_id.clone() {
                if chain.listing(&id).await?.active {
                    let again = send_recorded(
                        &ctx,
                        &*l,
                        &mut st,
                        &*chain,
                        &key,
                        Action::CloseListing { listing_id: id },
                        |_, _| {},
                    )
                    .await?;
                    return Ok(Requeue::requeue(again));
                }
            }
        }
        Err(
            e @ (Error::MissingRef { .. }
            | Error::NotReady { .. }
            | Error::BadKey { .. }
            | Error::ForeignKey { .. }),
        ) => {
            ctx.warning(
                &*l,
                e.reason(),
                "CloseListing",
                format!("cannot close the listing on chain: {e}"),
            )
            .await;
        }
        Err(e) => return Err(e),
    }
    finalizer::remove(&api, &*l, finalizer::LISTING).await?;
    Ok(Requeue::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::Keypair;
    use std::collections::BTreeMap;

    fn spec() -> ServiceListingSpec {
        ServiceListingSpec {
            wallet: "p".into(),
            name: "SDXL".into(),
            service_type: CrdType::AiInference,
            price: "25".into(),
            description: "d".into(),
            parameters: BTreeMap::from([("model".into(), "sdxl".into())]),
            runtime: ListingRuntime {
                command: vec!["run".into()],
                image: String::new(),
                env: BTreeMap::from([("A".into(), "1".into())]),
            },
            accept_policy: AcceptPolicy::Auto,
        }
    }

    fn onchain(s: &ServiceListingSpec) -> Listing {
        Listing {
            id: "svc-1".into(),
            owner: Keypair::generate().address(),
            name: s.name.clone(),
            service_type: ServiceType::AiInference,
            price: Amount::from_ait(25).unwrap(),
            description: s.description.clone(),
            parameters: vec![],
            runtime: runtime(&s.runtime),
            active: true,
            created_height: 1,
            bids: 0,
            jobs: 0,
            revenue: Amount::ZERO,
        }
    }

    fn bid(id: &str, ait: u128) -> Bid {
        Bid {
            id: id.into(),
            listing_id: "svc-1".into(),
            bidder: Keypair::generate().address(),
            amount: Amount::from_ait(ait).unwrap(),
            status: aitbc_protocol::model::BidStatus::Pending,
            created_height: 1,
            updated_height: 1,
        }
    }

    #[test]
    fn create_carries_type_price_parameters_and_runtime() {
        let Action::CreateListing {
            service_type,
            price,
            parameters,
            runtime,
            ..
        } = create_action(&spec()).unwrap()
        else {
            panic!()
        };
        assert_eq!(service_type, ServiceType::AiInference);
        assert_eq!(price, Amount::from_ait(25).unwrap());
        assert_eq!(parameters, vec![("model".to_string(), "sdxl".to_string())]);
        assert_eq!(runtime.env, vec![("A".to_string(), "1".to_string())]);
    }

    #[test]
    fn updates_only_what_changed() {
        let s = spec();
        assert_eq!(update_action(&s, &onchain(&s)).unwrap(), None);
        let mut changed = s.clone();
        changed.price = "30".into();
        let got = update_action(&changed, &onchain(&s)).unwrap();
        assert_eq!(
            got,
            Some(Action::UpdateListing {
                listing_id: "svc-1".into(),
                price: Some(Amount::from_ait(30).unwrap()),
                description: None,
                runtime: None
            })
        );
    }

    #[test]
    fn accept_policy_picks_the_bid() {
        let bids = [bid("bid-low", 10), bid("bid-ok", 25)];
        let price = Amount::from_ait(25).unwrap();
        assert_eq!(
            bid_to_accept(AcceptPolicy::Auto, price, &bids, &BTreeSet::new())
                .map(|b| b.id.as_str()),
            Some("bid-ok")
        );
        assert_eq!(
            bid_to_accept(AcceptPolicy::Manual, price, &bids, &BTreeSet::new()),
            None
        );
        let approved = BTreeSet::from(["bid-low".to_string()]);
        assert_eq!(
            bid_to_accept(AcceptPolicy::Manual, price, &bids, &approved).map(|b| b.id.as_str()),
            Some("bid-low")
        );
    }
}
