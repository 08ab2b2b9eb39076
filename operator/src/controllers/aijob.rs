//! AIJob: submits the job with its escrow (or drawing on an accepted Bid), lets the in-process
//! scheduler place and run it, mirrors the chain and the scheduler into status, and cancels
//! (refunds) a job that is deleted before it has a result.

use super::finalizer;
use super::{
    amount, condition, follow_recorded, namespace, pending_hash, send_recorded, wallet_key,
    write_status, Followed, Managed,
};
use crate::context::{Context, TrackedJob};
use crate::error::{Error, Result};
use aitbc_crds::{AiJob, AiJobPhase, AiJobSpec, AiJobStatus, Bid as BidCr, BidPhase, JobType};
use aitbc_protocol::model::{AgentRecord, Job, JobStatus};
use aitbc_protocol::tx::{object_id, Action, JobKind, JobSpec};
use aitbc_protocol::Amount;
use kube::runtime::controller::Action as Requeue;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

super::managed!(AiJob, AiJobStatus, "aijob", "Submitted");

/// Pure: the job request the chain stores.
pub fn job_spec(spec: &AiJobSpec) -> JobSpec {
    JobSpec {
        kind: Some(match spec.job_type {
            JobType::Inference => JobKind::Inference,
            JobType::Training => JobKind::Training,
        }),
        prompt: spec.prompt.clone(),
        model: spec.model.clone(),
        dataset_digest: None,
        input_digest: None,
        gpus: spec.gpus,
        memory_mib: spec.memory_mib,
        time_limit_secs: spec.time_limit_seconds,
        params: spec
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Pure: the transaction that submits the job. With a bid the payment is the bid's escrow.
pub fn submit_action(
    spec: &AiJobSpec,
    listing_id: Option<String>,
    bid_id: Option<String>,
) -> Result<Action> {
    let payment = match (&bid_id, &spec.payment) {
        (Some(_), _) => Amount::ZERO,
        (None, Some(p)) => amount("spec.payment", p)?,
        (None, None) => {
            return Err(Error::InvalidSpec(
                "give payment, or bid to draw on an accepted bid".into(),
            ))
        }
    };
    Ok(Action::SubmitJob {
        listing_id,
        bid_id,
        payment,
        spec: job_spec(spec),
        deadline_blocks: spec.deadline_blocks.unwrap_or(0),
    })
}

/// Pure: the status fields that mirror the chain's job and the scheduler's record of it.
/// `cancelled`: the customer withdrew it (a refund we sent with CancelJob).
pub fn status_from_chain(
    st: &mut AiJobStatus,
    job: &Job,
    tracked: Option<&TrackedJob>,
    agents: &[AgentRecord],
    cancelled: bool,
) {
    st.escrow = Some(job.escrow.to_string());
    st.agent = tracked.and_then(|t| t.agent_id.clone()).or_else(|| {
        let key = job.assigned_agent?;
        Some(
            agents
                .iter()
                .find(|a| a.key == key)
                .map(|a| a.agent_id.clone())
                .unwrap_or_else(|| key.to_string()),
        )
    });
    if let Some(r) = &job.result {
        st.result_digest = Some(r.receipt.output_digest.to_hex());
    }
    let running = tracked.is_some_and(|t| t.phase == "running" || t.phase == "reporting");
    st.phase = match job.status {
        JobStatus::Pending => AiJobPhase::Submitted,
        JobStatus::Assigned if running => AiJobPhase::Running,
        JobStatus::Assigned => AiJobPhase::Assigned,
        JobStatus::Succeeded | JobStatus::Settled => AiJobPhase::Succeeded,
        JobStatus::Failed => AiJobPhase::Failed,
        JobStatus::Refunded if cancelled => AiJobPhase::Cancelled,
        JobStatus::Refunded => AiJobPhase::Refunded,
    };
    st.progress = match job.status {
        JobStatus::Succeeded | JobStatus::Settled => Some(100),
        _ => tracked.map(|t| t.progress).or(st.progress),
    };
    if let Some(t) = tracked {
        if st.settlement_tx_hash.is_none() {
            st.settlement_tx_hash = t.settlement_tx.clone();
        }
        if st.refund_tx_hash.is_none() {
            st.refund_tx_hash = t.refund_tx.clone();
        }
        if !t.message.is_empty() {
            st.message = t.message.clone();
        }
    }
}

/// The on-chain bid id of the Bid named by the job, once it is accepted.
async fn accepted_bid(ctx: &Context, ns: &str, name: &str) -> Result<(String, Option<String>)> {
    let api: Api<BidCr> = Api::namespaced(ctx.client.clone(), ns);
    let bid = api.get_opt(name).await?.ok_or_else(|| Error::MissingRef {
        kind: "Bid",
        name: name.into(),
        namespace: ns.into(),
    })?;
    let st = bid.status.unwrap_or_default();
    match (st.bid_id, st.phase) {
        (Some(id), BidPhase::Accepted) => Ok((id, st.listing_id)),
        (_, phase) => Err(Error::NotReady {
            kind: "Bid",
            name: name.into(),
            what: format!("it is {phase:?}; a job draws only on an accepted bid"),
        }),
    }
}

fn job_id_of(p: &aitbc_crds::PendingTx) -> Result<String> {
    Ok(object_id("job", &pending_hash(p)?))
}

/// The SubmitJob of `spec`, with the on-chain ids of its listing and accepted bid.
async fn submit_transaction(ctx: &Context, ns: &str, spec: &AiJobSpec) -> Result<Action> {
    let (bid_id, bid_listing) = match &spec.bid {
        Some(name) => {
            let (id, lid) = accepted_bid(ctx, ns, name).await?;
            (Some(id), lid)
        }
        None => (None, None),
    };
    let listing_id = match (&spec.listing_id, &spec.listing) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(_)) => {
            Some(super::bid::listing_id(ctx, ns, spec.listing.as_deref(), None).await?)
        }
        (None, None) => bid_listing,
    };
    submit_action(spec, listing_id, bid_id)
}

