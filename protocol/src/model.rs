//! Objects the chain keeps in its state, shared by the node, the CLI, the scheduler and the operator.

use crate::amount::Amount;
use crate::crypto::{Address, PublicKey};
use crate::hash::Hash;
use crate::receipt::SignedJobReceipt;
use crate::tx::{JobSpec, Runtime, Serves, ServiceType};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

#[derive(
    Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Account {
    pub balance: Amount,
    /// Next nonce this account must use.
    pub nonce: u64,
    /// Sum of this account's funds locked in bids and jobs.
    pub escrowed: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Listing {
    pub id: String,
    pub owner: Address,
    pub name: String,
    pub service_type: ServiceType,
    pub price: Amount,
    pub description: String,
    pub parameters: Vec<(String, String)>,
    pub runtime: Runtime,
    pub active: bool,
    pub created_height: u64,
    pub bids: u64,
    pub jobs: u64,
    /// Settled income of the provider from this listing, after fees.
    pub revenue: Amount,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum BidStatus {
    Pending,
    Accepted,
    Rejected,
    Cancelled,
    /// The escrow was released to the provider.
    Settled,
    /// The escrow moved into a job.
    UsedByJob,
}

impl BidStatus {
    pub fn holds_escrow(self) -> bool {
        matches!(self, BidStatus::Pending | BidStatus::Accepted)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BidStatus::Pending => "pending",
            BidStatus::Accepted => "accepted",
            BidStatus::Rejected => "rejected",
            BidStatus::Cancelled => "cancelled",
            BidStatus::Settled => "settled",
            BidStatus::UsedByJob => "used-by-job",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Bid {
    pub id: String,
    pub listing_id: String,
    pub bidder: Address,
    pub amount: Amount,
    pub status: BidStatus,
    pub created_height: u64,
    pub updated_height: u64,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatus {
    /// Escrow locked, waiting for the scheduler.
    Pending,
    /// An agent was assigned.
    Assigned,
    /// The assigned agent reported success; awaiting settlement.
    Succeeded,
    /// The assigned agent reported failure; awaiting refund.
    Failed,
    Settled,
    Refunded,
}

impl JobStatus {
    pub fn holds_escrow(self) -> bool {
        !matches!(self, JobStatus::Settled | JobStatus::Refunded)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Assigned => "assigned",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Settled => "settled",
            JobStatus::Refunded => "refunded",
        }
    }
}

/// How long after a job's deadline (in block time) its result is still accepted; a job with
/// no result is refundable only after it. The same on every node: part of the ledger's rules.
pub const RESULT_GRACE_MS: u64 = 30_000;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub customer: Address,
    pub listing_id: Option<String>,
    pub bid_id: Option<String>,
    /// Provider paid on settlement: the listing's owner, or (no listing) the assigned agent's owner.
    pub provider: Option<Address>,
    pub escrow: Amount,
    pub spec: JobSpec,
    pub status: JobStatus,
    pub assigned_agent: Option<PublicKey>,
    pub assignments: u32,
    pub result: Option<SignedJobReceipt>,
    pub created_height: u64,
    pub deadline_height: u64,
    pub updated_height: u64,
    /// Fee burned at settlement.
    pub fee_burned: Amount,
    /// What a successful result pays the provider (<= `escrow`; the rest is refunded at
    /// settlement). Lower than `escrow` when the job draws on a larger accepted bid.
    pub price: Amount,
    /// BFT block time (unix ms) by which a result is due. `ReportResult` is accepted until
    /// `deadline_ms` plus [`RESULT_GRACE_MS`]; a refund for a missing result only after.
    pub deadline_ms: u64,
    /// The customer asked to stop the job after it was assigned (`CancelJob` on an assigned job).
    /// The agent's receipt with the usage so far then pays by the listing's rule.
    pub stop_requested: bool,
}

impl Job {
    /// The attempt a result receipt must name: the number of the latest assignment.
    pub fn attempt(&self) -> u32 {
        self.assignments
    }
}

/// An accepted `gpu-rental` bid held as a lease: the chain pays the provider for the time from
/// `start_ms` to `end_ms` (BFT block time) out of the bid's escrow.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Lease {
    pub bid_id: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct AgentRecord {
    pub key: PublicKey,
    pub agent_id: String,
    pub owner: Address,
    pub serves: Serves,
    pub registered_height: u64,
}

/// Chain-wide totals used by the supply audit.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Totals {
    pub genesis_supply: Amount,
    pub burned: Amount,
    pub escrowed: Amount,
}

/// Something a committed transaction did, for watchers (scheduler, operator, CLI).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub enum Event {
    Transferred {
        from: Address,
        to: Address,
        amount: Amount,
    },
    ListingCreated {
        listing_id: String,
        owner: Address,
    },
    ListingUpdated {
        listing_id: String,
    },
    ListingClosed {
        listing_id: String,
    },
    BidPlaced {
        bid_id: String,
        listing_id: String,
        bidder: Address,
        amount: Amount,
    },
    BidAccepted {
        bid_id: String,
        listing_id: String,
    },
    BidRejected {
        bid_id: String,
        refunded: Amount,
    },
    BidCancelled {
        bid_id: String,
        refunded: Amount,
    },
    BidSettled {
        bid_id: String,
        provider: Address,
        paid: Amount,
        fee_burned: Amount,
    },
    JobSubmitted {
        job_id: String,
        customer: Address,
        escrow: Amount,
    },
    JobAssigned {
        job_id: String,
        agent_key: PublicKey,
    },
    ResultReported {
        job_id: String,
        success: bool,
        output_digest: Hash,
    },
    JobSettled {
        job_id: String,
        provider: Address,
        paid: Amount,
        fee_burned: Amount,
    },
    JobRefunded {
        job_id: String,
        customer: Address,
        refunded: Amount,
    },
    AgentRegistered {
        agent_key: PublicKey,
        owner: Address,
    },
    /// A job drew on an accepted bid: the bid's escrow moved into the job.
    BidUsed {
        bid_id: String,
        job_id: String,
        amount: Amount,
    },
    /// The customer asked the assigned agent to stop; its receipt with the usage so far settles.
    JobStopRequested {
        job_id: String,
        agent_key: PublicKey,
        attempt: u32,
    },
    /// A rental lease started (its bid was accepted) and ends at `end_ms` (BFT time).
    LeaseStarted {
        bid_id: String,
        start_ms: u64,
        end_ms: u64,
    },
    /// A lease ended before its term: the part of its escrow not paid (`BidSettled`) went back.
    LeaseRefunded {
        bid_id: String,
        bidder: Address,
        refunded: Amount,
    },
}

impl Event {
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Event::JobSubmitted { job_id, .. }
            | Event::JobAssigned { job_id, .. }
            | Event::ResultReported { job_id, .. }
            | Event::JobSettled { job_id, .. }
            | Event::JobRefunded { job_id, .. }
            | Event::JobStopRequested { job_id, .. } => Some(job_id),
            _ => None,
        }
    }
}

