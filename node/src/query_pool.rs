//! The threads that answer the public API's reads that cost more than a lookup (account history,
//! listing search, object lists, blocks). A few threads at background priority behind a bounded
//! queue: however many clients ask at once, these reads take at most those threads' share of
//! the CPU, and consensus, the network and admission go first; when the queue is full a read is
//! refused with `RESOURCE_EXHAUSTED` at once instead of piling up.

use crate::priority::{self, Background};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::Status;

type Job = Box<dyn FnOnce() + Send>;

pub struct QueryPool {
    jobs: mpsc::SyncSender<Job>,
}

impl QueryPool {
    /// `threads` workers (at [`Background::Low`]) behind a queue of `backlog` reads.
    pub fn start(threads: usize, backlog: usize) -> Arc<QueryPool> {
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
        Arc::new(QueryPool { jobs })
    }

    /// Runs `read` on a query thread and returns its answer.
    #[allow(clippy::result_large_err)]
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hostile_a_flood_of_reads_is_refused_not_queued_without_bound() {
        let pool = QueryPool::start(1, 2);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(parking_lot::Mutex::new(hold));
        // One read holds the only thread; two more fill the queue.
        let mut running = Vec::new();
        for _ in 0..3 {
            let hold = hold.clone();
            let pool = pool.clone();
            running.push(tokio::spawn(async move {
                pool.run(move || {
                    let _ = hold.lock().recv();
                })
                .await
            }));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let refused = pool.run(|| 1).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for r in running {
            r.await.unwrap().unwrap();
        }
        assert_eq!(
            pool.run(|| 7).await.unwrap(),
            7,
            "served again once drained"
        );
    }
}
