//! Types that store updates to the App-mutable states.

use std::{
    collections::{btree_map, btree_set, hash_map, hash_set, BTreeMap, BTreeSet, HashMap, HashSet},
    hash::Hash,
};

use borsh::{BorshDeserialize, BorshSerialize};

use super::{
    crypto_primitives::{SignatureError, VerifyingKey},
    data_types::Power,
};

/// (AITBC patch) A fast, randomly seeded hasher for update sets (SipHash showed up in profiles of
/// blocks with ~20,000 updates); the serialized form is unchanged, borsh writes entries in key
/// order.
type FastHash = foldhash::fast::RandomState;

/// Generic set of key-value updates that are committed when a particular block is committed.
///
/// This generic type currently forms the basis of two concrete types: [`AppStateUpdates`] and
/// [`ValidatorSetUpdates`].
///
/// # Uniqueness of Key between `inserts` and `deletes`
#[derive(Clone, BorshSerialize, BorshDeserialize)]
pub struct UpdateSet<K: Eq + Hash, V: Eq + Hash> {
    /// Insertion updates that will be committed when a `Block` is committed.
    inserts: HashMap<K, V, FastHash>,

    /// Deletion updates that will be committed when a `Block` is committed.
    deletes: HashSet<K, FastHash>,
}

impl<K: Eq + Hash, V: Eq + Hash> UpdateSet<K, V>
where
    K:,
{
    /// Create a new `UpdateSet` with empty `inserts` and `deletes`.
    pub fn new() -> Self {
        Self {
            inserts: HashMap::default(),
            deletes: HashSet::default(),
        }
    }

    /// Schedule the insertion of a `key`-`value` pair when the block that corresponds to this `UpdateSet`
    /// gets committed.
    ///
    /// This cancels the deletion of `key`, if it has been scheduled using [`delete`](Self::delete).
    pub fn insert(&mut self, key: K, value: V) {
        self.deletes.remove(&key);
        self.inserts.insert(key, value);
    }

    /// Schedule the deletion of `key` when the block that corresponds to this `UpdateSet` gets committed.
    ///
    /// This cancels the insertion of `key`, if it has been scheduled using [`insert`](Self::insert).
    pub fn delete(&mut self, key: K) {
        self.inserts.remove(&key);
        self.deletes.insert(key);
    }

    /// Get whether the `UpdateSet` is scheduled to insert a value to `key` when the block that corresponds
    /// to this `UpdateSet` gets committed, and if so, returns a reference to that value.
    pub fn get_insert<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.inserts.get(key)
    }

    /// Check whether the `UpdateSet` is scheduled to delete `key` when the block that corresponds to this
    /// `UpdateSet` gets committed.
    pub fn contains_delete<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.deletes.contains(key)
    }

    /// Get an iterator over all of the key-value pairs that this `UpdateSet` will insert.
    pub fn inserts(&self) -> hash_map::Iter<K, V> {
        self.inserts.iter()
    }

    /// Get an iterator over all of the keys that this `UpdateSet` will delete.
    pub fn deletes(&self) -> hash_set::Iter<K> {
        self.deletes.iter()
    }
}

/// Set of key-value updates committed to the App State when a block is committed.
///
/// (AITBC patch) Kept in key order (B-trees) instead of hash maps: an App that produces its
/// writes in key order builds it in linear time ([`from_sorted`](Self::from_sorted)), it
/// serializes without sorting, and it is committed in the order a sorted store inserts fastest.
/// Its borsh encoding is byte-for-byte the one of the former `UpdateSet<Vec<u8>, Vec<u8>>`
/// (borsh writes hash map entries in key order too), so stored blocks read back unchanged.
#[derive(Clone, Default, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct AppStateUpdates {
    inserts: BTreeMap<Vec<u8>, Vec<u8>>,
    deletes: BTreeSet<Vec<u8>>,
}

impl AppStateUpdates {
    /// Create empty `AppStateUpdates`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Updates from writes given in key order (`None` deletes): built in linear time. Keys out of
    /// order are still placed correctly, only more slowly.
    pub fn from_sorted(writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>) -> Self {
        let mut inserts = Vec::new();
        let mut deletes = Vec::new();
        for (key, value) in writes {
            match value {
                Some(value) => inserts.push((key, value)),
                None => deletes.push(key),
            }
        }
        let updates = Self {
            inserts: inserts.into_iter().collect(),
            deletes: deletes.into_iter().collect(),
        };
        debug_assert!(updates.inserts.keys().all(|k| !updates.deletes.contains(k)));
        updates
    }

