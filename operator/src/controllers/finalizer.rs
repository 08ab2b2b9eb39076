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

/// Adds `name` to the object's finalizers (optimistic: fails on a concurrent change).
pub async fn add<K>(api: &Api<K>, obj: &K, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut list = obj.finalizers().to_vec();
    if list.iter().any(|f| f == name) {
        return Ok(());
    }
    list.push(name.to_string());
    patch(api, obj, list).await
}

/// Removes `name` from the object's finalizers.
pub async fn remove<K>(api: &Api<K>, obj: &K, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if !obj.finalizers().iter().any(|f| f == name) {
        return Ok(());
    }
    let list: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != name)
        .cloned()
        .collect();
    patch(api, obj, list).await
}

async fn patch<K>(api: &Api<K>, obj: &K, list: Vec<String>) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let body = serde_json::json!({
        "metadata": { "finalizers": list, "resourceVersion": obj.resource_version() }
    });
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&body),
    )
    .await?;
    Ok(())
}
