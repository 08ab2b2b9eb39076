//! One controller per kind. Each reconciler is a pure "what to do next from this resource and
//! what was observed" function plus thin I/O around it; the helpers here are shared.

pub mod aijob;
pub mod bid;
pub mod finalizer;
pub mod listing;
pub mod members;
pub mod node;
pub mod wallet;

use crate::chain::ChainApi;
use crate::context::{now, patch_status, Context};
use crate::error::{Error, Result};
use crate::txflow::{self, Progress};
use aitbc_crds::common::set_condition;
use aitbc_crds::{Condition, PendingTx, Wallet};
use aitbc_protocol::tx::Action;
use aitbc_protocol::{Amount, Keypair};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// A custom resource whose status has conditions and a transaction slot.
pub trait Managed:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    type Status: Serialize + Default + Clone + PartialEq + Send + Sync;
    /// Controller name for metrics and logs.
    const CONTROLLER: &'static str;
    /// Condition type that reports the resource's transactions (`Placed`, `Funded`, ...).
    const TX_CONDITION: &'static str = "Ready";
    fn status_or_default(&self) -> Self::Status;
    fn conditions(s: &mut Self::Status) -> &mut Vec<Condition>;
    fn pending(s: &Self::Status) -> Option<PendingTx>;
    fn set_pending(s: &mut Self::Status, p: Option<PendingTx>);
}

macro_rules! managed {
    ($ty:ty, $status:ty, $name:literal, $tx_condition:literal) => {
        impl $crate::controllers::Managed for $ty {
            type Status = $status;
            const CONTROLLER: &'static str = $name;
            const TX_CONDITION: &'static str = $tx_condition;
            fn status_or_default(&self) -> $status {
                self.status.clone().unwrap_or_default()
            }
            fn conditions(s: &mut $status) -> &mut Vec<aitbc_crds::Condition> {
                &mut s.conditions
            }
            fn pending(s: &$status) -> Option<aitbc_crds::PendingTx> {
                s.pending_tx.clone()
            }
            fn set_pending(s: &mut $status, p: Option<aitbc_crds::PendingTx>) {
                s.pending_tx = p;
            }
        }
    };
}
pub(crate) use managed;

/// Sets a condition computed from `obj`'s generation.
pub fn condition<K: Managed>(
    obj: &K,
    s: &mut K::Status,
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
) -> bool {
    set_condition(
        K::conditions(s),
        Condition::new(type_, ok, reason, message, obj.meta().generation, &now()),
    )
}

/// Namespace of a namespaced resource.
pub fn namespace<K: Resource>(obj: &K) -> Result<String> {
    obj.meta()
        .namespace
        .clone()
        .ok_or_else(|| Error::InvalidSpec("resource without a namespace".into()))
}

/// The Wallet `name` of `namespace` and its key.
pub async fn wallet_key(ctx: &Context, namespace: &str, name: &str) -> Result<(Wallet, Keypair)> {
    let wallets: Api<Wallet> = Api::namespaced(ctx.client.clone(), namespace);
    let wallet = wallets
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::MissingRef {
            kind: "Wallet",
            name: name.into(),
            namespace: namespace.into(),
        })?;
    let (key, _) = wallet_signing_key(ctx, namespace, &wallet, false).await?;
    Ok((wallet, key))
}

/// The key Wallet `wallet` signs with: only from a Secret it may use (`keys::wallet_custody`),
/// adopted when the operator made it for this Wallet's name before the Wallet existed. With
/// `create`, a missing Secret is created for this Wallet. Returns whether it was created now.
pub async fn wallet_signing_key(
    ctx: &Context,
    namespace: &str,
    wallet: &Wallet,
    create: bool,
) -> Result<(Keypair, bool)> {
    let name = wallet.name_any();
    let secret_name = crate::keys::wallet_secret_name(wallet);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let uid = wallet.uid();
    let Some(secret) = secrets.get_opt(&secret_name).await? else {
        if !create {
            return Err(Error::NotReady {
                kind: "Wallet",
                name,
                what: format!("its key Secret {secret_name} does not exist yet"),
            });
        }
        let (labels, annotations) = crate::keys::wallet_key_meta(&name, uid.as_deref());
        return crate::keys::create_key_secret(
            &secrets,
            namespace,
            &secret_name,
            labels,
            annotations,
        )
        .await;
    };
    let custody =
        crate::keys::wallet_custody(&secret, &name, uid.as_deref()).map_err(|reason| {
            Error::ForeignKey {
                wallet: name.clone(),
                secret: secret_name.clone(),
                reason,
            }
        })?;
    let key = crate::keys::keypair_from_secret(&secret)?;
    if custody == crate::keys::Custody::Adopt {
        adopt(&secrets, &secret_name, &name, uid.as_deref()).await?;
    }
    Ok((key, false))
}

