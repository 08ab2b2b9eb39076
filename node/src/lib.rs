//! The AITBC chain node: the ledger state machine, its RocksDB storage, HotStuff consensus glue,
//! the validator network, and the public gRPC API.

pub mod api;
pub mod app;
pub mod bench;
pub mod block;
pub mod chain;
pub mod executed;
pub mod http;
pub mod index;
pub mod ledger;
pub mod mempool;
pub mod metrics;
pub mod node;
pub mod p2p;
pub mod priority;
pub mod query_pool;
pub mod store;
pub mod verifier;
