//! Transactions: one signed action each, with canonical domain-separated signing bytes.

use crate::amount::Amount;
use crate::crypto::{Address, KeyError, Keypair, PublicKey, Signature};
use crate::hash::Hash;
use crate::receipt::SignedJobReceipt;
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Domain of the bytes a sender signs; a signature over a transaction can never be valid as any
/// other kind of message (agent receipts, consensus votes) and vice versa.
pub const TX_SIGNING_DOMAIN: &str = "aitbc/tx/v1";
/// Largest encoded transaction the chain accepts.
pub const MAX_TX_BYTES: usize = 64 * 1024;

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceType {
    AiInference,
    AiTraining,
    GpuRental,
    DataProcessing,
}

impl ServiceType {
    pub const ALL: [ServiceType; 4] = [
        ServiceType::AiInference,
        ServiceType::AiTraining,
        ServiceType::GpuRental,
        ServiceType::DataProcessing,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::AiInference => "ai-inference",
            ServiceType::AiTraining => "ai-training",
            ServiceType::GpuRental => "gpu-rental",
            ServiceType::DataProcessing => "data-processing",
        }
    }
}

impl std::str::FromStr for ServiceType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ServiceType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            format!("unknown service type {s:?}; use one of ai-inference, ai-training, gpu-rental, data-processing")
        })
    }
}

/// What runs a listing's jobs on an agent: a command (argv), an optional container image, env.
/// `command` empty means the agent's built-in demo runtime for the listing's type.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Runtime {
    pub command: Vec<String>,
    pub image: String,
    pub env: Vec<(String, String)>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Inference,
    Training,
}

/// A customer's job request. Inputs larger than a prompt travel off chain; the chain keeps their
/// SHA-256 so the agent can prove it used them.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct JobSpec {
    pub kind: Option<JobKind>,
    pub prompt: String,
    pub model: String,
    pub dataset_digest: Option<Hash>,
    pub input_digest: Option<Hash>,
    pub gpus: u32,
    pub memory_mib: u64,
    pub time_limit_secs: u64,
    pub params: Vec<(String, String)>,
}

/// Which providers an agent serves.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub enum Serves {
    AnyProvider,
    Providers(Vec<Address>),
}

impl Serves {
    pub fn serves(&self, provider: &Address) -> bool {
        match self {
            Serves::AnyProvider => true,
            Serves::Providers(list) => list.contains(provider),
        }
    }
}

