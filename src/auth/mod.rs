//! Mail authentication the relay keeps intact while it rewrites: the Sender Rewriting Scheme
//! ([`srs`]), DKIM signing keys ([`dkim`], [`keys`]), verifying Internet mail ([`verify`],
//! the only I/O here) and what it found ([`results`], pure data the evaluator's rules read;
//! [`report`], the `Authentication-Results` field), and ARC sealing ([`arc`]).

pub mod arc;
pub mod dkim;
pub mod keys;
pub mod report;
pub mod results;
pub mod srs;
pub mod verify;

pub use results::{AuthResults, Verification};