pub async fn reconcile(job: Arc<AiJob>, ctx: Arc<Context>) -> Result<Requeue> {
    let ns = namespace(&*job)?;
    let api: Api<AiJob> = Api::namespaced(ctx.client.clone(), &ns);
    if job.metadata.deletion_timestamp.is_some() {
        return cleanup(job, ctx, api).await;
    }
    if !job.finalizers().iter().any(|f| f == finalizer::AIJOB) {
        finalizer::add(&api, &*job, finalizer::AIJOB).await?;
        return Ok(Requeue::await_change());
    }
    let mut st = job.status_or_default();
    st.observed_generation = job.metadata.generation;
    let (wallet, key) = wallet_key(&ctx, &ns, &job.spec.wallet).await?;
    let chain = ctx.chain(&ns, wallet.spec.node.as_deref()).await?;
    let mut requeue = Duration::from_secs(3);

    match follow_recorded(&ctx, &*job, &mut st, &*chain).await? {
        Followed::Applied(p) => {
            if p.action == "submit-job" {
                let id = job_id_of(&p)?;
                st.job_id = Some(id.clone());
                st.phase = AiJobPhase::Submitted;
                ctx.event(
                    &*job,
                    "JobSubmitted",
                    "SubmitJob",
                    format!("job {id} submitted; escrow locked by {}", p.hash),
                )
                .await;
            }
        }
        Followed::Rejected(p, reason) => {
            if st.job_id.is_none() {
                st.phase = AiJobPhase::Failed;
                st.message = format!("submit-job {} rejected: {reason}", p.hash);
            }
        }
        Followed::Waiting(d) => requeue = d,
        Followed::Dead(_) => st.submit_tx_hash = None,
        Followed::Nothing if st.job_id.is_none() && st.phase == AiJobPhase::Pending => {
            let action = submit_transaction(&ctx, &ns, &job.spec).await?;
            requeue = send_recorded(&ctx, &*job, &mut st, &*chain, &key, action, |s, p| {
                s.submit_tx_hash = Some(p.hash.clone())
            })
            .await?;
        }
        Followed::Nothing => {}
    }

    if let Some(id) = st.job_id.clone() {
        let onchain = chain.job(&id).await?;
        let agents = if onchain.assigned_agent.is_some() {
            chain.agents().await.unwrap_or_default()
        } else {
            Vec::new()
        };
        let before = st.phase;
        let tracked = ctx.jobs.job(&id);
        status_from_chain(&mut st, &onchain, tracked.as_ref(), &agents, false);
        if st.phase != before {
            let note = match (&st.agent, st.phase) {
                (Some(a), AiJobPhase::Assigned | AiJobPhase::Running) => {
                    format!("job {id} is {:?} on agent {a}", st.phase)
                }
                _ => format!("job {id} is {:?}", st.phase),
            };
            let warn = matches!(st.phase, AiJobPhase::Failed);
            if warn {
                ctx.warning(&*job, &format!("Job{:?}", st.phase), "Observe", note)
                    .await;
            } else {
                ctx.event(&*job, &format!("Job{:?}", st.phase), "Observe", note)
                    .await;
            }
        }
        condition(
            &*job,
            &mut st,
            "Submitted",
            true,
            "OnChain",
            format!("job {id}"),
        );
        if st.phase.is_final() || onchain.status == JobStatus::Settled {
            requeue = Duration::from_secs(300);
        }
    }
    let msg = match &st.job_id {
        Some(id) => format!("job {id} is {:?}", st.phase),
        None if st.phase == AiJobPhase::Failed => st.message.clone(),
        None => "submitting the job".into(),
    };
    let ready = st.job_id.is_some();
    let reason = if ready {
        "OnChain"
    } else if st.phase == AiJobPhase::Failed {
        "SubmitFailed"
    } else {
        "Submitting"
    };
    condition(&*job, &mut st, "Ready", ready, reason, msg);
    write_status(&ctx, &*job, &st).await?;
    Ok(Requeue::requeue(requeue))
}

