//! The peer handshake, as pure functions over bytes.
//!
//! 1. The dialer sends HELLO: its key (the envelope's sender), a fresh 32-byte nonce and the
//!    chain id. Unsigned: it proves nothing and grants nothing, so replaying it gains nothing.
//! 2. The acceptor refuses a key that is not a validator or an allowed peer right there, before
//!    any signature check. Otherwise it answers with its own HELLO (key, fresh nonce, chain id),
//!    signed over [`proof_bytes`] for the dialer's nonce: the dialer learns the acceptor holds
//!    its key now.
//! 3. The dialer checks the acceptor's key and signature and sends AUTH, its signature over
//!    [`proof_bytes`] for the acceptor's nonce. The acceptor registers the connection only then.
//!
//! Each proof binds both keys, both nonces, the chain and the side, so a signature from one
//! handshake is worthless in another (replayed, reflected back, or relayed to a third node).

/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;
const DOMAIN: &[u8] = b"aitbc/peer-handshake/v1";

/// Which end of the connection signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Dialer,
    Acceptor,
}

/// A HELLO's payload: the sender's fresh nonce and the chain it wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub nonce: [u8; NONCE_LEN],
    pub chain_id: String,
}

impl Hello {
    pub fn fresh(chain_id: &str) -> Hello {
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        Hello {
            nonce,
            chain_id: chain_id.to_string(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.nonce.to_vec();
        b.extend_from_slice(self.chain_id.as_bytes());
        b
    }

    pub fn decode(payload: &[u8]) -> Option<Hello> {
        if payload.len() < NONCE_LEN || payload.len() > NONCE_LEN + 256 {
            return None;
        }
        let (nonce, chain) = payload.split_at(NONCE_LEN);
        Some(Hello {
            nonce: nonce.try_into().ok()?,
            chain_id: std::str::from_utf8(chain).ok()?.to_string(),
        })
    }
}

/// What `signer` signs to prove its key to `peer` in this handshake: it answers the peer's
/// nonce and names its own.
pub fn proof_bytes(
    side: Side,
    chain_id: &str,
    signer: &[u8; 32],
    peer: &[u8; 32],
    peer_nonce: &[u8; NONCE_LEN],
    own_nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(DOMAIN.len() + 200 + chain_id.len());
    b.extend_from_slice(DOMAIN);
    b.push(0);
    b.push(match side {
        Side::Dialer => 1,
        Side::Acceptor => 2,
    });
    b.extend_from_slice(&(chain_id.len() as u32).to_le_bytes());
    b.extend_from_slice(chain_id.as_bytes());
    b.extend_from_slice(signer);
    b.extend_from_slice(peer);
    b.extend_from_slice(peer_nonce);
    b.extend_from_slice(own_nonce);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_refuses_junk() {
        let h = Hello::fresh("aitbc-test");
        assert_eq!(Hello::decode(&h.encode()), Some(h.clone()));
        assert_ne!(
            Hello::fresh("aitbc-test").nonce,
            h.nonce,
            "nonces are fresh"
        );
        assert_eq!(
            Hello::decode(&[0; 8]),
            None,
            "too short (the old timestamp HELLO)"
        );
        assert_eq!(Hello::decode(&vec![0; NONCE_LEN + 1000]), None);
        let mut bad = h.nonce.to_vec();
        bad.push(0xff);
        assert_eq!(Hello::decode(&bad), None, "chain id must be UTF-8");
    }

    #[test]
    fn proofs_differ_by_side_chain_keys_and_nonces() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let (n1, n2) = ([3u8; NONCE_LEN], [4u8; NONCE_LEN]);
        let base = proof_bytes(Side::Dialer, "c", &a, &b, &n1, &n2);
        for other in [
            proof_bytes(Side::Acceptor, "c", &a, &b, &n1, &n2),
            proof_bytes(Side::Dialer, "d", &a, &b, &n1, &n2),
            proof_bytes(Side::Dialer, "c", &b, &a, &n1, &n2),
            proof_bytes(Side::Dialer, "c", &a, &b, &n2, &n1),
            proof_bytes(Side::Dialer, "c", &a, &[9; 32], &n1, &n2),
        ] {
            assert_ne!(base, other);
        }
    }
}
