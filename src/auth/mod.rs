//! Mail authentication that survives the relay's rewriting (issue 16): for now the Sender
//! Rewriting Scheme ([`srs`]), pure functions the evaluator and the relay share, and DKIM
//! signing keys ([`dkim`]).

pub mod dkim;
pub mod srs;
