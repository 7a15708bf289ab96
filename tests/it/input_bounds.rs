//! Every input to every subcommand is bounded, and rule files are input too (SECURITY.md §7).
//! The real binary is run on the hostile files under `tests/fixtures/hostile/` (adding a case
//! is adding a file; a large one is written as `NAME.repeat`, see [`expand`]) in every role a file can have, under a 512 MiB address-space limit;
//! FIFOs are refused; includes and imports stay in the rule set's folder; nothing read from a
//! file that is not rule text (or not the rule set's) reaches the output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mailflow");

/// The address-space limit every hostile run gets: 512 MiB. The 23 GB allocation of `import
/// exchange` on `)` was killed by the kernel's OOM killer; under this limit any runaway
/// allocation aborts the process, which fails the test.
const ADDRESS_SPACE: &str = "--as=536870912";

/// A value no output may contain: the child's environment holds it, as a CI's holds secrets.
const CANARY: &str = "canary-6f1d1e0a-not-a-secret";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary under the address-space limit with `stdin` as its input. `timeout` is a
/// watchdog only (a hang fails the test instead of stalling the suite), not a bound asserted.
fn run_limited(args: &[&str], cwd: &Path, stdin: &[u8]) -> Output {
    let mut child = Command::new("timeout")
        .args(["300", "prlimit", ADDRESS_SPACE, "--", BIN])
        .args(args)
        .current_dir(cwd)
        .env("MAILFLOW_TEST_SECRET", CANARY)
        // glibc reserves 64 MiB of address space per malloc arena and thread; the limit is
        // about memory used, so the arenas are kept few.
        .env("MALLOC_ARENA_MAX", "2")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("timeout and prlimit (coreutils, util-linux) are needed");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Fed from a thread: a child that stops reading must not block the test.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = feeder.join();
    out
}

/// LSP frames: initialize, open a document holding `text`, shut down, exit.
fn lsp_session(uri: &str, text: &str) -> Vec<u8> {
    let messages = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}),
        json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}),
        json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": uri, "languageId": "mailflow", "version": 1, "text": text}}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "shutdown", "params": Value::Null}),
        json!({"jsonrpc": "2.0", "method": "exit", "params": Value::Null}),
    ];
    let mut out = Vec::new();
    for m in messages {
        let body = m.to_string();
        out.extend(format!("Content-Length: {}\r\n\r\n{body}", body.len()).bytes());
    }
    out
}

/// A large hostile input, kept small in the repository: `NAME.repeat` holds lines `prefix
/// TEXT`, `unit TEXT`, `count N` and `suffix TEXT` (`#` starts a comment; TEXT takes the
/// escapes `\n`, `\r`, `\t`, `\\`, `\xHH` and `\u{HHHH}`), and stands for prefix, then unit
/// `count` times, then suffix. Written to `dir/NAME`; other files are used as they are.
fn expand(file: &Path, dir: &Path) -> PathBuf {
    if file.extension().is_none_or(|e| e != "repeat") {
        return file.to_path_buf();
    }
    let spec = std::fs::read_to_string(file).unwrap();
    let (mut prefix, mut unit, mut suffix, mut count) =
        (String::new(), String::new(), String::new(), 0);
    for line in spec
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "prefix" => prefix = unescape(value),
            "unit" => unit = unescape(value),
            "suffix" => suffix = unescape(value),
            "count" => count = value.parse().unwrap(),
            _ => panic!("{}: unknown line {line:?}", file.display()),
        }
    }
    let out = dir.join(file.file_stem().unwrap());
    std::fs::write(&out, format!("{prefix}{}{suffix}", unit.repeat(count))).unwrap();
    out
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
            }
            Some('u') => {
                let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => panic!("unknown escape \\{other:?} in {text:?}"),
        }
    }
    out
}

/// `dry-run` of one envelope through `rules`, with `message` as the message file if given.
fn dry_run<'a>(rules: &'a str, message: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec![
        "dry-run",
        rules,
        "--from",
        "a@origin.example",
        "--to",
        "b@example.net",
        "--connector",
        "Loopback",
    ];
    if let Some(m) = message {
        args.extend(["--message", m]);
    }
    args
}

