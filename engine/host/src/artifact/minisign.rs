//! minisign's key and signature files, so that a Corral signature can be checked with the
//! `minisign` tool itself (see the README's "Signed workflows").
//!
//! Formats (every binary line is standard base64; integers little-endian):
//! - public key: `untrusted comment: …` then `"Ed" ‖ key id (8) ‖ ed25519 public key (32)`;
//! - secret key: `untrusted comment: …` then `"Ed" ‖ kdf "\0\0" (unencrypted) ‖ "B2" ‖ salt (32)
//!   ‖ opslimit (8) ‖ memlimit (8) ‖ key id (8) ‖ seed ‖ public key (64) ‖ checksum (32)`, the
//!   checksum being BLAKE2b-256 of `"Ed" ‖ key id ‖ seed ‖ public key`;
//! - signature: `untrusted comment: …`, `"ED" ‖ key id ‖ ed25519(BLAKE2b-512(message)) (64)`,
//!   `trusted comment: TEXT`, and the global signature `ed25519(signature ‖ TEXT)`.
//!
//! Only prehashed (`ED`) signatures are made or accepted: a legacy `Ed` signature of a file that
//! happens to be some other file's BLAKE2b-512 would otherwise verify as that other file's.
//! Ed25519 signing is deterministic, so the same key and message give the same bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// The 8 bytes that name a key in its files and in every signature it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    /// As minisign prints it: the little-endian number, in upper-case hex.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// Why a key or signature file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a minisign {what}: {reason}")]
pub struct FormatError {
    what: &'static str,
    reason: String,
}

fn format_error(what: &'static str, reason: impl Into<String>) -> FormatError {
    FormatError {
        what,
        reason: reason.into(),
    }
}

/// A verifying key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Its key id.
    pub id: KeyId,
    key: [u8; 32],
}

impl PublicKey {
    /// Reads a `.pub` file's text, or its bare base64 line (what `minisign -P` takes).
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        const WHAT: &str = "public key";
        let bytes = key_line(WHAT, text)?;
        if bytes.len() != 42 || &bytes[..2] != b"Ed" {
            return Err(format_error(
                WHAT,
                "the key line is not an Ed25519 public key",
            ));
        }
        Ok(PublicKey {
            id: KeyId(bytes[2..10].try_into().expect("8 bytes")),
            key: bytes[10..42].try_into().expect("32 bytes"),
        })
    }

    /// The key line, base64.
    pub fn base64(&self) -> String {
        let mut bytes = b"Ed".to_vec();
        bytes.extend_from_slice(&self.id.0);
        bytes.extend_from_slice(&self.key);
        BASE64.encode(bytes)
    }

    /// The `.pub` file.
    pub fn to_file(&self) -> String {
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.id,
            self.base64()
        )
    }

    fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.key)
            .verify(message, signature)
            .is_ok()
    }
}

/// A signing key. Kept unencrypted (minisign's `-W`): protect the file as you would an SSH key.
pub struct SecretKey {
    id: KeyId,
    seed: [u8; 32],
    public: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

impl SecretKey {
    /// A new key from the system's random numbers.
    pub fn generate() -> Result<Self, FormatError> {
        use ring::rand::SecureRandom as _;
        let random = ring::rand::SystemRandom::new();
        let mut seed = [0u8; 32];
        let mut id = [0u8; 8];
        random
            .fill(&mut seed)
            .and_then(|()| random.fill(&mut id))
            .map_err(|_| format_error("secret key", "the system has no random numbers"))?;
        Ok(Self::from_seed(KeyId(id), seed))
    }

