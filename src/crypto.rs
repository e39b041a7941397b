//! Personal data at rest: contact details are sealed with an AEAD cipher and found again by a
//! keyed hash of their normalised form, so the database alone reveals neither.
//!
//! One 32-byte master key (config `security.master_key`, or a key file created on first start)
//! derives two independent keys: one for XChaCha20-Poly1305, one for HMAC-SHA256.

use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// A contact detail as stored: ciphertext to show it to staff, keyed hash to match it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedContact {
    pub ciphertext: Vec<u8>,
    pub hmac: [u8; 32],
}

impl fmt::Debug for SealedContact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedContact(..)")
    }
}

/// The keys derived from the master key. Cloning is cheap enough for per-request use.
#[derive(Clone)]
pub struct Keys {
    cipher: XChaCha20Poly1305,
    hmac_key: [u8; KEY_LEN],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("sealed value cannot be opened with this key")]
pub struct OpenError;

impl Keys {
    pub fn from_master(master: &[u8; KEY_LEN]) -> Self {
        let enc_key = derive(master, b"reliefline/contact-encryption/v1");
        let hmac_key = derive(master, b"reliefline/contact-lookup-hmac/v1");
        Self {
            cipher: XChaCha20Poly1305::new(&enc_key.into()),
            hmac_key,
        }
    }

    /// Parse a master key written as 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| "must be 64 hexadecimal digits (32 bytes)".to_owned())?;
        let master: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| "must be 64 hexadecimal digits (32 bytes)".to_owned())?;
        Ok(Self::from_master(&master))
    }

    /// Read the key file, creating it with a fresh random key (mode 0600) when absent, so the
    /// embedded default keeps reading its own data across restarts with no set-up.
    pub fn load_or_create_file(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading key file {}", path.display()))?;
            return Self::from_hex(&text)
                .map_err(|why| anyhow::anyhow!("key file {}: {why}", path.display()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating folder {}", dir.display()))?;
        }
        let mut master = [0u8; KEY_LEN];
        rand::fill(&mut master);
        write_private(path, &hex::encode(master))
            .with_context(|| format!("writing key file {}", path.display()))?;
        tracing::warn!(
            path = %path.display(),
            "created a new master key file; back it up, the stored contact details cannot be read without it"
        );
        Ok(Self::from_master(&master))
    }

    /// Encrypt with a fresh random nonce; the output is `nonce || ciphertext+tag`.
    pub fn seal(&self, plaintext: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let nonce = XNonce::from(nonce);
        // Encryption only fails for inputs beyond 256 GiB.
        let sealed = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<String, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| OpenError)?;
        let plain = self.cipher.decrypt(&nonce, body).map_err(|_| OpenError)?;
        String::from_utf8(plain).map_err(|_| OpenError)
    }

    /// Keyed hash of an already normalised value (E.164 phone, lower-cased e-mail, …).
    pub fn hash(&self, normalised: &str) -> [u8; 32] {
        let mut mac = mac(&self.hmac_key);
        mac.update(normalised.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// An unguessable token bound to one record and one purpose (an unsubscribe link, a
    /// confirmation link), recomputed on demand instead of stored: 128 bits of the keyed hash of
    /// `purpose` and `id`, as 32 lower-case hexadecimal digits. Check a presented token with
    /// [`Keys::token_matches`].
    pub fn token(&self, purpose: &str, id: uuid::Uuid) -> String {
        let digest = self.hash(&format!("reliefline/token/{purpose}/v1:{id}"));
        hex::encode(&digest[..16])
    }

    /// Whether `presented` is the token for `purpose` and `id`, compared in constant time.
    pub fn token_matches(&self, purpose: &str, id: uuid::Uuid, presented: &str) -> bool {
        let expected = self.token(purpose, id);
        presented.len() == expected.len()
            && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
    }

    pub fn seal_contact(&self, normalised: &str) -> SealedContact {
        SealedContact {
            ciphertext: self.seal(normalised),
            hmac: self.hash(normalised),
        }
    }
}

/// HMAC-SHA256 keyed with `key`.
fn mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

fn derive(master: &[u8; KEY_LEN], label: &[u8]) -> [u8; KEY_LEN] {
    let mut mac = mac(master);
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Compare two keyed hashes without leaking, through timing, how many bytes matched.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_master(&[7u8; 32])
    }

    #[test]
    fn tokens_are_bound_to_purpose_and_record() {
        let k = keys();
        let id = uuid::Uuid::now_v7();
        let other = uuid::Uuid::now_v7();
        let token = k.token("unsubscribe", id);
        assert_eq!(token.len(), 32);
        assert_eq!(token, k.token("unsubscribe", id), "recomputable");
        assert!(k.token_matches("unsubscribe", id, &token));
        assert!(!k.token_matches("confirm", id, &token));
        assert!(!k.token_matches("unsubscribe", other, &token));
        assert!(!k.token_matches("unsubscribe", id, &token[..31]));
        assert_ne!(
            token,
            Keys::from_master(&[8u8; 32]).token("unsubscribe", id)
        );
    }

    #[test]
    fn seal_and_open_round_trip_with_fresh_nonces() {
        let k = keys();
        let a = k.seal("+821012345678");
        let b = k.seal("+821012345678");
        assert_ne!(a, b, "nonces must differ");
        assert_eq!(k.open(&a).unwrap(), "+821012345678");
        assert!(!String::from_utf8_lossy(&a).contains("1012345678"));
    }

    #[test]
    fn tampering_and_wrong_keys_are_detected() {
        let k = keys();
        let mut sealed = k.seal("hong@example.kr");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(k.open(&sealed).is_err());
        let other = Keys::from_master(&[8u8; 32]);
        assert!(other.open(&k.seal("x")).is_err());
        assert!(k.open(&[1, 2, 3]).is_err());
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let k = keys();
        assert_eq!(k.hash("a@b.kr"), k.hash("a@b.kr"));
        assert_ne!(
            k.hash("a@b.kr"),
            Keys::from_master(&[8u8; 32]).hash("a@b.kr")
        );
        assert!(hashes_equal(&k.hash("x"), &k.hash("x")));
        assert!(!hashes_equal(&k.hash("x"), &k.hash("y")));
    }

    #[test]
    fn hex_keys_are_validated() {
        assert!(Keys::from_hex(&"ab".repeat(32)).is_ok());
        assert!(Keys::from_hex("abcd").is_err());
        assert!(Keys::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let first = Keys::load_or_create_file(&path).unwrap();
        let second = Keys::load_or_create_file(&path).unwrap();
        assert_eq!(second.open(&first.seal("kept")).unwrap(), "kept");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
