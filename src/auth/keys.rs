//! The rule set's DKIM keys read from their files, once per load or reload: the relay signs
//! (and seals) with these and never touches a key file while mail flows. A file that cannot
//! be read or is not a usable key refuses the load, as a bad certificate does, so a reload
//! with a broken key keeps the old rule set.

use super::dkim::{KeyError, PrivateKey, Signer};
use crate::model::DkimKey;
use std::path::PathBuf;

/// One `dkim-key`, read.
pub struct LoadedKey {
    /// The signing domain (`d=`), lowercase.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// The same key for the ARC sealer, parsed once here rather than per message: mail-auth's
    /// signers take their key by value, so each message's sealer borrows this one
    /// ([`super::arc::seal`]).
    pub sealing: PrivateKey,
    /// The DKIM signer bound to domain and selector.
    pub signer: Signer,
}

/// Every key of a rule set, by domain.
#[derive(Default)]
pub struct KeyStore {
    keys: Vec<LoadedKey>,
}

impl std::fmt::Debug for KeyStore {
    // Private keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{}._domainkey.{}", k.selector, k.domain))
            .collect();
        f.debug_struct("KeyStore").field("keys", &names).finish()
    }
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read DKIM key `{path}`: {source}", path = .0.display(), source = .1)]
    Read(PathBuf, std::io::Error),
    /// The file is not a usable key.
    #[error("DKIM key `{path}`: {why}", path = .0.display(), why = .1)]
    Key(PathBuf, KeyError),
}

impl KeyStore {
    /// Reads every key file.
    pub fn load(keys: &[DkimKey]) -> Result<KeyStore, LoadError> {
        let mut loaded = Vec::with_capacity(keys.len());
        for k in keys {
            let path = k.key.value.clone();
            let pem =
                crate::input::read_limited(&path).map_err(|e| LoadError::Read(path.clone(), e))?;
            let key = PrivateKey::from_pem(&pem).map_err(|e| LoadError::Key(path.clone(), e))?;
            let sealing =
                PrivateKey::from_pem(&pem).map_err(|e| LoadError::Key(path.clone(), e))?;
            let domain = k.domain.value.to_ascii_lowercase();
            let signer = key.into_signer(&domain, &k.selector.value);
            loaded.push(LoadedKey {
                domain,
                selector: k.selector.value.clone(),
                path,
                sealing,
                signer,
            });
        }
        Ok(KeyStore { keys: loaded })
    }

    /// The keys for `domain` (any case), in definition order; they outlive the iterator.
    pub fn for_domain<'a: 'd, 'd>(
        &'a self,
        domain: &'d str,
    ) -> impl Iterator<Item = &'a LoadedKey> + 'd {
        self.keys
            .iter()
            .filter(move |k| k.domain.eq_ignore_ascii_case(domain))
    }

    /// Whether there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
