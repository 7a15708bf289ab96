#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! `check` must never panic, whatever it is given: a deterministic, dependency-free cousin of
//! the fuzz target in `fuzz/`. Every fixture (under `tests/fixtures/` and `rules/`) is fed
//! truncated at every 7th byte and with random bytes spliced in by a seeded xorshift PRNG,
//! followed by hand-made nasty inputs (unbalanced braces, huge lines, deeply repeated tokens,
//! NULs, CR-only line endings, non-ASCII) and every file under `tests/fixtures/no_panic/`
//! (inputs that once made it panic). Each input is checked and its findings rendered; the test
//! asserts only that nothing panics, and names the inputs that did.

use mailflow::check::check_text;
use mailflow::diagnostic::render;
use mailflow::source::FileId;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "../../benches/generate.rs"]
mod generate;

/// xorshift64*: small, seeded, good enough to pick offsets and bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One input and where it comes from.
struct Case {
    label: String,
    /// The name `check_text` is given: the fixture's own path, so includes resolve as they
    /// would for the real file.
    name: String,
    text: String,
    /// Also feed the text to the CSV reader of `import rewrites`.
    csv: bool,
}

#[derive(Default)]
struct Runner {
    failures: Vec<String>,
    inputs: usize,
    /// The slowest inputs, to spot a hang or a quadratic path early.
    slowest: Vec<(std::time::Duration, String)>,
}

impl Runner {
    fn run(&mut self, case: &Case) {
        self.inputs += 1;
        let started = Instant::now();
        // Checking, then rendering as `mailflow check` does (human and JSON), each caught
        // separately so a failure says which step panicked.
        let report = self.step(case, "check_text", || check_text(&case.name, &case.text));
        if let Some(report) = report {
            self.step(case, "render::human", || {
                render::human(&report.diagnostics, &report.sources, false)
            });
            self.step(case, "render::json", || {
                render::json(&report.diagnostics, &report.sources)
            });
        }
        if case.csv {
            self.step(case, "load::csv_rewrites", || {
                mailflow::load::csv_rewrites(FileId(0), &case.text)
            });
        }
        self.slowest.push((started.elapsed(), case.label.clone()));
        if self.slowest.len() > 64 {
            self.slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
            self.slowest.truncate(8);
        }
    }

    fn step<T>(&mut self, case: &Case, what: &str, f: impl FnOnce() -> T) -> Option<T> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => Some(v),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "(no message)".to_string());
                let location = LAST_PANIC.lock().map(|l| l.clone()).unwrap_or_default();
                let shown: String = case.text.chars().take(400).collect();
                let more = if shown.len() < case.text.len() {
                    format!(" … ({} bytes in all)", case.text.len())
                } else {
                    String::new()
                };
                self.failures.push(format!(
                    "{} (as `{}`): {what} panicked at {location}: {msg}\n    input: {shown:?}{more}",
                    case.label, case.name
                ));
                None
            }
        }
    }
}

