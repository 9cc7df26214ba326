//! Packaging a script with its runtime into one component, and reading it back.
//!
//! `corral build x.js -o x.wasm` appends a custom section named [`SCRIPT_SECTION`] (the script's
//! name and source, as JSON) at the top level of the script runtime's component. WebAssembly
//! engines ignore custom sections, so the file stays a valid component with the runtime's imports
//! and exports; Corral finds the section at load time and feeds the script to the runtime's
//! `load` before `run`. Nothing here knows which language the runtime speaks.
//!
//! [`policy`] is the manifest a component may carry (`corral:policy`), [`signed`] its signature
//! (`corral:signature`), [`minisign`] the key and signature files. None of the three sections
//! changes code: [`code`] drops them all, so the compile cache is keyed by the code alone.

pub mod minisign;
pub mod policy;
pub mod signed;

use std::borrow::Cow;

use serde_json::{Value, json};

/// Source text for a script runtime (e.g. a `.js` workflow for the JavaScript runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// File name, for error messages.
    pub name: String,
    /// The script.
    pub source: String,
}

/// Name of the custom section holding an embedded script.
pub const SCRIPT_SECTION: &str = "corral:script";

/// One top-level section of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Section id (0 is a custom section).
    pub id: u8,
    /// Name, for custom sections.
    pub name: Option<String>,
    /// Payload size in bytes.
    pub size: usize,
}

/// Why a component's bytes could not be read or extended.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("malformed component: {0}")]
pub struct ArtifactError(String);

/// Returns `component` with `script` embedded; an earlier embedded script is replaced.
pub fn embed_script(component: &[u8], script: &Script) -> Result<Vec<u8>, ArtifactError> {
    let mut out = Vec::with_capacity(component.len() + script.source.len() + 64);
    out.extend_from_slice(header(component)?);
    for (range, section) in sections(component)? {
        if section.name.as_deref() != Some(SCRIPT_SECTION) {
            out.extend_from_slice(&component[range]);
        }
    }
    let payload = json!({"name": script.name, "source": script.source}).to_string();
    let mut body = Vec::new();
    write_leb(&mut body, SCRIPT_SECTION.len() as u32);
    body.extend_from_slice(SCRIPT_SECTION.as_bytes());
    body.extend_from_slice(payload.as_bytes());
    out.push(0);
    write_leb(
        &mut out,
        u32::try_from(body.len()).map_err(|_| ArtifactError("the script is too large".into()))?,
    );
    out.extend_from_slice(&body);
    Ok(out)
}

/// The sections Corral adds to a component, none of which is code.
const CORRAL_SECTIONS: [&str; 3] = [
    SCRIPT_SECTION,
    signed::POLICY_SECTION,
    signed::SIGNATURE_SECTION,
];

/// What the compiler sees of `component`: without its script, policy and signature, so a built
/// script shares its runtime's compiled code, and signing or re-signing a component never
/// invalidates its cache entry. Borrowed when there is nothing to drop.
pub fn code(component: &[u8]) -> Result<Cow<'_, [u8]>, ArtifactError> {
    let has_ours = sections(component)?.iter().any(|(_, s)| {
        s.name
            .as_deref()
            .is_some_and(|n| CORRAL_SECTIONS.contains(&n))
    });
    Ok(if has_ours {
        Cow::Owned(without_sections(component, &CORRAL_SECTIONS)?)
    } else {
        Cow::Borrowed(component)
    })
}

/// `component` without the custom sections named `names`.
fn without_sections(component: &[u8], names: &[&str]) -> Result<Vec<u8>, ArtifactError> {
    let mut out = header(component)?.to_vec();
    for (range, section) in sections(component)? {
        if !section.name.as_deref().is_some_and(|n| names.contains(&n)) {
            out.extend_from_slice(&component[range]);
        }
    }
    Ok(out)
}

/// Appends a custom section `name` holding `payload`.
fn push_section(out: &mut Vec<u8>, name: &str, payload: &[u8]) -> Result<(), ArtifactError> {
    let mut body = Vec::with_capacity(name.len() + payload.len() + 5);
    write_leb(&mut body, name.len() as u32);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    out.push(0);
    let size = u32::try_from(body.len())
        .map_err(|_| ArtifactError(format!("the {name} section is too large")))?;
    write_leb(out, size);
    out.extend_from_slice(&body);
    Ok(())
}

/// `component` without its embedded script: what the compiler sees (custom sections do not change
/// code), so every built script shares the runtime's compiled code and its cache entry.
pub fn without_script(component: &[u8]) -> Result<Vec<u8>, ArtifactError> {
    let mut out = header(component)?.to_vec();
    for (range, section) in sections(component)? {
        if section.name.as_deref() != Some(SCRIPT_SECTION) {
            out.extend_from_slice(&component[range]);
        }
    }
    Ok(out)
}