#[test]
fn every_subcommand_survives_every_hostile_file_within_the_memory_limit() {
    let dir = root().join("tests/fixtures/hostile");
    let tmp = tempfile::tempdir().unwrap();
    let expanded = tmp.path().join("expanded");
    std::fs::create_dir(&expanded).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| expand(&p, &expanded))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "hostile fixtures not found in {}",
        dir.display()
    );
    let good = root().join("tests/fixtures/relay/forward.mailflow");
    let good = good.to_str().unwrap();
    let mut failures = Vec::new();
    let mut runs = 0;
    for file in &files {
        let f = file.to_str().unwrap();
        let bytes = std::fs::read(file).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let out_file = tmp.path().join("out");
        let out_file = out_file.to_str().unwrap();
        let uri = format!("file://{}/hostile.mailflow", tmp.path().display());
        // (arguments, standard input): the file in every role a subcommand gives a file.
        let explain_arg: String = text.chars().filter(|c| *c != '\0').take(4096).collect();
        let cases: Vec<(Vec<&str>, Vec<u8>)> = vec![
            (vec!["check", f], vec![]),
            (vec!["check", "--format", "json", f], vec![]),
            (vec!["test", f], vec![]),
            (vec!["fmt", "--check", f], vec![]),
            (vec!["fmt", "--stdin"], bytes.clone()),
            (vec!["graph", f], vec![]),
            (vec!["compile", f, "-o", out_file], vec![]),
            (dry_run(f, None), vec![]),
            (dry_run(good, Some(f)), vec![]),
            (vec!["import", "exchange", f], vec![]),
            (vec!["import", "exchange", f, "--format", "sarif"], vec![]),
            (vec!["import", "csv", f], vec![]),
            (vec!["track", "--log", f], vec![]),
            (vec!["explain", &explain_arg], vec![]),
            (vec!["lsp"], bytes.clone()),
            (vec!["lsp"], lsp_session(&uri, &text)),
        ];
        for (args, stdin) in cases {
            runs += 1;
            let out = run_limited(&args, tmp.path(), &stdin);
            let label = format!(
                "{} on {}",
                args.first().copied().unwrap_or(""),
                file.file_name().unwrap().to_string_lossy()
            );
            // 0: clean, 1: findings, 2: refused input. A signal (an abort when the limit
            // is hit), 101 (a panic) or 124 (the watchdog) fails.
            match out.status.code() {
                Some(0..=2) => {}
                other => failures.push(format!(
                    "{label} ({:?}): exit {other:?}\n{}",
                    &args[1..],
                    String::from_utf8_lossy(&out.stderr)
                        .chars()
                        .take(2000)
                        .collect::<String>()
                )),
            }
            let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
            if String::from_utf8_lossy(&all).contains(CANARY) {
                failures.push(format!("{label}: the environment reached the output"));
            }
            // Output is bounded too: findings are capped, nothing is echoed whole.
            if all.len() > 16 << 20 {
                failures.push(format!("{label}: {} bytes of output", all.len()));
            }
        }
    }
    eprintln!("{runs} runs on {} hostile files", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// A FIFO or a device given as a rule file, CSV, PowerShell file, message or log is refused
/// at once (exit 2, a message saying it is not a regular file), in every role.
#[test]
fn fifos_and_devices_are_refused_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("rules.mailflow");
    mkfifo(&fifo);
    let f = fifo.to_str().unwrap();
    let good = root().join("tests/fixtures/relay/forward.mailflow");
    let good = good.to_str().unwrap();
    for path in [f, "/dev/zero"] {
        for args in [
            vec!["check", path],
            vec!["test", path],
            vec!["fmt", "--check", path],
            vec!["graph", path],
            vec!["import", "exchange", path],
            vec!["import", "csv", path],
            vec!["track", "--log", path],
            dry_run(good, Some(path)),
        ] {
            let out = run_limited(&args, tmp.path(), b"");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains("not a regular file"), "{args:?}: {stderr}");
        }
    }
    // Included or imported, it is an E002 finding on the line that names it.
    let rules = tmp.path().join("main.mailflow");
    let csv = tmp.path().join("entries.csv");
    mkfifo(&csv);
    std::fs::write(
        &rules,
        "include \"rules.mailflow\"\nimport rewrites \"entries.csv\"\naccepted-domain a.example\n",
    )
    .unwrap();
    let out = run_limited(&["check", rules.to_str().unwrap()], tmp.path(), b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.matches("[E002]").count(), 2, "{stdout}");
    assert_eq!(
        stdout
            .matches("named pipe (FIFO), not a regular file")
            .count(),
        2,
        "{stdout}"
    );
}

