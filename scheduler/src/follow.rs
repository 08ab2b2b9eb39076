//! Follows the chain's committed blocks from the last processed height: new jobs, results,
//! settlements, refunds (including customer cancellations), accepted rental bids and agent
//! registrations. The height is persisted with the records it produced, so a restart resumes
//! where it stopped; every handler is idempotent, so a block seen twice does no harm.

use crate::dispatch::{cancel_on_agent, new_record, update};
use crate::state::{now_ms, JobRecord, Phase};
use crate::Scheduler;
use aitbc_protocol::client::block_receipts;
use aitbc_protocol::model::Event;
use aitbc_protocol::pb;
use aitbc_protocol::tx::ServiceType;
use aitbc_protocol::Hash;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Subscribes and processes blocks forever, reconnecting after errors.
pub async fn run(s: Arc<Scheduler>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let from = s.state.lock().next_height;
        match s.chain.subscribe(from).await {
            Ok(mut stream) => {
                tracing::info!(from, "following the chain");
                loop {
                    match stream.message().await {
                        Ok(Some(block)) => {
                            handle_block(&s, &block).await;
                            backoff = Duration::from_millis(200);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "block stream broke");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "subscribing to blocks failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn handle_block(s: &Arc<Scheduler>, block: &pb::CommittedBlock) {
    let Some(info) = &block.block else { return };
    let height = info.height;
    s.block_time_ms.fetch_max(info.time_ms, Ordering::AcqRel);
    if height < s.state.lock().next_height {
        return;
    }
    let receipts = match block_receipts(block) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(height, error = %e, "block receipts do not decode; skipping the block");
            Vec::new()
        }
    };
    for r in receipts.iter().filter(|r| r.error.is_none()) {
        for ev in &r.events {
            apply_event(s, ev, &r.tx_hash).await;
        }
    }
    // Wake dispatch tasks waiting for their transactions (after the events are applied).
    s.sender.committed(&receipts);
    s.state.lock().next_height = height + 1;
    s.height.fetch_max(height, Ordering::AcqRel);
    s.metrics.last_height.set(height as i64);
    s.mark_dirty();
    s.wake.notify_one();
}

async fn apply_event(s: &Arc<Scheduler>, ev: &Event, tx_hash: &Hash) {
    match ev {
        Event::JobSubmitted { job_id, .. } => {
            if s.state.lock().jobs.contains_key(job_id) {
                return;
            }
            // The job's spec and listing come from the chain; retry briefly on a hiccup (the
            // startup reconciliation catches anything missed).
            for attempt in 0..5u32 {
                match s.chain.job(job_id).await {
                    Ok(job) => {
                        let mut rec = new_record(&job);
                        rec.first_seen_ms = now_ms();
                        tracing::info!(job = %job_id, gpus = job.spec.gpus, memory_mib = job.spec.memory_mib, "new job");
                        s.state.lock().jobs.entry(job_id.clone()).or_insert(rec);
                        s.touched(job_id);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(job = %job_id, attempt, error = %e, "reading a new job failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        Event::JobAssigned { job_id, agent_key } => update(s, job_id, |r| {
            r.chain_status = "assigned".into();
            r.agent_key = Some(agent_key.to_string());
        }),
        Event::ResultReported {
            job_id,
            success,
            output_digest,
        } => update(s, job_id, |r| {
            r.chain_status = if *success { "succeeded" } else { "failed" }.into();
            r.result_digest = output_digest.to_hex();
        }),
        Event::JobSettled { job_id, .. } => update(s, job_id, |r| {
            r.chain_status = "settled".into();
            r.phase = Phase::Settled;
            r.settlement_tx = Some(tx_hash.to_hex());
        }),
        // A cancellation (or expiry) while the job runs: stop it.
        Event::JobRefunded { job_id, .. } => update_and_stop(s, job_id, |r| {
            r.chain_status = "refunded".into();
            r.phase = Phase::Refunded;
            r.refund_tx = Some(tx_hash.to_hex());
        }),
        // The customer asked to stop: the agent's receipt then carries the usage so far.
        Event::JobStopRequested { job_id, .. } => {
            update_and_stop(s, job_id, |r| r.stop_requested = true)
        }
        Event::BidAccepted { bid_id, listing_id } => match s.chain.listing(listing_id).await {
            Ok(l) if l.service_type == ServiceType::GpuRental => {
                tracing::info!(bid = %bid_id, listing = %listing_id, "rental bid accepted; leasing GPUs");
                s.state
                    .lock()
                    .pending_leases
                    .insert(bid_id.clone(), listing_id.clone());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(bid = %bid_id, error = %e, "reading an accepted bid's listing failed")
            }
        },
        Event::AgentRegistered { agent_key, owner } => {
            tracing::info!(agent = %agent_key, %owner, "agent registered on chain");
        }
        _ => {}
    }
}

/// Applies `change` to the job's record and, if the job was on an agent, stops it there (in the
/// background: the follower does not wait for agents).
fn update_and_stop(s: &Arc<Scheduler>, job_id: &str, change: impl FnOnce(&mut JobRecord)) {
    let on_agent = s
        .state
        .lock()
        .jobs
        .get(job_id)
        .is_some_and(|r| r.phase.on_agent());
    update(s, job_id, change);
    if on_agent {
        tracing::info!(job = %job_id, "stopping the job on its agent");
        let s2 = s.clone();
        let id = job_id.to_string();
        tokio::spawn(async move { cancel_on_agent(&s2, &id).await });
    }
}
