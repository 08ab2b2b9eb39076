//! The output digest a job receipt commits to, over a job's output files (their names, sizes and
//! contents): computed by the agent that ran the job, and recomputed by whoever downloads the
//! files to check they are the ones paid for.
//!
//! Definition (version 1): every regular file of the job's output directory, named by its path
//! relative to that directory with `/` separators (UTF-8), sorted by those names as bytes; the
//! digest is
//!
//! ```text
//! SHA-256( "aitbc/job-outputs/v1" || 0x00 ||
//!          for each file in order: u64_le(len(name)) || name || u64_le(size) || sha256(content) )
//! ```
//!
//! i.e. [`crate::Hash::domain`] over those parts. No files hash the domain alone.

use crate::Hash;
use serde::{Deserialize, Serialize};

pub const OUTPUT_DIGEST_DOMAIN: &str = "aitbc/job-outputs/v1";

/// One regular file of a job's outputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub path: String,
    pub size: u64,
    pub sha256: Hash,
}

/// The digest over a file list sorted by path (see the module docs).
pub fn digest_of(files: &[OutputFile]) -> Hash {
    let mut buf = Vec::with_capacity(files.len() * 80);
    for f in files {
        buf.extend_from_slice(&(f.path.len() as u64).to_le_bytes());
        buf.extend_from_slice(f.path.as_bytes());
        buf.extend_from_slice(&f.size.to_le_bytes());
        buf.extend_from_slice(&f.sha256.0);
    }
    Hash::domain(OUTPUT_DIGEST_DOMAIN, &[&buf])
}

/// The digest over files in any order (sorted here first).
pub fn digest_of_unsorted(mut files: Vec<OutputFile>) -> Hash {
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    digest_of(&files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, byte: u8) -> OutputFile {
        OutputFile {
            path: path.into(),
            size,
            sha256: Hash([byte; 32]),
        }
    }

    #[test]
    fn the_digest_binds_names_sizes_contents_and_not_the_order_given() {
        let files = vec![file("b.txt", 2, 2), file("a.txt", 1, 1)];
        let d = digest_of_unsorted(files.clone());
        assert_eq!(d, digest_of(&[file("a.txt", 1, 1), file("b.txt", 2, 2)]));
        let renamed = vec![file("c.txt", 2, 2), file("a.txt", 1, 1)];
        let resized = vec![file("b.txt", 3, 2), file("a.txt", 1, 1)];
        let changed = vec![file("b.txt", 2, 9), file("a.txt", 1, 1)];
        for other in [renamed, resized, changed, vec![file("a.txt", 1, 1)]] {
            assert_ne!(digest_of_unsorted(other), d);
        }
    }
}
