//! `ai-submit`, `ai-status`, `ai-results`, `ai-metrics`.

use crate::cli::{AiSubmitArgs, JobType};
use crate::context::{created_id, Ctx};
use crate::output::{Format, Report};
use crate::period::Period;
use aitbc_protocol::agent_pb::agent_client::AgentClient;
use aitbc_protocol::client::{ChainClient, ClientError};
use aitbc_protocol::model::{Job, JobStatus};
use aitbc_protocol::outputs::{digest_of_unsorted, OutputFile};
use aitbc_protocol::receipt::SignedJobReceipt;
use aitbc_protocol::scheduler_pb as spb;
use aitbc_protocol::tx::{object_id, Action, JobKind, JobSpec};
use aitbc_protocol::Hash;
use anyhow::{anyhow, bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

pub async fn agent_client(url: &str) -> Result<AgentClient<Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| anyhow!("cannot reach the agent at {url}: {e}"))?;
    Ok(AgentClient::new(ch).max_decoding_message_size(64 * 1024 * 1024))
}

fn sha256_file(p: &Path) -> Result<(Hash, Vec<u8>)> {
    let data = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    let d: [u8; 32] = Sha256::digest(&data).into();
    Ok((Hash(d), data))
}

pub async fn job_of(chain: &ChainClient, id: &str) -> Result<Job> {
    match chain.job(id).await {
        Ok(j) => Ok(j),
        Err(ClientError::NotFound(_)) => {
            bail!("unknown job {id}: check the id printed after job_id: by ai-submit")
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn submit(ctx: &Ctx, a: &AiSubmitArgs) -> Result<Report> {
    if a.payment.is_none() && a.bid_id.is_none() {
        bail!(
            "ai-submit needs --payment A (AIT to escrow), or --bid-id B to draw on an accepted bid"
        );
    }
    let mut params = Vec::new();
    if let Some(res) = &a.resolution {
        let (w, h) = res
            .split_once('x')
            .ok_or_else(|| anyhow!("--resolution {res:?} must be WxH, e.g. 512x512"))?;
        if w.parse::<u32>().is_err() || h.parse::<u32>().is_err() {
            bail!("--resolution {res:?} must be WxH with whole numbers, e.g. 512x512");
        }
        params.push(("resolution".to_string(), res.clone()));
    }
    if let Some(b) = a.batch_size {
        params.push(("batch_size".to_string(), b.to_string()));
    }
    let dataset = a.dataset.as_deref().map(sha256_file).transpose()?;
    let input = a.input_data.as_deref().map(sha256_file).transpose()?;
    let spec = JobSpec {
        kind: Some(match a.job_type {
            JobType::Inference => JobKind::Inference,
            JobType::Training => JobKind::Training,
        }),
        prompt: a.prompt.clone().unwrap_or_default(),
        model: a.model.clone().unwrap_or_default(),
        dataset_digest: dataset.as_ref().map(|d| d.0),
        input_digest: input.as_ref().map(|d| d.0),
        gpus: a.gpu_allocated.unwrap_or(1),
        memory_mib: a.memory.unwrap_or(0),
        time_limit_secs: a.time_limit.unwrap_or(0),
        params,
    };
    let chain = ctx.chain().await?;
    let key = ctx.unlock(&a.wallet)?;
    let mut bid_id = a.bid_id.clone();
    if let Some(sid) = &a.service_id {
        let l = crate::commands::marketplace::listing(&chain, sid).await?;
        if bid_id.is_none() {
            bid_id = accepted_bid(&chain, &l, &key.address(), a.payment).await?;
        }
        if let Some(p) = a.payment {
            if p < l.price {
                bail!(
                    "--payment {p} AIT is below the price of service {sid} ({} AIT)",
                    l.price
                );
            }
        }
    }
    let action = Action::SubmitJob {
        listing_id: a.service_id.clone(),
        bid_id: bid_id.clone(),
        payment: a.payment.unwrap_or_default(),
        spec,
        deadline_blocks: a.deadline_blocks.unwrap_or(0),
    };
    let sent = ctx.send(&chain, &key, action).await?;
    let id = sent
        .receipt()
        .and_then(|r| created_id(r, "job"))
        .unwrap_or_else(|| object_id("job", &sent.hash));
    let mut r = ctx.report();
    r.field("job_id", &id);
    if let Some(b) = &bid_id {
        r.field("bid_id", b);
    }
    ctx.report_sent(&mut r, &sent);
    // Input files travel off chain, to the scheduler, which checks them against the digests.
    for (what, file) in [("dataset", &dataset), ("input", &input)] {
        if let Some((digest, data)) = file {
            if sent.committed.is_none() {
                r.text(format!(
                    "note: {what} not uploaded with --no-wait; the job cannot start until it is"
                ));
                continue;
            }
            let mut s = ctx.scheduler().await?;
            let resp = s
                .upload_job_input(spb::UploadJobInputRequest {
                    job_id: id.clone(),
                    data: data.clone(),
                })
                .await
                .map_err(|e| anyhow!("uploading the {what} to the scheduler: {}", e.message()))?;
            r.field(&format!("{what}_sha256"), digest.to_hex())
                .field(&format!("{what}_uploaded"), resp.into_inner().size);
        }
    }
    Ok(r)
}

/// The customer's accepted, unused bid on a listing that a job there draws on (so the job does
/// not lock a second payment): the one of the payment's amount if any, else the oldest. None for
/// a `gpu-rental` listing (a lease's escrow pays for the lease) or when the customer holds none.
async fn accepted_bid(
    chain: &aitbc_protocol::client::ChainClient,
    l: &aitbc_protocol::model::Listing,
    customer: &aitbc_protocol::Address,
    payment: Option<aitbc_protocol::Amount>,
) -> Result<Option<String>> {
    if l.service_type == aitbc_protocol::tx::ServiceType::GpuRental {
        return Ok(None);
    }
    let mut bids = chain
        .bids(&l.id, Some(customer), "accepted")
        .await
        .map_err(|e| anyhow!("listing the accepted bids on {}: {e}", l.id))?;
    bids.retain(|b| b.status == aitbc_protocol::model::BidStatus::Accepted);
    bids.sort_by_key(|b| (b.created_height, b.id.clone()));
    let same = bids.iter().find(|b| Some(b.amount) == payment);
    Ok(same.or(bids.first()).map(|b| b.id.clone()))
}

fn info_lines(r: &mut Report, j: &spb::JobInfo) {
    r.field("job_id", &j.job_id)
        .field("phase", &j.phase)
        .field("chain_status", &j.chain_status);
    r.field(
        "agent",
        if j.agent_id.is_empty() {
            "-"
        } else {
            &j.agent_id
        },
    )
    .field("progress", format!("{}%", j.progress_percent));
    r.field("attempts", j.attempts);
    if !j.pending_reason.is_empty() {
        r.field("pending_reason", &j.pending_reason);
    }
    if !j.message.is_empty() {
        r.field("message", &j.message);
    }
    if !j.result_digest.is_empty() {
        r.field("result_digest", &j.result_digest);
    }
    if !j.settlement_tx.is_empty() {
        r.field("settlement_tx", &j.settlement_tx);
    }
    if !j.refund_tx.is_empty() {
        r.field("refund_tx", &j.refund_tx);
    }
}

fn chain_lines(r: &mut Report, j: &Job) {
    r.field("job_id", &j.id)
        .field("phase", j.status.as_str())
        .field("chain_status", j.status.as_str());
    r.field(
        "agent",
        j.assigned_agent
            .map(|k| k.to_hex())
            .unwrap_or_else(|| "-".into()),
    );
    r.amount("escrow", j.escrow)
        .field("deadline_height", j.deadline_height);
}

pub async fn status(ctx: &Ctx, job_id: &str, wait: bool) -> Result<Report> {
    let chain = ctx.chain().await?;
    let job = job_of(&chain, job_id).await?;
    let mut r = ctx.report();
    let sched = if ctx.config.scheduler.is_some() {
        ctx.scheduler().await.ok()
    } else {
        None
    };
    let Some(mut s) = sched else {
        // Without a scheduler, the chain's view alone.
        let mut j = job;
        if wait {
            let bar = bar(ctx);
            while j.status.holds_escrow() {
                bar.set_message(j.status.as_str().to_string());
                tokio::time::sleep(Duration::from_millis(250)).await;
                j = job_of(&chain, job_id).await?;
            }
            bar.finish_and_clear();
        }
        chain_lines(&mut r, &j);
        return Ok(r);
    };
    if !wait {
        let info = s
            .get_job(spb::GetJobRequest {
                job_id: job_id.into(),
            })
            .await
            .map_err(|e| anyhow!("scheduler: {}", e.message()))?
            .into_inner();
        info_lines(&mut r, &info);
        return Ok(r);
    }
    let mut stream = s
        .watch_job(spb::WatchJobRequest {
            job_id: job_id.into(),
        })
        .await
        .map_err(|e| anyhow!("scheduler: {}", e.message()))?
        .into_inner();
    let bar = bar(ctx);
    let mut last = None;
    let deadline = tokio::time::Instant::now() + ctx.timeout.max(Duration::from_secs(600));
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message()).await;
        let msg = match next {
            Err(_) => bail!(
                "job {job_id} did not finish within {:?}; follow it again with ai-status --wait",
                ctx.timeout.max(Duration::from_secs(600))
            ),
            Ok(m) => m.map_err(|e| anyhow!("scheduler watch stream: {}", e.message()))?,
        };
        let Some(info) = msg else { break };
        bar.set_position(u64::from(info.progress_percent.min(100)));
        let who = if info.agent_id.is_empty() {
            String::new()
        } else {
            format!(" on {}", info.agent_id)
        };
        bar.set_message(format!("{}{who}", info.phase));
        let terminal = info.terminal;
        last = Some(info);
        if terminal {
            break;
        }
    }
    bar.finish_and_clear();
    let info = last
        .ok_or_else(|| anyhow!("the scheduler closed the watch of {job_id} without any state"))?;
    info_lines(&mut r, &info);
    if info.phase == "refunded" || info.phase == "failed" {
        r.fail();
    }
    Ok(r)
}

fn bar(ctx: &Ctx) -> ProgressBar {
    if ctx.format == Format::Json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(100);
    b.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.enable_steady_tick(Duration::from_millis(120));
    b
}

pub async fn results(ctx: &Ctx, job_id: &str, out_dir: Option<&Path>) -> Result<Report> {
    let chain = ctx.chain().await?;
    let job = job_of(&chain, job_id).await?;
    let Some(receipt) = job.result.clone() else {
        bail!("job {job_id} has no result yet (status {}); follow it with `aitbc-cli ai-status --job-id {job_id} --wait`", job.status.as_str());
    };
    let mut r = ctx.report();
    r.field("job_id", job_id)
        .field("status", job.status.as_str())
        .field("success", receipt.receipt.success);
    r.field("output_digest", receipt.receipt.output_digest.to_hex());
    receipt_lines(&mut r, &receipt, &job);
    let mut s = ctx.scheduler().await?;
    let info = s
        .get_job(spb::GetJobRequest {
            job_id: job_id.into(),
        })
        .await
        .map_err(|e| anyhow!("scheduler: {}", e.message()))?
        .into_inner();
    if !info.settlement_tx.is_empty() {
        r.field("settlement_tx", &info.settlement_tx);
    }
    if !info.refund_tx.is_empty() {
        r.field("refund_tx", &info.refund_tx);
    }
    if let Some(out) = &info.stdout {
        let text = String::from_utf8_lossy(&out.tail).to_string();
        r.data("stdout", &text);
        for line in text.lines().filter(|l| !l.starts_with("AITBC_PROGRESS")) {
            r.text(format!("stdout: {line}"));
        }
    }
    let listing = s
        .fetch_result(spb::FetchResultRequest {
            job_id: job_id.into(),
            path: String::new(),
            max_bytes: 0,
        })
        .await
        .map_err(|e| anyhow!("fetching the file list: {}", e.message()))?
        .into_inner();
    // The list comes from the scheduler (and the agent): it must be the one the receipt on chain
    // commits to, and each downloaded file must match it, or this is not what was paid for.
    check_listing_against_receipt(&listing.files, &receipt)?;
    r.list("files");
    for f in &listing.files {
        let mut line = format!("file: {} size: {} sha256: {}", f.path, f.size, f.sha256);
        let mut saved = String::new();
        if let Some(dir) = out_dir {
            let resp = s
                .fetch_result(spb::FetchResultRequest {
                    job_id: job_id.into(),
                    path: f.path.clone(),
                    max_bytes: 0,
                })
                .await
                .map_err(|e| anyhow!("downloading {}: {}", f.path, e.message()))?
                .into_inner();
            let got: [u8; 32] = Sha256::digest(&resp.data).into();
            if hex::encode(got) != f.sha256 {
                bail!("downloaded {} does not match its sha256 {} (got {}, {} of {} bytes); the agent's fetch cap may be too small", f.path, f.sha256, hex::encode(got), resp.data.len(), f.size);
            }
            let rel = Path::new(&f.path);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                bail!(
                    "refusing to save output {:?} outside {}",
                    f.path,
                    dir.display()
                );
            }
            let dest = dir.join(rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&dest, &resp.data)
                .with_context(|| format!("cannot write {}", dest.display()))?;
            saved = dest.display().to_string();
            line.push_str(&format!(" saved: {saved}"));
        }
        r.row(
            "files",
            line,
            json!({"path": f.path, "size": f.size, "sha256": f.sha256, "saved": saved}),
        );
    }
    Ok(r)
}

