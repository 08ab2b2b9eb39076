//! Types for reading from and writing to the block tree.

pub mod public;

pub mod app;

pub mod internal;
