//! `mailflow fmt`: every rule file in the repository formats idempotently with its syntax tree
//! and comments unchanged (a new fixture is covered without Rust code), the messy inputs under
//! `tests/fixtures/fmt/` are snapshotted formatted, and the binary is run on real files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mailflow::fmt::{FormatError, comments, format_source, without_spans};
use mailflow::parse::parse_file;
use mailflow::source::FileId;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mailflow");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn comment_texts(text: &str) -> Vec<&str> {
    comments(text).iter().map(|c| c.text(text)).collect()
}

/// Formats `text` and checks, independently of the formatter's own safety net, what it must
/// promise: the same tree, the same comments, nothing left to change the second time.
fn format_checked(name: &str, text: &str) -> Option<String> {
    let out = match format_source(FileId(0), text) {
        Ok(out) => out,
        Err(FormatError::Syntax(_)) => return None,
        Err(e @ FormatError::Unsafe(_)) => panic!("{name}: {e}"),
    };
    let again = format_source(FileId(0), &out).unwrap();
    assert_eq!(again, out, "{name}: formatting twice changed it");
    let (before, _) = parse_file(FileId(0), text);
    let (after, diags) = parse_file(FileId(0), &out);
    assert!(diags.is_empty(), "{name}: the output does not parse");
    assert_eq!(without_spans(&before), without_spans(&after), "{name}");
    assert_eq!(comment_texts(text), comment_texts(&out), "{name}");
    for line in out.lines() {
        assert_eq!(line, line.trim_end(), "{name}: trailing blanks in {line:?}");
    }
    Some(out)
}

#[test]
fn every_rule_file_formats_idempotently_keeping_tree_and_comments() {
    let mut formatted = 0;
    let mut check = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        if format_checked(&path.display().to_string(), &text).is_some() {
            formatted += 1;
        }
    };
    insta::glob!("../../rules", "**/*.mailflow", |path| check(path));
    insta::glob!("../fixtures", "**/*.mailflow", |path| check(path));
    // Everything under rules/ and tests/fixtures/ except the few files that must not parse.
    assert!(formatted >= 60, "only {formatted} files formatted");
}

/// Each file that parses, mangled in ways that keep it parsing: indentation of tabs and
/// spaces, a comment at the end of every line, a comment above every line, CRLF endings.
/// Whatever comes in, the promises hold.
#[test]
fn mangled_rule_files_keep_the_promises() {
    let mut mangled = 0;
    let mut check = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        if format_source(FileId(0), &text).is_err() {
            return;
        }
        let name = path.display().to_string();
        let lines: Vec<&str> = text.lines().collect();
        let indented: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let body = l.trim_start();
                if body.len() == l.len() {
                    body.to_string()
                } else {
                    format!("{}{body}", ["\t", "   ", " \t ", "        "][i % 4])
                }
            })
            .collect();
        let trailing: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{l} # t{i}"))
            .collect();
        let above: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("# a{i}\n{l}"))
            .collect();
        for (what, variant) in [
            ("indented", indented.join("\n")),
            ("trailing", trailing.join("\n")),
            ("above", above.join("\n")),
            // From LF first: a file already in CRLF would get CR CR LF, a bare CR (E006).
            ("crlf", text.replace("\r\n", "\n").replace('\n', "\r\n")),
        ] {
            format_checked(&format!("{name} {what}"), &variant)
                .unwrap_or_else(|| panic!("{name} {what} no longer parses:\n{variant}"));
            mangled += 1;
        }
    };
    insta::glob!("../../rules", "**/*.mailflow", |path| check(path));
    insta::glob!("../fixtures", "**/*.mailflow", |path| check(path));
    assert!(mangled >= 240, "only {mangled} variants");
}

#[test]
fn every_documentation_example_formats_idempotently() {
    for doc in ["README.md", "docs/language.md", "docs/fmt.md"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        let mut blocks = 0;
        for block in text.split("```mailflow\n").skip(1) {
            let block = block.split("```").next().unwrap();
            let name = format!("{doc} block {blocks}");
            assert!(
                format_checked(&name, block).is_some(),
                "{name} does not parse"
            );
            blocks += 1;
        }
        assert!(blocks > 0, "{doc} has no examples");
    }
}

/// docs/fmt.md shows a file before and after: the first example formats to the second.
#[test]
fn the_documented_example_is_what_fmt_does() {
    let text = std::fs::read_to_string(root().join("docs/fmt.md")).unwrap();
    let blocks: Vec<&str> = text
        .split("```mailflow\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(format_source(FileId(0), blocks[0]).unwrap(), blocks[1]);
}

#[test]
fn messy_inputs_format_as_snapshotted() {
    insta::glob!("../fixtures/fmt", "*.mailflow", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let out = format_checked(&path.display().to_string(), &text).unwrap();
        // Shown so that a snapshot says which line ending the file got.
        insta::assert_snapshot!(out.replace('\r', "␍"));
    });
}

#[test]
fn the_bundled_rule_sets_are_in_canonical_form() {
    let o = mailflow(&["fmt", "--check", "rules/"], None, &root());
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("0 files would be reformatted"),
        "{}",
        stdout(&o)
    );
}

fn mailflow(args: &[&str], stdin: Option<&str>, dir: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        let mut input = input;
        input.write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/fmt").join(name)).unwrap()
}

