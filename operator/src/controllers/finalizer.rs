//! Finalizers: added before the first chain transaction, removed once the chain-side cleanup
//! (close listing, cancel bid, cancel job) is committed.

use crate::error::Result;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

pub const LISTING: &str = "aitbc.io/close-listing";
pub const BID: &str = "aitbc.io/cancel-bid";
pub const AIJOB: &str = "aitbc.io/cancel-job";

/// Adds `name` to the object's finalizers. The list is read fresh and written with its
/// resourceVersion, so a concurrent change (another finalizer) is never lost: it conflicts.
pub async fn add<K>(api: &Api<K>, obj: &K, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let current = api.get(&obj.name_any()).await?;
    let mut list = current.finalizers().to_vec();
    if list.iter().any(|f| f == name) {
        return Ok(());
    }
    list.push(name.to_string());
    patch(api, &current, list).await
}

/// Removes `name` from the object's finalizers (read fresh, written with its resourceVersion).
pub async fn remove<K>(api: &Api<K>, obj: &K, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(current) = api.get_opt(&obj.name_any()).await? else {
        return Ok(());
    };
    if !current.finalizers().iter().any(|f| f == name) {
        return Ok(());
    }
    let list: Vec<String> = current
        .finalizers()
        .iter()
        .filter(|f| *f != name)
        .cloned()
        .collect();
    patch(api, &current, list).await
}

async fn patch<K>(api: &Api<K>, current: &K, list: Vec<String>) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let body = serde_json::json!({
        "metadata": { "finalizers": list, "resourceVersion": current.resource_version() }
    });
    api.patch(
        &current.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&body),
    )
    .await?;
    Ok(())
}