/// Where the last panic happened (the hook replaces the default one, which would print a
/// backtrace per panic).
static LAST_PANIC: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every file under `dir` (relative to the crate), sorted, as (relative path, text).
fn fixtures(dir: &str) -> Vec<(String, String)> {
    let root = manifest_dir();
    let mut paths = Vec::new();
    files_under(&root.join(dir), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/");
            let bytes = std::fs::read(&p).unwrap();
            (rel, String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Random edits: bytes spliced in, ranges cut out or repeated, lines swapped.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(5) {
            // Random bytes (possibly invalid UTF-8, made lossy below).
            0 | 1 => {
                let n = 1 + rng.below(16);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, junk);
            }
            // Bytes the grammar cares about.
            2 => {
                const SPECIAL: &[u8] = b"{}\"\\;,\n\r\t #*.@-></:[]()^$\0";
                let n = 1 + rng.below(4);
                let junk: Vec<u8> = (0..n).map(|_| SPECIAL[rng.below(SPECIAL.len())]).collect();
                bytes.splice(at..at, junk);
            }
            // Cut a range.
            3 => {
                let end = (at + 1 + rng.below(32)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            // Repeat a range.
            _ => {
                let end = (at + 1 + rng.below(64)).min(bytes.len());
                let piece = bytes.get(at.min(end)..end).unwrap_or(&[]).to_vec();
                let times = 1 + rng.below(8);
                for _ in 0..times {
                    bytes.splice(at..at, piece.iter().copied());
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Hand-made inputs that stress the parser's and resolver's edges.
fn nasty_inputs() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    let mut add = |label: &str, text: String| v.push((label.to_string(), text));

    // Unbalanced braces and blocks.
    add("only an opening brace", "{".to_string());
    add("only a closing brace", "}".to_string());
    add("open rule", "rule \"x\" {\n  stop\n".to_string());
    add("open rule at end of file", "rule \"x\" {".to_string());
    add(
        "extra closing braces",
        "rule \"x\" { stop }}}}\n}\n".to_string(),
    );
    add(
        "nested braces",
        "rule \"x\" { { { { stop } } } }\n".to_string(),
    );
    add(
        "many opening braces",
        "rule \"x\" ".to_string() + &"{".repeat(5_000),
    );
    add("many closing braces", "}".repeat(5_000));
    add("brace soup", "{}".repeat(2_000) + &"}{".repeat(2_000));
    add(
        "open connector",
        "receive-connector \"A\" {\n  remote 10.0.0.0/8\n".to_string(),
    );
    add(
        "open contact then rule",
        "contact \"C\" { address a@example.com\nrule \"r\" { stop }\n".to_string(),
    );
    add(
        "unterminated string",
        "rule \"never closed { stop }\n".to_string(),
    );
    add("unterminated string at eof", "rewrite \"".to_string());
    add("backslash at end of string", "rule \"a\\".to_string());
    add("escaped newline", "rule \"a\\\n\" { stop }\n".to_string());

    // Huge lines and values.
    let big = 50_000;
    add("huge comment line", format!("# {}\n", "x".repeat(big)));
    add(
        "huge atom",
        format!("accepted-domain {}\n", "a".repeat(big)),
    );
    add(
        "huge domain of labels",
        format!("accepted-domain {}com\n", "a.".repeat(big / 2)),
    );
    add(
        "huge local part",
        format!("rewrite {}@example.com -> b@example.com\n", "a".repeat(big)),
    );
    add(
        "huge string",
        format!("rule \"{}\" {{ stop }}\n", "n".repeat(big)),
    );
    add(
        "huge escaped string",
        format!("rule \"{}\" {{ stop }}\n", "\\q".repeat(big / 2)),
    );
    add(
        "huge list",
        format!(
            "rule \"r\" {{ if recipient contains {}\"z\"; stop }}\n",
            "\"w\", ".repeat(big / 8)
        ),
    );
    add(
        "huge ip list",
        format!(
            "receive-connector \"R\" {{ remote {}10.0.0.1 }}\n",
            "10.0.0.1, ".repeat(big / 16)
        ),
    );
    add(
        "huge header value",
        format!(
            "rule \"r\" {{ set-header \"X-A\" \"{}\" }}\n",
            "v".repeat(big)
        ),
    );
    add(
        "huge number",
        format!("rule \"r\" {{ priority {}; stop }}\n", "9".repeat(10_000)),
    );
    add(
        "huge size",
        format!(
            "rule \"r\" {{ if size over {}MB; stop }}\n",
            "9".repeat(10_000)
        ),
    );
    add(
        "huge reject code",
        format!(
            "rule \"r\" {{ reject {} 5.7.1 \"x\" }}\n",
            "5".repeat(10_000)
        ),
    );
    add(
        "huge enhanced code",
        format!("rule \"r\" {{ reject 550 {} \"x\" }}\n", "5.".repeat(5_000)),
    );
    add(
        "huge cidr prefix",
        format!(
            "rule \"r\" {{ if client-ip in 10.0.0.0/{}; stop }}\n",
            "9".repeat(1_000)
        ),
    );

    // Deeply repeated tokens.
    add("repeated keyword", "rule ".repeat(10_000));
    add("repeated keyword lines", "rule\n".repeat(1_000));
    add(
        "repeated arrows",
        format!("rewrite a.com {} b.com\n", "-> ".repeat(5_000)),
    );
    add(
        "repeated outbound-only",
        format!(
            "rewrite *.a.com -> a.com {}\n",
            "outbound-only ".repeat(5_000)
        ),
    );
    add(
        "repeated except",
        format!(
            "rewrite *.a.com -> a.com outbound-only {}\n",
            "except x.a.com ".repeat(2_000)
        ),
    );
    add(
        "repeated conditions",
        format!(
            "rule \"r\" {{\n{}  stop\n}}\n",
            "  if sender outside\n".repeat(2_000)
        ),
    );
    add(
        "repeated contradictory conditions",
        format!(
            "rule \"r\" {{\n{}  stop\n}}\n",
            "  if sender inside\n  if sender outside\n".repeat(300)
        ),
    );
    add(
        "repeated ip conditions",
        format!(
            "rule \"r\" {{\n{}  stop\n}}\n",
            (0..300)
                .map(|i| format!("  if client-ip in 10.{}.0.0/16\n", i % 256))
                .collect::<String>()
        ),
    );
    add(
        "repeated semicolons",
        format!("rule \"r\" {{ {} stop }}\n", ";".repeat(10_000)),
    );
    add(
        "repeated commas",
        format!(
            "rule \"r\" {{ if recipient contains \"a\"{} stop }}\n",
            ",".repeat(5_000)
        ),
    );
    add(
        "repeated trailing commas and newlines",
        format!(
            "rule \"r\" {{ if recipient contains \"a\",{}\"b\"; stop }}\n",
            "\n".repeat(5_000)
        ),
    );
    add(
        "repeated same rule",
        "rule \"same\" { priority 1; stop }\n".repeat(300),
    );
    add(
        "repeated same rewrite",
        "rewrite \"x\" a@b.com -> c@d.com\n".repeat(300),
    );
    add(
        "repeated accepted domain",
        "accepted-domain example.com\n".repeat(300),
    );
    add(
        "repeated wildcard",
        format!("accepted-domain {}example.com\n", "*.".repeat(5_000)),
    );
    add(
        "repeated at signs",
        format!("rewrite {}b.com -> c@d.com\n", "a@".repeat(5_000)),
    );
    add(
        "repeated dots",
        format!("accepted-domain example{}com\n", ".".repeat(5_000)),
    );
    add(
        "repeated include of itself",
        "include \"no_panic.mailflow\"\n".repeat(100),
    );
    add(
        "deep regex nesting",
        format!(
            "rule \"r\" {{ if subject matches \"{}a{}\"; stop }}\n",
            "(".repeat(5_000),
            ")".repeat(5_000)
        ),
    );
    add(
        "unbalanced regex",
        format!(
            "rule \"r\" {{ if subject matches \"{}\"; stop }}\n",
            "(".repeat(5_000)
        ),
    );
    add(
        "huge regex repetition",
        "rule \"r\" { if subject matches \"a{1000}{1000}{1000}\"; stop }\n".to_string(),
    );
    add(
        "huge unicode class regex",
        "rule \"r\" { if subject matches \"\\\\w{500}\\\\pL{500}\"; stop }\n".to_string(),
    );
    add(
        "regex of backslash at end",
        "rule \"r\" { if subject matches \"a\\\\\"; stop }\n".to_string(),
    );
    add(
        "empty regex",
        "rule \"r\" { if subject matches \"\"; stop }\n".to_string(),
    );
    add(
        "repeated group members",
        format!(
            "group \"G\" {{ address g@example.com; members {}\"G\" }}\n",
            "\"G\", ".repeat(1_000)
        ),
    );
    add(
        "repeated tests",
        "test \"t\" { from a@b.com; to c@d.com; expect delivered }\n".repeat(100),
    );

    // NULs and control characters.
    add("a single NUL", "\0".to_string());
    add("only NULs", "\0".repeat(10_000));
    add("NUL in keyword", "ru\0le \"x\" { stop }\n".to_string());
    add("NUL in string", "rule \"x\0y\" { stop }\n".to_string());
    add(
        "NUL in address",
        "rewrite a\0@b.com -> c@d.com\n".to_string(),
    );
    add(
        "NUL in header name",
        "rule \"r\" { set-header \"X\0A\" \"v\" }\n".to_string(),
    );
    add(
        "NUL at end of every line",
        "accepted-domain example.com\0\nrule \"r\" {\0\n stop\0\n}\0\n".to_string(),
    );
    add(
        "control characters",
        (0u8..32).map(char::from).collect::<String>().repeat(100),
    );
    add(
        "DEL and C1 controls",
        "rule \"\u{7f}\u{85}\u{9b}\" { stop }\n".to_string(),
    );
    add(
        "form feed and vertical tab",
        "rule\u{c}\"x\"\u{b}{ stop }\n".to_string(),
    );

    // Line endings.
    add(
        "CR only",
        "accepted-domain example.com\rrule \"r\" {\r  if sender outside\r  delete\r}\r".to_string(),
    );
    add(
        "CRLF",
        "accepted-domain example.com\r\nrule \"r\" {\r\n  if sender outside\r\n  delete\r\n}\r\n"
            .to_string(),
    );
    add(
        "LFCR",
        "accepted-domain example.com\n\rrule \"r\" {\n\r  stop\n\r}\n\r".to_string(),
    );
    add(
        "mixed endings",
        "rule \"a\" { stop }\r\nrule \"b\" { stop }\rrule \"c\" { stop }\n\r\n\r".to_string(),
    );
    add("CR inside string", "rule \"a\rb\" { stop }\n".to_string());
    add("only CRs", "\r".repeat(10_000));
    add("only LFs", "\n".repeat(10_000));
    add("CR before EOF in block", "rule \"a\" { stop\r".to_string());
    add(
        "unicode line separators",
        "rule \"a\" {\u{2028}stop\u{2029}}\u{85}".to_string(),
    );

    // Non-ASCII.
    add("BOM", "\u{feff}accepted-domain example.com\n".to_string());
    add(
        "BOM before every line",
        "\u{feff}rule \"a\" { stop }\n\u{feff}rule \"b\" { stop }\n".to_string(),
    );
    add("IDN domain", "accepted-domain exämple.com\ncontact \"Ü\" { address ü@exämple.com; external ü@bücher.example }\n".to_string());
    add("non-ASCII everywhere", "rewrite \"Jörg\" jörg@exämple.com -> jörg@例え.テスト\nrule \"ルール\" { if subject contains \"日本語\"; prepend-subject \"[äöü] \" }\n".to_string());
    add("emoji", "rule \"🚀\" { if subject matches \"^🚀+$\"; set-header \"X-😀\" \"😀\"; stop }\naccepted-domain 😀.com\n".to_string());
    add(
        "combining marks",
        "rule \"e\u{301}\u{301}\u{301}\" { if subject contains \"a\u{308}\u{308}\"; stop }\n"
            .to_string(),
    );
    add(
        "right-to-left",
        "rule \"\u{202e}olleh\" { log \"\u{202e}x\" }\n".to_string(),
    );
    add(
        "wide atoms",
        format!("accepted-domain {}\n", "漢".repeat(20_000)),
    );
    add("replacement characters", "\u{fffd}".repeat(1_000));
    add(
        "non-ASCII keywords",
        "rüle \"x\" { stöp }\nrewrité a.com -> b.com\n".to_string(),
    );
    add(
        "non-ASCII after a keyword",
        "rule\u{a0}\"x\" { stop }\nrule\u{3000}\"y\" { stop }\n".to_string(),
    );
    add("multibyte at line start", "é\nрус\n日本\n".repeat(100));
    add(
        "fullwidth digits",
        "rule \"r\" { priority １２; reject ５５０ ５.７.１ \"x\" }\n".to_string(),
    );
    add(
        "non-ASCII ip",
        "receive-connector \"R\" { remote １0.0.0.0/8; listen ０.0.0.0:25 }\n".to_string(),
    );

    // Odd but well-formed.
    add("empty", String::new());
    add("whitespace only", " \t \n\t\n".to_string());
    add("comment without newline", "# c".to_string());
    add("keyword at very end", "rule".to_string());
    add("keyword with brace", "rule{".to_string());
    add(
        "every keyword bare",
        mailflow::parse::TOP_LEVEL_KEYWORDS.join("\n"),
    );
    add("include nothing", "include \"\"\n".to_string());
    // (Relative to tests/fixtures/, the folder of the name these inputs are checked as.)
    add(
        "include a folder",
        "include \".\"\ninclude \"ok\"\n".to_string(),
    );
    add("import a folder", "import rewrites \"ok\"\n".to_string());
    add(
        "import not a csv",
        "import rewrites \"../../Cargo.toml\"\n".to_string(),
    );
    add(
        "include not a rule file",
        "include \"../../Cargo.toml\"\n".to_string(),
    );
    add(
        "include a key",
        "include \"../../rules/certs/edge.key\"\n".to_string(),
    );
    add("zero-length ranges", "receive-connector \"R\" { remote 10.0.0.5-10.0.0.4, ::/0, 0.0.0.0/0, ::ffff:1.2.3.4/128 }\n".to_string());
    add("max numbers", "receive-connector \"R\" { max-message-size 18446744073709551615GB; max-recipients 4294967296; connection-timeout 99999999999999999999d; listen 0.0.0.0:65536 }\n".to_string());
    v
}

/// At most this many truncations of one file.
const MAX_CUTS: usize = 40;
/// Random mutations of each file.
const MUTATIONS: usize = 12;

#[test]
fn check_never_panics() {
    let started = Instant::now();
    // Tests of other modules run beside this one in the same process: their panics keep the
    // hook they had.
    let previous = std::panic::take_hook();
    let this_thread = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != this_thread {
            return previous(info);
        }
        if let (Ok(mut last), Some(loc)) = (LAST_PANIC.lock(), info.location()) {
            *last = loc.to_string();
        }
    }));
    let mut runner = Runner::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    // Base texts: every fixture, the rules folder, and a small generated rule set.
    let mut bases = fixtures("tests/fixtures");
    bases.retain(|(name, _)| !name.starts_with("tests/fixtures/no_panic/"));
    bases.extend(fixtures("rules"));
    bases.push(("generated.mailflow".to_string(), generate::generate(12, 6)));
    assert!(
        bases.len() > 10,
        "fixtures not found under {}",
        manifest_dir().display()
    );

    for (name, text) in &bases {
        let csv = name.ends_with(".csv");
        // The file itself, and truncated at every 7th byte (at every 14th, 21st, ... in files
        // so long that this would be more than MAX_CUTS checks: each costs a full check).
        let step = 7 * text.len().div_ceil(7 * MAX_CUTS).max(1);
        for cut in (0..=text.len()).step_by(step).chain([text.len()]) {
            let cut = floor_char_boundary(text, cut);
            runner.run(&Case {
                label: format!("{name} truncated at byte {cut}"),
                name: name.clone(),
                text: text[..cut].to_string(),
                csv,
            });
        }
        // Random splices.
        for i in 0..MUTATIONS {
            let mutated = mutate(&mut rng, text);
            runner.run(&Case {
                label: format!("{name} mutation {i}"),
                name: name.clone(),
                text: mutated,
                csv,
            });
        }
        // Other line endings.
        for (what, ending) in [("CR-only", "\r"), ("CRLF", "\r\n")] {
            runner.run(&Case {
                label: format!("{name} with {what} line endings"),
                name: name.clone(),
                text: text.replace("\r\n", "\n").replace('\n', ending),
                csv,
            });
        }
    }

    for (label, text) in nasty_inputs() {
        runner.run(&Case {
            label: format!("nasty input: {label}"),
            name: "tests/fixtures/no_panic.mailflow".to_string(),
            text,
            csv: false,
        });
    }

    // Inputs that once made check panic.
    for (name, text) in fixtures("tests/fixtures/no_panic") {
        runner.run(&Case {
            label: format!("regression {name}"),
            name: name.clone(),
            csv: name.ends_with(".csv"),
            text,
        });
    }

    eprintln!(
        "no_panic: {} inputs in {:.1} s, {} panicked",
        runner.inputs,
        started.elapsed().as_secs_f64(),
        runner.failures.len()
    );
    let _ = std::panic::take_hook();
    runner.slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (took, label) in runner.slowest.iter().take(8) {
        eprintln!("  {:>8.1} ms  {label}", took.as_secs_f64() * 1e3);
    }
    assert!(
        runner.failures.is_empty(),
        "{} of {} inputs made check panic:\n{}",
        runner.failures.len(),
        runner.inputs,
        runner.failures.join("\n")
    );
}
