//! Types every AITBC component shares: amounts, keys, addresses, transactions, receipts,
//! chain objects, and the gRPC definitions with their generated tonic clients and servers.

pub mod amount;
pub mod client;
pub mod crypto;
pub mod hash;
pub mod model;
pub mod net;
pub mod outputs;
pub mod receipt;
pub mod registration;
pub mod tx;

pub use amount::{Amount, AmountError};
pub use crypto::{Address, Keypair, PublicKey, Signature};
pub use hash::Hash;

/// Generated gRPC code for the chain's public API.
pub mod pb {
    tonic::include_proto!("aitbc.chain.v1");
}

/// Generated gRPC code for the GPU agent's API.
pub mod agent_pb {
    tonic::include_proto!("aitbc.agent.v1");
}

/// Generated gRPC code for the scheduler's control API.
pub mod scheduler_pb {
    tonic::include_proto!("aitbc.scheduler.v1");
}
