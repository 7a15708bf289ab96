//! The compiled artifact (`mailflow compile -o table.bin`): the checked rule set in a compact,
//! versioned binary form, so a relay starts without parsing or checking text. The lookup
//! structures are rebuilt when it is loaded (they take milliseconds, and an automaton's
//! memory layout is not something to store across versions).

use super::{CompileError, Table, compile};
use crate::model::RuleSet;

/// The first bytes of every artifact.
pub const MAGIC: &[u8; 16] = b"mailflow-table\0\0";

/// Bumped whenever the rule set's binary form changes; older artifacts are refused.
pub const FORMAT_VERSION: u32 = 3;

/// Why an artifact cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The bytes are not an artifact at all.
    #[error("this is not a compiled mailflow table (run `mailflow compile RULES -o FILE`)")]
    NotATable,
    /// Made by a mailflow with another format.
    #[error(
        "this table has format {found}, this mailflow reads format {expected}: compile the rules again"
    )]
    Version {
        /// The file's format.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// Truncated or damaged.
    #[error("this table is damaged: {0}")]
    Corrupt(String),
    /// The rule set cannot be compiled.
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// Whether the bytes start like an artifact.
pub fn is_artifact(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Serialises a checked rule set (its tests are left out: a relay does not run them).
pub fn to_bytes(set: &RuleSet) -> Result<Vec<u8>, ArtifactError> {
    let mut set = set.clone();
    set.tests.clear();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let body = postcard::to_stdvec(&set).map_err(|e| ArtifactError::Corrupt(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// The rule set's digest: SHA-256, in lowercase hex, of its artifact bytes ([`to_bytes`]).
/// The artifact is the canonical form: the rule set holds only vectors in source order
/// (no hash maps), and it is taken before any site override, so a relay started from the
/// rule files and one started from their `mailflow compile` output report the same digest,
/// whatever each node's listen addresses or smart hosts.
pub fn digest(set: &RuleSet) -> Result<String, ArtifactError> {
    Ok(digest_of(&to_bytes(set)?))
}

/// SHA-256 of an artifact's bytes, in lowercase hex: [`digest`] of what they hold.
pub fn digest_of(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Reads the rule set back.
pub fn rule_set_from_bytes(bytes: &[u8]) -> Result<RuleSet, ArtifactError> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ArtifactError::NotATable)?;
    let (version, body) = rest
        .split_first_chunk::<4>()
        .ok_or(ArtifactError::Corrupt("no format version".into()))?;
    let found = u32::from_le_bytes(*version);
    if found != FORMAT_VERSION {
        return Err(ArtifactError::Version {
            found,
            expected: FORMAT_VERSION,
        });
    }
    postcard::from_bytes(body).map_err(|e| ArtifactError::Corrupt(e.to_string()))
}

/// Loads an artifact and builds its lookup structures.
pub fn load(bytes: &[u8]) -> Result<(RuleSet, Table), ArtifactError> {
    let set = rule_set_from_bytes(bytes)?;
    let table = compile(&set)?;
    Ok((set, table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let report = crate::check::check_text(
            "t.mailflow",
            "accepted-domain example.com\nrewrite a@t.example.com -> a@example.com\nrule \"r\" { if subject contains \"x\"; stop }\ntest \"t\" { from a@b.com; to c@example.com }\n",
        );
        let set = &report.rule_sets[0].rules;
        let bytes = to_bytes(set).unwrap();
        assert!(is_artifact(&bytes));
        let (back, table) = load(&bytes).unwrap();
        assert_eq!(back.rewrites.len(), 1);
        assert!(back.tests.is_empty());
        assert_eq!(table.rules.rules().len(), 1);
        assert!(matches!(load(b"hello"), Err(ArtifactError::NotATable)));
        let mut old = bytes.clone();
        old[16] = 99;
        assert!(matches!(
            load(&old),
            Err(ArtifactError::Version { found: 99, .. })
        ));
        let cut = &bytes[..bytes.len() - 3];
        assert!(matches!(load(cut), Err(ArtifactError::Corrupt(_))));
    }

    #[test]
    fn digest_is_the_same_from_text_and_from_the_artifact() {
        let text = "accepted-domain example.com\nrewrite a@t.example.com -> a@example.com\nrule \"r\" { if subject contains \"x\"; stop }\ntest \"t\" { from a@b.com; to c@example.com }\n";
        let set = &crate::check::check_text("t.mailflow", text).rule_sets[0].rules;
        let d = digest(set).unwrap();
        assert_eq!(d.len(), 64);
        assert!(
            d.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let bytes = to_bytes(set).unwrap();
        assert_eq!(digest_of(&bytes), d);
        // Read back from the artifact: the same digest, tests or not.
        assert_eq!(digest(&rule_set_from_bytes(&bytes).unwrap()).unwrap(), d);
        // Checked again from the text: the same.
        let again = &crate::check::check_text("t.mailflow", text).rule_sets[0].rules;
        assert_eq!(digest(again).unwrap(), d);
        let changed = text.replace("\"x\"", "\"y\"");
        let other = &crate::check::check_text("t.mailflow", &changed).rule_sets[0].rules;
        assert_ne!(digest(other).unwrap(), d);
        // The known SHA-256 of "abc", so the hex is the usual one.
        assert_eq!(
            digest_of(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// `Action::Reject` was a struct variant before `smtp::Status`; the newtype that replaced
    /// it must encode alike, or artifacts compiled earlier would load wrong under the same
    /// FORMAT_VERSION.
    #[test]
    fn reject_encodes_as_the_struct_variant_did() {
        use crate::model::Action;
        use crate::smtp::Status;
        #[derive(serde::Serialize)]
        #[expect(
            dead_code,
            reason = "mirrors the old layout up to Reject; only Reject is built"
        )]
        enum Old {
            Stop,
            Delete,
            Reject {
                code: u16,
                enhanced: String,
                text: String,
            },
        }
        let old = postcard::to_stdvec(&Old::Reject {
            code: 550,
            enhanced: "5.7.1".into(),
            text: "no".into(),
        })
        .unwrap();
        let new = Action::Reject(Status::new(550, "5.7.1", "no"));
        assert_eq!(postcard::to_stdvec(&new).unwrap(), old);
        assert_eq!(postcard::from_bytes::<Action>(&old).unwrap(), new);
    }
}
