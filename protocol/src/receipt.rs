//! Job receipts: what a GPU agent signs when a job ends. The chain accepts results only in this form.

use crate::crypto::{KeyError, Keypair, PublicKey, Signature};
use crate::hash::Hash;
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

pub const RECEIPT_SIGNING_DOMAIN: &str = "aitbc/job-receipt/v1";

/// Resources a job used.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Usage {
    pub wall_ms: u64,
    pub gpu_seconds: u64,
    /// Peak GPU memory in MiB where NVML reports it, else `None`.
    pub peak_memory_mib: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct JobReceipt {
    pub chain_id: String,
    pub job_id: String,
    /// The job's assignment this receipt is for (`Job::attempt`); a receipt of an earlier
    /// attempt is refused after the job was reassigned.
    pub attempt: u32,
    pub agent_key: PublicKey,
    pub success: bool,
    /// Process exit code; `None` when killed (time limit, cancellation, signal).
    pub exit_code: Option<i32>,
    /// SHA-256 over the job's outputs (see the agent's digest rules).
    pub output_digest: Hash,
    pub usage: Usage,
    /// Short reason for a failure (e.g. "time limit of 60s exceeded"); empty on success.
    pub message: String,
    /// Unix milliseconds at which the job finished, by the agent's clock.
    pub finished_at_ms: u64,
}

impl JobReceipt {
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(RECEIPT_SIGNING_DOMAIN.as_bytes());
        out.push(0);
        borsh::to_writer(&mut out, self).expect("borsh encoding into a Vec");
        out
    }
    pub fn sign(self, key: &Keypair) -> SignedJobReceipt {
        let signature = key.sign(&self.signing_bytes());
        SignedJobReceipt {
            receipt: self,
            signature,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SignedJobReceipt {
    pub receipt: JobReceipt,
    pub signature: Signature,
}

impl SignedJobReceipt {
    /// Checks the signature against the key named in the receipt.
    pub fn verify(&self) -> Result<(), KeyError> {
        self.receipt
            .agent_key
            .verify(&self.receipt.signing_bytes(), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_verifies_and_tampered_receipt_does_not() {
        let k = Keypair::generate();
        let r = JobReceipt {
            chain_id: "c".into(),
            job_id: "job-1".into(),
            attempt: 1,
            agent_key: k.public(),
            success: true,
            exit_code: Some(0),
            output_digest: Hash::domain("x", &[]),
            usage: Usage::default(),
            message: String::new(),
            finished_at_ms: 1,
        };
        let mut s = r.sign(&k);
        assert!(s.verify().is_ok());
        s.receipt.success = false;
        assert!(s.verify().is_err());
    }
}
