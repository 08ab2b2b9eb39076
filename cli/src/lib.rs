//! `aitbc-cli`: the user's command line for the AITBC marketplace (see shared/CLI.md for the
//! command set it must keep). The library holds the parts that are tested on their own: the
//! encrypted keystore, the config file, period and amount parsing, and output formatting; the
//! commands themselves live in `commands/`.

pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod keystore;
pub mod output;
pub mod password;
pub mod period;
pub mod scan;
pub mod search;
