//! Ed25519 keys and checksummed addresses.

use crate::hash::Hash;
use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An ed25519 public key (32 bytes), shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct PublicKey(pub [u8; 32]);

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a 64-character hex public key")]
    BadPublicKey(String),
    #[error("public key is not a valid ed25519 point")]
    InvalidPoint,
    #[error("signature does not verify")]
    BadSignature,
    #[error("{0:?} is not a 64-character hex secret key")]
    BadSecretKey(String),
}

impl PublicKey {
    pub fn verify(&self, message: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let vk = self.verifying_key()?;
        vk.verify(message, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .map_err(|_| KeyError::BadSignature)
    }
    /// [`Self::verify`] with the decompressed key taken from the cache of recently seen keys
    /// (see [`verify_batch_cached`]): for keys seen over and over, such as peers'.
    pub fn verify_cached(&self, message: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let vk = key_cache::decompress_all(std::slice::from_ref(self))?
            .pop()
            .ok_or(KeyError::InvalidPoint)?;
        vk.verify(message, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .map_err(|_| KeyError::BadSignature)
    }
    pub fn verifying_key(&self) -> Result<ed25519_dalek::VerifyingKey, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::InvalidPoint)
    }
    pub fn address(&self) -> Address {
        let h = Hash::domain("aitbc/address/v1", &[&self.0]);
        let mut a = [0u8; 20];
        a.copy_from_slice(&h.0[..20]);
        Address(a)
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<ed25519_dalek::VerifyingKey> for PublicKey {
    fn from(vk: ed25519_dalek::VerifyingKey) -> Self {
        PublicKey(vk.to_bytes())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let b = hex::decode(s.trim()).map_err(|_| KeyError::BadPublicKey(s.into()))?;
        let arr: [u8; 32] = b.try_into().map_err(|_| KeyError::BadPublicKey(s.into()))?;
        Ok(PublicKey(arr))
    }
}
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}
impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}
impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}
impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as Deserialize>::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}
impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as Deserialize>::deserialize(d)?;
        let b = hex::decode(&s).map_err(serde::de::Error::custom)?;
        let arr: [u8; 64] = b
            .try_into()
            .map_err(|_| serde::de::Error::custom("signature must be 64 bytes"))?;
        Ok(Signature(arr))
    }
}

/// A signing key. Debug output never shows the secret.
#[derive(Clone)]
pub struct Keypair(ed25519_dalek::SigningKey);

impl Keypair {
    pub fn generate() -> Keypair {
        Keypair(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }
    pub fn from_secret(bytes: [u8; 32]) -> Keypair {
        Keypair(ed25519_dalek::SigningKey::from_bytes(&bytes))
    }
    pub fn from_secret_hex(s: &str) -> Result<Keypair, KeyError> {
        let b = hex::decode(s.trim()).map_err(|_| KeyError::BadSecretKey("<hidden>".into()))?;
        let arr: [u8; 32] = b
            .try_into()
            .map_err(|_| KeyError::BadSecretKey("<hidden>".into()))?;
        Ok(Keypair::from_secret(arr))
    }
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    pub fn secret_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }
    pub fn address(&self) -> Address {
        self.public().address()
    }
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
    pub fn signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.0
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair(public: {})", self.public())
    }
}

/// An account address: the first 20 bytes of a domain-separated hash of the public key.
/// Written as `ait` + 40 hex digits + 8 hex digits of checksum, so a mistyped address is refused
/// instead of sending money nowhere.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct Address(pub [u8; 20]);

pub const ADDRESS_PREFIX: &str = "ait";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address {0:?} must start with \"ait\" followed by 48 hex digits")]
    Malformed(String),
    #[error("address {0:?} has a wrong checksum; check it for a typo")]
    BadChecksum(String),
}

impl Address {
    fn checksum(&self) -> [u8; 4] {
        let h = Hash::domain("aitbc/address-checksum/v1", &[&self.0]);
        [h.0[0], h.0[1], h.0[2], h.0[3]]
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ADDRESS_PREFIX}{}{}",
            hex::encode(self.0),
            hex::encode(self.checksum())
        )
    }
}
impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(input: &str) -> Result<Self, AddressError> {
        let s = input.trim();
        let body = s
            .strip_prefix(ADDRESS_PREFIX)
            .ok_or_else(|| AddressError::Malformed(input.into()))?;
        if body.len() != 48 {
            return Err(AddressError::Malformed(input.into()));
        }
        let bytes = hex::decode(body.to_ascii_lowercase())
            .map_err(|_| AddressError::Malformed(input.into()))?;
        let mut a = [0u8; 20];
        a.copy_from_slice(&bytes[..20]);
        let addr = Address(a);
        if addr.checksum()[..] != bytes[20..] {
            return Err(AddressError::BadChecksum(input.into()));
        }
        Ok(addr)
    }
}
impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as Deserialize>::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Verifies many (message, signature, key) triples at once with ed25519 batch verification.
/// Returns `Ok` only when all verify. Every key is decompressed (a square root on the curve,
/// about a third of a verification); see [`verify_batch_cached`] for repeated senders.
pub fn verify_batch(
    messages: &[&[u8]],
    sigs: &[Signature],
    keys: &[PublicKey],
) -> Result<(), KeyError> {
    let keys = keys
        .iter()
        .map(|k| k.verifying_key())
        .collect::<Result<Vec<_>, _>>()?;
    verify_batch_with(messages, sigs, &keys)
}

