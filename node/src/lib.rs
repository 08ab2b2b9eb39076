//! The AITBC chain node: the ledger state machine, its RocksDB storage, HotStuff consensus glue,
//! the validator network, and the public gRPC API.

pub mod ledger;
