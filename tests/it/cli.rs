//! The `mailflow` binary as a user runs it: real files, exit codes, every output format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::{Command, Output};

fn mailflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailflow"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

const BAD: &str = "tests/fixtures/diagnostics/E022.mailflow";
const WARN_ONLY: &str = "tests/fixtures/diagnostics/W012.mailflow";
const CLEAN: &str = "tests/fixtures/ok/exchange-examples.mailflow";

#[test]
fn bundled_rule_sets_check_clean() {
    if !Path::new(env!("CARGO_MANIFEST_DIR")).join("rules").is_dir() {
        return;
    }
    let o = mailflow(&["check", "--deny-warnings", "rules/"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("0 errors, 0 warnings"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn exit_codes() {
    assert_eq!(mailflow(&["check", CLEAN]).status.code(), Some(0));
    assert_eq!(mailflow(&["check", BAD]).status.code(), Some(1));
    assert_eq!(mailflow(&["check", WARN_ONLY]).status.code(), Some(0));
    assert_eq!(
        mailflow(&["check", "--deny-warnings", WARN_ONLY])
            .status
            .code(),
        Some(1)
    );
    let missing = mailflow(&["check", "no/such/file.mailflow"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read `no/such/file.mailflow`")
    );
    assert_eq!(mailflow(&["check"]).status.code(), Some(2));
    assert_eq!(
        mailflow(&["check", "--format", "yaml", CLEAN])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        mailflow(&["check", "tests/fixtures/ok/../../snapshots"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn human_output_shows_source_code_and_help() {
    let o = mailflow(&["check", BAD]);
    let out = stdout(&o);
    insta::assert_snapshot!(out);
    assert!(out.contains("[E022] Error: `*contoso.com` is not a valid wildcard"));
    assert!(out.contains("checked 1 rule set (1 file): 2 errors, 0 warnings"));
}

#[test]
fn json_output() {
    let o = mailflow(&["check", "--format", "json", BAD]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["errors"], 2);
    assert_eq!(v["warnings"], 0);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "E022");
    assert_eq!(d["name"], "malformed-wildcard");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], BAD);
    assert_eq!(d["line"], 1);
    assert_eq!(d["column"], 9);
    assert!(d["help"].as_str().unwrap().contains("*.contoso.com"));
    assert_eq!(d["labels"][0]["primary"], true);
}

#[test]
fn github_output() {
    let o = mailflow(&["check", "--format", "github", BAD]);
    let out = stdout(&o);
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "::error file={BAD},line=1,col=9,endLine=1,endColumn=21,title=E022 malformed-wildcard::"
        )),
        "{first}"
    );
    assert!(first.contains("%0Ahelp: "), "{first}");
}

#[test]
fn sarif_output() {
    let o = mailflow(&["check", "--format", "sarif", BAD, WARN_ONLY]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "mailflow");
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["E022", "W012"]);
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let warning = results.iter().find(|r| r["ruleId"] == "W012").unwrap();
    assert_eq!(warning["level"], "warning");
    assert_eq!(warning["ruleIndex"], 1);
    let region = &warning["locations"][0]["physicalLocation"]["region"];
    assert_eq!(region["startLine"], 4);
}

#[test]
fn a_folder_is_many_rule_sets_and_includes_are_fragments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("common")).unwrap();
    std::fs::write(
        d.join("common/domains.mailflow"),
        "accepted-domain example.com\n",
    )
    .unwrap();
    // Two rule sets that both define "Out" and include the same fragment: no duplicate-name
    // error, because each root is checked on its own.
    for name in ["a", "b"] {
        std::fs::write(
            d.join(format!("{name}.mailflow")),
            "include \"common/domains.mailflow\"\nsend-connector \"Out\" { address-space * }\n",
        )
        .unwrap();
    }
    let o = Command::new(env!("CARGO_BIN_EXE_mailflow"))
        .args(["check", "--format", "json"])
        .arg(d)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let human = Command::new(env!("CARGO_BIN_EXE_mailflow"))
        .arg("check")
        .arg(d)
        .output()
        .unwrap();
    assert!(
        stdout(&human).contains("checked 2 rule sets (3 files)"),
        "{}",
        stdout(&human)
    );
}

#[test]
fn every_problem_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("many.mailflow");
    std::fs::write(
        &f,
        "rewrite a@b.com => c@d.com\nrule \"x\" {\n  if sender nowhere\n  stop\n}\naccepted-domain bad..domain\nrewrite *x.com -> y.com outbound-only\nrule \"y\" { if connector \"nope\"; stop }\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mailflow"))
        .args(["check", "--format", "json"])
        .arg(&f)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let codes: Vec<&str> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["E001", "E001", "E013", "E022", "E010"]);
}