/// A rule set next to a secret: every way out of its folder is refused before the file is
/// opened (E005), the secret never reaches the output, and `--allow-path` opens a folder.
#[test]
fn includes_and_imports_stay_in_the_rule_set_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("rules");
    std::fs::create_dir_all(rules.join("sub")).unwrap();
    let secret = tmp.path().join("secret.mailflow");
    std::fs::write(&secret, format!("TOKEN {CANARY}\n")).unwrap();
    std::fs::write(tmp.path().join("secret.csv"), format!("Name\n{CANARY}\n")).unwrap();
    std::os::unix::fs::symlink(&secret, rules.join("link.mailflow")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), rules.join("up")).unwrap();
    std::fs::write(
        rules.join("sub/inner.mailflow"),
        "accepted-domain inner.example\n",
    )
    .unwrap();
    let main = rules.join("main.mailflow");
    std::fs::write(
        &main,
        format!(
            "accepted-domain a.example\n\
             include \"sub/inner.mailflow\"\n\
             include \"../secret.mailflow\"\n\
             include \"{}\"\n\
             include \"link.mailflow\"\n\
             include \"up/secret.mailflow\"\n\
             include \"sub/../../secret.mailflow\"\n\
             include \"/proc/self/environ\"\n\
             import rewrites \"../secret.csv\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let main = main.to_str().unwrap();
    let out = run_limited(&["check", main], tmp.path(), b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.matches("[E005]").count(), 7, "{stdout}");
    // Only the file inside was read.
    assert!(stdout.contains("(2 files)"), "{stdout}");
    assert!(!stdout.contains(CANARY), "{stdout}");

    // The same rule set in the relay: refused before it starts, nothing echoed.
    let relay = run_limited(
        &[
            "relay",
            main,
            "--spool",
            tmp.path().join("spool").to_str().unwrap(),
        ],
        tmp.path(),
        b"",
    );
    let all = String::from_utf8_lossy(&[relay.stdout, relay.stderr].concat()).into_owned();
    assert_eq!(relay.status.code(), Some(2), "{all}");
    assert!(all.contains("E005") && !all.contains(CANARY), "{all}");

    // A folder with a link out of it is refused as a whole, without reading the target.
    let out = run_limited(&["check", rules.to_str().unwrap()], tmp.path(), b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("link.mailflow") && !stderr.contains(CANARY),
        "{stderr}"
    );

    // A root file that is a link out of its folder is refused the same way.
    let out = run_limited(
        &["check", rules.join("link.mailflow").to_str().unwrap()],
        tmp.path(),
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("a link to a file outside its folder"),
        "{stderr}"
    );
    assert!(!stderr.contains(CANARY), "{stderr}");

    // Allowed explicitly, the folder is read (and its text, which does not parse, reported).
    let allow = tmp.path().to_str().unwrap();
    let out = run_limited(&["check", "--allow-path", allow, main], tmp.path(), b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("[E005]").count(),
        1,
        "only /proc stays out: {stdout}"
    );
    assert!(stdout.contains("[E001]"), "{stdout}");
}

/// Bytes that are not rule text (NULs, not UTF-8) are refused by what they are, never shown.
#[test]
fn files_that_are_not_text_are_reported_without_their_contents() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("env.mailflow"),
        format!("PATH=/bin\0SECRET={CANARY}\0"),
    )
    .unwrap();
    let mut latin1 = b"rule \"caf\xe9\" { delete }\n# ".to_vec();
    latin1.extend(CANARY.bytes());
    std::fs::write(tmp.path().join("latin1.csv"), &latin1).unwrap();
    let main = tmp.path().join("main.mailflow");
    std::fs::write(
        &main,
        "accepted-domain a.example\ninclude \"env.mailflow\"\nimport rewrites \"latin1.csv\"\n",
    )
    .unwrap();
    let out = run_limited(&["check", main.to_str().unwrap()], tmp.path(), b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("[E007]").count(), 2, "{stdout}");
    assert!(
        stdout.contains("U+0000") && stdout.contains("not valid UTF-8"),
        "{stdout}"
    );
    assert!(!stdout.contains(CANARY), "{stdout}");
    // Named on the command line, the same.
    for (args, what) in [
        (vec!["check", "env.mailflow"], "U+0000"),
        (vec!["import", "csv", "latin1.csv"], "not valid UTF-8"),
        (vec!["import", "exchange", "env.mailflow"], "U+0000"),
        (vec!["fmt", "--check", "env.mailflow"], "U+0000"),
    ] {
        let out = run_limited(&args, tmp.path(), b"");
        let all = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(
            all.contains(what) && !all.contains(CANARY),
            "{args:?}: {all}"
        );
    }
}

