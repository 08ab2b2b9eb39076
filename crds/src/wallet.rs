//! `Wallet`: an ed25519 account whose key lives in a Secret the operator creates once.

use crate::common::{Condition, PendingTx};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Key of the Secret data entry holding the wallet's secret key (64 hex digits).
pub const SECRET_KEY_FIELD: &str = "private-key";
/// Key of the Secret data entry holding the wallet's address (public, for convenience).
pub const SECRET_ADDRESS_FIELD: &str = "address";

/// A wallet on the chain. The operator creates the key Secret (`<name>-wallet-key`, or
/// `secretName`) and never overwrites it. It signs only with a Secret it created for this
/// Wallet (labels `aitbc.io/wallet`, `app.kubernetes.io/managed-by: aitbc-operator` and the
/// Wallet's uid in the annotation `aitbc.io/owner-uid`) or one a namespace admin annotated
/// `aitbc.io/wallet-key-for: <this wallet's name>`; never with a validator or scheduler key.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "aitbc.io",
    version = "v1alpha1",
    kind = "Wallet",
    namespaced,
    status = "WalletStatus",
    shortname = "wal",
    printcolumn = r#"{"name":"ADDRESS","type":"string","jsonPath":".status.address"}"#,
    printcolumn = r#"{"name":"BALANCE","type":"string","jsonPath":".status.balance"}"#,
    printcolumn = r#"{"name":"NONCE","type":"integer","jsonPath":".status.nonce","priority":1}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WalletSpec {
    /// Secret holding the key (`private-key`: hex ed25519 secret). Created when missing; an
    /// existing Secret must be this Wallet's (see above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("secretName cannot change"))]
    pub secret_name: Option<String>,
    /// Node (chain) this wallet lives on; the operator's default chain when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A transfer into this wallet from another Wallet, executed exactly once. The paying
    /// Wallet must grant it: this wallet's name in its `allowFunding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("funding runs once and cannot change"))]
    pub funding: Option<WalletFunding>,
    /// Names of the Wallets (same namespace) whose `funding` may be paid from this wallet's key.
    /// Empty: no other Wallet can draw on this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(regex(pattern = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))
    )]
    pub allow_funding: Vec<String>,
}

/// One-time funding of a wallet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalletFunding {
    /// Name of the paying Wallet in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub from_wallet: String,
    /// AIT to transfer.
    #[schemars(regex(pattern = r"^[0-9]{1,30}(\.[0-9]{1,6})?$"), length(max = 37))]
    pub amount: String,
}

/// Observed state of a wallet, refreshed from the chain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalletStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Spendable AIT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    /// AIT locked in bids and jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrowed: Option<String>,
    /// Next nonce (committed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u64>,
    /// Secret holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Hash of the funding transfer once sent (recorded before it is submitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funding_tx_hash: Option<String>,
    /// Whether the funding transfer is committed.
    #[serde(default)]
    pub funded: bool,
    /// The funding transaction while it is in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_tx: Option<PendingTx>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
