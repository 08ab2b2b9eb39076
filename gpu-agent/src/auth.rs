//! Request authentication for the agent's mutating calls.
//!
//! A caller signs, with ed25519, the bytes
//!
//! ```text
//! "aitbc/agent-request/v1" || 0x00 || u32_le(len(method)) || method || u64_le(timestamp_ms)
//!     || sha256(protobuf encoding of the request message)
//! ```
//!
//! where `method` is the full gRPC path (e.g. `/aitbc.agent.v1.Agent/RunJob`), and sends
//! `x-aitbc-caller` (hex public key), `x-aitbc-timestamp` (unix ms) and `x-aitbc-signature`
//! (hex) as metadata. The agent accepts only configured keys, timestamps within the allowed
//! skew of its clock, and each signature once (it remembers signatures until their timestamp
//! leaves the window).

use aitbc_protocol::{Keypair, PublicKey, Signature};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use tonic::metadata::{MetadataMap, MetadataValue};

pub const REQUEST_SIGNING_DOMAIN: &str = "aitbc/agent-request/v1";
pub const CALLER_HEADER: &str = "x-aitbc-caller";
pub const TIMESTAMP_HEADER: &str = "x-aitbc-timestamp";
pub const SIGNATURE_HEADER: &str = "x-aitbc-signature";
/// Most remembered signatures; beyond it new signed calls are refused until old ones expire.
const MAX_REMEMBERED: usize = 1_000_000;

/// Full gRPC paths of the agent's methods that must be signed.
pub mod methods {
    pub const RUN_JOB: &str = "/aitbc.agent.v1.Agent/RunJob";
    pub const CANCEL_JOB: &str = "/aitbc.agent.v1.Agent/CancelJob";
    pub const ALLOCATE_LEASE: &str = "/aitbc.agent.v1.Agent/AllocateLease";
    pub const DEALLOCATE_LEASE: &str = "/aitbc.agent.v1.Agent/DeallocateLease";
    pub const STRESS_MEMORY: &str = "/aitbc.agent.v1.Agent/StressMemory";
}

/// The bytes a caller signs for `method` at `timestamp_ms` over an encoded request.
pub fn request_signing_bytes(method: &str, timestamp_ms: u64, encoded_message: &[u8]) -> Vec<u8> {
    let digest: [u8; 32] = Sha256::digest(encoded_message).into();
    let mut out = Vec::with_capacity(REQUEST_SIGNING_DOMAIN.len() + method.len() + 48);
    out.extend_from_slice(REQUEST_SIGNING_DOMAIN.as_bytes());
    out.push(0);
    out.extend_from_slice(&(method.len() as u32).to_le_bytes());
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(&digest);
    out
}

/// Wraps `msg` in a request signed by `key` for `method` (one of [`methods`]) at the current time.
pub fn sign_request<T: prost::Message>(key: &Keypair, method: &str, msg: T) -> tonic::Request<T> {
    sign_request_at(key, method, msg, crate::time::now_ms())
}

