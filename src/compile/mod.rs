//! Step four: the checked rule set compiled into immutable lookup structures for the
//! evaluator. Lookups cost the same whatever the number of entries; the result is `Send +
//! Sync` and shared by `Arc`.

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
    AUTOMATON_MEMORY_LIMIT, CompiledRule, Evaluated, Facts, Field, Outcome, RuleCompileError, RuleIndex,
};
