//! Wallet: the key Secret (created once, never overwritten), address/balance/nonce from the
//! chain, and the optional one-time funding transfer.

use super::{amount, condition, namespace, send_recorded, wallet_key, write_status, Managed};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys::{ensure_key_secret, wallet_secret_name};
use crate::txflow::Progress;
use aitbc_crds::{Wallet, WalletStatus};
use aitbc_protocol::tx::Action;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action as Requeue;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

super::managed!(Wallet, WalletStatus, "wallet");

/// How often balances are refreshed.
pub const REFRESH: Duration = Duration::from_secs(30);

/// What the funding of a wallet needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum FundingStep {
    /// No funding asked, or it is done.
    Nothing,
    /// A transfer is recorded: follow it.
    Follow,
    /// A transfer was rejected in its block: it is not retried (the user sees why).
    GaveUp,
    /// Sign and record the transfer.
    Send,
}

/// Pure: the next funding step from the spec and status.
pub fn funding_step(w: &Wallet, st: &WalletStatus) -> FundingStep {
    match (
        &w.spec.funding,
        st.funded,
        &st.pending_tx,
        &st.funding_tx_hash,
    ) {
        (None, ..) | (_, true, ..) => FundingStep::Nothing,
        (_, false, Some(_), _) => FundingStep::Follow,
        (_, false, None, Some(_)) => FundingStep::GaveUp,
        (_, false, None, None) => FundingStep::Send,
    }
}

pub async fn reconcile(w: Arc<Wallet>, ctx: Arc<Context>) -> Result<Requeue> {
    let ns = namespace(&*w)?;
    let name = w.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret_name = wallet_secret_name(&w);
    let labels = BTreeMap::from([("aitbc.io/wallet".to_string(), name.clone())]);
    let (key, created) = ensure_key_secret(&secrets, &ns, &secret_name, labels).await?;
    if created {
        ctx.event(
            &*w,
            "KeyCreated",
            "CreateKey",
            format!(
                "created key Secret {secret_name} for address {}",
                key.address()
            ),
        )
        .await;
    }
    let mut st = w.status_or_default();
    st.observed_generation = w.metadata.generation;
    st.address = Some(key.address().to_string());
    st.secret_name = Some(secret_name);

    let chain = match ctx.chain(&ns, w.spec.node.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            condition(
                &*w,
                &mut st,
                "Ready",
                false,
                e.reason(),
                format!("address {} is ready; {e}", key.address()),
            );
            write_status(&ctx, &*w, &st).await?;
            return Err(e);
        }
    };

    let mut requeue = REFRESH;
    match funding_step(&w, &st) {
        FundingStep::Nothing | FundingStep::GaveUp => {}
        FundingStep::Follow => {
            let p = st
                .pending_tx
                .clone()
                .ok_or_else(|| Error::InvalidSpec("funding record vanished".into()))?;
            match crate::txflow::progress(&*chain, &p).await? {
                Progress::Applied(_) => {
                    st.pending_tx = None;
                    st.funded = true;
                    condition(
                        &*w,
                        &mut st,
                        "Funded",
                        true,
                        "Funded",
                        format!("funding transfer {} committed", p.hash),
                    );
                    ctx.event(
                        &*w,
                        "Funded",
                        "Fund",
                        format!("funding transfer {} committed", p.hash),
                    )
                    .await;
                }
                Progress::RejectedInBlock(reason) => {
                    st.pending_tx = None;
                    condition(
                        &*w,
                        &mut st,
                        "Funded",
                        false,
                        "FundingRejected",
                        format!("funding transfer {} was rejected: {reason}", p.hash),
                    );
                    ctx.warning(&*w, "FundingRejected", "Fund", reason).await;
                }
                Progress::Refused(reason) => {
                    st.pending_tx = None;
                    st.funding_tx_hash = None;
                    condition(
                        &*w,
                        &mut st,
                        "Funded",
                        false,
                        "FundingRefused",
                        format!("funding transfer refused, retrying: {reason}"),
                    );
                    ctx.warning(&*w, "FundingRefused", "Fund", reason).await;
                }
                Progress::Dead => {
                    st.pending_tx = None;
                    st.funding_tx_hash = None;
                }
                Progress::InFlight => requeue = Duration::from_secs(1),
            }
        }
        FundingStep::Send => {
            let f = w
                .spec
                .funding
                .clone()
                .ok_or_else(|| Error::InvalidSpec("funding vanished".into()))?;
            let amt = amount("spec.funding.amount", &f.amount)?;
            let (_, from_key) = wallet_key(&ctx, &ns, &f.from_wallet).await?;
            let to = key.address();
            let progress = send_recorded(
                &ctx,
                &*w,
                &mut st,
                &*chain,
                &from_key,
                Action::Transfer { to, amount: amt },
                |s, p| {
                    s.funding_tx_hash = Some(p.hash.clone());
                },
            )
            .await?;
            match progress {
                Progress::Refused(reason) => {
                    st.pending_tx = None;
                    st.funding_tx_hash = None;
                    condition(
                        &*w,
                        &mut st,
                        "Funded",
                        false,
                        "FundingRefused",
                        format!("funding transfer refused, retrying: {reason}"),
                    );
                    ctx.warning(&*w, "FundingRefused", "Fund", reason).await;
                    requeue = Duration::from_secs(30);
                }
                _ => {
                    ctx.event(
                        &*w,
                        "FundingSent",
                        "Fund",
                        format!("transfer of {} AIT from {} sent", f.amount, f.from_wallet),
                    )
                    .await;
                    requeue = Duration::from_secs(1);
                }
            }
        }
    }

    match chain.account(&key.address()).await {
        Ok(a) => {
            st.balance = Some(a.balance.to_string());
            st.escrowed = Some(a.escrowed.to_string());
            st.nonce = Some(a.nonce);
            condition(
                &*w,
                &mut st,
                "Ready",
                true,
                "Ready",
                format!("address {}", key.address()),
            );
        }
        Err(e) => {
            let e = Error::from(e);
            condition(&*w, &mut st, "Ready", false, e.reason(), e.to_string());
            write_status(&ctx, &*w, &st).await?;
            return Err(e);
        }
    }
    write_status(&ctx, &*w, &st).await?;
    Ok(Requeue::requeue(requeue))
}
