//! Artifacts that carry their policy, signed.
//!
//! A signed component ends with a `corral:signature` custom section holding a minisign signature
//! file (text). What it signs is the component without that section — every other byte,
//! the `corral:policy` section (the manifest) and any `corral:script` included. Signing appends
//! the section last, so the signed bytes are exactly the file's first [`Seal::signed_len`] bytes,
//! which `minisign -V` can check on its own. Ed25519 is deterministic and the manifest is
//! canonical JSON, so the same component, manifest and key always give the same file.

use super::minisign::{self, KeyId, PublicKey, SecretKey, Signature, VerifyError};
use super::policy::Policy;
use super::{ArtifactError, custom_payload, push_section, sections, without_sections};

/// Name of the custom section holding the policy manifest.
pub const POLICY_SECTION: &str = "corral:policy";
/// Name of the custom section holding the signature (always the last section).
pub const SIGNATURE_SECTION: &str = "corral:signature";

/// Returns `component` with `policy` embedded, replacing an earlier manifest and dropping an
/// earlier signature (which no longer covers it).
pub fn embed_policy(component: &[u8], policy: &Policy) -> Result<Vec<u8>, ArtifactError> {
    let mut out = without_sections(component, &[POLICY_SECTION, SIGNATURE_SECTION])?;
    push_section(&mut out, POLICY_SECTION, &policy.to_section())?;
    Ok(out)
}

/// The policy manifest embedded in `component`, if any.
pub fn embedded_policy(component: &[u8]) -> Result<Option<Policy>, ArtifactError> {
    for (range, section) in sections(component)? {
        if section.name.as_deref() == Some(POLICY_SECTION) {
            let payload = custom_payload(&component[range])?;
            return Policy::from_section(payload).map(Some).map_err(|e| {
                ArtifactError(format!("the {POLICY_SECTION} section is invalid: {e}"))
            });
        }
    }
    Ok(None)
}

/// Returns `component` signed by `key` (an earlier signature is replaced).
pub fn sign(component: &[u8], key: &SecretKey) -> Result<Vec<u8>, ArtifactError> {
    let mut out = without_sections(component, &[SIGNATURE_SECTION])?;
    let comment = format!(
        "corral workflow, {} signed bytes, sha256 {}",
        out.len(),
        crate::runtime::sha256_hex(&out)
    );
    let signature = key.sign(&out, &comment);
    push_section(&mut out, SIGNATURE_SECTION, signature.to_file().as_bytes())?;
    Ok(out)
}

/// What a component's signature section says, with the digest of the bytes it should cover —
/// enough to verify it later against any set of trusted keys without the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// The signature.
    pub signature: Signature,
    /// How many leading bytes of the file the signature covers (where its section starts).
    pub signed_len: usize,
    digest: [u8; 64],
}

/// Reads `component`'s signature, if it has one.
pub fn seal(component: &[u8]) -> Result<Option<Seal>, ArtifactError> {
    let Some((range, _)) = sections(component)?
        .into_iter()
        .find(|(_, section)| section.name.as_deref() == Some(SIGNATURE_SECTION))
    else {
        return Ok(None);
    };
    let text = std::str::from_utf8(custom_payload(&component[range.clone()])?)
        .map_err(|_| ArtifactError(format!("the {SIGNATURE_SECTION} section is not text")))?;
    let signature = Signature::parse(text)
        .map_err(|e| ArtifactError(format!("the {SIGNATURE_SECTION} section is {e}")))?;
    let unsigned = without_sections(component, &[SIGNATURE_SECTION])?;
    Ok(Some(Seal {
        signature,
        signed_len: range.start,
        digest: minisign::prehash(&unsigned),
    }))
}

/// Why a component's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// It has no `corral:signature` section.
    #[error("it is not signed")]
    Unsigned,
    /// A trusted key signed it, but the bytes are not the ones signed.
    #[error(
        "it was changed after it was signed: the signature by key {0} does not match its bytes"
    )]
    Tampered(KeyId),
    /// Signed by a key that is not trusted.
    #[error(
        "it is signed by key {signer}, which is not trusted (trusted: {})",
        list(trusted)
    )]
    Untrusted {
        /// Who signed it.
        signer: KeyId,
        /// The keys that are trusted.
        trusted: Vec<KeyId>,
    },
}