/// A test's message file may lie outside the rule set's folder (the shipped rules use
/// `../examples/*.eml`), so what it holds is never printed, even when an expectation about
/// one of its headers fails.
#[test]
fn test_message_files_stay_in_the_folder_and_are_never_echoed() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("rules")).unwrap();
    std::fs::write(
        tmp.path().join("secret.eml"),
        format!("From: a@origin.example\nX-Secret: {CANARY}\nSubject: {CANARY}\n\nbody\n"),
    )
    .unwrap();
    let rules = std::fs::read_to_string(root().join("tests/fixtures/relay/forward.mailflow"))
        .unwrap()
        + "\ntest \"Leaks nothing\" {\n  connector \"Loopback\"\n  from a@origin.example\n  to b@example.net\n  message \"../secret.eml\"\n  expect header \"X-Secret\" \"something else\"\n  expect header \"Subject\" \"something else\"\n  expect no-header \"X-Secret\"\n}\n";
    let main = tmp.path().join("rules/main.mailflow");
    std::fs::write(&main, rules).unwrap();
    // Outside the rule set's folder: not read at all (rules could spell out what it holds,
    // one `matches` per character, in the names of the rules that fire).
    let out = run_limited(
        &["test", "--verbose", main.to_str().unwrap()],
        tmp.path(),
        b"",
    );
    let all = String::from_utf8_lossy(&[out.stdout.as_slice(), out.stderr.as_slice()].concat())
        .into_owned();
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("E005") && !all.contains("FAIL") && !all.contains("PASS"),
        "{all}"
    );
    assert!(!all.contains(CANARY), "{all}");
    // Allowed with `--allow-path`: read, and still never echoed.
    let out = run_limited(
        &[
            "test",
            "--verbose",
            "--allow-path",
            tmp.path().to_str().unwrap(),
            main.to_str().unwrap(),
        ],
        tmp.path(),
        b"",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert_eq!(stdout.matches("not shown").count(), 3, "{stdout}");
    assert!(!stdout.contains(CANARY), "{stdout}");
}

