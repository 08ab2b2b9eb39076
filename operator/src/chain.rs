//! The chain as the reconcilers see it: a small trait over the gRPC client (so reconcilers can
//! be tested against an in-memory chain) and the provider that finds a namespace's chain.

use crate::error::{Error, Result};
use aitbc_crds::Node;
use aitbc_protocol::client::{ChainClient, ClientError};
use aitbc_protocol::model::{AgentRecord, Bid, Job, Listing, TxReceipt};
use aitbc_protocol::tx::SignedTransaction;
use aitbc_protocol::{Address, Amount, Hash};
use async_trait::async_trait;
use kube::api::ListParams;
use kube::{Api, Client};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// What the operator needs to know of the chain's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainInfo {
    pub chain_id: String,
    pub height: u64,
    pub min_fee: Amount,
    pub validators: Vec<String>,
}

/// An account as the operator shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountView {
    pub balance: Amount,
    pub escrowed: Amount,
    /// Next nonce (committed).
    pub nonce: u64,
    /// Next nonce counting the node's mempool.
    pub pending_nonce: u64,
}

/// Where a transaction is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxState {
    /// The node does not know it.
    Unknown,
    /// In the mempool.
    Pending,
    /// In a block: applied (`receipt.error` is `None`) or rejected.
    Committed(TxReceipt),
}

#[async_trait]
pub trait ChainApi: Send + Sync {
    async fn info(&self) -> Result<ChainInfo, ClientError>;
    async fn account(&self, address: &Address) -> Result<AccountView, ClientError>;
    async fn submit(&self, stx: &SignedTransaction) -> Result<Hash, ClientError>;
    async fn tx_state(&self, hash: &Hash) -> Result<TxState, ClientError>;
    async fn listing(&self, id: &str) -> Result<Listing, ClientError>;
    async fn bid(&self, id: &str) -> Result<Bid, ClientError>;
    async fn bids(&self, listing_id: &str, status: &str) -> Result<Vec<Bid>, ClientError>;
    async fn job(&self, id: &str) -> Result<Job, ClientError>;
    async fn agents(&self) -> Result<Vec<AgentRecord>, ClientError>;
}

#[async_trait]
impl ChainApi for ChainClient {
    async fn info(&self) -> Result<ChainInfo, ClientError> {
        let s = self.status().await?;
        let min_fee = s
            .min_fee
            .parse()
            .map_err(|e: aitbc_protocol::AmountError| ClientError::Decode(e.to_string()))?;
        Ok(ChainInfo {
            chain_id: s.chain_id,
            height: s.height,
            min_fee,
            validators: s.validators,
        })
    }
    async fn account(&self, address: &Address) -> Result<AccountView, ClientError> {
        let a = ChainClient::account(self, address).await?;
        let parse = |s: &str| {
            s.parse::<Amount>()
                .map_err(|e| ClientError::Decode(e.to_string()))
        };
        Ok(AccountView {
            balance: parse(&a.balance)?,
            escrowed: parse(&a.escrowed)?,
            nonce: a.nonce,
            pending_nonce: a.pending_nonce,
        })
    }
    async fn submit(&self, stx: &SignedTransaction) -> Result<Hash, ClientError> {
        ChainClient::submit(self, stx).await
    }
    async fn tx_state(&self, hash: &Hash) -> Result<TxState, ClientError> {
        match self.transaction(hash, false).await {
            Ok(info) if info.status == "committed" || info.status == "rejected" => {
                let receipt = borsh::from_slice(&info.receipt)
                    .map_err(|e| ClientError::Decode(e.to_string()))?;
                Ok(TxState::Committed(receipt))
            }
            Ok(_) => Ok(TxState::Pending),
            Err(ClientError::NotFound(_)) => Ok(TxState::Unknown),
            Err(e) => Err(e),
        }
    }
    async fn listing(&self, id: &str) -> Result<Listing, ClientError> {
        ChainClient::listing(self, id).await
    }
    async fn bid(&self, id: &str) -> Result<Bid, ClientError> {
        ChainClient::bid(self, id).await
    }
    async fn bids(&self, listing_id: &str, status: &str) -> Result<Vec<Bid>, ClientError> {
        ChainClient::bids(self, listing_id, None, status).await
    }
    async fn job(&self, id: &str) -> Result<Job, ClientError> {
        ChainClient::job(self, id).await
    }
    async fn agents(&self) -> Result<Vec<AgentRecord>, ClientError> {
        ChainClient::agents(self).await
    }
}

/// Finds the chain a resource of `namespace` talks to (`node`: the Node it names, if any).
#[async_trait]
pub trait ChainProvider: Send + Sync {
    async fn chain(&self, namespace: &str, node: Option<&str>) -> Result<Arc<dyn ChainApi>>;
}

/// The client Service of a Node: `http://<name>.<namespace>.svc:9100`.
pub fn node_endpoint(name: &str, namespace: &str) -> String {
    format!(
        "http://{name}.{namespace}.svc:{}",
        crate::controllers::node::RPC_PORT
    )
}

/// The operator's provider: the configured endpoint, else the client Service of the named Node
/// or of the first Node (by name) of the namespace. Connections are cached per endpoint.
pub struct KubeChains {
    client: Client,
    fixed: Option<String>,
    cache: Mutex<HashMap<String, ChainClient>>,
}

impl KubeChains {
    pub fn new(client: Client, fixed: Option<String>) -> KubeChains {
        KubeChains {
            client,
            fixed,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoint resources of `namespace` use.
    pub async fn endpoint(&self, namespace: &str, node: Option<&str>) -> Result<String> {
        if let Some(e) = &self.fixed {
            return Ok(e.clone());
        }
        let nodes: Api<Node> = Api::namespaced(self.client.clone(), namespace);
        let name = match node {
            Some(n) => match nodes.get_opt(n).await? {
                Some(_) => n.to_string(),
                None => {
                    return Err(Error::MissingRef {
                        kind: "Node",
                        name: n.into(),
                        namespace: namespace.into(),
                    })
                }
            },
            None => {
                let mut names: Vec<String> = nodes
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .filter_map(|n| n.metadata.name)
                    .collect();
                names.sort();
                names.into_iter().next().ok_or_else(|| {
                    Error::NoChain(format!("no Node in namespace {namespace} and no --chain-endpoint / AITBC_CHAIN_ENDPOINT set"))
                })?
            }
        };
        Ok(node_endpoint(&name, namespace))
    }
}

#[async_trait]
impl ChainProvider for KubeChains {
    async fn chain(&self, namespace: &str, node: Option<&str>) -> Result<Arc<dyn ChainApi>> {
        let endpoint = self.endpoint(namespace, node).await?;
        if let Some(c) = self.cache.lock().get(&endpoint) {
            return Ok(Arc::new(c.clone()));
        }
        let c = ChainClient::connect(&endpoint).await?;
        self.cache.lock().insert(endpoint, c.clone());
        Ok(Arc::new(c))
    }
}

/// One chain for every namespace (tests, and `--chain-endpoint` with a pre-made client).
pub struct FixedChain(pub Arc<dyn ChainApi>);

#[async_trait]
impl ChainProvider for FixedChain {
    async fn chain(&self, _namespace: &str, _node: Option<&str>) -> Result<Arc<dyn ChainApi>> {
        Ok(self.0.clone())
    }
}
