//! A typed client for the chain's gRPC API, shared by the CLI, the scheduler, the operator, the
//! tests and the benchmarks.

use crate::model::{AgentRecord, Bid, Job, Listing, TxReceipt};
use crate::pb::{self, chain_client::ChainClient as RawClient};
use crate::tx::{Action, SignedTransaction, Transaction};
use crate::{Address, Amount, Hash, Keypair};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the chain node at {endpoint}: {reason}. Is it running? Start a local network with `aitbc-cli devnet up`")]
    Unreachable { endpoint: String, reason: String },
    #[error("transaction refused: {0}")]
    Rejected(String),
    /// The node is out of room for now (gRPC `RESOURCE_EXHAUSTED`): for a submission, its
    /// mempool or this sender's share of it is full and the transaction itself is fine (send the
    /// same bytes again later); for a query, its query queue or stream slots are taken.
    #[error("the chain node is busy, retry shortly: {0}")]
    Busy(String),
    /// The node already holds this very transaction (gRPC `ALREADY_EXISTS`): it is pending.
    #[error("transaction already known: {0}")]
    AlreadyKnown(String),
    #[error("{0}")]
    NotFound(String),
    #[error("transaction {hash} not committed after {waited:?}; check it later with `aitbc-cli transaction status --tx-id {hash}`")]
    Timeout { hash: Hash, waited: Duration },
    #[error("chain node error: {0}")]
    Rpc(String),
    #[error("node returned data that does not decode: {0}")]
    Decode(String),
}

fn from_status(s: tonic::Status) -> ClientError {
    match s.code() {
        Code::NotFound => ClientError::NotFound(s.message().to_string()),
        Code::AlreadyExists => ClientError::AlreadyKnown(s.message().to_string()),
        Code::ResourceExhausted => ClientError::Busy(s.message().to_string()),
        Code::InvalidArgument | Code::FailedPrecondition | Code::PermissionDenied => {
            ClientError::Rejected(s.message().to_string())
        }
        Code::Unavailable => ClientError::Unreachable {
            endpoint: String::new(),
            reason: s.message().to_string(),
        },
        _ => ClientError::Rpc(format!("{:?}: {}", s.code(), s.message())),
    }
}

fn decode<T: borsh::BorshDeserialize>(bytes: &[u8]) -> Result<T, ClientError> {
    borsh::from_slice(bytes).map_err(|e| ClientError::Decode(e.to_string()))
}

/// Where a transaction ended up.
#[derive(Clone, Debug)]
pub struct Committed {
    pub hash: Hash,
    pub height: u64,
    pub receipt: TxReceipt,
}

#[derive(Clone)]
pub struct ChainClient {
    raw: RawClient<Channel>,
    endpoint: String,
}