/// A leading byte order mark is accepted (rule files and CSV), `fmt` drops it; a bare CR is
/// refused by `check` and by `fmt`.
#[test]
fn a_bom_is_accepted_and_a_bare_cr_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("entries.csv"),
        "\u{feff}Name,InternalAddress,ExternalAddress,ExceptionList,OutboundOnly\nJohn,john@tenant1.a.example,john@a.example,,False\n",
    )
    .unwrap();
    let main = tmp.path().join("main.mailflow");
    std::fs::write(
        &main,
        "\u{feff}accepted-domain a.example\nimport rewrites \"entries.csv\"\n",
    )
    .unwrap();
    let m = main.to_str().unwrap();
    let out = run_limited(&["check", "--deny-warnings", m], tmp.path(), b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("0 errors, 0 warnings"), "{stdout}");
    let out = run_limited(&["import", "csv", "entries.csv"], tmp.path(), b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("john@tenant1.a.example"));
    // fmt drops the mark: --check reports it, formatting removes it, and the result is clean.
    assert_eq!(
        run_limited(&["fmt", "--check", m], tmp.path(), b"")
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        run_limited(&["fmt", m], tmp.path(), b"").status.code(),
        Some(0)
    );
    assert!(
        !std::fs::read_to_string(&main)
            .unwrap()
            .starts_with('\u{feff}')
    );
    assert_eq!(
        run_limited(&["fmt", "--check", m], tmp.path(), b"")
            .status
            .code(),
        Some(0)
    );

    // A rule hidden behind a bare CR in a comment: refused, and not read as a rule.
    std::fs::write(
        &main,
        "accepted-domain a.example\n# note\rrule \"Hidden\" { delete }\n",
    )
    .unwrap();
    let out = run_limited(&["check", "--format", "json", m], tmp.path(), b"");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<&str> = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(codes, ["E006"], "{report}");
    let (tree, _) = mailflow::parse::parse_file(
        mailflow::source::FileId(0),
        &std::fs::read_to_string(&main).unwrap(),
    );
    assert_eq!(
        tree.items.len(),
        1,
        "the comment hid a rule: {:?}",
        tree.items
    );
    let out = run_limited(&["fmt", "--check", m], tmp.path(), b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("E006"));
}

/// `fmt` reads a folder as `check` does: a link to a file outside it (a file link, or a
/// folder link) is refused, never printed and never rewritten; and links that loop (to the
/// folder itself, to the folder above) end the walk instead of recursing for ever.
#[test]
fn fmt_stays_in_the_folder_and_links_that_loop_end() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let secret = "https://ci-bot:ghp_7f3a9c@github.com";
    std::fs::write(outside.join("git-credentials"), secret).unwrap();
    let victim = "accepted-domain    victim.example\n";
    std::fs::write(outside.join("victim.mailflow"), victim).unwrap();
    let ci = tmp.path().join("ci");
    std::fs::create_dir(&ci).unwrap();
    std::fs::write(ci.join("main.mailflow"), "accepted-domain example.com\n").unwrap();
    let run = |args: &[&str]| {
        let out = run_limited(args, tmp.path(), b"");
        let text =
            String::from_utf8_lossy(&[out.stdout.as_slice(), out.stderr.as_slice()].concat())
                .into_owned();
        (out.status.code(), text)
    };

    std::os::unix::fs::symlink(outside.join("git-credentials"), ci.join("creds.mailflow")).unwrap();
    for args in [
        &["fmt", "--check", "ci"][..],
        &["fmt", "ci"],
        &["check", "ci"],
    ] {
        let (code, text) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(
            !text.contains("ghp_"),
            "{args:?} printed the secret: {text}"
        );
    }
    let (code, text) = run(&["fmt", "--check", "ci/creds.mailflow"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(!text.contains("ghp_"), "{text}");
    std::fs::remove_file(ci.join("creds.mailflow")).unwrap();

    // A folder link out: refused, and the file behind it keeps its bytes.
    std::os::unix::fs::symlink(&outside, ci.join("linked")).unwrap();
    std::fs::remove_file(outside.join("git-credentials")).unwrap();
    let (code, text) = run(&["fmt", "ci"]);
    assert_eq!(code, Some(2), "{text}");
    assert_eq!(
        std::fs::read_to_string(outside.join("victim.mailflow")).unwrap(),
        victim
    );
    std::fs::remove_file(ci.join("linked")).unwrap();

    // Links that loop: the walk ends, and the one real file is formatted.
    std::os::unix::fs::symlink(".", ci.join("self")).unwrap();
    std::os::unix::fs::symlink("..", ci.join("up")).unwrap();
    for args in [&["check", "ci"][..], &["fmt", "--check", "ci"][..]] {
        let (code, text) = run(args);
        assert!(matches!(code, Some(0..=2)), "{args:?}: {code:?} {text}");
    }
}
