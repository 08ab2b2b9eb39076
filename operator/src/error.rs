//! The operator's error type: every failure a reconciler can hit, with the condition reason
//! it shows to users.

use aitbc_protocol::client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {name:?} not found in namespace {namespace}")]
    MissingRef {
        kind: &'static str,
        name: String,
        namespace: String,
    },
    #[error("{kind} {name:?} is not ready yet: {what}")]
    NotReady {
        kind: &'static str,
        name: String,
        what: String,
    },
    #[error("no chain to talk to: {0}")]
    NoChain(String),
    #[error("chain: {0}")]
    Chain(#[from] ClientError),
    #[error("key Secret {name:?} is unusable: {reason}")]
    BadKey { name: String, reason: String },
    #[error("Wallet {wallet:?} may not sign with Secret {secret:?}: {reason}")]
    ForeignKey {
        wallet: String,
        secret: String,
        reason: crate::keys::KeyRefusal,
    },
    #[error(
        "Wallet {from:?} does not allow funding Wallet {to:?}: add {to:?} to its spec.allowFunding"
    )]
    FundingNotGranted { from: String, to: String },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("transaction {action} refused: {reason}")]
    TxRefused { action: String, reason: String },
    #[error("serializing: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    /// CamelCase reason for conditions, events and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesError",
            Error::MissingRef { kind, .. } => match *kind {
                "Wallet" => "WalletNotFound",
                "Node" => "NodeNotFound",
                "ServiceListing" => "ListingNotFound",
                "Bid" => "BidNotFound",
                "Secret" => "SecretNotFound",
                _ => "ReferenceNotFound",
            },
            Error::NotReady { .. } => "DependencyNotReady",
            Error::NoChain(_) => "NoChain",
            Error::Chain(ClientError::Unreachable { .. }) => "ChainUnreachable",
            Error::Chain(_) => "ChainError",
            Error::BadKey { .. } => "BadKeySecret",
            Error::ForeignKey { .. } => "SecretNotAllowed",
            Error::FundingNotGranted { .. } => "FundingNotGranted",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::TxRefused { .. } => "TransactionRefused",
            Error::Serde(_) => "SerializationError",
        }
    }

    /// Whether the user must change something (as opposed to a transient failure).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::MissingRef { .. }
                | Error::NotReady { .. }
                | Error::BadKey { .. }
                | Error::ForeignKey { .. }
                | Error::FundingNotGranted { .. }
                | Error::InvalidSpec(_)
                | Error::TxRefused { .. }
                | Error::NoChain(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
