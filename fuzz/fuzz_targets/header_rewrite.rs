//! Header rewriting: a message (`Message::parse`) and an envelope, both from the fuzz data,
//! evaluated against fixed compiled rule sets; the serialised message must not gain a bare
//! line ending, an over-long header line, a header field nobody asked for, or a changed
//! body. The checks live in `header_checks.rs`, shared with `tests/it/fuzz_replay.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "header_checks.rs"]
mod header_checks;

static SETS: OnceLock<Vec<header_checks::Set>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let sets = SETS.get_or_init(|| {
        header_checks::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
    });
    header_checks::run(sets, data);
});
