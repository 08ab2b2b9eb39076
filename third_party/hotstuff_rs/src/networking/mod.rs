//! Pluggable peer-to-peer (P2P) networking.

pub mod network;

pub mod messages;

pub(crate) mod receiving;

pub(crate) mod sending;
