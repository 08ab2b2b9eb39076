//! The threads that answer the public API's reads that cost more than a lookup (account history,
//! listing search, object lists, blocks). A few threads at background priority behind a bounded
//! queue: however many clients ask at once, these reads take at most those threads' share of
//! the CPU, and consensus, the network and admission go first; when the queue is full a read is
//! refused with `RESOURCE_EXHAUSTED` at once instead of piling up.
//!
//! Each client address also has a budget of these reads per second (a token bucket, `governor`),
//! so that one client cannot keep the threads and the queue to itself. A read beyond it waits for
//! the client's next token, up to [`PACING`]: a client reading one thing after another is slowed
//! to its budget, not failed. One that asks faster still (many reads at once) is refused with
//! `RESOURCE_EXHAUSTED` before its reads are queued, and counted towards a ban
//! (`crate::api::ClientBans`); other clients' reads go on.

use crate::api::ClientBans;
use crate::priority::{self, Background};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::Status;

type Job = Box<dyn FnOnce() + Send>;

/// How long a read over its client's budget may wait for a token before it is refused.
pub const PACING: std::time::Duration = std::time::Duration::from_secs(1);
/// Client addresses remembered by the budget before the idle ones are forgotten.
const BUDGET_CLIENTS: usize = 4096;

pub struct QueryPool {
    jobs: mpsc::SyncSender<Job>,
    /// Reads per second per client address (`None`: transports without one).
    budget: DefaultKeyedRateLimiter<Option<IpAddr>>,
    per_second: NonZeroU32,
    /// Told of every read refused for the budget: a client that keeps going is banned.
    bans: Arc<ClientBans>,
}

impl QueryPool {
    /// `threads` workers (at [`Background::Low`]) behind a queue of `backlog` reads, each client
    /// address allowed `per_second` reads a second (bursts of twice that).
    pub fn start(
        threads: usize,
        backlog: usize,
        per_second: NonZeroU32,
        bans: Arc<ClientBans>,
    ) -> Arc<QueryPool> {
        let (jobs, rx) = mpsc::sync_channel::<Job>(backlog);
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("api-query-{i}"))
                .spawn(move || {
                    priority::set_this_thread(Background::Low);
                    loop {
                        let Ok(job) = rx.lock().recv() else { return };
                        job();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an API query thread");
            }
        }
        let burst = per_second.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        let budget = RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst));
        Arc::new(QueryPool {
            jobs,
            budget,
            per_second,
            bans,
        })
    }

    /// Runs `read` for `client` on a query thread and returns its answer.
    #[allow(clippy::result_large_err)]
    pub async fn run<T: Send + 'static>(
        &self,
        client: Option<IpAddr>,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        self.charge(client.map(|ip| ip.to_canonical())).await?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(read());
        });
        self.jobs.try_send(job).map_err(|_| {
            Status::resource_exhausted(
                "the node's query threads are busy (too many reads queued); retry shortly",
            )
        })?;
        rx.await
            .map_err(|_| Status::internal("the query thread stopped"))
    }

    /// Takes one read from `client`'s budget, waiting up to [`PACING`] for it, or refuses it.
    #[allow(clippy::result_large_err)]
    async fn charge(&self, client: Option<IpAddr>) -> Result<(), Status> {
        if self.budget.len() > BUDGET_CLIENTS {
            self.budget.retain_recent();
        }
        if self.budget.check_key(&client).is_ok() {
            return Ok(());
        }
        let paced = tokio::time::timeout(PACING, self.budget.until_key_ready(&client)).await;
        paced.map_err(|_| {
            self.bans.refused(client);
            Status::resource_exhausted(format!(
                "more than {} history, search, list or block reads per second from {}, the \
                 limit per client address; slow down and retry",
                self.per_second,
                client.map_or("this client".to_string(), |ip| ip.to_string())
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bans() -> Arc<ClientBans> {
        ClientBans::new(Arc::new(crate::metrics::NodeMetrics::default()))
    }

    #[tokio::test]
    async fn hostile_a_flood_of_reads_is_refused_not_queued_without_bound() {
        let pool = QueryPool::start(1, 2, NonZeroU32::MAX, bans());
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(parking_lot::Mutex::new(hold));
        // One read holds the only thread; two more fill the queue.
        let mut running = Vec::new();
        for _ in 0..3 {
            let hold = hold.clone();
            let pool = pool.clone();
            running.push(tokio::spawn(async move {
                pool.run(None, move || {
                    let _ = hold.lock().recv();
                })
                .await
            }));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let refused = pool.run(None, || 1).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for r in running {
            r.await.unwrap().unwrap();
        }
        assert_eq!(
            pool.run(None, || 7).await.unwrap(),
            7,
            "served again once drained"
        );
    }

    #[tokio::test]
    async fn hostile_one_client_past_its_read_budget_is_paced_then_refused_and_others_are_served() {
        let pool = QueryPool::start(1, 256, NonZeroU32::new(5).unwrap(), bans());
        let greedy: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let other: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        // The burst (twice the rate) is served at once.
        for _ in 0..10 {
            pool.run(greedy, || ()).await.unwrap();
        }
        // One more waits for the next token (a fifth of a second) and is served.
        pool.run(greedy, || ()).await.unwrap();
        // Forty at once: at most the tokens of the pacing window are served, the rest refused.
        let greedy_reads = many(&pool, greedy, 40);
        // Meanwhile another address has its own budget: served at once.
        let start = std::time::Instant::now();
        pool.run(other, || ()).await.unwrap();
        assert!(
            start.elapsed() < PACING,
            "another client waited for the greedy one"
        );
        let refused = refusals(greedy_reads).await;
        assert!(refused.len() >= 30, "only {} of 40 refused", refused.len());
        assert_eq!(refused[0].code(), tonic::Code::ResourceExhausted);
        assert!(
            refused[0].message().contains("10.0.0.1"),
            "{}",
            refused[0].message()
        );
        // An IPv4-mapped IPv6 address is the same client.
        let mapped: Option<IpAddr> = Some("::ffff:10.0.0.1".parse().unwrap());
        let refused = refusals(many(&pool, mapped, 20)).await;
        assert!(refused.len() >= 10, "only {} of 20 refused", refused.len());
    }

    fn many(
        pool: &Arc<QueryPool>,
        client: Option<IpAddr>,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<(), Status>>> {
        (0..n)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(client, || ()).await })
            })
            .collect()
    }

    async fn refusals(reads: Vec<tokio::task::JoinHandle<Result<(), Status>>>) -> Vec<Status> {
        let mut refused = Vec::new();
        for r in reads {
            if let Err(e) = r.await.unwrap() {
                refused.push(e);
            }
        }
        refused
    }
}
