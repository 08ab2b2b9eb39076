//! Local wallets: one JSON file per wallet in `AITBC_HOME/wallets/NAME.json`, mode 0600, holding
//! the ed25519 secret encrypted with a key derived from the password (argon2id, random salt) and
//! sealed with XChaCha20-Poly1305 (random 24-byte nonce). The wallet's name and address are the
//! associated data, so a file renamed or edited by hand does not decrypt.

use aitbc_protocol::{Address, Keypair};
use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the wallet file format written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// argon2id parameters (OWASP's recommended minimum: 19 MiB, 2 passes, 1 lane).
pub const DEFAULT_M_COST_KIB: u32 = 19 * 1024;
pub const DEFAULT_T_COST: u32 = 2;
pub const DEFAULT_P_COST: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error(
        "wallet {0:?} already exists; choose another --name (existing wallets: `aitbc-cli list`)"
    )]
    Exists(String),
    #[error("no wallet named {name:?} in {dir}; see `aitbc-cli list`, or create it with `aitbc-cli create --name {name}`")]
    Unknown { name: String, dir: String },
    #[error("wrong password for wallet {0:?}; nothing was changed")]
    WrongPassword(String),
    #[error("wallet name {0:?} is not allowed: use 1-64 letters, digits, '-', '_' or '.' (not starting with '.')")]
    BadName(String),
    #[error("wallet file {path} is not a valid version-{FORMAT_VERSION} wallet: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("wallet file {path} has format version {version}; this aitbc-cli reads version {FORMAT_VERSION}. Upgrade aitbc-cli")]
    UnsupportedVersion { path: String, version: u32 },
    #[error("the password is empty; give a non-empty password")]
    EmptyPassword,
    #[error("keystore I/O on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            m_cost_kib: DEFAULT_M_COST_KIB,
            t_cost: DEFAULT_T_COST,
            p_cost: DEFAULT_P_COST,
        }
    }
}

/// The on-disk wallet file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalletFile {
    pub version: u32,
    pub name: String,
    pub address: Address,
    pub public_key: String,
    pub kdf: String,
    pub kdf_params: KdfParams,
    /// hex, 16 bytes
    pub salt: String,
    pub cipher: String,
    /// hex, 24 bytes
    pub nonce: String,
    /// hex: the encrypted 32-byte secret with its 16-byte tag
    pub ciphertext: String,
    pub created_at_ms: u64,
}

/// A wallet's public part (what `list` shows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WalletInfo {
    pub name: String,
    pub address: Address,
}

pub struct Keystore {
    dir: PathBuf,
    params: KdfParams,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn derive_key(password: &str, salt: &[u8], p: &KdfParams) -> Result<[u8; 32], KeystoreError> {
    let params = Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    let mut key = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password.as_bytes(), salt, &mut key)
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    Ok(key)
}

fn aad(name: &str, address: &Address) -> Vec<u8> {
    format!("aitbc/wallet/v{FORMAT_VERSION}\0{name}\0{address}").into_bytes()
}

impl Keystore {
    /// The keystore in `home/wallets` with the default KDF cost.
    pub fn open(home: &Path) -> Keystore {
        Keystore {
            dir: home.join("wallets"),
            params: KdfParams::default(),
        }
    }

