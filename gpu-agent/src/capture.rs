//! Bounded capture of a job's stdout/stderr: the first `limit` bytes and the last `limit` bytes
//! are kept, everything in between is counted as dropped.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What was kept of one output stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedOutput {
    #[serde(with = "hex_bytes")]
    pub head: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub tail: Vec<u8>,
    pub total_bytes: u64,
    pub dropped_bytes: u64,
}

impl CapturedOutput {
    /// Head, a marker saying how much was dropped (if anything), and tail, as lossy UTF-8.
    pub fn to_text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped_bytes > 0 {
            s.push_str(&format!(
                "\n[... {} bytes dropped ...]\n",
                self.dropped_bytes
            ));
        }
        s.push_str(&String::from_utf8_lossy(&self.tail));
        s
    }
}

/// Bytes as a hex string in JSON records (compact and exact for binary output).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Accumulates a stream keeping at most `2 * limit` bytes.
#[derive(Debug)]
pub struct BoundedCapture {
    limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl BoundedCapture {
    pub fn new(limit: usize) -> Self {
        BoundedCapture {
            limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.limit - self.head.len();
        if room > 0 {
            let n = room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if self.limit == 0 || data.is_empty() {
            return;
        }
        if data.len() >= self.limit {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.limit..]);
            return;
        }
        let overflow = (self.tail.len() + data.len()).saturating_sub(self.limit);
        self.tail.drain(..overflow);
        self.tail.extend(data);
    }

    pub fn finish(self) -> CapturedOutput {
        let kept = (self.head.len() + self.tail.len()) as u64;
        CapturedOutput {
            head: self.head,
            tail: self.tail.into_iter().collect(),
            total_bytes: self.total,
            dropped_bytes: self.total - kept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = BoundedCapture::new(10);
        c.push(b"hello");
        let out = c.finish();
        assert_eq!(out.head, b"hello");
        assert!(out.tail.is_empty());
        assert_eq!(out.dropped_bytes, 0);
        assert_eq!(out.to_text(), "hello");
    }

    proptest! {
        #[test]
        fn keeps_first_and_last_bytes_and_counts_the_rest(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..30),
            limit in 0usize..40,
        ) {
            let all: Vec<u8> = chunks.concat();
            let mut c = BoundedCapture::new(limit);
            for ch in &chunks { c.push(ch); }
            let out = c.finish();
            let head_len = limit.min(all.len());
            prop_assert_eq!(&out.head[..], &all[..head_len]);
            let rest = &all[head_len..];
            let tail_len = limit.min(rest.len());
            prop_assert_eq!(&out.tail[..], &rest[rest.len() - tail_len..]);
            prop_assert_eq!(out.total_bytes, all.len() as u64);
            prop_assert_eq!(out.dropped_bytes, (all.len() - head_len - tail_len) as u64);
        }
    }
}
