//! Step five: evaluating one message against a compiled [`crate::compile::Table`]. No I/O and
//! no panics: the verdict and a trace a person can read.

pub mod message;
