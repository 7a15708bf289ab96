//! Arbitrary bytes to `check_text` (as UTF-8 when they are, lossily otherwise), then the
//! findings rendered the way `mailflow check` prints them. Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

/// `include` and `import rewrites` read real files, relative to the current folder or
/// absolute: inputs that could name a device file are skipped (`/dev/zero` never ends,
/// `/dev/stdin` blocks).
const DEVICES: &[&[u8]] = &[b"/dev", b"dev/", b"/proc", b"proc/", b"/sys", b"sys/"];

fuzz_target!(|data: &[u8]| {
    if DEVICES
        .iter()
        .any(|w| data.windows(w.len()).any(|x| x == *w))
    {
        return;
    }
    let text = String::from_utf8_lossy(data);
    let report = mailflow::check::check_text("fuzz.mailflow", &text);
    let _ = report.has_errors();
    let _ = mailflow::diagnostic::render::human(&report.diagnostics, &report.sources, false);
    let _ = mailflow::diagnostic::render::json(&report.diagnostics, &report.sources);
});
