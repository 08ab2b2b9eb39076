//! Where a signing command's password comes from: `--password` or `--password-file`, else
//! `AITBC_PASSWORD`, else a prompt on the terminal.

use std::io::IsTerminal;

pub const ENV_PASSWORD: &str = "AITBC_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("wallet {0:?} needs its password: pass --password P, set AITBC_PASSWORD, or run on a terminal to be prompted")]
    Missing(String),
    #[error("cannot read the password from the terminal: {0}")]
    Prompt(String),
    #[error("cannot read the password file {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the password file {0} is empty")]
    EmptyFile(std::path::PathBuf),
}

/// The password in `path`: its first line, without the line ending.
pub fn read_file(path: &std::path::Path) -> Result<String, PasswordError> {
    let text = std::fs::read_to_string(path).map_err(|source| PasswordError::File {
        path: path.to_path_buf(),
        source,
    })?;
    let first = text.lines().next().unwrap_or_default();
    if first.is_empty() {
        return Err(PasswordError::EmptyFile(path.to_path_buf()));
    }
    Ok(first.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_plane_a_password_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(read_file(&p).unwrap(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(read_file(&p), Err(PasswordError::EmptyFile(_))));
        let missing = dir.path().join("none");
        let err = read_file(&missing).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }
}