/// Stamps a wallet key Secret with the uid of the Wallet that takes it over.
async fn adopt(api: &Api<Secret>, secret: &str, wallet: &str, uid: Option<&str>) -> Result<()> {
    let uid = uid.ok_or_else(|| Error::InvalidSpec(format!("Wallet {wallet} has no uid")))?;
    let (labels, annotations) = crate::keys::wallet_key_meta(wallet, Some(uid));
    let body = serde_json::json!({"metadata": {"labels": labels, "annotations": annotations}});
    api.patch(secret, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// The hash of a recorded transaction.
pub fn pending_hash(p: &PendingTx) -> Result<aitbc_protocol::Hash> {
    p.hash
        .parse()
        .map_err(|e| Error::InvalidSpec(format!("pendingTx.hash: {e}")))
}

/// Parses an AIT amount of a spec.
pub fn amount(field: &str, value: &str) -> Result<Amount> {
    value
        .parse()
        .map_err(|e| Error::InvalidSpec(format!("{field}: {e}")))
}

/// How long to wait before looking at a transaction in a mempool again.
pub const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

/// What following a resource's recorded transaction found. The record is cleared only for
/// `Applied`, `Rejected` and `Dead`: a transaction that can still commit keeps its record.
#[derive(Debug, PartialEq)]
pub enum Followed {
    /// No transaction is recorded.
    Nothing,
    /// Still on its way (in a mempool, or refused by one node and to be sent again as the same
    /// bytes): the record stays; look again after this long.
    Waiting(Duration),
    /// Committed and applied.
    Applied(PendingTx),
    /// Committed but rejected by the chain (the condition says why).
    Rejected(PendingTx, String),
    /// Can never commit: its nonce went to another committed transaction. A new one may be signed.
    Dead(PendingTx),
}

/// Follows the transaction recorded in `status` (resubmitting the same bytes while it can still
/// commit), clears the record once it is final and reports refusals and rejections in the
/// kind's transaction condition. The one copy of this logic every reconciler uses.
pub async fn follow_recorded<K: Managed>(
    ctx: &Context,
    obj: &K,
    status: &mut K::Status,
    chain: &dyn ChainApi,
) -> Result<Followed> {
    let Some(p) = K::pending(status) else {
        return Ok(Followed::Nothing);
    };
    let progress = txflow::progress(chain, &p).await?;
    Ok(settle(ctx, obj, status, p, progress).await)
}

async fn settle<K: Managed>(
    ctx: &Context,
    obj: &K,
    status: &mut K::Status,
    p: PendingTx,
    progress: Progress,
) -> Followed {
    match progress {
        Progress::InFlight => Followed::Waiting(IN_FLIGHT_RETRY),
        Progress::Refused(r) => {
            note_refusal(ctx, obj, status, &p.action, &r).await;
            Followed::Waiting(r.retry_after())
        }
        Progress::Applied(_) => {
            K::set_pending(status, None);
            Followed::Applied(p)
        }
        Progress::RejectedInBlock(reason) => {
            K::set_pending(status, None);
            let msg = format!("{} {} rejected: {reason}", p.action, p.hash);
            if condition(
                obj,
                status,
                K::TX_CONDITION,
                false,
                "TransactionRejected",
                msg,
            ) {
                ctx.warning(obj, "TransactionRejected", &p.action, reason.clone())
                    .await;
            }
            Followed::Rejected(p, reason)
        }
        Progress::Dead => {
            K::set_pending(status, None);
            Followed::Dead(p)
        }
    }
}

/// A node refused the recorded transaction: say so (a Warning event when the reason is new);
/// the record stays and the same bytes go out again.
async fn note_refusal<K: Managed>(
    ctx: &Context,
    obj: &K,
    status: &mut K::Status,
    action: &str,
    r: &txflow::Refusal,
) {
    let (reason, msg) = match r.kind {
        txflow::RefusalKind::Busy => (
            "ChainBusy",
            format!("{action} waits: the node is busy ({}); the same transaction is sent again", r.reason),
        ),
        txflow::RefusalKind::Refused => (
            "TransactionRefused",
            format!("{action} refused by the node ({}); the same transaction is sent again until the chain commits it or uses its nonce", r.reason),
        ),
    };
    if condition(obj, status, K::TX_CONDITION, false, reason, msg) {
        ctx.warning(obj, reason, action, r.reason.clone()).await;
    }
}

/// Signs `action` with the next nonce of `key`, records it in `status` (written to the API
/// before anything is submitted), then submits it. Returns when to look at it again; a refusal
/// keeps the record (the next reconcile follows it and resubmits the same bytes).
pub async fn send_recorded<K: Managed>(
    ctx: &Context,
    obj: &K,
    status: &mut K::Status,
    chain: &dyn ChainApi,
    key: &Keypair,
    action: Action,
    before_record: impl FnOnce(&mut K::Status, &PendingTx),
) -> Result<Duration> {
    let lock = ctx.key_lock(&key.address());
    let _guard = lock.lock().await;
    let info = chain.info().await?;
    let nonce = chain.account(&key.address()).await?.pending_nonce;
    let (stx, p) = txflow::sign(&info.chain_id, key, nonce, info.min_fee, action);
    before_record(status, &p);
    K::set_pending(status, Some(p.clone()));
    patch_status(&ctx.client, obj, status).await?;
    let progress = txflow::submit(chain, &stx).await?;
    Ok(match settle(ctx, obj, status, p, progress).await {
        Followed::Waiting(d) => d,
        _ => IN_FLIGHT_RETRY,
    })
}

/// Writes `status` when it differs from what the object carries.
pub async fn write_status<K: Managed>(ctx: &Context, obj: &K, status: &K::Status) -> Result<()> {
    if obj.status_or_default() != *status || obj_status_missing(obj)? {
        patch_status(&ctx.client, obj, status).await?;
    }
    Ok(())
}

fn obj_status_missing<K: Managed>(obj: &K) -> Result<bool> {
    Ok(serde_json::to_value(obj)?
        .get("status")
        .is_none_or(|s| s.is_null()))
}

/// How long to wait after a failed reconcile: 5 s doubling per consecutive failure, at most 5 min.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1u64 << failures.min(6)).min(300))
}

/// Runs `reconcile`, records metrics, and on an error the user can fix puts it in the `Ready`
/// condition (with a Warning event when it is new) before the controller retries with backoff.
pub async fn instrumented<K, F, Fut>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Requeue>
where
    K: Managed,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Requeue>>,
{
    let start = std::time::Instant::now();
    let key = format!(
        "{}/{}/{}",
        K::CONTROLLER,
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    );
    let result = reconcile(obj.clone(), ctx.clone()).await;
    ctx.metrics.reconciled(K::CONTROLLER, start.elapsed());
    match &result {
        Ok(_) => ctx.reset_failures(&key),
        Err(e) => {
            ctx.metrics.failed(K::CONTROLLER, e.reason());
            tracing::warn!(controller = K::CONTROLLER, object = %key, reason = e.reason(), error = %e, "reconcile failed");
            if e.is_user_error() && obj.meta().deletion_timestamp.is_none() {
                let mut st = obj.status_or_default();
                if condition(&*obj, &mut st, "Ready", false, e.reason(), e.to_string()) {
                    if let Err(pe) = patch_status(&ctx.client, &*obj, &st).await {
                        tracing::warn!(error = %pe, "cannot write the error condition");
                    }
                    ctx.warning(&*obj, e.reason(), "Reconcile", e.to_string())
                        .await;
                }
            }
        }
    }
    result
}

/// The controllers' error policy: retry with backoff, never crash.
pub fn error_policy<K: Managed>(obj: Arc<K>, _error: &Error, ctx: Arc<Context>) -> Requeue {
    let key = format!(
        "{}/{}/{}",
        K::CONTROLLER,
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    );
    Requeue::requeue(backoff(ctx.failure(&key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(30), Duration::from_secs(300));
    }
}
