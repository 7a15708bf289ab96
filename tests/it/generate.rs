//! Shell completions and man pages, generated from the clap definitions, used the way a
//! user would: bash completes a subcommand and a flag from the script, and groff renders
//! every man page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mailflow");

/// Runs bash's completion function on the words typed so far; returns its suggestions.
fn complete(words: &[&str]) -> Vec<String> {
    let script = format!(
        "source <('{BIN}' completions bash)\n\
         COMP_WORDS=({words})\n\
         COMP_CWORD={cword}\n\
         COMP_LINE='{line}'\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _mailflow mailflow '{cur}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
        line = words.join(" "),
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    assert_eq!(complete(&["mailflow", "gr"]), ["graph"]);
    let relay = complete(&["mailflow", "relay", "--smtp"]);
    assert_eq!(relay, ["--smtp-timeout"]);
    let formats = complete(&["mailflow", "graph", "--format", ""]);
    assert!(formats.contains(&"mermaid".to_string()), "{formats:?}");
    assert!(formats.contains(&"dot".to_string()), "{formats:?}");
}

#[test]
fn every_shell_gets_a_script_naming_every_subcommand() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        for sub in ["check", "test", "dry-run", "relay", "track", "graph"] {
            assert!(text.contains(sub), "{shell} lacks {sub}");
        }
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_render_with_groff() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["man", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let mut pages: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    assert!(pages.len() >= 12, "{pages:?}");
    for page in &pages {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(page)
            .output()
            .expect("groff is needed (.ci/run installs groff-base)");
        assert!(out.status.success(), "{}", page.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.trim().is_empty(), "{}: {err}", page.display());
    }
    let relay = std::fs::read(tmp.path().join("mailflow-relay.1")).unwrap();
    let out = Command::new("groff")
        .args(["-man", "-Tascii"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&relay)?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // groff -Tascii overstrikes bold text; compare without backspaces.
    let plain: String = {
        let mut s = String::new();
        for c in text.chars() {
            if c == '\u{8}' {
                s.pop();
            } else {
                s.push(c);
            }
        }
        s
    };
    assert!(plain.contains("--smtp-timeout"), "{plain}");
    assert!(plain.contains("--retry-min"));

    let out = Command::new(BIN).arg("man").output().unwrap();
    let top = String::from_utf8(out.stdout).unwrap();
    assert!(top.contains(".TH mailflow 1"));
    assert!(top.contains("mailflow\\-relay(1)"));
}