#[test]
fn explain() {
    let o = mailflow(&["explain", "E012"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("E012 invalid-address: this is not a valid email address"));
    let by_name = mailflow(&["explain", "open-relay"]);
    assert!(stdout(&by_name).starts_with("W020 open-relay"));
    assert_eq!(mailflow(&["explain", "E999"]).status.code(), Some(2));
    let list = stdout(&mailflow(&["explain", "--list"]));
    assert_eq!(list.lines().count(), mailflow::diagnostic::Code::ALL.len());
    let md = stdout(&mailflow(&["explain", "--markdown"]));
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/diagnostics.md"))
            .unwrap();
    assert_eq!(md, docs);
}

#[test]
fn bundled_scenarios_pass_their_tests() {
    let o = mailflow(&["test", "rules/"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let last = out.lines().last().unwrap();
    let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 30, "{last}");
    assert!(last.ends_with("passed, 0 failed"), "{last}");
    assert!(!out.contains("FAIL"));
}

#[test]
fn a_failing_expectation_fails_the_run_with_a_diff_and_trace() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.mailflow");
    std::fs::write(
        &f,
        "accepted-domain example.com\n\
         receive-connector \"Internet\" { remote 0.0.0.0/0 }\n\
         send-connector \"Out\" { address-space * }\n\
         test \"relay refused\" {\n  client-ip 192.0.2.1\n  from a@fabrikam.com\n  to b@elsewhere.example\n  expect delivered b@elsewhere.example\n}\n\
         test \"unknown user\" {\n  client-ip 192.0.2.1\n  from a@fabrikam.com\n  to nobody@example.com\n  expect rejected 550 5.1.1\n}\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mailflow"))
        .arg("test")
        .arg(&f)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL"), "{out}");
    assert!(
        out.contains("expected: b@elsewhere.example delivered"),
        "{out}"
    );
    assert!(
        out.contains("actual:   b@elsewhere.example rejected 550 5.7.54"),
        "{out}"
    );
    assert!(
        out.contains("[resolve] b@elsewhere.example: not an accepted domain"),
        "{out}"
    );
    assert!(out.contains("PASS"), "{out}");
    assert!(out.trim_end().ends_with("1 passed, 1 failed"), "{out}");
}

#[test]
fn test_refuses_a_rule_set_with_errors() {
    let o = mailflow(&["test", BAD]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("no test was run"));
}

const JOHN: &[&str] = &[
    "dry-run",
    "rules/shared-domain.mailflow",
    "--client-ip",
    "40.107.22.51",
    "--tls-peer",
    "mail.protection.outlook.com",
    "--oorg",
    "tenant1.myexchlab.com",
    "--from",
    "John.Smith@tenant1.myexchlab.com",
    "--to",
    "alex.wilber@fabrikam.com",
    "--message",
    "rules/messages/outbound-john.eml",
];

