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
/// Label naming the Wallet a key Secret was created for.
pub const WALLET_LABEL: &str = "aitbc.io/wallet";
/// Label naming the Node a validator (or listener) key Secret belongs to.
pub const NODE_LABEL: &str = "aitbc.io/node";
/// Label saying what a key is for: `wallet`, `validator` or `scheduler`.
pub const KEY_ROLE_LABEL: &str = "aitbc.io/key-role";
/// Annotation holding the uid of the Wallet that owns a key Secret the operator created. Not a
/// `metadata.ownerReferences` entry on purpose: the garbage collector would delete the key
/// (and lose its funds) with the Wallet.
pub const OWNER_UID_ANNOTATION: &str = "aitbc.io/owner-uid";
/// Annotation by which a namespace admin marks a Secret of their own as the key of the Wallet
/// it names.
pub const WALLET_KEY_FOR_ANNOTATION: &str = "aitbc.io/wallet-key-for";

/// What a key Secret is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    Wallet,
    Validator,
    Scheduler,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Wallet => "wallet",
            KeyRole::Validator => "validator",
            KeyRole::Scheduler => "scheduler",
        }
    }
}

/// Labels of a validator (or listener) key Secret of Node `node`.
pub fn validator_key_labels(node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NODE_LABEL.to_string(), node.to_string()),
        (
            KEY_ROLE_LABEL.to_string(),
            KeyRole::Validator.as_str().to_string(),
        ),
    ])
}

/// Labels of the scheduler key Secret.
pub fn scheduler_key_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/component".to_string(),
            "scheduler".to_string(),
        ),
        (
            KEY_ROLE_LABEL.to_string(),
            KeyRole::Scheduler.as_str().to_string(),
        ),
    ])
}

/// Labels and annotations of a wallet key Secret created for Wallet `name` (uid `uid`; none when
/// the Wallet does not exist yet, e.g. a genesis allocation: the Wallet of that name adopts it).
pub fn wallet_key_meta(
    name: &str,
    uid: Option<&str>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let labels = BTreeMap::from([
        (WALLET_LABEL.to_string(), name.to_string()),
        (
            KEY_ROLE_LABEL.to_string(),
            KeyRole::Wallet.as_str().to_string(),
        ),
    ]);
    let annotations = uid
        .map(|u| BTreeMap::from([(OWNER_UID_ANNOTATION.to_string(), u.to_string())]))
        .unwrap_or_default();
    (labels, annotations)
}

/// Why a Wallet may sign with a Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Custody {
    /// The operator created it for this very Wallet (labels and owner uid match).
    Owned,
    /// The operator created it for a Wallet of this name that did not exist yet (a genesis
    /// allocation, or a Secret of an operator before owner uids): this Wallet takes it over.
    Adopt,
    /// A namespace admin marked it as this Wallet's key.
    Granted,
}

/// Why a Wallet may not sign with a Secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("it holds a validator key (label {NODE_LABEL} or {KEY_ROLE_LABEL}=validator); validator keys never sign wallet transactions")]
    ValidatorKey,
    #[error("it holds the scheduler key")]
    SchedulerKey,
    #[error("it was created for another Wallet (owner uid {0})")]
    OtherWallet(String),
    #[error("the operator did not create it for this Wallet and no admin annotated it {WALLET_KEY_FOR_ANNOTATION}: <wallet>")]
    NotThisWalletsKey,
}

/// Pure: whether Wallet `wallet` (uid `uid`) may sign with `secret`, and on what grounds.
pub fn wallet_custody(
    secret: &Secret,
    wallet: &str,
    uid: Option<&str>,
) -> Result<Custody, KeyRefusal> {
    let labels = secret.labels();
    let annotations = secret.annotations();
    let label = |k: &str| labels.get(k).map(String::as_str);
    if label(NODE_LABEL).is_some() || label(KEY_ROLE_LABEL) == Some("validator") {
        return Err(KeyRefusal::ValidatorKey);
    }
    if label(KEY_ROLE_LABEL) == Some("scheduler")
        || label("app.kubernetes.io/component") == Some("scheduler")
    {
        return Err(KeyRefusal::SchedulerKey);
    }
    if annotations
        .get(WALLET_KEY_FOR_ANNOTATION)
        .map(String::as_str)
        == Some(wallet)
    {
        return Ok(Custody::Granted);
    }
    let ours = label(MANAGED_LABEL) == Some(MANAGED_VALUE)
        && label(WALLET_LABEL) == Some(wallet)
        && label(KEY_ROLE_LABEL).is_none_or(|r| r == "wallet");
    if !ours {
        return Err(KeyRefusal::NotThisWalletsKey);
    }
    match (annotations.get(OWNER_UID_ANNOTATION), uid) {
        (None, _) => Ok(Custody::Adopt),
        (Some(owner), Some(uid)) if owner == uid => Ok(Custody::Owned),
        (Some(owner), _) => Err(KeyRefusal::OtherWallet(owner.clone())),
    }
}

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
    annotated_key_secret(name, namespace, key, labels, BTreeMap::new())
}

