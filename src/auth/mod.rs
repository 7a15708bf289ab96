//! Mail authentication the relay keeps intact while it rewrites: the Sender Rewriting Scheme
//! ([`srs`]), DKIM signing keys ([`dkim`]), and what verifying a message found
//! ([`results`]), pure data the evaluator's rules read.

pub mod dkim;
pub mod keys;
pub mod results;
pub mod srs;

pub use results::{AuthResults, Verification};