/// The script embedded in `component`, if any.
pub fn embedded_script(component: &[u8]) -> Result<Option<Script>, ArtifactError> {
    for (range, section) in sections(component)? {
        if section.name.as_deref() == Some(SCRIPT_SECTION) {
            let bytes = &component[range];
            let payload = custom_payload(bytes)?;
            let value: Value = serde_json::from_slice(payload).map_err(|e| {
                ArtifactError(format!("the {SCRIPT_SECTION} section is not JSON: {e}"))
            })?;
            let field = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
            return match (field("name"), field("source")) {
                (Some(name), Some(source)) => Ok(Some(Script { name, source })),
                _ => Err(ArtifactError(format!(
                    "the {SCRIPT_SECTION} section lacks a name or source"
                ))),
            };
        }
    }
    Ok(None)
}

/// The top-level sections of a component, in order.
pub fn list_sections(component: &[u8]) -> Result<Vec<Section>, ArtifactError> {
    Ok(sections(component)?
        .into_iter()
        .map(|(_, section)| section)
        .collect())
}

fn header(bytes: &[u8]) -> Result<&[u8], ArtifactError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ArtifactError(
            "it does not start with the WebAssembly magic bytes".into(),
        ));
    }
    Ok(&bytes[..8])
}

/// Sections with the byte range each occupies (id and size included).
fn sections(bytes: &[u8]) -> Result<Vec<(std::ops::Range<usize>, Section)>, ArtifactError> {
    header(bytes)?;
    let mut at = 8;
    let mut out = Vec::new();
    while at < bytes.len() {
        let start = at;
        let id = bytes[at];
        at += 1;
        let size = read_leb(bytes, &mut at)? as usize;
        let end = at
            .checked_add(size)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| {
                ArtifactError(format!(
                    "section at byte {start} runs past the end of the file"
                ))
            })?;
        let name = if id == 0 {
            let mut name_at = at;
            let length = read_leb(bytes, &mut name_at)? as usize;
            let name = bytes.get(name_at..name_at + length).ok_or_else(|| {
                ArtifactError(format!("custom section at byte {start} has a bad name"))
            })?;
            Some(String::from_utf8_lossy(name).into_owned())
        } else {
            None
        };
        out.push((start..end, Section { id, name, size }));
        at = end;
    }
    Ok(out)
}

fn custom_payload(section: &[u8]) -> Result<&[u8], ArtifactError> {
    let mut at = 1;
    let size = read_leb(section, &mut at)? as usize;
    let body = section
        .get(at..at + size)
        .ok_or_else(|| ArtifactError("truncated section".into()))?;
    let mut name_at = 0;
    let length = read_leb(body, &mut name_at)? as usize;
    body.get(name_at + length..)
        .ok_or_else(|| ArtifactError("truncated section name".into()))
}

fn read_leb(bytes: &[u8], at: &mut usize) -> Result<u32, ArtifactError> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *bytes
            .get(*at)
            .ok_or_else(|| ArtifactError("truncated length".into()))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(value).map_err(|_| ArtifactError("length too large".into()));
        }
    }
    Err(ArtifactError("length too long".into()))
}

fn write_leb(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A component header plus one (empty) core module section, for the section tests.
#[cfg(test)]
pub(crate) fn tiny() -> Vec<u8> {
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.extend_from_slice(&[1, 8]);
    bytes.extend_from_slice(b"\0asm\x01\0\0\0");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_round_trip_and_replace_earlier_ones() {
        let first = Script {
            name: "a.js".into(),
            source: "return 1".into(),
        };
        let second = Script {
            name: "b.js".into(),
            source: "return 'é'.repeat(300)".into(),
        };
        let once = embed_script(&tiny(), &first).unwrap();
        assert_eq!(embedded_script(&once).unwrap().unwrap().source, "return 1");
        let twice = embed_script(&once, &second).unwrap();
        assert_eq!(embedded_script(&twice).unwrap().unwrap().name, "b.js");
        let sections = list_sections(&twice).unwrap();
        assert_eq!(
            sections.len(),
            2,
            "the old script section is gone: {sections:?}"
        );
        assert_eq!(&twice[..10], &tiny()[..10]);
        assert_eq!(without_script(&twice).unwrap(), tiny());
    }

    #[test]
    fn components_without_a_script_have_none() {
        assert_eq!(embedded_script(&tiny()).unwrap(), None);
    }

    #[test]
    fn truncated_files_are_refused() {
        let mut bytes = tiny();
        bytes.truncate(12);
        assert!(
            embedded_script(&bytes)
                .unwrap_err()
                .to_string()
                .contains("past the end")
        );
        assert!(list_sections(b"nope").is_err());
    }
}