fn list(keys: &[KeyId]) -> String {
    if keys.is_empty() {
        return "no key".to_string();
    }
    keys.iter()
        .map(KeyId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a component's seal against the trusted keys; the signer's key id when it verifies.
pub fn check_signature(
    seal: Option<&Seal>,
    trusted: &[PublicKey],
) -> Result<KeyId, SignatureError> {
    let seal = seal.ok_or(SignatureError::Unsigned)?;
    let signer = seal.signature.id;
    let key =
        trusted
            .iter()
            .find(|key| key.id == signer)
            .ok_or_else(|| SignatureError::Untrusted {
                signer,
                trusted: trusted.iter().map(|key| key.id).collect(),
            })?;
    seal.signature
        .verify_prehashed(key, &seal.digest)
        .map(|()| signer)
        .map_err(|error| match error {
            VerifyError::Mismatch(id) | VerifyError::OtherKey { signer: id, .. } => {
                SignatureError::Tampered(id)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::{Script, embed_script, embedded_script, list_sections, tiny};

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed(KeyId([seed; 8]), [seed; 32])
    }

    fn signed() -> Vec<u8> {
        let script = Script {
            name: "a.js".into(),
            source: "return 1".into(),
        };
        let policy = Policy::from_toml("p.toml", "[grants]\ntools = [\"read\"]").unwrap();
        let with_policy = embed_policy(&embed_script(&tiny(), &script).unwrap(), &policy).unwrap();
        sign(&with_policy, &key(1)).unwrap()
    }

    #[test]
    fn signing_is_deterministic_and_verifies_with_the_trusted_key() {
        let bytes = signed();
        assert_eq!(bytes, signed(), "same inputs, same bytes");
        let seal = seal(&bytes).unwrap().unwrap();
        assert_eq!(
            check_signature(Some(&seal), &[key(1).public()]),
            Ok(KeyId([1; 8]))
        );
        assert_eq!(
            sign(&bytes, &key(1)).unwrap(),
            bytes,
            "signing again replaces the signature with the same one"
        );
        let names: Vec<_> = list_sections(&bytes)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names.last().unwrap().as_deref(), Some(SIGNATURE_SECTION));
        assert_eq!(
            seal.signed_len,
            without_sections(&bytes, &[SIGNATURE_SECTION])
                .unwrap()
                .len()
        );
        assert_eq!(
            embedded_policy(&bytes).unwrap().unwrap().grants.tools,
            ["read"]
        );
        assert_eq!(embedded_script(&bytes).unwrap().unwrap().name, "a.js");
    }

    #[test]
    fn each_refusal_has_its_own_error() {
        let bytes = signed();
        assert_eq!(
            check_signature(seal(&tiny()).unwrap().as_ref(), &[key(1).public()]),
            Err(SignatureError::Unsigned)
        );
        let seal_of = |bytes: &[u8]| seal(bytes).unwrap().unwrap();
        assert!(matches!(
            check_signature(Some(&seal_of(&bytes)), &[key(2).public()]),
            Err(SignatureError::Untrusted { signer, .. }) if signer == KeyId([1; 8])
        ));
        // A changed byte of the script (inside the signed bytes).
        let at = bytes.windows(8).position(|w| w == b"return 1").unwrap();
        let mut tampered = bytes.clone();
        tampered[at + 7] = b'2';
        assert_eq!(
            check_signature(
                Some(&seal_of(&tampered)),
                &[key(2).public(), key(1).public()]
            ),
            Err(SignatureError::Tampered(KeyId([1; 8])))
        );
        // A section appended after the signature.
        let mut appended = bytes.clone();
        push_section(&mut appended, "extra", b"x").unwrap();
        assert_eq!(
            check_signature(Some(&seal_of(&appended)), &[key(1).public()]),
            Err(SignatureError::Tampered(KeyId([1; 8])))
        );
        // A new policy drops the signature: the artifact is unsigned, not falsely signed.
        let replaced = embed_policy(&bytes, &Policy::default()).unwrap();
        assert_eq!(seal(&replaced).unwrap(), None);
    }
}
