//! Jobs: submit, cancel (or ask to stop), assign, report a result (which settles), settle,
//! refund. The rules of fair exchange: a job's payment is locked at submission; the provider is
//! paid exactly when the assigned agent's receipt for the current attempt arrives by the
//! deadline plus the grace (its full price on success, the listing's stop rule when the customer
//! asked to stop); the customer gets back the rest, and everything when no valid result arrived.

use super::listing::misrouted;
use super::terms::StopRule;
use super::{ensure, invalid, Exec, MAX_GPUS, MAX_NAME, MAX_PARAMS, MAX_TEXT};
use crate::ledger::apply::TxError;
use crate::ledger::state::StateRead;
use aitbc_protocol::model::{BidStatus, Event, Job, JobStatus};
use aitbc_protocol::receipt::SignedJobReceipt;
use aitbc_protocol::tx::{object_id, Action, JobSpec, ServiceType};
use aitbc_protocol::{Amount, PublicKey};

fn check_spec(spec: &JobSpec) -> Result<(), TxError> {
    ensure(spec.gpus <= MAX_GPUS, || {
        invalid("a job may ask for at most 64 GPUs")
    })?;
    ensure(
        spec.prompt.len() <= MAX_TEXT && spec.model.len() <= MAX_NAME,
        || invalid("prompt or model name too long"),
    )?;
    ensure(spec.params.len() <= MAX_PARAMS, || {
        invalid("more than 32 job parameters")
    })
}

/// Where a new job's money comes from.
struct Funding {
    listing_id: Option<String>,
    escrow: Amount,
    price: Amount,
}

