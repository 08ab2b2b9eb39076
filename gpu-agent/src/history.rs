//! Bounded utilization/memory history per GPU: a ring buffer of samples, queried by period.

use parking_lot::Mutex;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: u64,
    pub utilization_percent: u32,
    pub memory_used_mib: u64,
}

/// A fixed-capacity ring of samples; the oldest is overwritten first.
#[derive(Debug)]
pub struct Ring {
    cap: usize,
    buf: VecDeque<Sample>,
}

impl Ring {
    pub fn new(cap: usize) -> Self {
        Ring {
            cap: cap.max(1),
            buf: VecDeque::with_capacity(cap.clamp(1, 4096)),
        }
    }
    pub fn push(&mut self, s: Sample) {
        if self.buf.len() == self.cap {
            self.buf.pop_front();
        }
        self.buf.push_back(s);
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Samples newer than `now - period`, averaged into at most `max_points` buckets
    /// (0 = all samples).
    pub fn query(&self, now_ms: u64, period_ms: u64, max_points: usize) -> Vec<Sample> {
        let since = now_ms.saturating_sub(period_ms);
        let picked: Vec<Sample> = self
            .buf
            .iter()
            .filter(|s| s.at_ms > since && s.at_ms <= now_ms)
            .copied()
            .collect();
        downsample(&picked, max_points)
    }
}

/// Averages consecutive samples into `max_points` groups (each stamped with its last sample's
/// time). `max_points == 0` or fewer samples than points leaves them unchanged.
pub fn downsample(samples: &[Sample], max_points: usize) -> Vec<Sample> {
    if max_points == 0 || samples.len() <= max_points {
        return samples.to_vec();
    }
    let per = samples.len().div_ceil(max_points);
    samples
        .chunks(per)
        .map(|c| {
            let n = c.len() as u64;
            Sample {
                at_ms: c[c.len() - 1].at_ms,
                utilization_percent: (c.iter().map(|s| s.utilization_percent as u64).sum::<u64>()
                    / n) as u32,
                memory_used_mib: c.iter().map(|s| s.memory_used_mib).sum::<u64>() / n,
            }
        })
        .collect()
}

/// History of all GPUs (by position in the inventory).
pub struct History {
    interval_ms: u64,
    rings: Mutex<Vec<Ring>>,
}

impl History {
    /// Enough room for `retention_ms` of samples taken every `interval_ms`.
    pub fn new(gpus: usize, interval_ms: u64, retention_ms: u64) -> Self {
        let cap = (retention_ms / interval_ms.max(1)).max(1) as usize;
        History {
            interval_ms,
            rings: Mutex::new((0..gpus).map(|_| Ring::new(cap)).collect()),
        }
    }
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }
    pub fn record(&self, samples: &[Sample]) {
        let mut rings = self.rings.lock();
        for (ring, s) in rings.iter_mut().zip(samples) {
            ring.push(*s);
        }
    }
    pub fn query(&self, gpu: usize, now_ms: u64, period_ms: u64, max_points: usize) -> Vec<Sample> {
        self.rings
            .lock()
            .get(gpu)
            .map(|r| r.query(now_ms, period_ms, max_points))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: u64, u: u32) -> Sample {
        Sample {
            at_ms: at,
            utilization_percent: u,
            memory_used_mib: u as u64 * 10,
        }
    }

    #[test]
    fn ring_is_bounded_and_queries_by_period() {
        let mut r = Ring::new(100);
        for i in 0..250u64 {
            r.push(s(i * 1000, (i % 100) as u32));
        }
        assert_eq!(r.len(), 100);
        let last_min = r.query(249_000, 60_000, 0);
        assert_eq!(last_min.len(), 60);
        assert_eq!(last_min[0].at_ms, 190_000);
        assert_eq!(r.query(249_000, 24 * 3_600_000, 0).len(), 100);
        let coarse = r.query(249_000, 60_000, 6);
        assert_eq!(coarse.len(), 6);
        assert_eq!(coarse[5].at_ms, 249_000);
    }

    #[test]
    fn downsampling_averages() {
        let d = downsample(&[s(1, 0), s(2, 100), s(3, 50), s(4, 50)], 2);
        assert_eq!(
            d,
            vec![
                Sample {
                    at_ms: 2,
                    utilization_percent: 50,
                    memory_used_mib: 500
                },
                s(4, 50)
            ]
        );
    }

    #[test]
    fn history_keeps_each_gpu_apart() {
        let h = History::new(2, 5000, 60_000);
        for i in 1..=20u64 {
            h.record(&[s(i * 5000, 10), s(i * 5000, 90)]);
        }
        assert_eq!(h.query(0, 100_000, 3_600_000, 0).len(), 12);
        assert!(h
            .query(1, 100_000, 300_000, 0)
            .iter()
            .all(|x| x.utilization_percent == 90));
        assert!(h.query(5, 100_000, 300_000, 0).is_empty());
    }
}
