//! SHA-256 hashes, domain separation, and the binary Merkle tree used for transaction roots.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A 32-byte SHA-256 digest, displayed as lowercase hex.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize,
)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);

    /// Hash of `domain || 0x00 || parts...`; each domain names what is hashed, so that bytes
    /// valid in one context can never be replayed as another.
    pub fn domain(domain: &str, parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        h.update(domain.as_bytes());
        h.update([0u8]);
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a 64-character hex hash")]
pub struct HashParseError(pub String);

impl FromStr for Hash {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes =
            hex::decode(s.trim().trim_start_matches("0x")).map_err(|_| HashParseError(s.into()))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| HashParseError(s.into()))?;
        Ok(Hash(arr))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}
impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}
impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as Deserialize>::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

const LEAF: &str = "aitbc/merkle-leaf/v1";
const NODE: &str = "aitbc/merkle-node/v1";

fn leaf(h: &Hash) -> Hash {
    Hash::domain(LEAF, &[&h.0])
}
fn node(l: &Hash, r: &Hash) -> Hash {
    Hash::domain(NODE, &[&l.0, &r.0])
}

/// Merkle root over the given leaves (an odd node is promoted unchanged). Leaves and inner nodes
/// are hashed under different domains, so a leaf can never pose as an inner node.
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return Hash::ZERO;
    }
    let mut level: Vec<Hash> = leaves.iter().map(leaf).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|c| {
                if c.len() == 2 {
                    node(&c[0], &c[1])
                } else {
                    c[0]
                }
            })
            .collect();
    }
    level[0]
}

/// One step of an inclusion proof: the sibling hash and whether it sits on the left.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ProofStep {
    pub sibling: Hash,
    pub sibling_is_left: bool,
}

/// Inclusion proof of leaf `index` among `leaves`, or `None` when out of range.
pub fn merkle_proof(leaves: &[Hash], index: usize) -> Option<Vec<ProofStep>> {
    if index >= leaves.len() {
        return None;
    }
    let mut steps = Vec::new();
    let mut level: Vec<Hash> = leaves.iter().map(leaf).collect();
    let mut i = index;
    while level.len() > 1 {
        let sib = i ^ 1;
        if sib < level.len() {
            steps.push(ProofStep {
                sibling: level[sib],
                sibling_is_left: sib < i,
            });
        }
        level = level
            .chunks(2)
            .map(|c| {
                if c.len() == 2 {
                    node(&c[0], &c[1])
                } else {
                    c[0]
                }
            })
            .collect();
        i /= 2;
    }
    Some(steps)
}

/// Checks that `item` is included under `root` by `proof`.
pub fn verify_merkle_proof(root: &Hash, item: &Hash, proof: &[ProofStep]) -> bool {
    let mut acc = leaf(item);
    for step in proof {
        acc = if step.sibling_is_left {
            node(&step.sibling, &acc)
        } else {
            node(&acc, &step.sibling)
        };
    }
    &acc == root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_leaf_proves_and_a_wrong_leaf_does_not(n in 1usize..40, pick in 0usize..40) {
            let leaves: Vec<Hash> = (0..n).map(|i| Hash::domain("t", &[&(i as u64).to_le_bytes()])).collect();
            let root = merkle_root(&leaves);
            let i = pick % n;
            let proof = merkle_proof(&leaves, i).unwrap();
            prop_assert!(verify_merkle_proof(&root, &leaves[i], &proof));
            let other = Hash::domain("t", &[b"not a leaf"]);
            prop_assert!(!verify_merkle_proof(&root, &other, &proof));
        }
    }
}