/// Every state change of the chain is one of these.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub enum Action {
    Transfer {
        to: Address,
        amount: Amount,
    },
    CreateListing {
        name: String,
        service_type: ServiceType,
        price: Amount,
        description: String,
        parameters: Vec<(String, String)>,
        runtime: Runtime,
    },
    UpdateListing {
        listing_id: String,
        price: Option<Amount>,
        description: Option<String>,
        runtime: Option<Runtime>,
    },
    CloseListing {
        listing_id: String,
    },
    /// Locks `amount` in escrow; rejected below the listing's price.
    PlaceBid {
        listing_id: String,
        amount: Amount,
    },
    /// Only the listing's owner.
    AcceptBid {
        bid_id: String,
    },
    /// Only the listing's owner; refunds the bidder.
    RejectBid {
        bid_id: String,
    },
    /// Only the bidder, while the bid is pending; refunds.
    CancelBid {
        bid_id: String,
    },
    /// The bidder releases an accepted bid's escrow to the provider (minus the marketplace fee).
    /// On a `gpu-rental` lease the provider may send it too: it ends the lease, paid for the time
    /// held (all of it once the term is over), the rest refunded to the bidder.
    SettleBid {
        bid_id: String,
    },
    /// Locks `payment` for a job, or draws on the sender's accepted bid `bid_id` (then `payment`
    /// 0 means the bid's amount, more tops the bid up, less is the job's price and the rest of
    /// the bid is refunded at settlement). The result is due `deadline_blocks` genesis block
    /// times after submission, measured in BFT block time (0: the chain's default, which leaves
    /// slack beyond the job's time limit).
    SubmitJob {
        listing_id: Option<String>,
        bid_id: Option<String>,
        payment: Amount,
        spec: JobSpec,
        deadline_blocks: u64,
    },
    /// The customer withdraws a pending job (refunded), or asks the agent of an assigned job to
    /// stop: its receipt with the usage so far then pays the provider by the listing's rule.
    CancelJob {
        job_id: String,
    },
    /// Binds an agent key to the sender (the agent's owner wallet). `proof` is the agent key's
    /// signature over (chain id, sender address, `agent_id`, `serves`)
    /// ([`crate::registration`]), so only the holder of the agent key can consent to it.
    RegisterAgent {
        agent_key: PublicKey,
        agent_id: String,
        serves: Serves,
        proof: Signature,
    },
    /// A scheduler named in genesis records which agent runs a job (payment can go only there).
    AssignJob {
        job_id: String,
        agent_key: PublicKey,
    },
    /// Anyone may carry the receipt; it must be signed by the job's assigned agent for the job's
    /// current attempt and arrive by the deadline plus the result grace. It settles the job.
    ReportResult {
        receipt: SignedJobReceipt,
    },
    /// Releases a succeeded job's escrow to the provider, minus the marketplace fee (burned).
    SettleJob {
        job_id: String,
    },
    /// Returns a failed or expired job's escrow to its customer.
    RefundJob {
        job_id: String,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Transfer { .. } => "transfer",
            Action::CreateListing { .. } => "create-listing",
            Action::UpdateListing { .. } => "update-listing",
            Action::CloseListing { .. } => "close-listing",
            Action::PlaceBid { .. } => "place-bid",
            Action::AcceptBid { .. } => "accept-bid",
            Action::RejectBid { .. } => "reject-bid",
            Action::CancelBid { .. } => "cancel-bid",
            Action::SettleBid { .. } => "settle-bid",
            Action::SubmitJob { .. } => "submit-job",
            Action::CancelJob { .. } => "cancel-job",
            Action::RegisterAgent { .. } => "register-agent",
            Action::AssignJob { .. } => "assign-job",
            Action::ReportResult { .. } => "report-result",
            Action::SettleJob { .. } => "settle-job",
            Action::RefundJob { .. } => "refund-job",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Transaction {
    pub chain_id: String,
    pub sender: PublicKey,
    pub nonce: u64,
    pub fee: Amount,
    pub action: Action,
}

impl Transaction {
    /// The canonical bytes a sender signs: the domain, then the borsh encoding (which is
    /// canonical: one encoding per value).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(TX_SIGNING_DOMAIN.as_bytes());
        out.push(0);
        // Writing into a Vec cannot fail.
        borsh::to_writer(&mut out, self).expect("borsh encoding into a Vec");
        out
    }
    pub fn sign(self, key: &Keypair) -> SignedTransaction {
        let signature = key.sign(&self.signing_bytes());
        SignedTransaction {
            tx: self,
            signature,
        }
    }
    pub fn sender_address(&self) -> Address {
        self.sender.address()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SignedTransaction {
    pub tx: Transaction,
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("transaction is {0} bytes; the limit is {MAX_TX_BYTES}")]
    TooLarge(usize),
    #[error("malformed transaction bytes: {0}")]
    Malformed(String),
}

impl SignedTransaction {
    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("borsh encoding into a Vec")
    }
    /// Decodes exactly one transaction; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<SignedTransaction, DecodeError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        borsh::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
    /// The transaction's id: the hash of its full encoding (signature included).
    pub fn hash(&self) -> Hash {
        Self::hash_of_encoding(&self.encode())
    }
    /// The id of the transaction whose canonical encoding is `bytes`.
    pub fn hash_of_encoding(bytes: &[u8]) -> Hash {
        Hash::domain("aitbc/tx-hash/v1", &[bytes])
    }
    pub fn verify_signature(&self) -> Result<(), KeyError> {
        self.tx
            .sender
            .verify(&self.tx.signing_bytes(), &self.signature)
    }
}

/// Ids of objects created by a transaction: a prefix and 16 hex digits of the creating
/// transaction's hash (`svc-…`, `bid-…`, `job-…`).
pub fn object_id(prefix: &str, tx_hash: &Hash) -> String {
    format!("{prefix}-{}", &tx_hash.to_hex()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &Keypair) -> Transaction {
        Transaction {
            chain_id: "aitbc-test".into(),
            sender: key.public(),
            nonce: 0,
            fee: Amount(10),
            action: Action::Transfer {
                to: Keypair::generate().address(),
                amount: Amount(5),
            },
        }
    }

    #[test]
    fn signed_transaction_round_trips_and_verifies() {
        let k = Keypair::generate();
        let stx = sample(&k).sign(&k);
        let back = SignedTransaction::decode(&stx.encode()).unwrap();
        assert_eq!(back, stx);
        assert!(back.verify_signature().is_ok());
        assert_eq!(back.hash(), stx.hash());
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let k = Keypair::generate();
        let mut stx = sample(&k).sign(&k);
        stx.tx.nonce = 1;
        assert!(stx.verify_signature().is_err());
    }

    #[test]
    fn trailing_bytes_and_garbage_are_rejected() {
        let k = Keypair::generate();
        let mut bytes = sample(&k).sign(&k).encode();
        bytes.push(0);
        assert!(matches!(
            SignedTransaction::decode(&bytes),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            SignedTransaction::decode(&[1, 2, 3]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            SignedTransaction::decode(&vec![0; MAX_TX_BYTES + 1]),
            Err(DecodeError::TooLarge(_))
        ));
    }
}