/// Deleting an AIJob that has no result yet cancels it on chain (refund) and on its agent.
async fn cleanup(job: Arc<AiJob>, ctx: Arc<Context>, api: Api<AiJob>) -> Result<Requeue> {
    if !job.finalizers().iter().any(|f| f == finalizer::AIJOB) {
        return Ok(Requeue::await_change());
    }
    let ns = namespace(&*job)?;
    let mut st = job.status_or_default();
    match wallet_key(&ctx, &ns, &job.spec.wallet).await {
        Ok((wallet, key)) => {
            let chain = ctx.chain(&ns, wallet.spec.node.as_deref()).await?;
            match follow_recorded(&ctx, &*job, &mut st, &*chain).await? {
                Followed::Waiting(d) => return Ok(Requeue::requeue(d)),
                Followed::Applied(p) if p.action == "submit-job" => {
                    st.job_id = Some(job_id_of(&p)?);
                    write_status(&ctx, &*job, &st).await?;
                }
                Followed::Applied(p) if p.action == "cancel-job" => {
                    st.refund_tx_hash = Some(p.hash.clone());
                    st.phase = AiJobPhase::Cancelled;
                    ctx.event(
                        &*job,
                        "JobCancelled",
                        "CancelJob",
                        format!(
                            "job cancelled by {}: refunded if no agent had it yet, else stopped \
                             on its agent and charged the usage its receipt reports",
                            p.hash
                        ),
                    )
                    .await;
                    write_status(&ctx, &*job, &st).await?;
                }
                Followed::Nothing => {}
                _ => write_status(&ctx, &*job, &st).await?,
            }
            if let Some(id) = st.job_id.clone() {
                let onchain = chain.job(&id).await?;
                if onchain.status == JobStatus::Assigned && onchain.stop_requested {
                    // Stopping: the agent's receipt (its usage) closes the job; nothing to send.
                    return Ok(Requeue::requeue(Duration::from_secs(5)));
                }
                if matches!(onchain.status, JobStatus::Pending | JobStatus::Assigned) {
                    ctx.jobs.cancel(&id).await;
                    let again = send_recorded(
                        &ctx,
                        &*job,
                        &mut st,
                        &*chain,
                        &key,
                        Action::CancelJob { job_id: id },
                        |_, _| {},
                    )
                    .await?;
                    return Ok(Requeue::requeue(again));
                }
            }
        }
        Err(
            e @ (Error::MissingRef { .. }
            | Error::NotReady { .. }
            | Error::BadKey { .. }
            | Error::ForeignKey { .. }),
        ) => {
            ctx.warning(
                &*job,
                e.reason(),
                "CancelJob",
                format!("cannot cancel the job on chain: {e}"),
            )
            .await;
        }
        Err(e) => return Err(e),
    }
    finalizer::remove(&api, &*job, finalizer::AIJOB).await?;
    Ok(Requeue::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::receipt::JobReceipt;
    use aitbc_protocol::Keypair;
    use std::collections::BTreeMap;

    pub(crate) fn spec() -> AiJobSpec {
        AiJobSpec {
            wallet: "c".into(),
            listing: Some("l".into()),
            listing_id: None,
            bid: None,
            job_type: JobType::Inference,
            payment: Some("25".into()),
            prompt: "a lighthouse".into(),
            model: "sdxl".into(),
            gpus: 1,
            memory_mib: 8192,
            time_limit_seconds: 600,
            params: BTreeMap::from([("resolution".into(), "1024x1024".into())]),
            deadline_blocks: None,
        }
    }

    fn chain_job(status: JobStatus, agent: Option<&Keypair>) -> Job {
        Job {
            id: "job-1".into(),
            customer: Keypair::generate().address(),
            listing_id: Some("svc-1".into()),
            bid_id: None,
            provider: None,
            escrow: Amount::from_ait(25).unwrap(),
            spec: job_spec(&spec()),
            status,
            assigned_agent: agent.map(|k| k.public()),
            assignments: 1,
            result: None,
            created_height: 1,
            deadline_height: 100,
            updated_height: 2,
            fee_burned: Amount::ZERO,
            price: Amount::from_ait(25).unwrap(),
            deadline_ms: 100_000,
            stop_requested: false,
        }
    }

    #[test]
    fn submit_pays_or_draws_on_the_bid() {
        let Action::SubmitJob {
            payment,
            spec: js,
            listing_id,
            bid_id,
            ..
        } = submit_action(&spec(), Some("svc-1".into()), None).unwrap()
        else {
            panic!()
        };
        assert_eq!(payment, Amount::from_ait(25).unwrap());
        assert_eq!((listing_id.as_deref(), bid_id), (Some("svc-1"), None));
        assert_eq!(js.kind, Some(JobKind::Inference));
        assert_eq!((js.gpus, js.memory_mib, js.time_limit_secs), (1, 8192, 600));
        let Action::SubmitJob {
            payment, bid_id, ..
        } = submit_action(&spec(), None, Some("bid-1".into())).unwrap()
        else {
            panic!()
        };
        assert_eq!((payment, bid_id.as_deref()), (Amount::ZERO, Some("bid-1")));
        let mut no_pay = spec();
        no_pay.payment = None;
        assert!(submit_action(&no_pay, None, None).is_err());
    }

    #[test]
    fn status_follows_the_chain_and_the_scheduler() {
        let agent = Keypair::generate();
        let records = vec![AgentRecord {
            key: agent.public(),
            agent_id: "gpu-node-1".into(),
            owner: agent.address(),
            serves: aitbc_protocol::tx::Serves::AnyProvider,
            registered_height: 1,
        }];
        let mut st = AiJobStatus::default();
        status_from_chain(
            &mut st,
            &chain_job(JobStatus::Pending, None),
            None,
            &[],
            false,
        );
        assert_eq!(
            (st.phase, st.agent.as_deref()),
            (AiJobPhase::Submitted, None)
        );

        status_from_chain(
            &mut st,
            &chain_job(JobStatus::Assigned, Some(&agent)),
            None,
            &records,
            false,
        );
        assert_eq!(
            (st.phase, st.agent.as_deref()),
            (AiJobPhase::Assigned, Some("gpu-node-1"))
        );

        let tracked = TrackedJob {
            agent_id: Some("gpu-node-1".into()),
            progress: 40,
            phase: "running".into(),
            ..Default::default()
        };
        status_from_chain(
            &mut st,
            &chain_job(JobStatus::Assigned, Some(&agent)),
            Some(&tracked),
            &records,
            false,
        );
        assert_eq!((st.phase, st.progress), (AiJobPhase::Running, Some(40)));

        let mut done = chain_job(JobStatus::Settled, Some(&agent));
        let receipt = JobReceipt {
            chain_id: "c".into(),
            job_id: "job-1".into(),
            attempt: 1,
            agent_key: agent.public(),
            success: true,
            exit_code: Some(0),
            output_digest: aitbc_protocol::Hash::domain("test", &[b"out"]),
            usage: Default::default(),
            message: String::new(),
            finished_at_ms: 1,
        };
        done.result = Some(receipt.clone().sign(&agent));
        let tracked = TrackedJob {
            settlement_tx: Some("ab".into()),
            phase: "settled".into(),
            ..tracked
        };
        status_from_chain(&mut st, &done, Some(&tracked), &records, false);
        assert_eq!(st.phase, AiJobPhase::Succeeded);
        assert_eq!(st.progress, Some(100));
        assert_eq!(st.result_digest, Some(receipt.output_digest.to_hex()));
        assert_eq!(st.settlement_tx_hash.as_deref(), Some("ab"));

        status_from_chain(
            &mut st,
            &chain_job(JobStatus::Refunded, None),
            None,
            &[],
            true,
        );
        assert_eq!(st.phase, AiJobPhase::Cancelled);
        status_from_chain(
            &mut st,
            &chain_job(JobStatus::Refunded, None),
            None,
            &[],
            false,
        );
        assert_eq!(st.phase, AiJobPhase::Refunded);
    }
}