#[test]
fn check_then_rewrite_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let messy = fixture("odd-indentation.mailflow");
    let formatted = format_source(FileId(0), &messy).unwrap();
    std::fs::write(dir.path().join("messy.mailflow"), &messy).unwrap();
    std::fs::write(dir.path().join("tidy.mailflow"), &formatted).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let p = std::fs::Permissions::from_mode(0o640);
        std::fs::set_permissions(dir.path().join("messy.mailflow"), p).unwrap();
    }

    let o = mailflow(&["fmt", "--check", "tidy.mailflow"], None, dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));

    let o = mailflow(
        &["fmt", "--check", "tidy.mailflow", "messy.mailflow"],
        None,
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("would reformat messy.mailflow\n"), "{out}");
    assert!(!out.contains("would reformat tidy.mailflow"), "{out}");
    // A unified diff of what would change.
    assert!(
        out.contains("--- messy.mailflow\n+++ messy.mailflow (formatted)\n@@ "),
        "{out}"
    );
    assert!(
        out.contains("\n-receive-connector \"From Exchange\"{remote 10.0.0.0/8;tls required\n"),
        "{out}"
    );
    assert!(
        out.contains("\n+receive-connector \"From Exchange\" {\n+  remote 10.0.0.0/8\n"),
        "{out}"
    );
    assert!(
        out.ends_with("1 file would be reformatted, 1 already formatted\n"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("messy.mailflow")).unwrap(),
        messy
    );

    let o = mailflow(
        &["fmt", "messy.mailflow", "tidy.mailflow"],
        None,
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "reformatted messy.mailflow\n1 file reformatted, 1 already formatted\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("messy.mailflow")).unwrap(),
        formatted
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let md = std::fs::metadata(dir.path().join("messy.mailflow")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o640);
    }
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let o = mailflow(&["fmt", "--check", "messy.mailflow"], None, dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn a_folder_formats_its_rule_files() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("rules/nested");
    std::fs::create_dir_all(&sub).unwrap();
    let messy = fixture("tabs.mailflow");
    std::fs::write(dir.path().join("rules/a.mailflow"), &messy).unwrap();
    std::fs::write(sub.join("b.mailflow"), &messy).unwrap();
    std::fs::write(sub.join("notes.txt"), &messy).unwrap();
    let o = mailflow(&["fmt", "rules", "rules/a.mailflow"], None, dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).ends_with("2 files reformatted, 0 already formatted\n"),
        "{}",
        stdout(&o)
    );
    let formatted = format_source(FileId(0), &messy).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rules/a.mailflow")).unwrap(),
        formatted
    );
    assert_eq!(
        std::fs::read_to_string(sub.join("b.mailflow")).unwrap(),
        formatted
    );
    assert_eq!(
        std::fs::read_to_string(sub.join("notes.txt")).unwrap(),
        messy
    );

    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let o = mailflow(&["fmt", "empty"], None, dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`empty` contains no .mailflow files"),
        "{}",
        stderr(&o)
    );
    let o = mailflow(&["fmt", "missing.mailflow"], None, dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read `missing.mailflow`: no such file"));
    assert_eq!(mailflow(&["fmt"], None, dir.path()).status.code(), Some(2));
}

#[test]
fn stdin_to_stdout() {
    let messy = fixture("comments-everywhere.mailflow");
    let formatted = format_source(FileId(0), &messy).unwrap();
    for args in [&["fmt", "-"][..], &["fmt", "--stdin"][..]] {
        let o = mailflow(args, Some(&messy), &root());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), formatted);
    }
    let o = mailflow(&["fmt", "--check", "-"], Some(&messy), &root());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("--- <stdin>\n+++ <stdin> (formatted)\n"),
        "{}",
        stdout(&o)
    );
    let o = mailflow(&["fmt", "--check", "-"], Some(&formatted), &root());
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "");
    let o = mailflow(&["fmt", "-", "rules/"], None, &root());
    assert_eq!(o.status.code(), Some(2));
}

/// A file that does not parse is reported exactly as `check` reports it and left untouched;
/// the other files are still formatted.
#[test]
fn a_syntax_error_leaves_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let broken = "rule \"x\" {\n    if sender nowhere\n  stop\n}\nrewrite a@b.com => c@d.com\n";
    std::fs::write(dir.path().join("broken.mailflow"), broken).unwrap();
    std::fs::write(dir.path().join("fine.mailflow"), fixture("tabs.mailflow")).unwrap();

    let o = mailflow(
        &["fmt", "broken.mailflow", "fine.mailflow"],
        None,
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("broken.mailflow")).unwrap(),
        broken
    );
    assert!(
        stdout(&o).contains("reformatted fine.mailflow\n"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).ends_with(", 1 left as they are\n"),
        "{}",
        stdout(&o)
    );

    let check = mailflow(&["check", "broken.mailflow"], None, dir.path());
    let report = stdout(&check);
    let diagnostics = report.rsplit_once("checked ").unwrap().0;
    assert!(diagnostics.matches("[E001]").count() == 2, "{report}");
    assert_eq!(
        stderr(&o),
        format!(
            "{diagnostics}error: `broken.mailflow` was left as it is: it does not parse (2 errors, 0 warnings)\n"
        )
    );

    let o = mailflow(&["fmt", "-"], Some(broken), dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("[E001]"));
}