impl ChainClient {
    /// Connects to `endpoint` (`http://host:port` or `host:port`).
    pub async fn connect(endpoint: &str) -> Result<ChainClient, ClientError> {
        let url = if endpoint.starts_with("http") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        let unreachable = |reason: String| ClientError::Unreachable {
            endpoint: url.clone(),
            reason,
        };
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(ChainClient {
            raw: RawClient::new(channel).max_decoding_message_size(64 * 1024 * 1024),
            endpoint: url,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn raw(&self) -> RawClient<Channel> {
        self.raw.clone()
    }

    fn map(&self, s: tonic::Status) -> ClientError {
        match from_status(s) {
            ClientError::Unreachable { reason, .. } => ClientError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason,
            },
            e => e,
        }
    }

    pub async fn status(&self) -> Result<pb::NodeStatus, ClientError> {
        Ok(self
            .raw
            .clone()
            .get_node_status(pb::GetNodeStatusRequest {})
            .await
            .map_err(|e| self.map(e))?
            .into_inner())
    }

    pub async fn account(&self, a: &Address) -> Result<pb::AccountInfo, ClientError> {
        let r = self
            .raw
            .clone()
            .get_account(pb::GetAccountRequest {
                address: a.to_string(),
            })
            .await;
        Ok(r.map_err(|e| self.map(e))?.into_inner())
    }

    pub async fn balance(&self, a: &Address) -> Result<(Amount, Amount), ClientError> {
        let info = self.account(a).await?;
        let parse = |s: &str| {
            s.parse::<Amount>()
                .map_err(|e| ClientError::Decode(e.to_string()))
        };
        Ok((parse(&info.balance)?, parse(&info.escrowed)?))
    }

    /// Signs `action` from `key` with the next free nonce and submits it.
    pub async fn send(
        &self,
        key: &Keypair,
        action: Action,
        fee: Amount,
    ) -> Result<Hash, ClientError> {
        let status = self.status().await?;
        let nonce = self.account(&key.address()).await?.pending_nonce;
        let tx = Transaction {
            chain_id: status.chain_id,
            sender: key.public(),
            nonce,
            fee,
            action,
        };
        self.submit(&tx.sign(key)).await
    }

    pub async fn submit(&self, stx: &SignedTransaction) -> Result<Hash, ClientError> {
        let r = self
            .raw
            .clone()
            .submit_transaction(pb::SubmitTransactionRequest {
                transaction: stx.encode(),
            })
            .await;
        let hash = r.map_err(|e| self.map(e))?.into_inner().tx_hash;
        hash.parse()
            .map_err(|e: crate::hash::HashParseError| ClientError::Decode(e.to_string()))
    }

    /// Submits many transactions in one request; one result per transaction, in order.
    pub async fn submit_many(
        &self,
        txs: &[SignedTransaction],
    ) -> Result<Vec<Result<Hash, ClientError>>, ClientError> {
        let req = pb::SubmitTransactionsRequest {
            transactions: txs.iter().map(|t| t.encode()).collect(),
        };
        let r = self
            .raw
            .clone()
            .submit_transactions(req)
            .await
            .map_err(|e| self.map(e))?
            .into_inner();
        Ok(r.results
            .into_iter()
            .map(|r| {
                if r.error.is_empty() {
                    r.tx_hash.parse().map_err(|e: crate::hash::HashParseError| {
                        ClientError::Decode(e.to_string())
                    })
                } else {
                    Err(ClientError::Rejected(r.error))
                }
            })
            .collect())
    }

    pub async fn transaction(
        &self,
        hash: &Hash,
        with_proof: bool,
    ) -> Result<pb::TransactionInfo, ClientError> {
        let r = self
            .raw
            .clone()
            .get_transaction(pb::GetTransactionRequest {
                tx_hash: hash.to_hex(),
                with_proof,
            })
            .await;
        Ok(r.map_err(|e| self.map(e))?.into_inner())
    }

    /// Waits until `hash` is committed (applied or rejected in a block).
    pub async fn wait(&self, hash: &Hash, timeout: Duration) -> Result<Committed, ClientError> {
        let start = Instant::now();
        loop {
            match self.transaction(hash, false).await {
                Ok(info) if info.status == "committed" || info.status == "rejected" => {
                    return Ok(Committed {
                        hash: *hash,
                        height: info.height,
                        receipt: decode(&info.receipt)?,
                    });
                }
                Ok(_) | Err(ClientError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            if start.elapsed() > timeout {
                return Err(ClientError::Timeout {
                    hash: *hash,
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends and waits for commit; an action rejected in its block is an error with the reason.
    pub async fn send_and_wait(
        &self,
        key: &Keypair,
        action: Action,
        fee: Amount,
        timeout: Duration,
    ) -> Result<Committed, ClientError> {
        let hash = self.send(key, action, fee).await?;
        let c = self.wait(&hash, timeout).await?;
        match &c.receipt.error {
            Some(e) => Err(ClientError::Rejected(e.clone())),
            None => Ok(c),
        }
    }

    pub async fn listing(&self, id: &str) -> Result<Listing, ClientError> {
        let r = self
            .raw
            .clone()
            .get_listing(pb::GetObjectRequest { id: id.into() })
            .await;
        decode(&r.map_err(|e| self.map(e))?.into_inner().encoded)
    }

    pub async fn listings(
        &self,
        query: &str,
        owner: Option<&Address>,
    ) -> Result<Vec<Listing>, ClientError> {
        let req = pb::SearchListingsRequest {
            query: query.into(),
            include_closed: false,
            owner: owner.map(|o| o.to_string()).unwrap_or_default(),
        };
        let r = self
            .raw
            .clone()
            .search_listings(req)
            .await
            .map_err(|e| self.map(e))?
            .into_inner();
        r.listings.iter().map(|l| decode(&l.encoded)).collect()
    }

    pub async fn bid(&self, id: &str) -> Result<Bid, ClientError> {
        let r = self
            .raw
            .clone()
            .get_bid(pb::GetObjectRequest { id: id.into() })
            .await;
        decode(&r.map_err(|e| self.map(e))?.into_inner().encoded)
    }

    pub async fn bids(
        &self,
        listing_id: &str,
        bidder: Option<&Address>,
        status: &str,
    ) -> Result<Vec<Bid>, ClientError> {
        let req = pb::ListBidsRequest {
            listing_id: listing_id.into(),
            bidder: bidder.map(|b| b.to_string()).unwrap_or_default(),
            status: status.into(),
        };
        let r = self
            .raw
            .clone()
            .list_bids(req)
            .await
            .map_err(|e| self.map(e))?
            .into_inner();
        r.bids.iter().map(|b| decode(&b.encoded)).collect()
    }

    pub async fn job(&self, id: &str) -> Result<Job, ClientError> {
        let r = self
            .raw
            .clone()
            .get_job(pb::GetObjectRequest { id: id.into() })
            .await;
        decode(&r.map_err(|e| self.map(e))?.into_inner().encoded)
    }

    pub async fn jobs(
        &self,
        customer: Option<&Address>,
        status: &str,
    ) -> Result<Vec<Job>, ClientError> {
        let req = pb::ListJobsRequest {
            customer: customer.map(|c| c.to_string()).unwrap_or_default(),
            status: status.into(),
            listing_id: String::new(),
        };
        let r = self
            .raw
            .clone()
            .list_jobs(req)
            .await
            .map_err(|e| self.map(e))?
            .into_inner();
        r.jobs.iter().map(|j| decode(&j.encoded)).collect()
    }

    pub async fn agents(&self) -> Result<Vec<AgentRecord>, ClientError> {
        let r = self
            .raw
            .clone()
            .list_agents(pb::ListAgentsRequest {})
            .await
            .map_err(|e| self.map(e))?
            .into_inner();
        r.agents.iter().map(|a| decode(&a.encoded)).collect()
    }

    pub async fn supply(&self) -> Result<pb::SupplyInfo, ClientError> {
        Ok(self
            .raw
            .clone()
            .get_supply(pb::GetSupplyRequest {})
            .await
            .map_err(|e| self.map(e))?
            .into_inner())
    }

    pub async fn block(&self, height: u64) -> Result<pb::BlockInfo, ClientError> {
        let req = pb::GetBlockRequest {
            by: Some(pb::get_block_request::By::Height(height)),
            latest: false,
        };
        Ok(self
            .raw
            .clone()
            .get_block(req)
            .await
            .map_err(|e| self.map(e))?
            .into_inner())
    }

    /// An account's last `limit` transactions, newest first. The node answers in pages (at most
    /// 100 each); this follows the page tokens until `limit` or the oldest transaction.
    pub async fn history(
        &self,
        a: &Address,
        limit: u32,
    ) -> Result<Vec<pb::TransactionInfo>, ClientError> {
        let mut out = Vec::new();
        let mut token = String::new();
        while out.len() < limit as usize {
            let left = limit - out.len() as u32;
            let (page, next) = self.history_page(a, left, &token).await?;
            out.extend(page.into_iter().take(left as usize));
            if next.is_empty() || next == token {
                break;
            }
            token = next;
        }
        Ok(out)
    }

    /// One page of an account's history: up to `limit` transactions (the node caps a page at
    /// 100) older than `page_token` (empty: the newest), and the token of the next page (empty
    /// on the last one).
    pub async fn history_page(
        &self,
        a: &Address,
        limit: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::TransactionInfo>, String), ClientError> {
        let r = self
            .raw
            .clone()
            .get_account_history(pb::GetAccountHistoryRequest {
                address: a.to_string(),
                limit,
                page_token: page_token.to_string(),
            })
            .await;
        let r = r.map_err(|e| self.map(e))?.into_inner();
        Ok((r.transactions, r.next_page_token))
    }

    /// Committed blocks from `from_height`, replayed then live.
    pub async fn subscribe(
        &self,
        from_height: u64,
    ) -> Result<tonic::Streaming<pb::CommittedBlock>, ClientError> {
        let r = self
            .raw
            .clone()
            .subscribe_blocks(pb::SubscribeBlocksRequest { from_height })
            .await;
        Ok(r.map_err(|e| self.map(e))?.into_inner())
    }
}

/// Decodes the receipts of a committed block from the stream.
pub fn block_receipts(b: &pb::CommittedBlock) -> Result<Vec<TxReceipt>, ClientError> {
    b.receipts.iter().map(|r| decode(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_custody_refusals_are_typed_by_status_code_not_by_message() {
        let same_text = "whatever the node says";
        assert!(matches!(
            from_status(tonic::Status::resource_exhausted(same_text)),
            ClientError::Busy(_)
        ));
        assert!(matches!(
            from_status(tonic::Status::already_exists(same_text)),
            ClientError::AlreadyKnown(_)
        ));
        for s in [
            tonic::Status::failed_precondition("transaction abc is already pending"),
            tonic::Status::invalid_argument(same_text),
            tonic::Status::permission_denied(same_text),
        ] {
            assert!(matches!(from_status(s), ClientError::Rejected(_)));
        }
        assert!(matches!(
            from_status(tonic::Status::not_found(same_text)),
            ClientError::NotFound(_)
        ));
    }
}
