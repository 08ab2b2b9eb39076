//! Signature verification for admission, batched across requests. Every client submission and
//! every gossip batch queues its signatures here, and a few worker threads verify whatever has
//! queued as one batch. Under load the batches grow by themselves (everything that arrived while
//! the workers were busy goes into the next batch), and a larger batch verifies each signature
//! for less: the multiscalar multiplication's fixed part is shared by more signatures, and
//! signatures by one sender share one term. With nothing queued, a request is verified at once,
//! on its own.

use aitbc_protocol::crypto::{verify_batch, Signature};
use aitbc_protocol::PublicKey;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One signature to check: `signature` by `key` over `message`.
pub struct SigCheck {
    pub message: Vec<u8>,
    pub signature: Signature,
    pub key: PublicKey,
}

struct Job {
    checks: Vec<SigCheck>,
    reply: oneshot::Sender<Vec<bool>>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    max_batch: usize,
}

/// A pool of verification threads fed by one queue. Dropping it stops the threads once the
/// queue is empty.
pub struct BatchVerifier {
    shared: Arc<Shared>,
}

impl BatchVerifier {
    /// Starts `workers` threads that verify up to `max_batch` signatures at a time (a request
    /// larger than that is still verified as one batch).
    pub fn start(workers: usize, max_batch: usize) -> BatchVerifier {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            max_batch: max_batch.max(1),
        });
        for i in 0..workers.max(1) {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sig-verify-{i}"))
                .spawn(move || {
                    crate::priority::set_this_thread(crate::priority::Background::Low);
                    work(&shared)
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a signature verification thread");
            }
        }
        BatchVerifier { shared }
    }

    /// Queues `checks`; the receiver gets one verdict per check, in order.
    pub fn submit(&self, checks: Vec<SigCheck>) -> oneshot::Receiver<Vec<bool>> {
        let (reply, verdict) = oneshot::channel();
        if checks.is_empty() {
            let _ = reply.send(Vec::new());
            return verdict;
        }
        let mut q = self.shared.queue.lock();
        q.jobs.push_back(Job { checks, reply });
        drop(q);
        self.shared.ready.notify_one();
        verdict
    }

    /// Verifies `checks` and waits for the verdicts (on a thread that may block).
    pub fn verify_blocking(&self, checks: Vec<SigCheck>) -> Vec<bool> {
        let n = checks.len();
        self.submit(checks)
            .blocking_recv()
            .unwrap_or_else(|_| vec![false; n])
    }

    /// Verifies `checks` and waits for the verdicts.
    pub async fn verify(&self, checks: Vec<SigCheck>) -> Vec<bool> {
        let n = checks.len();
        self.submit(checks).await.unwrap_or_else(|_| vec![false; n])
    }
}

impl Drop for BatchVerifier {
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

/// After a batch of at least this many signatures (the node is busy), a worker waits up to
/// [`LINGER`] for half a batch to queue before verifying: fewer, larger batches under load, and
/// no added wait when the node is idle.
const LINGER_AFTER_BATCH: usize = 64;
const LINGER: Duration = Duration::from_millis(2);

fn work(shared: &Shared) {
    let mut last_batch = 0;
    loop {
        let jobs = {
            let mut q = shared.queue.lock();
            while q.jobs.is_empty() && !q.closed {
                shared.ready.wait(&mut q);
            }
            if q.jobs.is_empty() {
                return;
            }
            if last_batch >= LINGER_AFTER_BATCH {
                let deadline = Instant::now() + LINGER;
                while !q.closed
                    && q.jobs.iter().map(|j| j.checks.len()).sum::<usize>() < shared.max_batch / 2
                    && !shared.ready.wait_until(&mut q, deadline).timed_out()
                {}
            }
            let mut jobs = Vec::new();
            let mut n = 0;
            while let Some(job) = q.jobs.front() {
                if !jobs.is_empty() && n + job.checks.len() > shared.max_batch {
                    break;
                }
                n += job.checks.len();
                jobs.extend(q.jobs.pop_front());
            }
            jobs
        };
        last_batch = jobs.iter().map(|j| j.checks.len()).sum();
        verify_jobs(jobs);
    }
}

/// One batch for all jobs; when it fails, each job on its own, and one by one within a job
/// whose batch fails, so a bad signature costs only its own request the batch's speed.
fn verify_jobs(jobs: Vec<Job>) {
    if all_valid(jobs.iter().flat_map(|j| j.checks.iter())) {
        for job in jobs {
            let _ = job.reply.send(vec![true; job.checks.len()]);
        }
        return;
    }
    for job in jobs {
        let verdicts = if job.checks.len() > 1 && all_valid(job.checks.iter()) {
            vec![true; job.checks.len()]
        } else {
            job.checks
                .iter()
                .map(|c| c.key.verify(&c.message, &c.signature).is_ok())
                .collect()
        };
        let _ = job.reply.send(verdicts);
    }
}

fn all_valid<'a>(checks: impl Iterator<Item = &'a SigCheck>) -> bool {
    let mut messages = Vec::new();
    let mut sigs = Vec::new();
    let mut keys = Vec::new();
    for c in checks {
        messages.push(c.message.as_slice());
        sigs.push(c.signature);
        keys.push(c.key);
    }
    verify_batch(&messages, &sigs, &keys).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::Keypair;

    fn check(k: &Keypair, msg: &[u8]) -> SigCheck {
        SigCheck {
            message: msg.to_vec(),
            signature: k.sign(msg),
            key: k.public(),
        }
    }

    fn bad(k: &Keypair, msg: &[u8]) -> SigCheck {
        SigCheck {
            message: msg.to_vec(),
            signature: k.sign(b"something else"),
            key: k.public(),
        }
    }

    #[test]
    fn verdicts_follow_each_signature_in_order() {
        let v = BatchVerifier::start(2, 8);
        let (a, b) = (Keypair::generate(), Keypair::generate());
        let verdicts = v.verify_blocking(vec![
            check(&a, b"one"),
            bad(&b, b"two"),
            check(&b, b"three"),
            bad(&a, b"four"),
        ]);
        assert_eq!(verdicts, vec![true, false, true, false]);
        assert!(v.verify_blocking(vec![]).is_empty());
    }

    #[test]
    fn a_bad_signature_in_one_request_does_not_fail_the_others_batched_with_it() {
        let v = BatchVerifier::start(1, 1024);
        let k = Keypair::generate();
        let receivers: Vec<_> = (0..50)
            .map(|i| {
                let msg = format!("tx {i}");
                let c = if i == 17 {
                    bad(&k, msg.as_bytes())
                } else {
                    check(&k, msg.as_bytes())
                };
                v.submit(vec![c, check(&k, b"second")])
            })
            .collect();
        for (i, rx) in receivers.into_iter().enumerate() {
            let verdicts = rx.blocking_recv().unwrap();
            assert_eq!(verdicts, vec![i != 17, true], "request {i}");
        }
    }

    #[tokio::test]
    async fn async_callers_get_their_verdicts() {
        let v = Arc::new(BatchVerifier::start(2, 16));
        let k = Keypair::generate();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (v, k) = (v.clone(), k.clone());
            tasks.push(tokio::spawn(async move {
                let msg = format!("m{i}");
                let c = if i % 3 == 0 {
                    bad(&k, msg.as_bytes())
                } else {
                    check(&k, msg.as_bytes())
                };
                (i, v.verify(vec![c]).await)
            }));
        }
        for t in tasks {
            let (i, verdicts) = t.await.unwrap();
            assert_eq!(verdicts, vec![i % 3 != 0]);
        }
    }
}