/// Refuses a file list whose digest is not the receipt's `output_digest`.
fn check_listing_against_receipt(files: &[spb::ResultFile], rc: &SignedJobReceipt) -> Result<()> {
    let listed = files
        .iter()
        .map(|f| {
            let sha256 = f.sha256.parse().map_err(|_| {
                anyhow!(
                    "the scheduler listed output {} with a malformed sha256 {:?}",
                    f.path,
                    f.sha256
                )
            })?;
            Ok(OutputFile {
                path: f.path.clone(),
                size: f.size,
                sha256,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let got = digest_of_unsorted(listed);
    let paid = rc.receipt.output_digest;
    if got != paid {
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        bail!(
            "the outputs offered for job {} ({}) are not the ones its receipt on chain commits \
             to: their digest is {} but the receipt's output_digest is {}; nothing was saved \
             (the scheduler or the agent serves substitute files: report it)",
            rc.receipt.job_id,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            },
            got.to_hex(),
            paid.to_hex()
        );
    }
    Ok(())
}

fn receipt_lines(r: &mut Report, rc: &SignedJobReceipt, job: &Job) {
    let x = &rc.receipt;
    r.field("agent_key", x.agent_key.to_hex());
    if let Some(c) = x.exit_code {
        r.field("exit_code", c);
    }
    r.field(
        "wall_time",
        format!("{:.3}s", x.usage.wall_ms as f64 / 1000.0),
    )
    .field("gpu_seconds", x.usage.gpu_seconds);
    if !x.message.is_empty() {
        r.field("message", &x.message);
    }
    r.field("receipt_signature", hex::encode(rc.signature.0));
    r.check(
        "receipt-signature",
        rc.verify().is_ok(),
        "the agent's ed25519 signature over the receipt verifies",
    );
    r.check(
        "receipt-agent",
        job.assigned_agent == Some(x.agent_key),
        "signed by the agent the chain assigned",
    );
    r.data("receipt", rc);
}

pub async fn metrics(ctx: &Ctx, agent_id: &str, p: Period) -> Result<Report> {
    let mut s = ctx.scheduler().await?;
    let agents = s
        .list_agents(spb::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents;
    let a = crate::commands::resource::find_agent(&agents, agent_id)
        .ok_or_else(|| crate::commands::resource::unknown_agent(&agents, agent_id))?;
    let agent_id = a.agent_id.as_str();
    let mut r = ctx.report();
    r.field("agent_id", agent_id)
        .field("period", p.as_str())
        .field("healthy", a.healthy)
        .field("registered", a.registered);
    let inv = a.inventory.clone().unwrap_or_default();
    r.field("gpus", inv.gpus_total)
        .field("gpus_free", inv.gpus_free)
        .field("memory_total_mib", inv.memory_total_mib)
        .field("simulated", inv.simulated);
    r.field("running_jobs", a.running_jobs);
    if matches!(p, Period::D7 | Period::D30) {
        r.text(format!("note: agents keep GPU samples for 24h; utilization below covers the last 24h, jobs cover {p}"));
    }
    let up = if matches!(p, Period::D7 | Period::D30) {
        "24h"
    } else {
        p.as_str()
    };
    let util = s
        .resource_utilization(spb::ResourceUtilizationRequest {
            agent_id: agent_id.into(),
            period: up.into(),
            max_points: 0,
        })
        .await
        .map_err(|e| anyhow!("scheduler: {}", e.message()))?
        .into_inner();
    for au in &util.agents {
        if !au.error.is_empty() {
            r.text(format!("note: {}", au.error));
        }
        for g in &au.gpus {
            let peak_mem = g
                .samples
                .iter()
                .map(|x| x.memory_used_mib)
                .max()
                .unwrap_or(0);
            let peak = g
                .samples
                .iter()
                .map(|x| x.utilization_percent)
                .max()
                .unwrap_or(0);
            r.row(
                "gpus",
                format!("gpu: {} uuid: {} avg_utilization: {:.1}% peak_utilization: {peak}% peak_memory_mib: {peak_mem} samples: {}", g.index, g.uuid, g.average_utilization_percent, g.samples.len()),
                json!({"index": g.index, "uuid": g.uuid, "average_utilization_percent": g.average_utilization_percent, "peak_utilization_percent": peak, "peak_memory_mib": peak_mem, "samples": g.samples.len()}),
            );
        }
    }
    // Jobs this agent ran, from the chain.
    let chain = ctx.chain().await?;
    let tip = chain.status().await?.height;
    let from =
        crate::scan::first_height_since(&chain, tip, p.since_ms(crate::keystore::now_ms())).await?;
    let key = a.agent_key.clone();
    let jobs: Vec<Job> = chain
        .jobs(None, "")
        .await?
        .into_iter()
        .filter(|j| {
            j.assigned_agent.map(|k| k.to_hex()) == Some(key.clone()) && j.updated_height >= from
        })
        .collect();
    let count = |s: JobStatus| jobs.iter().filter(|j| j.status == s).count();
    let gpu_s: u64 = jobs
        .iter()
        .filter_map(|j| j.result.as_ref())
        .map(|x| x.receipt.usage.gpu_seconds)
        .sum();
    r.field("jobs", jobs.len())
        .field("jobs_settled", count(JobStatus::Settled))
        .field(
            "jobs_failed_or_refunded",
            count(JobStatus::Failed) + count(JobStatus::Refunded),
        );
    r.field("gpu_seconds", gpu_s);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::receipt::{JobReceipt, Usage};
    use aitbc_protocol::Keypair;

    fn receipt_for(files: &[(&str, &[u8])]) -> SignedJobReceipt {
        let listed = files.iter().map(|(p, d)| out(p, d)).collect();
        JobReceipt {
            chain_id: "test".into(),
            job_id: "job-1".into(),
            attempt: 1,
            agent_key: Keypair::generate().public(),
            success: true,
            exit_code: Some(0),
            output_digest: digest_of_unsorted(listed),
            usage: Usage::default(),
            message: String::new(),
            finished_at_ms: 0,
        }
        .sign(&Keypair::generate())
    }

    fn out(path: &str, data: &[u8]) -> OutputFile {
        OutputFile {
            path: path.into(),
            size: data.len() as u64,
            sha256: Hash(Sha256::digest(data).into()),
        }
    }

    fn listing(files: &[(&str, &[u8])]) -> Vec<spb::ResultFile> {
        files
            .iter()
            .map(|(p, d)| {
                let f = out(p, d);
                spb::ResultFile {
                    path: f.path,
                    size: f.size,
                    sha256: f.sha256.to_hex(),
                }
            })
            .collect()
    }

    #[test]
    fn job_plane_results_must_be_the_ones_the_receipt_commits_to() {
        let paid: &[(&str, &[u8])] = &[("result.txt", b"a red square"), ("img.png", b"\x89PNG")];
        let rc = receipt_for(paid);
        check_listing_against_receipt(&listing(paid), &rc).unwrap();
        // A substitute file, a missing one and an extra one are all refused, naming the files.
        let substitute: &[(&str, &[u8])] =
            &[("result.txt", b"a blue square"), ("img.png", b"\x89PNG")];
        let missing: &[(&str, &[u8])] = &[("result.txt", b"a red square")];
        let extra: &[(&str, &[u8])] = &[
            ("result.txt", b"a red square"),
            ("img.png", b"\x89PNG"),
            ("x", b""),
        ];
        for bad in [substitute, missing, extra] {
            let err = check_listing_against_receipt(&listing(bad), &rc).unwrap_err();
            assert!(err.to_string().contains("result.txt"), "{err}");
            assert!(err.to_string().contains("nothing was saved"), "{err}");
        }
    }
}
