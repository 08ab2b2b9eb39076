//! Ed25519 keys and checksummed addresses.

use crate::hash::Hash;
use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::Signer;
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

/// Signature verification follows ZIP-215 (the `ed25519-zebra` crate): the cofactored
/// equation, for single and batch verification alike. That makes validity a deterministic
/// property of (key, message, signature), which consensus needs: with the usual cofactorless
/// check, a signature carrying a small-order component fails single verification but passes a
/// batch with a probability that depends on the other signatures in the batch, so validators
/// batching different sets of transactions could disagree about the same block.
impl PublicKey {
    pub fn verify(&self, message: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let vk =
            ed25519_zebra::VerificationKey::try_from(self.0).map_err(|_| KeyError::InvalidPoint)?;
        vk.verify(&ed25519_zebra::Signature::from(sig.0), message)
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

/// Verifies many (message, signature, key) triples at once with ZIP-215 batch verification,
/// which agrees with [`PublicKey::verify`] on every input (but for a 2^-128 chance). Returns `Ok`
/// only when all verify; an invalid key fails the batch like a bad signature (verify one by one
/// to tell which). Keys come decompressed from the process-wide cache of recently seen keys (a
/// node verifies the same senders over and over), and signatures by the same key share one
/// term of the multiscalar multiplication.
///
/// The equation is ed25519-zebra's batch equation (ZIP-215):
/// `[8]( [-sum z_i s_i] B + sum [z_i] R_i + sum_A [sum_{i by A} z_i k_i] A ) = 0` with random
/// 128-bit `z_i`; it is written out here because ed25519-zebra's batch verifier only takes
/// compressed keys and would decompress every key in every batch.
pub fn verify_batch(
    messages: &[&[u8]],
    sigs: &[Signature],
    keys: &[PublicKey],
) -> Result<(), KeyError> {
    let points = key_cache::points(keys).map_err(|_| KeyError::BadSignature)?;
    verify_batch_with(messages, sigs, keys, points)
}

/// [`verify_batch`] without the key cache: every key is decompressed, as by a verifier that
/// sees it for the first time (the reference rate in benchmarks).
pub fn verify_batch_uncached(
    messages: &[&[u8]],
    sigs: &[Signature],
    keys: &[PublicKey],
) -> Result<(), KeyError> {
    let points = keys
        .iter()
        .map(|k| {
            curve25519_dalek::edwards::CompressedEdwardsY(k.0)
                .decompress()
                .ok_or(KeyError::BadSignature)
        })
        .collect::<Result<Vec<_>, _>>()?;
    verify_batch_with(messages, sigs, keys, points)
}

fn verify_batch_with(
    messages: &[&[u8]],
    sigs: &[Signature],
    keys: &[PublicKey],
    points: Vec<curve25519_dalek::edwards::EdwardsPoint>,
) -> Result<(), KeyError> {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
    use rand::RngCore;
    use sha2::{Digest, Sha512};

    if messages.len() != sigs.len() || sigs.len() != keys.len() || keys.len() != points.len() {
        return Err(KeyError::BadSignature);
    }
    let mut rng = rand::thread_rng();
    let mut b_coeff = Scalar::ZERO;
    let mut a_terms: foldhash::HashMap<[u8; 32], (EdwardsPoint, Scalar)> =
        foldhash::HashMap::default();
    let mut r_coeffs = Vec::with_capacity(sigs.len());
    let mut rs = Vec::with_capacity(sigs.len());
    for ((msg, sig), (key, a)) in messages.iter().zip(sigs).zip(keys.iter().zip(points)) {
        let (r_bytes, s_bytes) = sig.0.split_at(32);
        let mut r_arr = [0u8; 32];
        r_arr.copy_from_slice(r_bytes);
        let mut s_arr = [0u8; 32];
        s_arr.copy_from_slice(s_bytes);
        let r = CompressedEdwardsY(r_arr)
            .decompress()
            .ok_or(KeyError::BadSignature)?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_arr))
            .ok_or(KeyError::BadSignature)?;
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(r_arr)
                .chain_update(key.0)
                .chain_update(msg)
                .finalize()
                .into(),
        );
        let mut z_bytes = [0u8; 16];
        rng.fill_bytes(&mut z_bytes);
        let z = Scalar::from(u128::from_le_bytes(z_bytes));
        b_coeff -= z * s;
        r_coeffs.push(z);
        rs.push(r);
        a_terms.entry(key.0).or_insert((a, Scalar::ZERO)).1 += z * k;
    }
    let (a_points, a_coeffs): (Vec<EdwardsPoint>, Vec<Scalar>) = a_terms.into_values().unzip();
    let check = EdwardsPoint::vartime_multiscalar_mul(
        std::iter::once(&b_coeff)
            .chain(a_coeffs.iter())
            .chain(r_coeffs.iter()),
        std::iter::once(&ED25519_BASEPOINT_POINT)
            .chain(a_points.iter())
            .chain(rs.iter()),
    );
    if check.mul_by_cofactor().is_identity() {
        Ok(())
    } else {
        Err(KeyError::BadSignature)
    }
}