    /// Same, with explicit KDF parameters for new wallets (existing files keep their own).
    pub fn with_params(home: &Path, params: KdfParams) -> Keystore {
        Keystore {
            dir: home.join("wallets"),
            params,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, name: &str) -> Result<PathBuf, KeystoreError> {
        if !valid_name(name) {
            return Err(KeystoreError::BadName(name.to_string()));
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path_of(name).map(|p| p.exists()).unwrap_or(false)
    }

    /// Creates a new random wallet; refuses an existing name.
    pub fn create(&self, name: &str, password: &str) -> Result<WalletInfo, KeystoreError> {
        self.import(name, password, &Keypair::generate())
    }

    /// Stores `key` under `name`, encrypted with `password`; refuses an existing name.
    pub fn import(
        &self,
        name: &str,
        password: &str,
        key: &Keypair,
    ) -> Result<WalletInfo, KeystoreError> {
        let path = self.path_of(name)?;
        if password.is_empty() {
            return Err(KeystoreError::EmptyPassword);
        }
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(&self.dir))?;
        }
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut dk = derive_key(password, &salt, &self.params)?;
        let cipher = XChaCha20Poly1305::new((&dk).into());
        let address = key.address();
        let secret = key.secret_bytes();
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &secret,
                    aad: &aad(name, &address),
                },
            )
            .map_err(|_| KeystoreError::Kdf("encryption failed".into()))?;
        dk.fill(0);
        let file = WalletFile {
            version: FORMAT_VERSION,
            name: name.to_string(),
            address,
            public_key: key.public().to_hex(),
            kdf: "argon2id".into(),
            kdf_params: self.params.clone(),
            salt: hex::encode(salt),
            cipher: "xchacha20poly1305".into(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(sealed),
            created_at_ms: now_ms(),
        };
        let body =
            serde_json::to_vec_pretty(&file).map_err(|e| KeystoreError::Kdf(e.to_string()))?;
        write_new_private(&path, &body).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeystoreError::Exists(name.to_string()),
            _ => KeystoreError::Io {
                path: path.display().to_string(),
                source: e,
            },
        })?;
        Ok(WalletInfo {
            name: name.to_string(),
            address,
        })
    }

    /// Reads a wallet's public part without the password.
    pub fn info(&self, name: &str) -> Result<WalletInfo, KeystoreError> {
        let f = self.read(name)?;
        Ok(WalletInfo {
            name: f.name,
            address: f.address,
        })
    }

    fn read(&self, name: &str) -> Result<WalletFile, KeystoreError> {
        let path = self.path_of(name)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeystoreError::Unknown {
                    name: name.into(),
                    dir: self.dir.display().to_string(),
                })
            }
            Err(e) => {
                return Err(KeystoreError::Io {
                    path: path.display().to_string(),
                    source: e,
                })
            }
        };
        let corrupt = |reason: String| KeystoreError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let version = v
            .get("version")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| corrupt("no version field".into()))?;
        if version != u64::from(FORMAT_VERSION) {
            return Err(KeystoreError::UnsupportedVersion {
                path: path.display().to_string(),
                version: version as u32,
            });
        }
        let f: WalletFile = serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))?;
        if f.name != name {
            return Err(corrupt(format!("the file names wallet {:?}", f.name)));
        }
        Ok(f)
    }

    /// Decrypts a wallet's key. A wrong password is refused; the file is only read.
    pub fn unlock(&self, name: &str, password: &str) -> Result<Keypair, KeystoreError> {
        let f = self.read(name)?;
        let path = self.path_of(name)?;
        let corrupt = |reason: &str| KeystoreError::Corrupt {
            path: path.display().to_string(),
            reason: reason.into(),
        };
        if f.kdf != "argon2id" || f.cipher != "xchacha20poly1305" {
            return Err(corrupt("unknown kdf or cipher"));
        }
        let salt = hex::decode(&f.salt).map_err(|_| corrupt("salt is not hex"))?;
        let nonce = hex::decode(&f.nonce).map_err(|_| corrupt("nonce is not hex"))?;
        let sealed = hex::decode(&f.ciphertext).map_err(|_| corrupt("ciphertext is not hex"))?;
        if nonce.len() != 24 {
            return Err(corrupt("nonce must be 24 bytes"));
        }
        let mut dk = derive_key(password, &salt, &f.kdf_params)?;
        let cipher = XChaCha20Poly1305::new((&dk).into());
        let plain = cipher.decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &sealed,
                aad: &aad(&f.name, &f.address),
            },
        );
        dk.fill(0);
        let mut plain = plain.map_err(|_| KeystoreError::WrongPassword(name.to_string()))?;
        let secret: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("secret must be 32 bytes"))?;
        plain.fill(0);
        let key = Keypair::from_secret(secret);
        if key.address() != f.address {
            return Err(corrupt(
                "the decrypted key does not match the wallet's address",
            ));
        }
        Ok(key)
    }

    /// All wallets, sorted by name. Unreadable files are skipped.
    pub fn list(&self) -> Result<Vec<WalletInfo>, KeystoreError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(KeystoreError::Io {
                    path: self.dir.display().to_string(),
                    source: e,
                })
            }
        };
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let p = entry.path();
            let Some(name) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if let Ok(info) = self.info(name) {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The wallet whose address is `a`, if any.
    pub fn name_of(&self, a: &Address) -> Option<String> {
        self.list()
            .ok()?
            .into_iter()
            .find(|w| w.address == *a)
            .map(|w| w.name)
    }
}

