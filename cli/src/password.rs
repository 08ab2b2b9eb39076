//! Where a signing command's password comes from: `--password`, else `AITBC_PASSWORD`, else a
//! prompt on the terminal.

use std::io::IsTerminal;

pub const ENV_PASSWORD: &str = "AITBC_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("wallet {0:?} needs its password: pass --password P, set AITBC_PASSWORD, or run on a terminal to be prompted")]
    Missing(String),
    #[error("cannot read the password from the terminal: {0}")]
    Prompt(String),
}

/// Resolves the password for `wallet`: flag, then environment, then a prompt (terminals only).
pub fn resolve(flag: Option<&str>, wallet: &str) -> Result<String, PasswordError> {
    if let Some(p) = flag {
        return Ok(p.to_string());
    }
    if let Ok(p) = std::env::var(ENV_PASSWORD) {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        return rpassword::prompt_password(format!("Password for wallet {wallet}: "))
            .map_err(|e| PasswordError::Prompt(e.to_string()));
    }
    Err(PasswordError::Missing(wallet.to_string()))
}
