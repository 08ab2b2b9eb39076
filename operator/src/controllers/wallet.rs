//! Wallet: the key Secret (created once, never overwritten), address/balance/nonce from the
//! chain, and the optional one-time funding transfer.

use super::{
    amount, condition, follow_recorded, namespace, send_recorded, wallet_key, wallet_signing_key,
    write_status, Followed, Managed,
};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys::wallet_secret_name;
use aitbc_crds::{Wallet, WalletStatus};
use aitbc_protocol::tx::Action;
use aitbc_protocol::Keypair;
use kube::runtime::controller::Action as Requeue;
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

super::managed!(Wallet, WalletStatus, "wallet", "Funded");

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

/// Pure: whether Wallet `source` lets Wallet `target` draw its funding from it.
pub fn funding_granted(source: &Wallet, target: &str) -> bool {
    source.spec.allow_funding.iter().any(|w| w == target)
}

/// The key that pays the funding of `w`: the source Wallet's, when it grants it.
async fn funding_key(ctx: &Context, ns: &str, w: &Wallet, from: &str) -> Result<Keypair> {
    let (source, key) = wallet_key(ctx, ns, from).await?;
    let to = w.name_any();
    if !funding_granted(&source, &to) {
        return Err(Error::FundingNotGranted {
            from: from.to_string(),
            to,
        });
    }
    Ok(key)
}

pub async fn reconcile(w: Arc<Wallet>, ctx: Arc<Context>) -> Result<Requeue> {
    let ns = namespace(&*w)?;
    let secret_name = wallet_secret_name(&w);
    let (key, created) = wallet_signing_key(&ctx, &ns, &w, true).await?;
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
        FundingStep::Follow => match follow_recorded(&ctx, &*w, &mut st, &*chain).await? {
            Followed::Applied(p) => {
                st.funded = true;
                let msg = format!("funding transfer {} committed", p.hash);
                condition(&*w, &mut st, "Funded", true, "Funded", msg.clone());
                ctx.event(&*w, "Funded", "Fund", msg).await;
            }
            // Rejected in its block: not retried (funding_tx_hash stays; the condition says why).
            Followed::Rejected(..) | Followed::Nothing => {}
            Followed::Dead(_) => st.funding_tx_hash = None,
            Followed::Waiting(d) => requeue = d,
        },
        FundingStep::Send => {
            let f = w
                .spec
                .funding
                .clone()
                .ok_or_else(|| Error::InvalidSpec("funding vanished".into()))?;
            let amt = amount("spec.funding.amount", &f.amount)?;
            let from_key = funding_key(&ctx, &ns, &w, &f.from_wallet).await?;
            let to = key.address();
            requeue = send_recorded(
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
            ctx.event(
                &*w,
                "FundingSent",
                "Fund",
                format!("transfer of {} AIT from {} sent", f.amount, f.from_wallet),
            )
            .await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_crds::WalletSpec;

    #[test]
    fn key_custody_funding_is_granted_by_name_on_the_paying_wallet() {
        let mut ops = Wallet::new("genesis-ops", WalletSpec::default());
        assert!(!funding_granted(&ops, "bob"), "no grant by default");
        ops.spec.allow_funding = vec!["alice".into(), "bob".into()];
        assert!(funding_granted(&ops, "bob"));
        assert!(!funding_granted(&ops, "mallory"));
    }
}
