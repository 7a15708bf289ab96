//! Step four: the checked rule set compiled into immutable lookup structures for the
//! evaluator. Lookups cost the same whatever the number of entries; the result is `Send +
//! Sync` and shared by `Arc`.

pub mod artifact;
mod connectors;
mod directory;
mod domains;
mod rewrite;
mod rules;

pub use connectors::{route, select_receive};
pub use directory::{Directory, Expansion, Lookup};
pub use domains::DomainTable;
pub use rewrite::{Outbound, RewriteTable, Rewritten};
pub use rules::{
    AUTOMATON_MEMORY_LIMIT, CompiledRule, Evaluated, Facts, Field, Outcome, RuleCompileError,
    RuleIndex,
};

use crate::auth::srs::Srs;
use crate::model::{Authentication, DkimKey, ReceiveConnector, RuleSet, SendConnector};

/// Why a checked rule set could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The rules' words or patterns are past a limit.
    #[error(transparent)]
    Rules(#[from] RuleCompileError),
}

/// A rule set compiled for evaluation: immutable, `Send + Sync`, shared by `Arc`.
#[derive(Debug)]
pub struct Table {
    /// Accepted domains.
    pub domains: DomainTable,
    /// Address rewriting.
    pub rewrites: RewriteTable,
    /// Recipients.
    pub directory: Directory,
    /// Transport rules.
    pub rules: RuleIndex,
    /// Receive connectors.
    pub receive_connectors: Vec<ReceiveConnector>,
    /// Send connectors.
    pub send_connectors: Vec<SendConnector>,
    /// DKIM signing keys as written (the relay reads the files at load and reload).
    pub dkim_keys: Vec<DkimKey>,
    /// The `authentication` block.
    pub authentication: Option<Authentication>,
    /// SRS, ready to make and check addresses, when the block configures it.
    pub srs: Option<Srs>,
}

impl Table {
    /// Approximate heap bytes of the lookup structures (rewrites and the word automaton,
    /// which dominate large rule sets).
    pub fn memory(&self) -> usize {
        self.rewrites.memory() + self.rules.automaton_memory()
    }
}

/// Compiles a checked rule set (one without errors; parts with errors are left out).
pub fn compile(set: &RuleSet) -> Result<Table, CompileError> {
    Ok(Table {
        domains: DomainTable::new(&set.accepted_domains),
        rewrites: RewriteTable::new(&set.rewrites),
        directory: Directory::new(&set.recipients),
        rules: RuleIndex::new(&set.rules)?,
        receive_connectors: set.receive_connectors.clone(),
        send_connectors: set.send_connectors.clone(),
        dkim_keys: set.dkim_keys.clone(),
        authentication: set.authentication.clone(),
        srs: set
            .authentication
            .as_ref()
            .and_then(|a| a.srs.as_ref())
            .and_then(|s| {
                let secrets: Vec<&str> = s.secrets.iter().map(|x| x.value.as_str()).collect();
                Srs::new(&secrets, s.max_age_days)
            }),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_table_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Table>();
    }
}
