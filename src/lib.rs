//! mailflow: a mail-flow engine for Exchange Edge style set-ups.
//!
//! Step one, [`parse`]: text to syntax tree ([`ast`]) with spans. Step two, `resolve`: the
//! tree to a typed rule set ([`model`]) with every value checked. Step three, `lint`: the rule
//! set's cross-checks (shadowed rewrites, unreachable rules, open relays). Step four,
//! [`compile`]: lookup structures whose cost does not grow with the rule set. Every finding is
//! a [`diagnostic::Diagnostic`] with a stable code.

pub mod ast;
pub mod auth;
pub mod check;
pub mod clock;
pub mod compile;
pub mod deliver;
pub mod diagnostic;
pub mod diff;
pub mod eval;
pub mod fmt;
pub mod graph;
pub mod import;
pub mod input;
pub mod keywords;
pub mod lint;
pub mod load;
pub mod lsp;
pub mod model;
pub mod parse;
pub mod pem;
pub mod queue;
pub mod relay;
pub mod resolve;
pub mod smtp;
pub mod source;
pub(crate) mod stream;
pub mod testing;
pub mod x509;
