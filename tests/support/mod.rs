//! Loopback servers for tests: an SMTP sink that records what it receives, a DNS server
//! answering from a map, and test certificates. Each test crate uses only some of it.
#![allow(dead_code)]

pub mod dkimpy;
pub mod dns;
pub mod outbound;
pub mod raw;
pub mod relay;
pub mod scripted_hop;
pub mod signing;
pub mod sink;
pub mod tls;
