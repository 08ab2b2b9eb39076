//! The agent's configuration: what `main` assembles from flags and the optional TOML file.

use crate::isolation::IsolationMode;
use aitbc_protocol::tx::Serves;
use aitbc_protocol::{Address, PublicKey};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A GPU declared in the configuration, served (flagged `simulated`) where NVML is absent.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredGpu {
    pub model: String,
    pub memory_mib: u64,
    /// Stable id; defaults to `SIM-<agent id>-<index>`.
    #[serde(default)]
    pub uuid: Option<String>,
}

/// Everything the agent needs to run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    pub chain_id: String,
    pub agent_id: String,
    pub owner: Option<Address>,
    pub serves: Serves,
    /// Keys allowed to make mutating calls (the scheduler's, the operator's CLI key...).
    pub scheduler_keys: Vec<PublicKey>,
    pub declared_gpus: Vec<DeclaredGpu>,
    /// Skip NVML even where it loads (serve the declared devices instead).
    pub disable_nvml: bool,
    pub sample_interval: Duration,
    pub history_retention: Duration,
    /// Bytes kept from the start and from the end of each of stdout and stderr.
    pub capture_bytes: usize,
    /// Largest input accepted in a run request.
    pub max_input_bytes: usize,
    /// Largest file returned by FetchOutput.
    pub max_fetch_bytes: u64,
    /// Time limit of a job whose spec says 0, and the cap on any job's limit.
    pub default_time_limit: Duration,
    pub max_time_limit: Duration,
    /// argv that runs the built-in demo runtime (normally this binary + `demo-runtime`).
    pub demo_runtime: Vec<String>,
    /// Allowed difference between a caller's timestamp and the agent's clock.
    pub max_clock_skew: Duration,
    /// Finished jobs (record, input and outputs) are deleted this long after they ended.
    pub job_retention: Duration,
    /// How jobs run: plain processes (owner's listings only), the sandbox, or Pods.
    pub isolation: IsolationMode,
    /// Bytes a job may write (work and output directories together; also the size of its
    /// private /tmp in the sandbox). More ends the job with a failed receipt.
    pub output_quota_bytes: u64,
    pub sandbox: SandboxSettings,
    /// Pod mode only: where and how job Pods run.
    pub pod: Option<crate::pod::PodSettings>,
}

/// Sandbox mode: the bwrap binary and what else of the host the job may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxSettings {
    pub bwrap: PathBuf,
    /// Host paths mounted read-only at the same place (models, provider tools).
    pub extra_ro: Vec<PathBuf>,
    /// Host paths covered by an empty tmpfs should they lie under a mounted directory
    /// (the state directory is always added).
    pub hidden: Vec<PathBuf>,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            bwrap: PathBuf::from("bwrap"),
            extra_ro: Vec::new(),
            hidden: Vec::new(),
        }
    }
}

impl AgentConfig {
    /// Defaults suitable for tests and devnet; `main` overrides them from flags.
    pub fn new(
        state_dir: impl Into<PathBuf>,
        chain_id: impl Into<String>,
        agent_id: impl Into<String>,
    ) -> Self {
        AgentConfig {
            state_dir: state_dir.into(),
            chain_id: chain_id.into(),
            agent_id: agent_id.into(),
            owner: None,
            serves: Serves::Providers(Vec::new()),
            scheduler_keys: Vec::new(),
            declared_gpus: Vec::new(),
            disable_nvml: false,
            sample_interval: Duration::from_secs(5),
            history_retention: Duration::from_secs(24 * 3600),
            capture_bytes: 64 * 1024,
            max_input_bytes: 64 * 1024 * 1024,
            max_fetch_bytes: 16 * 1024 * 1024,
            default_time_limit: Duration::from_secs(3600),
            max_time_limit: Duration::from_secs(7 * 24 * 3600),
            demo_runtime: Vec::new(),
            max_clock_skew: Duration::from_secs(60),
            job_retention: Duration::from_secs(7 * 24 * 3600),
            isolation: IsolationMode::Process,
            output_quota_bytes: 1024 * 1024 * 1024,
            sandbox: SandboxSettings::default(),
            pod: None,
        }
    }
}

/// The optional TOML file (`--config`). Flags given on the command line win.
///
/// ```toml
/// agent_id = "gpu-node-1"
/// chain_id = "aitbc-devnet"
/// owner = "ait..."
/// serves = ["any"]
/// scheduler_keys = ["<hex>"]
///
/// [[gpu]]
/// model = "Simulated A100"
/// memory_mib = 40960
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub agent_id: Option<String>,
    pub chain_id: Option<String>,
    pub owner: Option<String>,
    pub serves: Option<Vec<String>>,
    #[serde(default)]
    pub scheduler_keys: Vec<String>,
    #[serde(default, rename = "gpu")]
    pub gpus: Vec<DeclaredGpu>,
    pub sample_interval_secs: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }
}

/// `serves` as shown in status: `["any"]` or the addresses.
pub fn serves_strings(serves: &Serves) -> Vec<String> {
    match serves {
        Serves::AnyProvider => vec!["any".into()],
        Serves::Providers(list) => list.iter().map(|a| a.to_string()).collect(),
    }
}

/// Default agent id: `NODE_NAME` (set by the DaemonSet), else the host name.
pub fn default_agent_id() -> String {
    if let Ok(n) = std::env::var("NODE_NAME") {
        if !n.trim().is_empty() {
            return n.trim().to_string();
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gpu-agent".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_file_declares_gpus() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(
            &p,
            "agent_id = \"n1\"\n[[gpu]]\nmodel = \"Sim\"\nmemory_mib = 1024\n",
        )
        .unwrap();
        let f = FileConfig::load(&p).unwrap();
        assert_eq!(f.agent_id.as_deref(), Some("n1"));
        assert_eq!(
            f.gpus,
            vec![DeclaredGpu {
                model: "Sim".into(),
                memory_mib: 1024,
                uuid: None
            }]
        );
        std::fs::write(&p, "bogus = 1\n").unwrap();
        assert!(matches!(
            FileConfig::load(&p),
            Err(ConfigError::Parse { .. })
        ));
    }
}