/// Creates `path` (which must not exist) with mode 0600 and writes `body`, fsynced.
pub fn write_new_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(body)?;
    f.sync_all()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        }
    }

    #[test]
    fn round_trip_recovers_the_same_key() {
        let home = tempfile::tempdir().unwrap();
        let ks = Keystore::with_params(home.path(), fast());
        let k = Keypair::generate();
        let info = ks.import("alice", "pw", &k).unwrap();
        assert_eq!(info.address, k.address());
        let back = ks.unlock("alice", "pw").unwrap();
        assert_eq!(back.secret_bytes(), k.secret_bytes());
        assert_eq!(
            ks.list().unwrap(),
            vec![WalletInfo {
                name: "alice".into(),
                address: k.address()
            }]
        );
        assert_eq!(ks.name_of(&k.address()).as_deref(), Some("alice"));
    }

    #[test]
    fn default_parameters_round_trip() {
        let home = tempfile::tempdir().unwrap();
        let ks = Keystore::open(home.path());
        let info = ks.create("bob", "secret").unwrap();
        assert_eq!(ks.unlock("bob", "secret").unwrap().address(), info.address);
    }

    #[test]
    fn wrong_password_is_refused_and_the_file_is_unchanged() {
        let home = tempfile::tempdir().unwrap();
        let ks = Keystore::with_params(home.path(), fast());
        ks.create("alice", "right").unwrap();
        let path = ks.path_of("alice").unwrap();
        let before = std::fs::read(&path).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(matches!(
            ks.unlock("alice", "wrong"),
            Err(KeystoreError::WrongPassword(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    }

    #[cfg(unix)]
    #[test]
    fn wallet_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let ks = Keystore::with_params(home.path(), fast());
        ks.create("alice", "pw").unwrap();
        let mode = std::fs::metadata(ks.path_of("alice").unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn existing_name_is_refused_and_kept() {
        let home = tempfile::tempdir().unwrap();
        let ks = Keystore::with_params(home.path(), fast());
        let first = ks.create("alice", "pw").unwrap();
        let before = std::fs::read(ks.path_of("alice").unwrap()).unwrap();
        assert!(matches!(
            ks.create("alice", "other"),
            Err(KeystoreError::Exists(_))
        ));
        assert_eq!(std::fs::read(ks.path_of("alice").unwrap()).unwrap(), before);
        assert_eq!(ks.unlock("alice", "pw").unwrap().address(), first.address);
    }

    #[test]
    fn salts_and_nonces_are_random_and_the_secret_is_not_in_the_file() {
        let home = tempfile::tempdir().unwrap();
        let ks = Keystore::with_params(home.path(), fast());
        let k = Keypair::generate();
        ks.import("a", "pw", &k).unwrap();
        ks.import("b", "pw", &k).unwrap();
        let a: WalletFile =
            serde_json::from_slice(&std::fs::read(ks.path_of("a").unwrap()).unwrap()).unwrap();
        let b: WalletFile =
            serde_json::from_slice(&std::fs::read(ks.path_of("b").unwrap()).unwrap()).unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.nonce, b.nonce);
        let text = std::fs::read_to_string(ks.path_of("a").unwrap()).unwrap();
        assert!(!text.contains(&k.secret_hex()));
        assert_eq!(a.version, FORMAT_VERSION);
    }

    #[test]
    fn tampered_or_unknown_files_give_clear_errors() {
        let home = tempfile::tempdir().unwrap();
        let ks = Keystore::with_params(home.path(), fast());
        assert!(matches!(
            ks.unlock("nobody", "pw"),
            Err(KeystoreError::Unknown { .. })
        ));
        assert!(matches!(
            ks.create("../evil", "pw"),
            Err(KeystoreError::BadName(_))
        ));
        assert!(matches!(
            ks.create("x", ""),
            Err(KeystoreError::EmptyPassword)
        ));
        ks.create("alice", "pw").unwrap();
        let path = ks.path_of("alice").unwrap();
        let mut f: WalletFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f.version = 9;
        std::fs::write(&path, serde_json::to_vec(&f).unwrap()).unwrap();
        assert!(matches!(
            ks.unlock("alice", "pw"),
            Err(KeystoreError::UnsupportedVersion { .. })
        ));
    }
}
