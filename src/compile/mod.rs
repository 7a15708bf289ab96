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

use crate::model::{ReceiveConnector, RuleSet, SendConnector};

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