/// Decompressed public keys (curve points) for [`verify_batch`], bounded: when full it is
/// emptied and refills with the keys in use. Invalid keys are refused and never cached.
mod key_cache {
    use super::{KeyError, PublicKey};
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use foldhash::HashMap;
    use std::sync::{Mutex, OnceLock};

    const CAPACITY: usize = 1 << 16;

    fn cache() -> &'static Mutex<HashMap<[u8; 32], EdwardsPoint>> {
        static CACHE: OnceLock<Mutex<HashMap<[u8; 32], EdwardsPoint>>> = OnceLock::new();
        CACHE.get_or_init(|| Mutex::new(HashMap::default()))
    }

    pub(super) fn points(keys: &[PublicKey]) -> Result<Vec<EdwardsPoint>, KeyError> {
        let mut out: Vec<Option<EdwardsPoint>> = Vec::with_capacity(keys.len());
        {
            let map = cache()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            out.extend(keys.iter().map(|k| map.get(&k.0).copied()));
        }
        let mut fresh = Vec::new();
        for (slot, key) in out.iter_mut().zip(keys) {
            if slot.is_none() {
                let point = CompressedEdwardsY(key.0)
                    .decompress()
                    .ok_or(KeyError::InvalidPoint)?;
                *slot = Some(point);
                fresh.push((key.0, point));
            }
        }
        if !fresh.is_empty() {
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
    fn batch_verification_agrees_with_single_verification() {
        let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let msgs: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; 40]).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
        let signer = |i: usize| &keys[i % keys.len()];
        let mut sigs: Vec<Signature> = (0..msgs.len()).map(|i| signer(i).sign(&msgs[i])).collect();
        let pubs: Vec<PublicKey> = (0..msgs.len()).map(|i| signer(i).public()).collect();
        let singles_ok = |sigs: &[Signature]| {
            (0..msgs.len()).all(|i| pubs[i].verify(&msgs[i], &sigs[i]).is_ok())
        };
        assert_eq!(verify_batch(&refs, &sigs, &pubs), Ok(()));
        assert!(singles_ok(&sigs));

        sigs[5].0[0] ^= 1;
        assert_eq!(
            verify_batch(&refs, &sigs, &pubs),
            Err(KeyError::BadSignature)
        );
        assert!(!singles_ok(&sigs));
        sigs[5] = signer(5).sign(&msgs[5]);

        // A signature by another key fails, singly and in a (cached-key) batch.
        sigs[6] = signer(7).sign(&msgs[6]);
        assert_eq!(
            verify_batch(&refs, &sigs, &pubs),
            Err(KeyError::BadSignature)
        );
        assert_eq!(
            pubs[6].verify(&msgs[6], &sigs[6]),
            Err(KeyError::BadSignature)
        );
        sigs[6] = signer(6).sign(&msgs[6]);
        for _ in 0..2 {
            assert_eq!(pubs[6].verify(&msgs[6], &sigs[6]), Ok(()));
            assert_eq!(verify_batch(&refs, &sigs, &pubs), Ok(()));
        }

        // A key that is not a curve point is refused (and never cached).
        let mut bad = pubs.clone();
        bad[3] = PublicKey(invalid_point());
        assert_eq!(
            verify_batch(&refs, &sigs, &bad),
            Err(KeyError::BadSignature)
        );
        assert_eq!(
            bad[3].verify(&msgs[3], &sigs[3]),
            Err(KeyError::InvalidPoint)
        );
        for _ in 0..2 {
            assert_eq!(
                verify_batch(&refs[3..4], &sigs[3..4], &bad[3..4]),
                Err(KeyError::BadSignature)
            );
        }
    }

    /// A signature by `kp` on `msg` whose R carries a small-order component: valid under ZIP-215
    /// (cofactored), rejected by the cofactorless check.
    fn signature_with_torsion(kp: &Keypair, msg: &[u8], nonce: u8) -> Signature {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::scalar::Scalar;
        use sha2::{Digest, Sha512};
        let a = kp.signing_key().to_scalar();
        let r = Scalar::from_bytes_mod_order([nonce; 32]);
        let big_r =
            (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[1 + (nonce as usize % 7)]).compress();
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(big_r.as_bytes())
                .chain_update(kp.public().0)
                .chain_update(msg)
                .finalize()
                .into(),
        );
        let s = r + k * a;
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(big_r.as_bytes());
        bytes[32..].copy_from_slice(s.as_bytes());
        Signature(bytes)
    }

    /// The reason verification is ZIP-215: a signature whose R carries a small-order component.
    /// The cofactorless check (ed25519-dalek's `verify`) rejects it, while a cofactorless batch
    /// would accept it in about one batch in eight, depending on the batch. Here single and batch
    /// verification give the same answer every time, whatever the batch holds.
    #[test]
    fn a_signature_with_a_small_order_component_gets_one_answer() {
        use ed25519_dalek::Verifier;
        let kp = Keypair::generate();
        let msg = b"torsion".to_vec();
        let odd = signature_with_torsion(&kp, &msg, 42);
        let cofactorless = kp
            .public()
            .verifying_key()
            .unwrap()
            .verify(&msg, &ed25519_dalek::Signature::from_bytes(&odd.0));
        assert!(cofactorless.is_err(), "the cofactorless check rejects it");

        let single = kp.public().verify(&msg, &odd);
        assert_eq!(single, Ok(()));
        let others: Vec<Keypair> = (0..8).map(|_| Keypair::generate()).collect();
        for n in 0..others.len() {
            let mut msgs: Vec<Vec<u8>> = vec![msg.clone()];
            let mut sigs = vec![odd];
            let mut pubs = vec![kp.public()];
            for (i, other) in others.iter().take(n).enumerate() {
                msgs.push(vec![i as u8; 8]);
                sigs.push(other.sign(&msgs[i + 1]));
                pubs.push(other.public());
            }
            let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
            for _ in 0..4 {
                assert_eq!(verify_batch(&refs, &sigs, &pubs), single);
            }
        }
    }

    proptest::proptest! {
        /// Batch verification accepts exactly when every signature verifies on its own, for
        /// batches mixing valid, tampered, misattributed and torsion-carrying signatures over a
        /// few repeated keys (the cached, coalesced path).
        #[test]
        fn batch_accepts_exactly_when_every_single_verification_does(
            kinds in proptest::collection::vec((0u8..5, 0usize..3), 1..10)
        ) {
            let keys: Vec<Keypair> = (0..3).map(|i| Keypair::from_secret([i as u8 + 1; 32])).collect();
            let mut msgs = Vec::new();
            let mut sigs = Vec::new();
            let mut pubs = Vec::new();
            for (i, (kind, who)) in kinds.iter().enumerate() {
                let msg = vec![i as u8, *kind, *who as u8];
                let kp = &keys[*who];
                let sig = match kind {
                    0 | 1 => kp.sign(&msg),
                    2 => {
                        let mut s = kp.sign(&msg);
                        s.0[40] ^= 4;
                        s
                    }
                    3 => keys[(*who + 1) % 3].sign(&msg),
                    _ => signature_with_torsion(kp, &msg, i as u8),
                };
                msgs.push(msg);
                sigs.push(sig);
                pubs.push(kp.public());
            }
            let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
            let all_single = (0..sigs.len()).all(|i| pubs[i].verify(&msgs[i], &sigs[i]).is_ok());
            proptest::prop_assert_eq!(verify_batch(&refs, &sigs, &pubs).is_ok(), all_single);
            proptest::prop_assert_eq!(verify_batch_uncached(&refs, &sigs, &pubs).is_ok(), all_single);
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
