//! `AITBC_HOME` (default `~/.aitbc`) and its `config.toml`, written by `devnet up`:
//!
//! ```toml
//! node = "http://127.0.0.1:9100"            # the node plain commands talk to
//! nodes = ["http://127.0.0.1:9100", ...]    # every node (cross-node checks)
//! scheduler = "http://127.0.0.1:7100"
//! devnet_dir = "/home/me/.aitbc/devnet"
//! [agents]
//! agent-0 = "http://127.0.0.1:7070"
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_NODE: &str = "http://127.0.0.1:9100";
pub const ENV_HOME: &str = "AITBC_HOME";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devnet_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config {path} is not valid TOML for aitbc-cli: {reason}")]
    Parse { path: String, reason: String },
    #[error("cannot write config {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("no home directory: set AITBC_HOME to the directory for wallets and config")]
    NoHome,
}

/// `AITBC_HOME`, else `$HOME/.aitbc`.
pub fn home_dir() -> Result<PathBuf, ConfigError> {
    if let Some(h) = std::env::var_os(ENV_HOME).filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".aitbc"))
        .ok_or(ConfigError::NoHome)
}

pub fn config_path(home: &Path) -> PathBuf {
    home.join("config.toml")
}

impl Config {
    /// Reads `home/config.toml`; a missing file is the empty config.
    pub fn load(home: &Path) -> Result<Config, ConfigError> {
        let path = config_path(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Writes `home/config.toml` atomically.
    pub fn save(&self, home: &Path) -> Result<(), ConfigError> {
        let path = config_path(home);
        let err = |e: String| ConfigError::Write {
            path: path.display().to_string(),
            reason: e,
        };
        std::fs::create_dir_all(home).map_err(|e| err(e.to_string()))?;
        let text = toml::to_string_pretty(self).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))
    }

    /// The node to talk to: the flag, else the config's `node`, else the default.
    pub fn node_url(&self, flag: Option<&str>) -> String {
        normalize(
            flag.map(str::to_string)
                .or_else(|| self.node.clone())
                .unwrap_or_else(|| DEFAULT_NODE.to_string()),
        )
    }

    /// Every node known: the config's `nodes`, always including `primary`.
    pub fn all_nodes(&self, primary: &str) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.iter().cloned().map(normalize).collect();
        if !v.iter().any(|n| n == primary) {
            v.insert(0, primary.to_string());
        }
        v
    }
}

/// Adds `http://` to a bare `host:port`.
pub fn normalize(url: String) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        url
    } else {
        format!("http://{url}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_config_is_empty_and_defaults_apply() {
        let home = tempfile::tempdir().unwrap();
        let c = Config::load(home.path()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.node_url(None), DEFAULT_NODE);
        assert_eq!(c.node_url(Some("127.0.0.1:1")), "http://127.0.0.1:1");
    }

    #[test]
    fn save_then_load_round_trips_and_flag_wins() {
        let home = tempfile::tempdir().unwrap();
        let mut c = Config {
            node: Some("http://127.0.0.1:7".into()),
            nodes: vec!["http://127.0.0.1:8".into()],
            ..Default::default()
        };
        c.agents
            .insert("agent-0".into(), "http://127.0.0.1:9".into());
        c.save(home.path()).unwrap();
        let back = Config::load(home.path()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.node_url(None), "http://127.0.0.1:7");
        assert_eq!(back.node_url(Some("http://x:1")), "http://x:1");
        assert_eq!(
            back.all_nodes("http://127.0.0.1:7"),
            vec!["http://127.0.0.1:7", "http://127.0.0.1:8"]
        );
    }

    #[test]
    fn bad_config_names_the_file() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(config_path(home.path()), "node = [").unwrap();
        let e = Config::load(home.path()).unwrap_err().to_string();
        assert!(e.contains("config.toml"), "{e}");
    }
}