    /// The key with this id and seed.
    pub fn from_seed(id: KeyId, seed: [u8; 32]) -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).expect("any 32 bytes are a seed");
        let public = pair.public_key().as_ref().try_into().expect("32 bytes");
        SecretKey { id, seed, public }
    }

    /// Its key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Its verifying key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            id: self.id,
            key: self.public,
        }
    }

    /// Reads a secret key file (unencrypted; minisign's own unencrypted keys read too).
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        const WHAT: &str = "secret key";
        let bytes = key_line(WHAT, text)?;
        if bytes.len() != 158 || &bytes[..2] != b"Ed" || &bytes[4..6] != b"B2" {
            return Err(format_error(
                WHAT,
                "the key line is not an Ed25519 secret key",
            ));
        }
        if bytes[2..4] != [0, 0] {
            return Err(format_error(
                WHAT,
                "it is encrypted with a password, which Corral does not read; remove the password with `minisign -C -s KEY` (an empty password)",
            ));
        }
        let id = KeyId(bytes[54..62].try_into().expect("8 bytes"));
        let key = SecretKey::from_seed(id, bytes[62..94].try_into().expect("32 bytes"));
        // minisign 0.11 leaves the checksum of an unencrypted (`-W`) key zero.
        let checksum = &bytes[126..158];
        if bytes[94..126] != key.public || (checksum != key.checksum() && checksum != [0; 32]) {
            return Err(format_error(
                WHAT,
                "its checksum does not match (a damaged file)",
            ));
        }
        Ok(key)
    }

    /// The secret key file.
    pub fn to_file(&self) -> String {
        let mut bytes = b"Ed\0\0B2".to_vec();
        bytes.extend_from_slice(&[0; 48]); // no salt, opslimit or memlimit: no password
        bytes.extend_from_slice(&self.id.0);
        bytes.extend_from_slice(&self.seed);
        bytes.extend_from_slice(&self.public);
        bytes.extend_from_slice(&self.checksum());
        format!(
            "untrusted comment: minisign secret key {} (unencrypted)\n{}\n",
            self.id,
            BASE64.encode(bytes)
        )
    }

    fn checksum(&self) -> [u8; 32] {
        let mut hash = Blake2b::<U32>::new();
        hash.update(b"Ed");
        hash.update(self.id.0);
        hash.update(self.seed);
        hash.update(self.public);
        hash.finalize().into()
    }

    fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        let pair = Ed25519KeyPair::from_seed_and_public_key(&self.seed, &self.public)
            .expect("the public key was derived from the seed");
        pair.sign(message).as_ref().try_into().expect("64 bytes")
    }

    /// Signs `message` (prehashed), with `trusted_comment` (one line) under the global signature.
    pub fn sign(&self, message: &[u8], trusted_comment: &str) -> Signature {
        let signature = self.sign_bytes(&prehash(message));
        let trusted_comment = trusted_comment.replace(['\r', '\n'], " ");
        let mut global = signature.to_vec();
        global.extend_from_slice(trusted_comment.as_bytes());
        Signature {
            id: self.id,
            signature,
            global: self.sign_bytes(&global),
            trusted_comment,
        }
    }
}

/// BLAKE2b-512 of `message`: what a prehashed signature signs.
pub fn prehash(message: &[u8]) -> [u8; 64] {
    Blake2b512::digest(message).into()
}

/// A signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The id of the key that made it.
    pub id: KeyId,
    signature: [u8; 64],
    /// The trusted comment.
    pub trusted_comment: String,
    global: [u8; 64],
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature was made by another key.
    #[error("it was made by key {signer}, not by key {key}")]
    OtherKey {
        /// Who signed.
        signer: KeyId,
        /// The key it was checked against.
        key: KeyId,
    },
    /// The key matches but the message (or the trusted comment) was changed.
    #[error("the signature by key {0} does not match the signed bytes")]
    Mismatch(KeyId),
}

impl Signature {
    /// Reads a `.minisig` file's text.
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        const WHAT: &str = "signature";
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        let [untrusted, signature, trusted, global, ..] = lines.as_slice() else {
            return Err(format_error(WHAT, "it has fewer than 4 lines"));
        };
        if !untrusted.starts_with("untrusted comment:") {
            return Err(format_error(
                WHAT,
                "the first line is not an untrusted comment",
            ));
        }
        let trusted_comment = trusted
            .strip_prefix("trusted comment: ")
            .ok_or_else(|| format_error(WHAT, "the third line is not a trusted comment"))?;
        let bytes = decode(WHAT, signature)?;
        if bytes.len() != 74 {
            return Err(format_error(
                WHAT,
                "the signature line has the wrong length",
            ));
        }
        if &bytes[..2] != b"ED" {
            return Err(format_error(
                WHAT,
                "it is not a prehashed (ED) signature; sign without minisign's legacy -l",
            ));
        }
        let global = decode(WHAT, global)?;
        Ok(Signature {
            id: KeyId(bytes[2..10].try_into().expect("8 bytes")),
            signature: bytes[10..74].try_into().expect("64 bytes"),
            trusted_comment: trusted_comment.to_string(),
            global: global
                .try_into()
                .map_err(|_| format_error(WHAT, "the global signature has the wrong length"))?,
        })
    }

    /// The `.minisig` file.
    pub fn to_file(&self) -> String {
        let mut bytes = b"ED".to_vec();
        bytes.extend_from_slice(&self.id.0);
        bytes.extend_from_slice(&self.signature);
        format!(
            "untrusted comment: signature from minisign secret key {}\n{}\ntrusted comment: {}\n{}\n",
            self.id,
            BASE64.encode(bytes),
            self.trusted_comment,
            BASE64.encode(self.global)
        )
    }

    /// Checks the signature of the message whose [`prehash`] is `digest`, and its trusted
    /// comment, against `key`.
    pub fn verify_prehashed(&self, key: &PublicKey, digest: &[u8; 64]) -> Result<(), VerifyError> {
        if self.id != key.id {
            return Err(VerifyError::OtherKey {
                signer: self.id,
                key: key.id,
            });
        }
        let mut global = self.signature.to_vec();
        global.extend_from_slice(self.trusted_comment.as_bytes());
        if key.verifies(digest, &self.signature) && key.verifies(&global, &self.global) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch(self.id))
        }
    }
}