    /// Schedule the insertion of `key` = `value`; cancels a scheduled deletion of `key`.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.deletes.remove(&key);
        self.inserts.insert(key, value);
    }

    /// Schedule the deletion of `key`; cancels a scheduled insertion of `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.inserts.remove(&key);
        self.deletes.insert(key);
    }

    /// The value these updates insert at `key`, if they insert one.
    pub fn get_insert(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.inserts.get(key)
    }

    /// Whether these updates delete `key`.
    pub fn contains_delete(&self, key: &[u8]) -> bool {
        self.deletes.contains(key)
    }

    /// The key-value pairs these updates insert, in key order.
    pub fn inserts(&self) -> btree_map::Iter<'_, Vec<u8>, Vec<u8>> {
        self.inserts.iter()
    }

    /// The keys these updates delete, in key order.
    pub fn deletes(&self) -> btree_set::Iter<'_, Vec<u8>> {
        self.deletes.iter()
    }
}

/// Set of updates to the validator that are applied when a block is committed.
pub type ValidatorSetUpdates = UpdateSet<VerifyingKey, Power>;

/// Intermediate representation of [ValidatorSetUpdates] for safe serialization and deserialization.
///
/// ## Rationale
///
/// See the [related section](super::validator_set::ValidatorSetBytes#rationale) about `ValidatorSetBytes`.
pub type ValidatorSetUpdatesBytes = UpdateSet<VerifyingKeyBytes, Power>;

/// Internal type used for serializing and deserializing values of type [`VerifyingKey`].
pub type VerifyingKeyBytes = [u8; 32];

impl TryFrom<ValidatorSetUpdatesBytes> for ValidatorSetUpdates {
    type Error = SignatureError;

    fn try_from(vsu_bytes: ValidatorSetUpdatesBytes) -> Result<Self, Self::Error> {
        Ok(ValidatorSetUpdates {
            inserts: vsu_bytes
                .inserts()
                .map(|(vk_bytes, &power)| VerifyingKey::from_bytes(vk_bytes).map(|vk| (vk, power)))
                .collect::<Result<HashMap<VerifyingKey, Power, FastHash>, Self::Error>>()?,

            deletes: vsu_bytes
                .deletes()
                .map(|vk_bytes| VerifyingKey::from_bytes(vk_bytes))
                .collect::<Result<HashSet<VerifyingKey, FastHash>, Self::Error>>()?,
        })
    }
}

impl From<&ValidatorSetUpdates> for ValidatorSetUpdatesBytes {
    fn from(vsu: &ValidatorSetUpdates) -> Self {
        ValidatorSetUpdatesBytes {
            inserts: vsu.inserts().map(|(k, v)| (k.to_bytes(), *v)).collect(),

            deletes: vsu.deletes().map(|k| k.to_bytes()).collect(),
        }
    }
}

#[cfg(test)]
mod aitbc_tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn app_state_updates_encode_like_the_former_hash_map_update_set() {
        let mut old: UpdateSet<Vec<u8>, Vec<u8>> = UpdateSet::new();
        let mut new = AppStateUpdates::new();
        for (k, v) in [kv("b", "2"), kv("a", "1"), kv("c", "3"), kv("aa", "x")] {
            old.insert(k.clone(), v.clone());
            new.insert(k, v);
        }
        for k in ["z", "d"] {
            old.delete(k.as_bytes().to_vec());
            new.delete(k.as_bytes().to_vec());
        }
        let old_bytes = old.try_to_vec().unwrap();
        assert_eq!(new.try_to_vec().unwrap(), old_bytes);
        assert_eq!(AppStateUpdates::try_from_slice(&old_bytes).unwrap(), new);
    }

    #[test]
    fn from_sorted_matches_inserting_one_by_one() {
        let writes = vec![
            (b"a".to_vec(), Some(b"1".to_vec())),
            (b"b".to_vec(), None),
            (b"c".to_vec(), Some(b"3".to_vec())),
        ];
        let mut expected = AppStateUpdates::new();
        expected.insert(b"a".to_vec(), b"1".to_vec());
        expected.delete(b"b".to_vec());
        expected.insert(b"c".to_vec(), b"3".to_vec());
        assert_eq!(AppStateUpdates::from_sorted(writes.clone()), expected);
        // Out of order is still correct.
        let mut reversed = writes;
        reversed.reverse();
        assert_eq!(AppStateUpdates::from_sorted(reversed), expected);
        assert_eq!(expected.get_insert(b"c"), Some(&b"3".to_vec()));
        assert!(expected.contains_delete(b"b"));
        let keys: Vec<_> = expected.inserts().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
    }
}
