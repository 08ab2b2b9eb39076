//! Test harness: real `aitbc-node` processes on loopback.

#![allow(dead_code)]

pub mod peer;

use aitbc_protocol::client::ChainClient;
use aitbc_protocol::model::Genesis;
use aitbc_protocol::Keypair;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    aitbc_protocol::net::free_loopback_port().unwrap()
}

pub struct NodeProc {
    pub dir: PathBuf,
    pub key_file: PathBuf,
    pub rpc: u16,
    pub p2p: u16,
    pub http: u16,
    pub child: Option<Child>,
    pub fault_file: PathBuf,
}

pub struct TestNet {
    pub root: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    pub genesis: Genesis,
    /// Non-validator keys every node admits to its peer network (`--allow-peer`), besides the
    /// listeners' own (tests add a hostile peer's key here before starting the nodes).
    pub allow_peers: Vec<aitbc_protocol::PublicKey>,
}

impl TestNet {
    /// `validators` validator processes plus `listeners` non-validator nodes (not started yet).
    pub fn new(validators: usize, listeners: usize, block_time_ms: u64) -> TestNet {
        let root = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_aitbc-node"))
            .args(["init", "--dir"])
            .arg(root.path())
            .args([
                "--validators",
                &validators.to_string(),
                "--chain-id",
                "aitbc-test",
                "--block-time-ms",
                &block_time_ms.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let genesis: Genesis = serde_json::from_str(
            &std::fs::read_to_string(root.path().join("genesis.json")).unwrap(),
        )
        .unwrap();
        let mut nodes = Vec::new();
        for i in 0..validators + listeners {
            let key_file = if i < validators {
                root.path().join(format!("validator-{i}.key"))
            } else {
                let p = root.path().join(format!("listener-{i}.key"));
                std::fs::write(&p, Keypair::generate().secret_hex()).unwrap();
                p
            };
            nodes.push(NodeProc {
                dir: root.path().join(format!("node-{i}")),
                key_file,
                rpc: free_port(),
                p2p: free_port(),
                http: free_port(),
                child: None,
                fault_file: root.path().join(format!("node-{i}.cut")),
            });
        }
        TestNet {
            root,
            nodes,
            genesis,
            allow_peers: vec![],
        }
    }

    pub fn genesis_ops(&self) -> Keypair {
        read_key(&self.root.path().join("genesis-ops.key"))
    }

    pub fn scheduler(&self) -> Keypair {
        read_key(&self.root.path().join("scheduler.key"))
    }

    pub fn start(&mut self, i: usize) {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("127.0.0.1:{}", n.p2p))
            .collect();
        let validators = self.genesis.validators.len();
        let allowed: Vec<String> = self.nodes[validators.min(self.nodes.len())..]
            .iter()
            .map(|n| read_key(&n.key_file).public())
            .chain(self.allow_peers.iter().copied())
            .map(|k| k.to_string())
            .collect();
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.with_extension("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_aitbc-node"))
            .arg("run")
            .arg("--genesis")
            .arg(self.root.path().join("genesis.json"))
            .arg("--key-file")
            .arg(&n.key_file)
            .arg("--data-dir")
            .arg(&n.dir)
            .args(["--rpc-listen", &format!("127.0.0.1:{}", n.rpc)])
            .args(["--p2p-listen", &format!("127.0.0.1:{}", n.p2p)])
            .args(["--http-listen", &format!("127.0.0.1:{}", n.http)])
            .arg("--fault-file")
            .arg(&n.fault_file)
            .args(["--peer", &peers.join(",")])
            .args(["--allow-peer", &allowed.join(",")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        n.child = Some(child);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn cut_off(&self, i: usize) {
        std::fs::write(&self.nodes[i].fault_file, b"cut").unwrap();
    }

    pub fn heal(&self, i: usize) {
        let _ = std::fs::remove_file(&self.nodes[i].fault_file);
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].rpc)
    }

    pub async fn client(&self, i: usize) -> ChainClient {
        let start = Instant::now();
        loop {
            if let Ok(c) = ChainClient::connect(&self.endpoint(i)).await {
                if c.status().await.is_ok() {
                    return c;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "node {i} did not come up; see {}",
                self.log_path(i).display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.with_extension("log")
    }

    /// Waits until node `i` reports a committed height of at least `h`.
    pub async fn wait_height(&self, i: usize, h: u64, timeout: Duration) -> u64 {
        let c = self.client(i).await;
        let start = Instant::now();
        loop {
            if let Ok(s) = c.status().await {
                if s.height >= h && !s.block_hash.is_empty() {
                    return s.height;
                }
            }
            assert!(
                start.elapsed() < timeout,
                "node {i} did not reach height {h} in {timeout:?}; see {}",
                self.log_path(i).display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
        if std::thread::panicking() {
            // Keep the logs of a failed test for inspection.
            let keep = self.root.path().to_path_buf();
            eprintln!("test network kept at {}", keep.display());
            for i in 0..self.nodes.len() {
                if let Ok(log) = std::fs::read_to_string(self.log_path(i)) {
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!(
                        "--- node {i} log tail ---\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
            std::mem::forget(std::mem::replace(
                &mut self.root,
                tempfile::tempdir().unwrap(),
            ));
        }
    }
}

pub fn read_key(p: &Path) -> Keypair {
    Keypair::from_secret_hex(std::fs::read_to_string(p).unwrap().trim()).unwrap()
}