/// The decoded key line of a key file's text (the first line that is not its untrusted comment).
fn key_line(what: &'static str, text: &str) -> Result<Vec<u8>, FormatError> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("untrusted comment:"))
        .ok_or_else(|| format_error(what, "it has no key line"))?;
    decode(what, line)
}

fn decode(what: &'static str, line: &str) -> Result<Vec<u8>, FormatError> {
    BASE64
        .decode(line.trim())
        .map_err(|error| format_error(what, format!("bad base64 ({error})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_seed(KeyId(*b"corral01"), [7; 32])
    }

    #[test]
    fn keys_round_trip_through_their_files() {
        let key = key();
        let again = SecretKey::parse(&key.to_file()).unwrap();
        assert_eq!(again.public(), key.public());
        let public = PublicKey::parse(&key.public().to_file()).unwrap();
        assert_eq!(public, key.public());
        assert_eq!(PublicKey::parse(&public.base64()).unwrap(), public);
        assert_eq!(key.id().to_string(), "31306C6172726F63");
        let fresh = SecretKey::generate().unwrap();
        assert_ne!(fresh.public(), key.public());
    }

    #[test]
    fn a_damaged_or_encrypted_secret_key_is_refused() {
        let text = key().to_file();
        let line = text.lines().nth(1).unwrap();
        let mut bytes = BASE64.decode(line).unwrap();
        bytes[70] ^= 1;
        let damaged = format!("untrusted comment: x\n{}\n", BASE64.encode(&bytes));
        let error = SecretKey::parse(&damaged).unwrap_err().to_string();
        assert!(error.contains("checksum"), "{error}");
        bytes[70] ^= 1;
        bytes[126..158].fill(0);
        let zero = format!("untrusted comment: x\n{}\n", BASE64.encode(&bytes));
        assert_eq!(SecretKey::parse(&zero).unwrap().public(), key().public());
        bytes[2..4].copy_from_slice(b"Sc");
        let encrypted = format!("untrusted comment: x\n{}\n", BASE64.encode(&bytes));
        let error = SecretKey::parse(&encrypted).unwrap_err().to_string();
        assert!(error.contains("minisign -C"), "{error}");
    }

    #[test]
    fn signatures_are_deterministic_and_verify() {
        let key = key();
        let first = key.sign(b"message", "corral test");
        assert_eq!(
            first.to_file(),
            key.sign(b"message", "corral test").to_file()
        );
        let parsed = Signature::parse(&first.to_file()).unwrap();
        assert_eq!(parsed, first);
        parsed
            .verify_prehashed(&key.public(), &prehash(b"message"))
            .unwrap();
        assert_eq!(
            parsed.verify_prehashed(&key.public(), &prehash(b"messagE")),
            Err(VerifyError::Mismatch(key.id()))
        );
        let other = SecretKey::from_seed(KeyId(*b"other-01"), [9; 32]).public();
        assert!(matches!(
            parsed.verify_prehashed(&other, &prehash(b"message")),
            Err(VerifyError::OtherKey { .. })
        ));
        let mut forged = parsed.clone();
        forged.trusted_comment = "something else".into();
        assert!(
            forged
                .verify_prehashed(&key.public(), &prehash(b"message"))
                .is_err()
        );
    }
}