#[test]
fn dry_run_explains_the_seed_002_outbound_rewrite() {
    let o = mailflow(JOHN);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn dry_run_json_and_exit_codes() {
    let mut args = JOHN.to_vec();
    args.extend(["--format", "json"]);
    let o = mailflow(&args);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["connector"], "From EOP");
    assert_eq!(v["auth_as"], "internal");
    assert_eq!(v["originating_org"], "tenant1.myexchlab.com");
    assert_eq!(v["mail_from"]["domain"], "myexchlab.com");
    assert_eq!(v["recipients"][0]["fate"]["fate"], "deliver");
    assert_eq!(v["recipients"][0]["fate"]["connector"], "To Internet");
    assert!(v["trace"].as_array().unwrap().len() > 5);

    // An outside sender relaying through the public connector: not delivered, exit 1.
    let o = mailflow(&[
        "dry-run",
        "rules/shared-domain.mailflow",
        "--client-ip",
        "203.0.113.9",
        "--from",
        "billing@northwindtraders.com",
        "--to",
        "accounts@wingtiptoys.com",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("rejected: 550 5.7.54"),
        "{}",
        stdout(&o)
    );

    // Bad input is a usage error.
    assert_eq!(
        mailflow(&[
            "dry-run",
            "rules/shared-domain.mailflow",
            "--connector",
            "Internet",
            "--from",
            "a%b@x.com",
            "--to",
            "c@d.com"
        ])
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        mailflow(&[
            "dry-run",
            "rules/shared-domain.mailflow",
            "--from",
            "a@x.com",
            "--to",
            "c@d.com"
        ])
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        mailflow(&[
            "dry-run",
            "rules/shared-domain.mailflow",
            "--connector",
            "Nope",
            "--from",
            "a@x.com",
            "--to",
            "c@d.com"
        ])
        .status
        .code(),
        Some(2)
    );
}

/// `--auth` gives what verification found, in the words of a test block's `auth`; rules read
/// it and the trace says what was found.
#[test]
fn dry_run_takes_verification_results() {
    let run = |auth: Option<&str>| {
        let mut args = vec![
            "dry-run",
            "rules/dmarc-at-the-edge.mailflow",
            "--connector",
            "Internet",
            "--from",
            "ceo@fabrikam.com",
            "--to",
            "accounts@contoso.com",
        ];
        if let Some(a) = auth {
            args.extend(["--auth", a]);
        }
        mailflow(&args)
    };
    let o = run(Some("spf=fail:fabrikam.com, dmarc=fail:fabrikam.com"));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("rejected: 550 5.7.1"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(
            "verification found spf=fail (fabrikam.com), dkim=none, dmarc=fail (fabrikam.com), arc=none"
        ),
        "{}",
        stdout(&o)
    );
    let o = run(Some("dmarc=fail, dkim=pass:partner.example"));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = run(None);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("the message was not verified"),
        "{}",
        stdout(&o)
    );
    let o = run(Some("dmarc=failed"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("did you mean `fail`?"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn compile_writes_a_table_the_dry_run_loads() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.bin");
    let o = Command::new(env!("CARGO_BIN_EXE_mailflow"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["compile", "rules/shared-domain.mailflow", "-o"])
        .arg(&table)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout(&o).contains("8 rewrite entries, 4 rules"),
        "{}",
        stdout(&o)
    );
    let bytes = std::fs::read(&table).unwrap();
    assert!(bytes.starts_with(b"mailflow-table"));
    let o = Command::new(env!("CARGO_BIN_EXE_mailflow"))
        .arg("dry-run")
        .arg(&table)
        .args([
            "--client-ip",
            "198.51.100.25",
            "--from",
            "alex@fabrikam.com",
            "--to",
            "Peter.Jones@myexchlab.com",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("(as Peter.Jones@tenant1.myexchlab.com): delivered via `To Tenant1`"),
        "{}",
        stdout(&o)
    );
    // A damaged table is refused with a clear error.
    std::fs::write(&table, &bytes[..bytes.len() / 2]).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mailflow"))
        .arg("dry-run")
        .arg(&table)
        .args([
            "--client-ip",
            "198.51.100.25",
            "--from",
            "a@b.com",
            "--to",
            "c@d.com",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("this table is damaged"));
    // Rules with errors are not compiled.
    assert_eq!(
        mailflow(&["compile", BAD, "-o", "/dev/null"]).status.code(),
        Some(1)
    );
}

/// The relay's `--remote`, `--smart-host` and `--listen` are checked as `remote`, `smart-host`
/// and `listen` in a rule file: what `check` refuses, the command line refuses with the same
/// finding, before the relay touches its spool (exit 2).
#[test]
fn relay_overrides_refuse_what_the_rule_file_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    for (flag, connector, value, setting, finding) in [
        (
            "--remote",
            "Loopback",
            "10.0.0.9-10.0.0.1",
            "remote",
            "[E030] Error: `10.0.0.9-10.0.0.1` is not a valid ip address or range",
        ),
        (
            "--remote",
            "Loopback",
            "10.0.0.1-::1",
            "remote",
            "[E030] Error: `10.0.0.1-::1` is not a valid ip address or range",
        ),
        (
            "--remote",
            "Loopback",
            "10.0.0.1/24",
            "remote",
            "[E030] Error: `10.0.0.1/24` has host bits set",
        ),
        (
            "--smart-host",
            "Out",
            "sink.example:0",
            "smart-host",
            "[E014] Error: `0` is not a valid port",
        ),
        (
            "--smart-host",
            "Out",
            "bad_host!",
            "smart-host",
            "[E013] Error:",
        ),
        (
            "--listen",
            "Loopback",
            "localhost:25",
            "listen",
            "[E032] Error: `localhost:25` is not an address and port to listen on",
        ),
    ] {
        let rules = dir.path().join("rules.mailflow");
        let (listen, remote, smart_host) = match setting {
            "remote" => ("127.0.0.1:2625", value, "sink.example"),
            "smart-host" => ("127.0.0.1:2625", "127.0.0.0/8", value),
            _ => (value, "127.0.0.0/8", "sink.example"),
        };
        std::fs::write(
            &rules,
            format!(
                "receive-connector \"Loopback\" {{\n  listen {listen}\n  remote {remote}\n}}\n\
                 send-connector \"Out\" {{\n  address-space *\n  smart-host {smart_host}\n}}\n"
            ),
        )
        .unwrap();
        let check = mailflow(&["check", rules.to_str().unwrap()]);
        assert_eq!(check.status.code(), Some(1), "{value}: {}", stdout(&check));
        let from_check = stdout(&check)
            .lines()
            .find(|l| l.contains(finding))
            .unwrap_or_else(|| panic!("{value}: {}", stdout(&check)))
            .to_string();

        let fixture = "tests/fixtures/relay/forward.mailflow";
        let arg = format!("{connector}={value}");
        // `timeout` is a watchdog: a relay that accepted the value would run on.
        let o = Command::new("timeout")
            .args(["30", env!("CARGO_BIN_EXE_mailflow"), "relay", fixture])
            .args(["--spool", spool.to_str().unwrap(), flag, &arg])
            .args(["--listen", "Loopback=127.0.0.1:0"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{arg}: {stderr}");
        assert!(stderr.contains(&from_check), "{arg}: {stderr}");
        assert!(stderr.contains(&format!("{flag} {connector}")), "{stderr}");
        assert!(!spool.exists(), "{arg}: the spool was created");
    }
}