impl<S: StateRead + ?Sized> Exec<'_, '_, '_, S> {
    pub(super) fn submit_job(&mut self, action: &Action) -> Result<(), TxError> {
        let Action::SubmitJob {
            listing_id,
            bid_id,
            payment,
            spec,
            deadline_blocks,
        } = action
        else {
            return Err(misrouted("submit-job"));
        };
        check_spec(spec)?;
        let id = object_id("job", &self.hash);
        ensure(self.ov.job(&id)?.is_none(), || {
            TxError::WrongState(format!("job {id} exists"))
        })?;
        let funding = match bid_id.as_deref() {
            Some(bid_id) => self.draw_on_bid(&id, bid_id, listing_id.as_deref(), *payment)?,
            None => self.lock_payment(listing_id.as_deref(), *payment)?,
        };
        let provider = self.count_job_on_listing(funding.listing_id.as_deref())?;
        let (deadline_ms, deadline_height) = self.deadline(spec, *deadline_blocks);
        self.ov.put_job(&Job {
            id: id.clone(),
            customer: self.sender,
            listing_id: funding.listing_id,
            bid_id: bid_id.clone(),
            provider,
            escrow: funding.escrow,
            spec: spec.clone(),
            status: JobStatus::Pending,
            assigned_agent: None,
            assignments: 0,
            result: None,
            created_height: self.ctx.height,
            deadline_height,
            updated_height: self.ctx.height,
            fee_burned: Amount::ZERO,
            price: funding.price,
            deadline_ms,
            stop_requested: false,
        });
        self.events.push(Event::JobSubmitted {
            job_id: id,
            customer: self.sender,
            escrow: funding.escrow,
        });
        Ok(())
    }

    /// The result deadline in BFT time, and the height it corresponds to at the genesis block
    /// time (informational: the chain decides by time). The default leaves slack beyond the
    /// job's time limit.
    fn deadline(&self, spec: &JobSpec, deadline_blocks: u64) -> (u64, u64) {
        let p = self.ctx.params;
        let span_ms = if deadline_blocks == 0 {
            let by_blocks = p
                .default_job_deadline_blocks
                .saturating_mul(p.block_time_ms);
            let by_limit = spec
                .time_limit_secs
                .saturating_mul(1000)
                .saturating_add(p.deadline_slack_ms);
            by_blocks.max(by_limit)
        } else {
            deadline_blocks.saturating_mul(p.block_time_ms)
        };
        let blocks = span_ms
            .saturating_add(p.result_grace_ms)
            .div_ceil(p.block_time_ms);
        (
            self.ctx.time_ms.saturating_add(span_ms),
            self.ctx.height.saturating_add(blocks),
        )
    }

    fn count_job_on_listing(
        &mut self,
        listing_id: Option<&str>,
    ) -> Result<Option<aitbc_protocol::Address>, TxError> {
        let Some(lid) = listing_id else {
            return Ok(None);
        };
        let mut l = self.listing(lid)?;
        l.jobs += 1;
        self.ov.put_listing(&l);
        Ok(Some(l.owner))
    }

    /// Moves an accepted bid's escrow into the job. `payment` 0 (or the bid's amount) is the
    /// bid's amount; more is topped up from the balance; less is the job's price, and the rest
    /// of the bid goes back at settlement.
    fn draw_on_bid(
        &mut self,
        job_id: &str,
        bid_id: &str,
        listing_id: Option<&str>,
        payment: Amount,
    ) -> Result<Funding, TxError> {
        let (mut bid, l) = self.bid_and_listing(bid_id)?;
        ensure(bid.bidder == self.sender, || {
            TxError::NotAllowed(format!("bid {bid_id} belongs to another customer"))
        })?;
        ensure(bid.status == BidStatus::Accepted, || {
            TxError::WrongState(format!(
                "bid {bid_id} is {}; a job can draw only on an accepted bid",
                bid.status.as_str()
            ))
        })?;
        ensure(l.service_type != ServiceType::GpuRental, || {
            TxError::NotAllowed(format!(
                "bid {bid_id} holds a gpu-rental lease; its escrow pays for the lease, not a job"
            ))
        })?;
        if let Some(lid) = listing_id {
            ensure(lid == l.id, || {
                invalid("the bid belongs to another listing")
            })?;
        }
        let price = if payment.is_zero() {
            bid.amount
        } else {
            payment
        };
        ensure(price >= l.price, || TxError::BidBelowPrice {
            bid: price,
            price: l.price,
        })?;
        if let Some(top_up) = price.checked_sub(bid.amount).filter(|t| !t.is_zero()) {
            self.lock(&self.sender.clone(), top_up)?;
        }
        bid.status = BidStatus::UsedByJob;
        bid.updated_height = self.ctx.height;
        self.ov.put_bid(&bid);
        self.events.push(Event::BidUsed {
            bid_id: bid_id.into(),
            job_id: job_id.into(),
            amount: bid.amount,
        });
        Ok(Funding {
            listing_id: Some(l.id),
            escrow: price.max(bid.amount),
            price,
        })
    }

    /// Locks a fresh payment for a job with no bid.
    fn lock_payment(
        &mut self,
        listing_id: Option<&str>,
        payment: Amount,
    ) -> Result<Funding, TxError> {
        ensure(!payment.is_zero(), || {
            invalid("payment must be greater than zero")
        })?;
        if let Some(lid) = listing_id {
            let l = self.listing(lid)?;
            ensure(l.active, || TxError::ListingClosed(lid.into()))?;
            ensure(payment >= l.price, || TxError::BidBelowPrice {
                bid: payment,
                price: l.price,
            })?;
        }
        self.lock(&self.sender.clone(), payment)?;
        Ok(Funding {
            listing_id: listing_id.map(String::from),
            escrow: payment,
            price: payment,
        })
    }

    /// A pending job is withdrawn and refunded. An assigned one may already have run: the
    /// customer can only ask its agent to stop; the agent's receipt then settles it.
    pub(super) fn cancel_job(&mut self, job_id: &str) -> Result<(), TxError> {
        let mut job = self.job(job_id)?;
        ensure(job.customer == self.sender, || {
            TxError::NotAllowed(format!("only the customer may cancel job {job_id}"))
        })?;
        match job.status {
            JobStatus::Pending => self.close_job(&mut job, Amount::ZERO, JobStatus::Refunded),
            JobStatus::Assigned => self.request_stop(&mut job),
            s => Err(TxError::WrongState(format!(
                "job {job_id} is {}; only a pending or assigned job can be cancelled",
                s.as_str()
            ))),
        }
    }

    fn request_stop(&mut self, job: &mut Job) -> Result<(), TxError> {
        ensure(!job.stop_requested, || {
            TxError::WrongState(format!("a stop of job {} was already requested", job.id))
        })?;
        let agent_key = job
            .assigned_agent
            .ok_or_else(|| TxError::Corrupt(format!("job {} assigned to no agent", job.id)))?;
        job.stop_requested = true;
        job.updated_height = self.ctx.height;
        self.ov.put_job(job);
        self.events.push(Event::JobStopRequested {
            job_id: job.id.clone(),
            agent_key,
            attempt: job.attempt(),
        });
        Ok(())
    }

    pub(super) fn assign_job(
        &mut self,
        job_id: &str,
        agent_key: &PublicKey,
    ) -> Result<(), TxError> {
        ensure(self.ctx.params.schedulers.contains(&self.sender), || {
            TxError::NotAllowed(format!("{} is not a scheduler of this chain", self.sender))
        })?;
        let mut job = self.job(job_id)?;
        ensure(
            matches!(job.status, JobStatus::Pending | JobStatus::Assigned),
            || {
                TxError::WrongState(format!(
                    "job {job_id} is {}; only a pending or assigned job can be assigned",
                    job.status.as_str()
                ))
            },
        )?;
        ensure(!job.stop_requested, || {
            TxError::WrongState(format!("the customer asked to stop job {job_id}"))
        })?;
        ensure(self.ctx.time_ms <= job.deadline_ms, || {
            TxError::WrongState(format!(
                "job {job_id} expired at block time {} ms",
                job.deadline_ms
            ))
        })?;
        let provider = self.provider_for(&job, agent_key)?;
        job.provider = Some(provider);
        job.status = JobStatus::Assigned;
        job.assigned_agent = Some(*agent_key);
        job.assignments += 1;
        job.updated_height = self.ctx.height;
        self.ov.put_job(&job);
        self.events.push(Event::JobAssigned {
            job_id: job_id.into(),
            agent_key: *agent_key,
        });
        Ok(())
    }

    /// Whom a job run by `agent_key` pays: the listing's owner (the agent must serve it), or
    /// without a listing the agent's owner.
    fn provider_for(
        &self,
        job: &Job,
        agent_key: &PublicKey,
    ) -> Result<aitbc_protocol::Address, TxError> {
        let agent = self
            .ov
            .agent(agent_key)?
            .ok_or(TxError::UnknownAgent(*agent_key))?;
        let Some(lid) = &job.listing_id else {
            return Ok(agent.owner);
        };
        let l = self.listing(lid)?;
        ensure(agent.serves.serves(&l.owner), || {
            TxError::NotAllowed(format!(
                "agent {} does not serve provider {}",
                agent.agent_id, l.owner
            ))
        })?;
        Ok(l.owner)
    }

    /// The assigned agent's receipt for the current attempt, in time, settles the job at once.
    pub(super) fn report_result(&mut self, receipt: &SignedJobReceipt) -> Result<(), TxError> {
        let r = &receipt.receipt;
        receipt
            .verify()
            .map_err(|_| invalid("result receipt signature does not verify"))?;
        ensure(r.chain_id == self.ctx.params.chain_id, || {
            TxError::WrongChain {
                expected: self.ctx.params.chain_id.clone(),
                got: r.chain_id.clone(),
            }
        })?;
        let mut job = self.job(&r.job_id)?;
        self.check_receipt_fits(&job, receipt)?;
        let charge = self.charge_for(&job, receipt)?;
        job.result = Some(receipt.clone());
        self.events.push(Event::ResultReported {
            job_id: job.id.clone(),
            success: r.success,
            output_digest: r.output_digest,
        });
        let status = if r.success {
            JobStatus::Settled
        } else {
            JobStatus::Refunded
        };
        self.close_job(&mut job, charge, status)
    }

    fn check_receipt_fits(&self, job: &Job, receipt: &SignedJobReceipt) -> Result<(), TxError> {
        let r = &receipt.receipt;
        ensure(job.status == JobStatus::Assigned, || {
            TxError::WrongState(format!(
                "job {} is {}; results are accepted only for an assigned job",
                job.id,
                job.status.as_str()
            ))
        })?;
        ensure(job.assigned_agent == Some(r.agent_key), || {
            TxError::NotAllowed(format!(
                "result signed by agent {} but job {} is assigned to another agent",
                r.agent_key, job.id
            ))
        })?;
        ensure(r.attempt == job.attempt(), || {
            TxError::WrongState(format!(
                "receipt is for attempt {} of job {}, which is on attempt {}",
                r.attempt,
                job.id,
                job.attempt()
            ))
        })?;
        let last = self.result_window_end(job);
        ensure(self.ctx.time_ms <= last, || {
            TxError::WrongState(format!(
                "result for job {} arrived at block time {} ms, after its deadline and grace ({last} ms)",
                job.id, self.ctx.time_ms
            ))
        })
    }

    /// The last block time at which a result is accepted.
    fn result_window_end(&self, job: &Job) -> u64 {
        job.deadline_ms
            .saturating_add(self.ctx.params.result_grace_ms)
    }

    /// What a result pays the provider: the price on success; on a failure the customer asked
    /// for (a stop), the usage by the listing's rule; nothing for any other failure.
    fn charge_for(&self, job: &Job, receipt: &SignedJobReceipt) -> Result<Amount, TxError> {
        let r = &receipt.receipt;
        if r.success {
            return Ok(job.price);
        }
        if !job.stop_requested {
            return Ok(Amount::ZERO);
        }
        let listing = match &job.listing_id {
            Some(lid) => self.ov.listing(lid)?,
            None => None,
        };
        Ok(StopRule::of(listing.as_ref()).charge(&r.usage, job.price))
    }

    /// Settles a job left succeeded by an older chain (results now settle when reported).
    pub(super) fn settle_job(&mut self, job_id: &str) -> Result<(), TxError> {
        let mut job = self.job(job_id)?;
        ensure(job.status == JobStatus::Succeeded, || {
            TxError::WrongState(format!(
                "job {job_id} is {}; only a succeeded job can be settled",
                job.status.as_str()
            ))
        })?;
        let price = if job.price.is_zero() {
            job.escrow
        } else {
            job.price
        };
        self.close_job(&mut job, price, JobStatus::Settled)
    }

    /// Refunds a job with no valid result by its deadline plus the grace (or a failed one
    /// left by an older chain).
    pub(super) fn refund_job_action(&mut self, job_id: &str) -> Result<(), TxError> {
        let mut job = self.job(job_id)?;
        let last = self.result_window_end(&job);
        let expired = matches!(job.status, JobStatus::Pending | JobStatus::Assigned)
            && self.ctx.time_ms > last;
        ensure(job.status == JobStatus::Failed || expired, || {
            TxError::WrongState(format!(
                "job {job_id} is {} (results accepted until block time {last} ms); only a failed or expired job can be refunded",
                job.status.as_str(),
            ))
        })?;
        self.close_job(&mut job, Amount::ZERO, JobStatus::Refunded)
    }

    fn job(&self, id: &str) -> Result<Job, TxError> {
        self.ov
            .job(id)?
            .ok_or_else(|| TxError::UnknownJob(id.into()))
    }

    /// Pays `charge` of the escrow to the provider (the fee burned) and the rest back to the
    /// customer, and closes the job with `status`.
    fn close_job(
        &mut self,
        job: &mut Job,
        charge: Amount,
        status: JobStatus,
    ) -> Result<(), TxError> {
        let rest = job
            .escrow
            .checked_sub(charge)
            .ok_or_else(|| TxError::Corrupt(format!("job {} charges above its escrow", job.id)))?;
        if !charge.is_zero() {
            self.pay_provider(job, charge)?;
        }
        if !rest.is_zero() || charge.is_zero() {
            self.release(&job.customer, rest)?;
            self.events.push(Event::JobRefunded {
                job_id: job.id.clone(),
                customer: job.customer,
                refunded: rest,
            });
        }
        job.status = status;
        job.updated_height = self.ctx.height;
        self.ov.put_job(job);
        Ok(())
    }

    fn pay_provider(&mut self, job: &mut Job, charge: Amount) -> Result<(), TxError> {
        let provider = job
            .provider
            .ok_or_else(|| TxError::Corrupt(format!("job {} pays no provider", job.id)))?;
        let (paid, fee) = self.pay_from_escrow(&job.customer, &provider, charge)?;
        if let Some(lid) = &job.listing_id {
            if let Some(mut l) = self.ov.listing(lid)? {
                l.revenue = l.revenue.checked_add(paid).ok_or(TxError::Overflow)?;
                self.ov.put_listing(&l);
            }
        }
        job.fee_burned = fee;
        self.events.push(Event::JobSettled {
            job_id: job.id.clone(),
            provider,
            paid,
            fee_burned: fee,
        });
        Ok(())
    }
}