/// [`verify_batch`], with decompressed keys taken from (and added to) a process-wide cache of
/// recently seen keys. A node verifies the same senders over and over; the cache saves one
/// point decompression per signature. Same result as [`verify_batch`] for every input.
pub fn verify_batch_cached(
    messages: &[&[u8]],
    sigs: &[Signature],
    keys: &[PublicKey],
) -> Result<(), KeyError> {
    let keys = key_cache::decompress_all(keys)?;
    verify_batch_with(messages, sigs, &keys)
}

fn verify_batch_with(
    messages: &[&[u8]],
    sigs: &[Signature],
    keys: &[ed25519_dalek::VerifyingKey],
) -> Result<(), KeyError> {
    let sigs: Vec<ed25519_dalek::Signature> = sigs
        .iter()
        .map(|s| ed25519_dalek::Signature::from_bytes(&s.0))
        .collect();
    ed25519_dalek::verify_batch(messages, &sigs, keys).map_err(|_| KeyError::BadSignature)
}

/// Decompressed public keys, bounded: when full it is emptied and refills with the keys in use.
mod key_cache {
    use super::{KeyError, PublicKey};
    use ed25519_dalek::VerifyingKey;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    const CAPACITY: usize = 1 << 16;

    fn cache() -> &'static Mutex<HashMap<[u8; 32], VerifyingKey>> {
        static CACHE: OnceLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
        CACHE.get_or_init(|| Mutex::new(HashMap::new()))
    }

    pub(super) fn decompress_all(keys: &[PublicKey]) -> Result<Vec<VerifyingKey>, KeyError> {
        let mut out = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        {
            let map = cache()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (i, k) in keys.iter().enumerate() {
                match map.get(&k.0) {
                    Some(vk) => out.push(Some(*vk)),
                    None => {
                        out.push(None);
                        missing.push(i);
                    }
                }
            }
        }
        if !missing.is_empty() {
            // Decompress outside the lock; invalid keys are never cached.
            let mut fresh = Vec::with_capacity(missing.len());
            for &i in &missing {
                let vk = keys[i].verifying_key()?;
                out[i] = Some(vk);
                fresh.push((keys[i].0, vk));
            }
            let mut map = cache()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if map.len() + fresh.len() > CAPACITY {
                map.clear();
            }
            map.extend(fresh);
        }
        Ok(out.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_batch_verification_agrees_with_uncached() {
        let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let msgs: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; 40]).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
        let signer = |i: usize| &keys[i % keys.len()];
        let mut sigs: Vec<Signature> = (0..msgs.len()).map(|i| signer(i).sign(&msgs[i])).collect();
        let pubs: Vec<PublicKey> = (0..msgs.len()).map(|i| signer(i).public()).collect();
        // Twice: the second run takes every key from the cache.
        for _ in 0..2 {
            assert_eq!(verify_batch(&refs, &sigs, &pubs), Ok(()));
            assert_eq!(verify_batch_cached(&refs, &sigs, &pubs), Ok(()));
        }
        sigs[5].0[0] ^= 1;
        assert_eq!(
            verify_batch(&refs, &sigs, &pubs),
            Err(KeyError::BadSignature)
        );
        assert_eq!(
            verify_batch_cached(&refs, &sigs, &pubs),
            Err(KeyError::BadSignature)
        );
        sigs[5] = signer(5).sign(&msgs[5]);
        // A signature by the wrong (cached) key fails too.
        sigs[6] = signer(7).sign(&msgs[6]);
        assert_eq!(
            verify_batch_cached(&refs, &sigs, &pubs),
            Err(KeyError::BadSignature)
        );
        sigs[6] = signer(6).sign(&msgs[6]);
        assert_eq!(pubs[6].verify_cached(&msgs[6], &sigs[6]), Ok(()));
        assert_eq!(
            pubs[6].verify_cached(&msgs[7], &sigs[6]),
            Err(KeyError::BadSignature)
        );
        // A key that is not a curve point is refused and never cached.
        let mut bad = pubs.clone();
        bad[3] = PublicKey(invalid_point());
        for _ in 0..2 {
            assert_eq!(
                verify_batch(&refs, &sigs, &bad),
                Err(KeyError::InvalidPoint)
            );
            assert_eq!(
                verify_batch_cached(&refs, &sigs, &bad),
                Err(KeyError::InvalidPoint)
            );
        }
    }

    /// 32 bytes that do not decompress to an ed25519 point.
    fn invalid_point() -> [u8; 32] {
        (0u8..=255)
            .map(|b| [b; 32])
            .find(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_err())
            .expect("some constant byte string is not a point")
    }

    #[test]
    fn address_round_trips_and_rejects_typos() {
        let kp = Keypair::generate();
        let a = kp.address();
        let s = a.to_string();
        assert_eq!(s.len(), 3 + 48);
        assert_eq!(s.parse::<Address>().unwrap(), a);
        // flip one hex digit of the body
        let mut chars: Vec<char> = s.chars().collect();
        chars[5] = if chars[5] == '0' { '1' } else { '0' };
        let typo: String = chars.into_iter().collect();
        assert!(matches!(
            typo.parse::<Address>(),
            Err(AddressError::BadChecksum(_))
        ));
        assert!(matches!(
            "xyz".parse::<Address>(),
            Err(AddressError::Malformed(_))
        ));
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let kp = Keypair::generate();
        let sig = kp.sign(b"hello");
        assert!(kp.public().verify(b"hello", &sig).is_ok());
        assert!(kp.public().verify(b"hellO", &sig).is_err());
        assert!(verify_batch(&[b"hello"], &[sig], &[kp.public()]).is_ok());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let kp = Keypair::generate();
        assert!(!format!("{kp:?}").contains(&kp.secret_hex()));
    }
}
