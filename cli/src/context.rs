//! What every command needs: the home directory, config, keystore, output format, the chain
//! client, and the one way transactions are signed, sent and reported.

use crate::cli::Cli;
use crate::config::{self, Config};
use crate::keystore::Keystore;
use crate::output::{Format, Report};
use crate::password;
use aitbc_protocol::client::{ChainClient, ClientError, Committed};
use aitbc_protocol::model::TxReceipt;
use aitbc_protocol::scheduler_pb::scheduler_client::SchedulerClient;
use aitbc_protocol::tx::Action;
use aitbc_protocol::{Address, Amount, Hash, Keypair};
use anyhow::{anyhow, bail, Context as _, Result};
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::Channel;

pub struct Ctx {
    pub home: PathBuf,
    pub config: Config,
    pub keystore: Keystore,
    pub format: Format,
    pub node_url: String,
    pub password: Option<String>,
    pub no_wait: bool,
    pub timeout: Duration,
    pub fee: Option<Amount>,
}

/// What `send` did: always the hash; the commit when waited for.
pub struct Sent {
    pub hash: Hash,
    pub committed: Option<Committed>,
}

impl Sent {
    pub fn receipt(&self) -> Option<&TxReceipt> {
        self.committed.as_ref().map(|c| &c.receipt)
    }
}

impl Ctx {
    pub fn new(cli: &Cli) -> Result<Ctx> {
        let home = config::home_dir()?;
        let config = Config::load(&home)?;
        let node_url = config.node_url(cli.node.as_deref());
        Ok(Ctx {
            keystore: Keystore::open(&home),
            home,
            config,
            format: cli.output,
            node_url,
            password: match &cli.password_file {
                Some(path) => Some(password::read_file(path)?),
                None => cli.password.clone(),
            },
            no_wait: cli.no_wait,
            timeout: Duration::from_secs(cli.timeout.max(1)),
            fee: cli.fee,
        })
    }

    pub fn report(&self) -> Report {
        Report::new(self.format)
    }

    pub async fn chain(&self) -> Result<ChainClient> {
        let c = ChainClient::connect(&self.node_url)
            .await
            .map_err(unreachable_hint)?;
        Ok(c)
    }

    pub async fn chain_at(&self, url: &str) -> Result<ChainClient, ClientError> {
        ChainClient::connect(url).await
    }

    /// Every node's endpoint (config `nodes`, plus the one in use).
    pub fn all_nodes(&self) -> Vec<String> {
        self.config.all_nodes(&self.node_url)
    }

    /// Decrypts `wallet` with the resolved password.
    pub fn unlock(&self, wallet: &str) -> Result<Keypair> {
        self.keystore.info(wallet)?;
        let pw = password::resolve(self.password.as_deref(), wallet)?;
        Ok(self.keystore.unlock(wallet, &pw)?)
    }

    /// A wallet name or an address.
    pub fn resolve_address(&self, who: &str) -> Result<Address> {
        if let Ok(a) = who.parse::<Address>() {
            return Ok(a);
        }
        if who.starts_with(aitbc_protocol::crypto::ADDRESS_PREFIX) && who.len() == 51 {
            who.parse::<Address>()?;
        }
        Ok(self
            .keystore
            .info(who)
            .with_context(|| format!("{who:?} is neither an address nor a local wallet"))?
            .address)
    }

    pub async fn fee(&self, chain: &ChainClient) -> Result<Amount> {
        if let Some(f) = self.fee {
            return Ok(f);
        }
        let s = chain.status().await?;
        s.min_fee
            .parse::<Amount>()
            .map_err(|e| anyhow!("node reports a bad min_fee {:?}: {e}", s.min_fee))
    }

    /// Signs and submits `action`; waits for its block unless `--no-wait`. A rejection (at
    /// submission or in the block) is an error with the chain's reason.
    pub async fn send(&self, chain: &ChainClient, key: &Keypair, action: Action) -> Result<Sent> {
        let fee = self.fee(chain).await?;
        let hash = chain.send(key, action, fee).await.map_err(refused)?;
        if self.no_wait {
            return Ok(Sent {
                hash,
                committed: None,
            });
        }
        let c = chain.wait(&hash, self.timeout).await?;
        if let Some(reason) = &c.receipt.error {
            bail!(
                "transaction {hash} was rejected in block {}: {reason}",
                c.height
            );
        }
        Ok(Sent {
            hash,
            committed: Some(c),
        })
    }

    /// Adds `tx_hash` and, once committed, `block` to the report.
    pub fn report_sent(&self, r: &mut Report, sent: &Sent) {
        r.field("tx_hash", sent.hash.to_hex());
        match &sent.committed {
            Some(c) => {
                r.field("block", c.height);
            }
            None => {
                r.field("status", "submitted");
            }
        }
    }

    pub async fn scheduler(&self) -> Result<SchedulerClient<Channel>> {
        let url = self.config.scheduler.clone().ok_or_else(|| {
            anyhow!(
                "no scheduler configured: `aitbc-cli devnet up` writes its address into {}",
                config::config_path(&self.home).display()
            )
        })?;
        let ch = tonic::transport::Endpoint::from_shared(url.clone())?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| anyhow!("cannot reach the scheduler at {url}: {e}. Is the devnet running? (`aitbc-cli devnet status`)"))?;
        Ok(SchedulerClient::new(ch).max_decoding_message_size(64 * 1024 * 1024))
    }

    pub fn agent_url(&self, agent_id: &str) -> Option<String> {
        self.config.agents.get(agent_id).cloned()
    }
}

/// Rewrites a refusal so that it reads as the chain's reason.
fn refused(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Rejected(reason) => anyhow!("transaction refused: {reason}"),
        other => unreachable_hint(other),
    }
}

fn unreachable_hint(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Unreachable { endpoint, reason } => anyhow!(
            "cannot reach the chain node at {endpoint} ({reason}). Start a local network with `aitbc-cli devnet up`, or point at a running node with --node URL"
        ),
        other => other.into(),
    }
}

/// The first id an event of the receipt carries for `prefix` (`svc`, `bid`, `job`).
pub fn created_id(receipt: &TxReceipt, prefix: &str) -> Option<String> {
    use aitbc_protocol::model::Event;
    receipt.events.iter().find_map(|e| match e {
        Event::ListingCreated { listing_id, .. } if prefix == "svc" => Some(listing_id.clone()),
        Event::BidPlaced { bid_id, .. } if prefix == "bid" => Some(bid_id.clone()),
        Event::JobSubmitted { job_id, .. } if prefix == "job" => Some(job_id.clone()),
        _ => None,
    })
}