/// What happened to one transaction in a block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct TxReceipt {
    pub tx_hash: Hash,
    pub height: u64,
    pub index: u32,
    /// `None` when applied; the reason when rejected.
    pub error: Option<String>,
    pub fee_paid: Amount,
    pub events: Vec<Event>,
}

/// Our block header, carried as the first datum of every HotStuff block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct BlockHeader {
    pub chain_id: String,
    pub height: u64,
    pub prev_hash: Hash,
    pub time_ms: u64,
    pub proposer: PublicKey,
    pub tx_root: Hash,
    /// Hash committing to the whole ledger state after this block.
    pub state_root: Hash,
    pub tx_count: u32,
}

/// A balance allocated at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub name: String,
    pub address: Address,
    pub amount: Amount,
}

/// A validator of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisValidator {
    pub name: String,
    pub key: PublicKey,
    pub power: u64,
}

/// The genesis file: everything every node must agree on before block 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    pub genesis_time_ms: u64,
    pub block_time_ms: u64,
    /// Smallest fee a transaction may carry.
    pub min_fee: Amount,
    /// Marketplace fee on settlement in basis points; burned (see docs/ARCHITECTURE.md).
    pub marketplace_fee_bps: u32,
    /// Default job deadline in blocks when a transaction does not give one.
    pub default_job_deadline_blocks: u64,
    /// Addresses allowed to assign jobs to agents (the schedulers).
    pub schedulers: Vec<Address>,
    pub allocations: Vec<Allocation>,
    pub validators: Vec<GenesisValidator>,
}

impl Genesis {
    pub fn total_supply(&self) -> Option<Amount> {
        self.allocations
            .iter()
            .try_fold(Amount::ZERO, |acc, a| acc.checked_add(a.amount))
    }
}
