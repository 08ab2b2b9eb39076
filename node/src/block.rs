//! How our blocks sit inside HotStuff blocks: datum 0 is the borsh [`BlockHeader`], every other
//! datum one borsh [`SignedTransaction`].

use aitbc_protocol::model::BlockHeader;
use aitbc_protocol::tx::SignedTransaction;
use aitbc_protocol::Hash;
use hotstuff_rs::types::data_types::{CryptoHash, Data, Datum};

#[derive(Debug, thiserror::Error)]
pub enum BlockDecodeError {
    #[error("block has no header datum")]
    NoHeader,
    #[error("block header does not decode: {0}")]
    Header(String),
    #[error("transaction {index} does not decode: {reason}")]
    Transaction { index: usize, reason: String },
}

pub fn encode(header: &BlockHeader, txs: &[SignedTransaction]) -> (Data, CryptoHash) {
    encode_with_tx_bytes(header, txs.iter().map(|t| t.encode()).collect())
}

/// [`encode`] from transactions already encoded (each `SignedTransaction::encode`).
pub fn encode_with_tx_bytes(header: &BlockHeader, txs: Vec<Vec<u8>>) -> (Data, CryptoHash) {
    let header_bytes = borsh::to_vec(header).expect("encode header");
    let hash = data_hash(&header_bytes);
    let mut data = Vec::with_capacity(txs.len() + 1);
    data.push(Datum::new(header_bytes));
    data.extend(txs.into_iter().map(Datum::new));
    (Data::new(data), hash)
}

/// The data hash commits to the header, which commits to the transactions through `tx_root`.
pub fn data_hash(header_bytes: &[u8]) -> CryptoHash {
    CryptoHash::new(Hash::domain("aitbc/block-data/v1", &[header_bytes]).0)
}

pub fn decode_header(data: &Data) -> Result<BlockHeader, BlockDecodeError> {
    let first = data.iter().next().ok_or(BlockDecodeError::NoHeader)?;
    borsh::from_slice(first.bytes()).map_err(|e| BlockDecodeError::Header(e.to_string()))
}

pub fn decode(data: &Data) -> Result<(BlockHeader, Vec<SignedTransaction>), BlockDecodeError> {
    let header = decode_header(data)?;
    let txs = data
        .iter()
        .skip(1)
        .enumerate()
        .map(|(index, d)| {
            SignedTransaction::decode(d.bytes()).map_err(|e| BlockDecodeError::Transaction {
                index,
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((header, txs))
}

/// [`decode`], also returning each transaction's hash, taken from the bytes it arrived in. A
/// transaction datum must be the canonical encoding of what it decodes to (so that its hash is
/// `tx.hash()` on every node and for every client); anything else is a decode error.
pub fn decode_with_hashes(
    data: &Data,
) -> Result<(BlockHeader, Vec<SignedTransaction>, Vec<Hash>), BlockDecodeError> {
    let (header, txs) = decode(data)?;
    let mut hashes = Vec::with_capacity(txs.len());
    for (index, (tx, datum)) in txs.iter().zip(data.iter().skip(1)).enumerate() {
        if tx.encode() != *datum.bytes() {
            return Err(BlockDecodeError::Transaction {
                index,
                reason: "not in canonical encoding".into(),
            });
        }
        hashes.push(SignedTransaction::hash_of_encoding(datum.bytes()));
    }
    Ok((header, txs, hashes))
}

pub fn header_datum_hash(data: &Data) -> Option<CryptoHash> {
    data.iter().next().map(|d| data_hash(d.bytes()))
}

/// Whether the transaction datums are exactly those the header's `tx_root` commits to (hashed
/// from their bytes, which are their canonical encoding).
pub fn transactions_match_header(data: &Data) -> bool {
    let Ok(header) = decode_header(data) else {
        return false;
    };
    let hashes: Vec<Hash> = data
        .iter()
        .skip(1)
        .map(|d| SignedTransaction::hash_of_encoding(d.bytes()))
        .collect();
    hashes.len() == header.tx_count as usize
        && aitbc_protocol::hash::merkle_root(&hashes) == header.tx_root
}

/// Encoded bytes of a block's transaction datums (everything after the header).
pub fn transaction_bytes(data: &Data) -> usize {
    data.iter().skip(1).map(|d| d.bytes().len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::tx::{Action, Transaction};
    use aitbc_protocol::{Amount, Keypair};

    fn transfer(k: &Keypair, nonce: u64) -> SignedTransaction {
        Transaction {
            chain_id: "test".into(),
            sender: k.public(),
            nonce,
            fee: Amount(1),
            action: Action::Transfer {
                to: Keypair::generate().address(),
                amount: Amount(5),
            },
        }
        .sign(k)
    }

    fn header(tx_count: u32) -> BlockHeader {
        BlockHeader {
            chain_id: "test".into(),
            height: 1,
            prev_hash: Hash::ZERO,
            time_ms: 0,
            proposer: Keypair::generate().public(),
            tx_root: Hash::ZERO,
            state_root: Hash::ZERO,
            tx_count,
        }
    }

    #[test]
    fn decoding_returns_each_transactions_own_hash() {
        let k = Keypair::generate();
        let txs: Vec<_> = (0..3).map(|n| transfer(&k, n)).collect();
        let hd = header(3);
        let (data, _) = encode(&hd, &txs);
        let (h, decoded, hashes) = decode_with_hashes(&data).unwrap();
        assert_eq!(h, hd);
        assert_eq!(decoded, txs);
        assert_eq!(hashes, txs.iter().map(|t| t.hash()).collect::<Vec<_>>());
    }

    #[test]
    fn a_transaction_datum_with_extra_bytes_is_refused() {
        let k = Keypair::generate();
        let mut bytes = transfer(&k, 0).encode();
        bytes.push(0);
        let (data, _) = encode(&header(1), &[]);
        let mut datums: Vec<Datum> = data.iter().cloned().collect();
        datums.push(Datum::new(bytes));
        let err = decode_with_hashes(&Data::new(datums)).unwrap_err();
        assert!(matches!(
            err,
            BlockDecodeError::Transaction { index: 0, .. }
        ));
    }
}