/// As [`key_secret`], with `annotations`.
pub fn annotated_key_secret(
    name: &str,
    namespace: &str,
    key: &Keypair,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
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
            annotations: (!annotations.is_empty()).then_some(annotations),
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
    create_key_secret(api, namespace, name, labels, BTreeMap::new()).await
}

/// Creates the key Secret `name` with a new key (a concurrent creation is read back).
pub async fn create_key_secret(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> Result<(Keypair, bool)> {
    let key = Keypair::generate();
    let secret = annotated_key_secret(name, namespace, &key, labels, annotations);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok((key, true)),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            Ok((keypair_from_secret(&api.get(name).await?)?, false))
        }
        Err(e) => Err(e.into()),
    }
}

/// The public key in a key Secret: its `public-key` entry, else derived from the secret key
/// (Secrets of older operators).
pub fn public_key_from_secret(secret: &Secret) -> Result<aitbc_protocol::PublicKey> {
    let published = secret
        .data
        .as_ref()
        .and_then(|d| d.get(PUBLIC_KEY_FIELD))
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .and_then(|h| h.trim().parse::<aitbc_protocol::PublicKey>().ok());
    match published {
        Some(k) => Ok(k),
        None => Ok(keypair_from_secret(secret)?.public()),
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

    fn wallet_secret(
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    ) -> Secret {
        annotated_key_secret("k", "ns", &Keypair::generate(), labels, annotations)
    }

    #[test]
    fn key_custody_wallet_custody_rules() {
        let (labels, owned) = wallet_key_meta("alice", Some("u1"));
        let s = wallet_secret(labels.clone(), owned);
        assert_eq!(wallet_custody(&s, "alice", Some("u1")), Ok(Custody::Owned));
        assert!(matches!(
            wallet_custody(&s, "alice", Some("u2")),
            Err(KeyRefusal::OtherWallet(_))
        ));
        assert_eq!(
            wallet_custody(&s, "bob", Some("u1")),
            Err(KeyRefusal::NotThisWalletsKey)
        );
        let unclaimed = wallet_secret(labels, BTreeMap::new());
        assert_eq!(
            wallet_custody(&unclaimed, "alice", Some("u9")),
            Ok(Custody::Adopt)
        );
        let foreign = Secret::default();
        assert_eq!(
            wallet_custody(&foreign, "alice", Some("u1")),
            Err(KeyRefusal::NotThisWalletsKey),
            "a Secret the operator did not make is refused"
        );
        let granted = wallet_secret(
            BTreeMap::new(),
            BTreeMap::from([(WALLET_KEY_FOR_ANNOTATION.to_string(), "alice".to_string())]),
        );
        assert_eq!(
            wallet_custody(&granted, "alice", None),
            Ok(Custody::Granted)
        );
        assert_eq!(
            wallet_custody(&granted, "bob", None),
            Err(KeyRefusal::NotThisWalletsKey),
            "an admin grant names one Wallet"
        );
        let mut validator = granted.clone();
        validator.metadata.labels = Some(validator_key_labels("aitbc"));
        assert_eq!(
            wallet_custody(&validator, "alice", None),
            Err(KeyRefusal::ValidatorKey),
            "validator keys are never wallet keys, whatever else marks them"
        );
        let legacy_validator = key_secret(
            "aitbc-validator-0",
            "ns",
            &Keypair::generate(),
            BTreeMap::from([(NODE_LABEL.to_string(), "aitbc".to_string())]),
        );
        assert_eq!(
            wallet_custody(&legacy_validator, "aitbc-validator-0", None),
            Err(KeyRefusal::ValidatorKey)
        );
        let mut sched = granted;
        sched.metadata.labels = Some(scheduler_key_labels());
        assert_eq!(
            wallet_custody(&sched, "alice", None),
            Err(KeyRefusal::SchedulerKey)
        );
    }

    #[test]
    fn key_custody_public_keys_are_read_without_the_secret_key() {
        let k = Keypair::generate();
        let mut s = key_secret("v", "ns", &k, BTreeMap::new());
        assert_eq!(public_key_from_secret(&s).unwrap(), k.public());
        s.data.as_mut().unwrap().remove(SECRET_KEY_FIELD);
        assert_eq!(public_key_from_secret(&s).unwrap(), k.public());
    }
}