/// [`sign_request`] with an explicit timestamp.
pub fn sign_request_at<T: prost::Message>(
    key: &Keypair,
    method: &str,
    msg: T,
    timestamp_ms: u64,
) -> tonic::Request<T> {
    let sig = key.sign(&request_signing_bytes(
        method,
        timestamp_ms,
        &msg.encode_to_vec(),
    ));
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    // Hex and decimal digits are always valid ASCII metadata.
    if let Ok(v) = MetadataValue::try_from(key.public().to_hex()) {
        md.insert(CALLER_HEADER, v);
    }
    md.insert(TIMESTAMP_HEADER, MetadataValue::from(timestamp_ms));
    if let Ok(v) = MetadataValue::try_from(hex::encode(sig.0)) {
        md.insert(SIGNATURE_HEADER, v);
    }
    req
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing or malformed {0} metadata; mutating calls must be signed")]
    Missing(&'static str),
    #[error("caller {0} is not an authorized scheduler key")]
    UnknownCaller(String),
    #[error("request timestamp is {0} ms away from the agent's clock (allowed: {1} ms)")]
    Skew(i128, u64),
    #[error("request signature does not verify")]
    BadSignature,
    #[error("request was already used (replay)")]
    Replay,
    #[error("too many recent signed requests; retry shortly")]
    Busy,
}

/// Verifies signed requests against the configured keys.
pub struct Authenticator {
    keys: HashSet<PublicKey>,
    max_skew_ms: u64,
    seen: Mutex<HashMap<[u8; 64], u64>>,
}

impl Authenticator {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>, max_skew_ms: u64) -> Self {
        Authenticator {
            keys: keys.into_iter().collect(),
            max_skew_ms,
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Checks a signed call; returns the caller's key.
    pub fn verify<T: prost::Message>(
        &self,
        method: &str,
        metadata: &MetadataMap,
        msg: &T,
        now_ms: u64,
    ) -> Result<PublicKey, AuthError> {
        let header = |name: &'static str| {
            metadata
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(AuthError::Missing(name))
        };
        let caller: PublicKey = header(CALLER_HEADER)?
            .parse()
            .map_err(|_| AuthError::Missing(CALLER_HEADER))?;
        let ts: u64 = header(TIMESTAMP_HEADER)?
            .parse()
            .map_err(|_| AuthError::Missing(TIMESTAMP_HEADER))?;
        let sig_bytes = hex::decode(header(SIGNATURE_HEADER)?)
            .map_err(|_| AuthError::Missing(SIGNATURE_HEADER))?;
        let sig: [u8; 64] = sig_bytes
            .try_into()
            .map_err(|_| AuthError::Missing(SIGNATURE_HEADER))?;
        if !self.keys.contains(&caller) {
            return Err(AuthError::UnknownCaller(caller.to_hex()));
        }
        let skew = ts as i128 - now_ms as i128;
        if skew.unsigned_abs() > self.max_skew_ms as u128 {
            return Err(AuthError::Skew(skew, self.max_skew_ms));
        }
        caller
            .verify(
                &request_signing_bytes(method, ts, &msg.encode_to_vec()),
                &Signature(sig),
            )
            .map_err(|_| AuthError::BadSignature)?;
        let mut seen = self.seen.lock();
        if seen.len() >= 1024 {
            seen.retain(|_, exp| *exp >= now_ms);
        }
        if seen.contains_key(&sig) {
            return Err(AuthError::Replay);
        }
        if seen.len() >= MAX_REMEMBERED {
            return Err(AuthError::Busy);
        }
        seen.insert(sig, ts.saturating_add(self.max_skew_ms));
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::agent_pb::CancelJobRequest;

    fn msg() -> CancelJobRequest {
        CancelJobRequest {
            job_id: "job-1".into(),
        }
    }

    #[test]
    fn signed_request_verifies_once() {
        let k = Keypair::generate();
        let auth = Authenticator::new([k.public()], 60_000);
        let req = sign_request_at(&k, methods::CANCEL_JOB, msg(), 1_000_000);
        assert_eq!(
            auth.verify(
                methods::CANCEL_JOB,
                req.metadata(),
                req.get_ref(),
                1_000_500
            ),
            Ok(k.public())
        );
        assert_eq!(
            auth.verify(
                methods::CANCEL_JOB,
                req.metadata(),
                req.get_ref(),
                1_000_600
            ),
            Err(AuthError::Replay)
        );
    }

    #[test]
    fn wrong_key_method_message_time_or_missing_headers_are_refused() {
        let k = Keypair::generate();
        let stranger = Keypair::generate();
        let auth = Authenticator::new([k.public()], 60_000);
        let now = 5_000_000;
        let r = sign_request_at(&stranger, methods::CANCEL_JOB, msg(), now);
        assert!(matches!(
            auth.verify(methods::CANCEL_JOB, r.metadata(), r.get_ref(), now),
            Err(AuthError::UnknownCaller(_))
        ));
        let r = sign_request_at(&k, methods::RUN_JOB, msg(), now);
        assert_eq!(
            auth.verify(methods::CANCEL_JOB, r.metadata(), r.get_ref(), now),
            Err(AuthError::BadSignature)
        );
        let r = sign_request_at(&k, methods::CANCEL_JOB, msg(), now);
        let other = CancelJobRequest {
            job_id: "job-2".into(),
        };
        assert_eq!(
            auth.verify(methods::CANCEL_JOB, r.metadata(), &other, now),
            Err(AuthError::BadSignature)
        );
        let r = sign_request_at(&k, methods::CANCEL_JOB, msg(), now - 61_000);
        assert!(matches!(
            auth.verify(methods::CANCEL_JOB, r.metadata(), r.get_ref(), now),
            Err(AuthError::Skew(..))
        ));
        let r = sign_request_at(&k, methods::CANCEL_JOB, msg(), now + 61_000);
        assert!(matches!(
            auth.verify(methods::CANCEL_JOB, r.metadata(), r.get_ref(), now),
            Err(AuthError::Skew(..))
        ));
        let plain = tonic::Request::new(msg());
        assert_eq!(
            auth.verify(methods::CANCEL_JOB, plain.metadata(), plain.get_ref(), now),
            Err(AuthError::Missing(CALLER_HEADER))
        );
        let mut bad = sign_request_at(&k, methods::CANCEL_JOB, msg(), now);
        bad.metadata_mut()
            .insert(SIGNATURE_HEADER, MetadataValue::from_static("zz"));
        assert_eq!(
            auth.verify(methods::CANCEL_JOB, bad.metadata(), bad.get_ref(), now),
            Err(AuthError::Missing(SIGNATURE_HEADER))
        );
    }
}
