//! Subprotocol that "catches-up" the local block tree in case the replica misses out on messages.

pub mod messages;

pub(crate) mod client;

pub(crate) mod server;
