//! dkimpy, an independent DKIM implementation (Python), through `tests/support/dkim_check.py`.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `dkim_check.py` with `args` on `message`: its exit code and output. A missing
/// dkimpy fails the test (exit 2), it never skips it.
pub fn run(args: &[&str], message: &[u8]) -> (i32, Vec<u8>) {
    let mut child = Command::new("python3")
        .arg(super::relay::root().join("tests/support/dkim_check.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 is needed for the DKIM tests");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(
        code, 2,
        "dkimpy (and PyNaCl) are needed: .ci/run installs them (pip install dkimpy pynacl)"
    );
    (code, out.stdout)
}
