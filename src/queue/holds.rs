//! What an administrator has put on hold (`mailflow queue hold`): single messages, recipient
//! domains and send connectors. Held recipients stay queued, are not attempted and do not
//! expire until released. A hold on a domain or a connector also covers mail that arrives
//! later: holding a tenant's connector during a cut-over keeps its mail until released.
//!
//! Kept beside the journal as `holds.json`, replaced whole (written, synced, renamed) on
//! every change, so a hold survives a restart and a crash leaves the old or the new set,
//! never half of one.

use super::QueueId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file's name inside the spool folder.
pub const FILE: &str = "holds.json";

/// The holds in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    /// Whole messages.
    #[serde(default)]
    pub messages: BTreeSet<QueueId>,
    /// Recipient domains (lower case, without a final dot), through any send connector.
    #[serde(default)]
    pub domains: BTreeSet<String>,
    /// Send connectors, by name (compared without regard to case, as the filters do).
    #[serde(default)]
    pub connectors: BTreeSet<String>,
}

/// What a hold or a release names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "name")]
pub enum HoldTarget {
    /// One message.
    Message(QueueId),
    /// A recipient domain.
    Domain(String),
    /// A send connector.
    Connector(String),
}

impl std::fmt::Display for HoldTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldTarget::Message(id) => write!(f, "message {id}"),
            HoldTarget::Domain(d) => write!(f, "domain {d}"),
            HoldTarget::Connector(c) => write!(f, "send connector {c}"),
        }
    }
}

/// A domain as holds keep and compare it: `Dead.Example.` is `dead.example`, as the
/// listing's `--domain` filter reads it (a hold spelled otherwise would hold nothing).
fn domain_key(d: &str) -> String {
    d.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl Holds {
    /// Whether a recipient of message `id` going to `domain` through `connector` is held.
    pub fn covers(&self, id: &QueueId, connector: &str, domain: &str) -> bool {
        self.messages.contains(id)
            || self
                .connectors
                .iter()
                .any(|c| c.eq_ignore_ascii_case(connector))
            || (!self.domains.is_empty() && self.domains.contains(&domain_key(domain)))
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.domains.is_empty() && self.connectors.is_empty()
    }

    /// Adds a hold; false when it was already there.
    pub fn hold(&mut self, target: &HoldTarget) -> bool {
        match target {
            HoldTarget::Message(id) => self.messages.insert(id.clone()),
            HoldTarget::Domain(d) => self.domains.insert(domain_key(d)),
            HoldTarget::Connector(c) => {
                !self.connectors.iter().any(|h| h.eq_ignore_ascii_case(c))
                    && self.connectors.insert(c.clone())
            }
        }
    }

    /// Removes a hold; false when there was none.
    pub fn release(&mut self, target: &HoldTarget) -> bool {
        match target {
            HoldTarget::Message(id) => self.messages.remove(id),
            HoldTarget::Domain(d) => self.domains.remove(&domain_key(d)),
            HoldTarget::Connector(c) => {
                let before = self.connectors.len();
                self.connectors.retain(|h| !h.eq_ignore_ascii_case(c));
                self.connectors.len() != before
            }
        }
    }

    /// Forgets the holds of messages no longer queued.
    pub fn retain_messages(&mut self, live: impl Fn(&QueueId) -> bool) {
        self.messages.retain(|id| live(id));
    }

    /// The holds in `spool_dir`; none when there is no file. A file that does not parse is
    /// an error, never "no holds": releasing everything an administrator held because of a
    /// damaged file would deliver what they stopped.
    pub fn load(spool_dir: &Path) -> io::Result<Holds> {
        let path = spool_dir.join(FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Holds::default()),
            Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }

    /// Replaces the file in `spool_dir` with these holds, durably.
    pub fn save(&self, spool_dir: &Path) -> io::Result<()> {
        let path = spool_dir.join(FILE);
        let tmp: PathBuf = spool_dir.join(format!("{FILE}.tmp"));
        let mut bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        // Whatever is at the temporary name (a file a crash left, a symlink someone put
        // there) is removed, and the file is created anew: never opened through a link.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(super::PRIVATE)
                .open(&tmp)?
        };
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        File::open(spool_dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_cover_and_survive_a_save() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(Holds::load(tmp.path()).unwrap(), Holds::default());
        let mut h = Holds::default();
        let id = QueueId("0000000000000001".into());
        assert!(h.hold(&HoldTarget::Domain("Tenant1.Example.com".into())));
        assert!(!h.hold(&HoldTarget::Domain("tenant1.example.com".into())));
        assert!(h.hold(&HoldTarget::Connector("To Tenant 2".into())));
        assert!(h.covers(&id, "Out", "TENANT1.example.com"));
        assert!(h.covers(&id, "To Tenant 2", "other.example"));
        assert!(!h.covers(&id, "Out", "other.example"));
        h.hold(&HoldTarget::Message(id.clone()));
        assert!(h.covers(&id, "Out", "other.example"));
        h.save(tmp.path()).unwrap();
        assert_eq!(Holds::load(tmp.path()).unwrap(), h);
        assert!(h.release(&HoldTarget::Message(id.clone())));
        assert!(!h.release(&HoldTarget::Message(id.clone())));
        h.retain_messages(|_| false);
        assert!(!h.is_empty());
    }

    #[test]
    fn a_hold_is_spelled_as_the_filters_read_it() {
        let mut h = Holds::default();
        let id = QueueId("0000000000000001".into());
        assert!(h.hold(&HoldTarget::Domain("Dead.Example.".into())));
        assert!(!h.hold(&HoldTarget::Domain("dead.example".into())));
        assert!(h.covers(&id, "Out", "DEAD.example"));
        assert!(h.hold(&HoldTarget::Connector("Dead".into())));
        assert!(!h.hold(&HoldTarget::Connector("DEAD".into())));
        assert!(h.covers(&id, "dead", "other.example"));
        assert!(h.release(&HoldTarget::Connector("dEAD".into())));
        assert!(h.release(&HoldTarget::Domain("dead.example.".into())));
        assert!(h.is_empty());
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_set() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(FILE), b"{\"messages\": [").unwrap();
        let e = Holds::load(tmp.path()).unwrap_err();
        assert!(e.to_string().contains(FILE), "{e}");
    }
}
