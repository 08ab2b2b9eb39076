//! Key Secrets: created once with a fresh ed25519 key, never overwritten, read back by the
//! reconcilers that sign. Keys never appear in specs, statuses, events or logs.

use crate::error::{Error, Result};
use aitbc_crds::wallet::{SECRET_ADDRESS_FIELD, SECRET_KEY_FIELD};
use aitbc_crds::Wallet;
use aitbc_protocol::Keypair;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;

/// Hex public key entry of key Secrets (the gpu-agents trust the scheduler's).
pub const PUBLIC_KEY_FIELD: &str = "public-key";
/// Also accepted as the secret key entry.
const SECRET_KEY_ALIASES: [&str; 2] = ["secret-key", "key"];

/// Label on every Secret the operator creates.
pub const MANAGED_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_VALUE: &str = "aitbc-operator";

/// The Secret holding a wallet's key: `spec.secretName`, else `<name>-wallet-key`.
pub fn wallet_secret_name(wallet: &Wallet) -> String {
    wallet
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| default_wallet_secret_name(&wallet.name_any()))
}

pub fn default_wallet_secret_name(wallet: &str) -> String {
    format!("{wallet}-wallet-key")
}

/// A Secret holding `key` (hex secret) and its address, labelled with `labels`.
pub fn key_secret(
    name: &str,
    namespace: &str,
    key: &Keypair,
    labels: BTreeMap<String, String>,
) -> Secret {
    let mut labels = labels;
    labels.insert(MANAGED_LABEL.into(), MANAGED_VALUE.into());
    let data = BTreeMap::from([
        (
            SECRET_KEY_FIELD.to_string(),
            ByteString(key.secret_hex().into_bytes()),
        ),
        (
            SECRET_ADDRESS_FIELD.to_string(),
            ByteString(key.address().to_string().into_bytes()),
        ),
        (
            PUBLIC_KEY_FIELD.to_string(),
            ByteString(key.public().to_hex().into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The key in a key Secret (`private-key`, hex; also accepts `secret-key`, and `key` as written
/// by `kubectl create secret generic --from-file=key=…`).
pub fn keypair_from_secret(secret: &Secret) -> Result<Keypair> {
    let name = secret.name_any();
    let data = secret.data.as_ref();
    let raw = data
        .and_then(|d| {
            d.get(SECRET_KEY_FIELD)
                .or_else(|| SECRET_KEY_ALIASES.iter().find_map(|k| d.get(*k)))
        })
        .ok_or_else(|| Error::BadKey {
            name: name.clone(),
            reason: format!("it has no `{SECRET_KEY_FIELD}` entry"),
        })?;
    let hex = std::str::from_utf8(&raw.0).map_err(|_| Error::BadKey {
        name: name.clone(),
        reason: "the key is not text".into(),
    })?;
    Keypair::from_secret_hex(hex.trim()).map_err(|_| Error::BadKey {
        name,
        reason: "the key is not a 64-hex-digit ed25519 secret".into(),
    })
}

/// Reads the key Secret `name`, or creates it with a new key when it does not exist. An
/// existing Secret is never replaced; a concurrent creation is read back.
/// Returns the key and whether it was created now.
pub async fn ensure_key_secret(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
) -> Result<(Keypair, bool)> {
    if let Some(s) = api.get_opt(name).await? {
        return Ok((keypair_from_secret(&s)?, false));
    }
    let key = Keypair::generate();
    match api
        .create(
            &PostParams::default(),
            &key_secret(name, namespace, &key, labels),
        )
        .await
    {
        Ok(_) => Ok((key, true)),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            Ok((keypair_from_secret(&api.get(name).await?)?, false))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads an existing key Secret.
pub async fn read_key_secret(api: &Api<Secret>, namespace: &str, name: &str) -> Result<Keypair> {
    match api.get_opt(name).await? {
        Some(s) => keypair_from_secret(&s),
        None => Err(Error::MissingRef {
            kind: "Secret",
            name: name.into(),
            namespace: namespace.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_secret_round_trips_and_carries_the_address() {
        let k = Keypair::generate();
        let s = key_secret("w-wallet-key", "ns", &k, BTreeMap::new());
        assert_eq!(keypair_from_secret(&s).unwrap().address(), k.address());
        let data = s.data.unwrap();
        assert_eq!(
            data[SECRET_ADDRESS_FIELD].0,
            k.address().to_string().into_bytes()
        );
        assert_eq!(data[PUBLIC_KEY_FIELD].0, k.public().to_hex().into_bytes());
        assert_eq!(s.metadata.labels.unwrap()[MANAGED_LABEL], MANAGED_VALUE);
    }

    #[test]
    fn a_secret_without_a_valid_key_is_refused() {
        let mut s = key_secret("x", "ns", &Keypair::generate(), BTreeMap::new());
        s.data
            .as_mut()
            .unwrap()
            .insert(SECRET_KEY_FIELD.into(), ByteString(b"nothex".to_vec()));
        assert!(matches!(keypair_from_secret(&s), Err(Error::BadKey { .. })));
        let other = Keypair::generate();
        s.data = Some(BTreeMap::from([(
            "secret-key".to_string(),
            ByteString(other.secret_hex().into_bytes()),
        )]));
        assert_eq!(keypair_from_secret(&s).unwrap().address(), other.address());
        s.data = None;
        assert!(matches!(keypair_from_secret(&s), Err(Error::BadKey { .. })));
    }
}
