//! Every integration test of mailflow, in one test binary so that the crate and its
//! dependencies are linked once rather than once per file (`cargo test --test it`).
//!
//! Adding tests: write `tests/it/<topic>.rs` (module docs saying what it proves, tests as in
//! any integration test) and add `mod <topic>;` below. Shared helpers (loopback sinks, the
//! relay runner, DNS, certificates) are `crate::support` (`use crate::support;` then
//! `support::relay::...`); it stays at `tests/support/` so a standalone `tests/*.rs` can still
//! declare it with `mod support;`. Paths relative to a module file (`#[path]`,
//! `insta::glob!`) start from `tests/it/`; fixtures are read from
//! `CARGO_MANIFEST_DIR/tests/fixtures`. Snapshots live in `tests/it/snapshots/`, named
//! `it__<module>__<test>.snap`. Run one module with `cargo test --test it <topic>::`.
//!
//! Every test here runs in one process, two or more at a time and across modules: a test
//! must not change process-wide state (environment, working directory, the panic hook for
//! other threads) nor assume it runs alone; one that re-executes this binary names itself
//! with its module path (`queue::crash_child`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../support/mod.rs"]
mod support;

// The fuzz target's checks, replayed by `fuzz_replay` and used as oracles by
// `smtp_protocol`.
#[path = "../../fuzz/fuzz_targets/smtp_checks.rs"]
mod smtp_checks;

mod auth_attack;
mod auth_dkim;
mod auth_seeds;
mod certificates;
mod cli;
mod deliver;
mod diagnostics;
mod diff;
mod docs;
mod drain;
mod editor_grammar;
mod eval;
mod eval_no_panic;
mod fleet;
mod fmt;
mod fuzz_replay;
mod generate;
mod graph;
mod import;
mod input_bounds;
mod lsp;
mod no_panic;
mod operations;
mod queue;
mod queue_admin;
mod queue_attack;
mod relay;
mod relay_auth_in;
mod relay_auth_out;
mod relay_bytes;
mod relay_dsn;
mod relay_faults;
mod relay_hostile;
mod relay_input;
mod relay_memory;
mod relay_queue;
mod relay_reuse;
mod relay_tenants;
mod relay_tracking;
mod relay_trust;
mod relay_verify;
mod reuse_attack;
mod service;
mod smtp_protocol;
mod spool_upgrade;
