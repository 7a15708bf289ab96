//! The server side of the SMTP protocol, fed arbitrary bytes: the line splitter and command
//! parser (with the error reply rendered and read back), the DATA and BDAT receivers (split at
//! a fuzz-chosen point, under a fuzz-chosen size cap) and the outbound dot-stuffer. Besides
//! "nothing panics" it asserts what `mailflow::smtp` promises; the stable replay of saved
//! inputs is `tests/it/fuzz_replay.rs`, which includes this file's checks from
//! `fuzz/fuzz_targets/smtp_checks.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "smtp_checks.rs"]
mod smtp_checks;

fuzz_target!(|data: &[u8]| {
    smtp_checks::run(data);
});
