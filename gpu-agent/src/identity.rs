//! The agent's ed25519 identity and its on-chain registration action.

use crate::persist;
use aitbc_protocol::Keypair;
use std::path::{Path, PathBuf};

/// File name of the generated key inside the state directory.
pub const KEY_FILE: &str = "agent.key";
/// Environment variable holding the key's secret hex (e.g. from a Kubernetes Secret).
pub const KEY_ENV: &str = "AITBC_AGENT_KEY";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading agent key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing agent key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent key from {0} is not 64 hex digits")]
    Malformed(String),
}

/// Where the key came from, for the startup log (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env,
    Generated(PathBuf),
    StateDir(PathBuf),
}

/// Loads the agent key: `key_file` if given, else `env_secret` (the value of
/// `AITBC_AGENT_KEY`), else `<state_dir>/agent.key`, creating it (mode 0600) on first start.
pub fn load_or_create_key(
    state_dir: &Path,
    key_file: Option<&Path>,
    env_secret: Option<&str>,
) -> Result<(Keypair, KeySource), IdentityError> {
    if let Some(path) = key_file {
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
            path: path.into(),
            source,
        })?;
        let kp = Keypair::from_secret_hex(&text)
            .map_err(|_| IdentityError::Malformed(path.display().to_string()))?;
        return Ok((kp, KeySource::File(path.into())));
    }
    if let Some(secret) = env_secret.filter(|s| !s.trim().is_empty()) {
        let kp = Keypair::from_secret_hex(secret)
            .map_err(|_| IdentityError::Malformed(KEY_ENV.into()))?;
        return Ok((kp, KeySource::Env));
    }
    let path = state_dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            warn_if_readable_by_others(&path);
            let kp = Keypair::from_secret_hex(&text)
                .map_err(|_| IdentityError::Malformed(path.display().to_string()))?;
            Ok((kp, KeySource::StateDir(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let kp = Keypair::generate();
            persist::write_atomic(&path, kp.secret_hex().as_bytes(), 0o600).map_err(|source| {
                IdentityError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
            Ok((kp, KeySource::Generated(path)))
        }
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "agent key is readable by group/others; chmod 600 it");
        }
    }
}

/// The action the owner wallet sends (in a transaction it signs) to register this agent: it
/// carries the agent key's proof of possession over the chain id, the owner's address, the
/// agent id and `serves`, so the chain refuses it from any other wallet, on any other chain, or
/// with the id or serves changed.
pub use aitbc_protocol::registration::register_agent_action;

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::tx::{Action, Serves};
    use aitbc_protocol::Address;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_is_created_0600_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, src) = load_or_create_key(dir.path(), None, None).unwrap();
        assert!(matches!(src, KeySource::Generated(_)));
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k2, src) = load_or_create_key(dir.path(), None, None).unwrap();
        assert!(matches!(src, KeySource::StateDir(_)));
        assert_eq!(k1.public(), k2.public());
    }

    #[test]
    fn key_file_and_env_take_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let k = Keypair::generate();
        let f = dir.path().join("secret");
        std::fs::write(&f, format!("{}\n", k.secret_hex())).unwrap();
        assert_eq!(
            load_or_create_key(dir.path(), Some(&f), None)
                .unwrap()
                .0
                .public(),
            k.public()
        );
        let (ke, src) = load_or_create_key(dir.path(), None, Some(&k.secret_hex())).unwrap();
        assert_eq!((ke.public(), src), (k.public(), KeySource::Env));
        assert!(matches!(
            load_or_create_key(dir.path(), None, Some("nothex")),
            Err(IdentityError::Malformed(_))
        ));
        assert!(!dir.path().join(KEY_FILE).exists());
    }

    #[test]
    fn register_action_names_key_id_and_serves_and_is_signed_for_the_owner() {
        let k = Keypair::generate();
        let owner = Keypair::generate().address();
        let action =
            register_agent_action(&k, "aitbc-test", &owner, "node-1", &Serves::AnyProvider);
        match action {
            Action::RegisterAgent {
                agent_key,
                agent_id,
                serves,
                proof,
            } => {
                assert_eq!(
                    (agent_key, agent_id.as_str(), &serves),
                    (k.public(), "node-1", &Serves::AnyProvider)
                );
                let verify = |chain: &str, o: &Address| {
                    aitbc_protocol::registration::verify_registration(
                        &agent_key, chain, o, &agent_id, &serves, &proof,
                    )
                };
                assert!(verify("aitbc-test", &owner).is_ok());
                assert!(verify("aitbc-test", &Keypair::generate().address()).is_err());
                assert!(verify("aitbc-main", &owner).is_err());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
