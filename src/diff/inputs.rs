//! Where `mailflow diff` gets its messages: the `test` blocks of the rule sets compared, and
//! folders of `.eml` files, each with its envelope beside it in `NAME.envelope` (one JSON
//! object, [`EnvelopeRecord`]).

use super::Input;
use crate::eval::{Envelope, Message};
use crate::model::{Address, RuleSet};
use crate::testing::{test_envelope, test_message};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// An envelope as a file gives it: `{"from": "a@b.example", "to": ["c@d.example"],
/// "connector": "Internet", "client-ip": "203.0.113.5"}`; `from` `<>` is the null sender.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EnvelopeRecord {
    /// MAIL FROM.
    pub from: String,
    /// RCPT TO, in order.
    pub to: Vec<String>,
    /// The receive connector, by name; else chosen by `local` and `client-ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// The address the client connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<std::net::SocketAddr>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<std::net::IpAddr>,
    /// The verified name of the client's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_peer: Option<String>,
    /// MAIL FROM's XOORG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xoorg: Option<String>,
    /// Authentication results as a test's `auth` line gives them (`spf=pass, dmarc=fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

impl EnvelopeRecord {
    /// The evaluator's envelope; the error names the field.
    pub fn envelope(&self) -> Result<Envelope, String> {
        let address = |field: &str, text: &str| -> Result<Option<Address>, String> {
            crate::resolve::parse_sender(text).map_err(|e| format!("`{field}` {text:?}: {e}"))
        };
        let mut rcpt_to = Vec::new();
        for t in &self.to {
            match address("to", t)? {
                Some(a) => rcpt_to.push(a),
                None => return Err("`to`: `<>` is not a recipient".into()),
            }
        }
        if rcpt_to.is_empty() {
            return Err("`to` names no recipient".into());
        }
        let auth = match &self.auth {
            Some(spec) => Some(
                crate::auth::AuthResults::from_spec(spec).map_err(|e| format!("`auth`: {e}"))?,
            ),
            None => None,
        };
        Ok(Envelope {
            connector: self.connector.clone(),
            local: self.local,
            client_ip: self.client_ip,
            tls_peer: self.tls_peer.clone(),
            xoorg: self.xoorg.clone(),
            mail_from: address("from", &self.from)?,
            rcpt_to,
            auth,
            day: Some(crate::clock::days_since_epoch()),
        })
    }
}

/// The test blocks of `new` and those of `old` that `new` has no test of that name for, as
/// inputs (`test "NAME"`). A test whose message file cannot be read is an error.
pub fn tests(old: &RuleSet, new: &RuleSet) -> Result<Vec<Input>, String> {
    let mut out = Vec::new();
    let names: Vec<&str> = new.tests.iter().map(|t| t.name.value.as_str()).collect();
    let old_only = old
        .tests
        .iter()
        .filter(|t| !names.contains(&t.name.value.as_str()));
    for t in new.tests.iter().chain(old_only) {
        let message = test_message(t).map_err(|e| format!("test {:?}: {e}", t.name.value))?;
        out.push(Input {
            name: format!("test {:?}", t.name.value),
            envelope: test_envelope(t),
            message,
        });
    }
    Ok(out)
}

/// Inputs from `path`: an `.eml` file, or a folder of them (not recursive, by name), each
/// with its `.envelope` beside it.
pub fn messages(path: &Path) -> Result<Vec<Input>, String> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(format!("{}: no .eml files here", path.display()));
        }
        v
    } else {
        vec![path.to_path_buf()]
    };
    files.iter().map(|f| message(f)).collect()
}

fn message(eml: &Path) -> Result<Input, String> {
    let side = eml.with_extension("envelope");
    let text = crate::input::read_limited_string(&side).map_err(|e| {
        format!(
            "{}: its envelope {}: {}",
            eml.display(),
            side.display(),
            crate::resolve::io_reason(&e)
        )
    })?;
    let record: EnvelopeRecord =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", side.display()))?;
    let envelope = record
        .envelope()
        .map_err(|e| format!("{}: {e}", side.display()))?;
    let raw = crate::input::read_limited(eml)
        .map_err(|e| format!("{}: {}", eml.display(), crate::resolve::io_reason(&e)))?;
    Ok(Input {
        name: eml.display().to_string(),
        envelope,
        message: Message::parse(&raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eml_folder_needs_an_envelope_for_each() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.eml"), b"Subject: a\r\n\r\nx\r\n").unwrap();
        let e = messages(tmp.path()).unwrap_err();
        assert!(e.contains("a.envelope"), "{e}");
        std::fs::write(
            tmp.path().join("a.envelope"),
            r#"{"from": "<>", "to": ["x@example.com"], "client-ip": "192.0.2.1"}"#,
        )
        .unwrap();
        let inputs = messages(tmp.path()).unwrap();
        assert_eq!(inputs.len(), 1);
        assert!(inputs[0].envelope.mail_from.is_none());
        std::fs::write(
            tmp.path().join("a.envelope"),
            r#"{"from": "a@b", "to": [], "x": 1}"#,
        )
        .unwrap();
        let e = messages(tmp.path()).unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = EnvelopeRecord {
            from: "a@b.example".into(),
            to: vec!["not an address".into()],
            ..EnvelopeRecord::default()
        }
        .envelope()
        .unwrap_err();
        assert!(e.starts_with("`to`"), "{e}");
    }
}
