//! Certificates end to end: `mailflow check` on rule sets whose certificates (made here with
//! rcgen, with chosen names and validity) are shared between tenants, named for another
//! domain, expiring or expired, with and without `--cert-expiry-days`; and a running relay
//! exporting each certificate's expiry on `/metrics`, renewed by a reload.

use crate::support::relay::{BIN, Relay, http_get, s, wait_until};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const DAY: i64 = 86_400;

fn now() -> i64 {
    i64::try_from(mailflow::clock::now_secs()).unwrap()
}

/// The UTC (year, month, day) `secs` falls in, as rcgen takes dates.
fn ymd(secs: i64) -> (i32, u8, u8) {
    let date = mailflow::x509::date(secs);
    let p: Vec<i32> = date.split('-').map(|p| p.parse().unwrap()).collect();
    (
        p[0],
        u8::try_from(p[1]).unwrap(),
        u8::try_from(p[2]).unwrap(),
    )
}

/// Writes `file` (a self-signed certificate for `names`, valid from midnight of the day of
/// `from` to midnight of the day of `to`) and `file.key` into `dir`; returns the `notAfter`.
fn cert(dir: &Path, file: &str, names: &[&str], from: i64, to: i64) -> i64 {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let (y, m, d) = ymd(from);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(to);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join(file), params.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    to - to.rem_euclid(DAY)
}

/// A send connector to a Microsoft 365 tenant presenting `file`.
fn tenant(name: &str, domain: &str, file: &str) -> String {
    format!(
        "send-connector \"{name}\" {{\n  address-space {domain}\n  smart-host {}.mail.protection.outlook.com\n  tls required\n  tls-name mail.protection.outlook.com\n  certificate \"{file}\"\n  key \"{file}.key\"\n}}\n",
        domain.replace('.', "-")
    )
}

/// A receive connector presenting `file`.
fn server(name: &str, file: &str) -> String {
    format!(
        "receive-connector \"{name}\" {{\n  listen 127.0.0.1:0\n  remote 127.0.0.1\n  tls optional\n  certificate \"{file}\"\n  key \"{file}.key\"\n}}\n"
    )
}

const DOMAINS: &str =
    "accepted-domain t1.example internal-relay\naccepted-domain t2.example internal-relay\n";

fn check(dir: &Path, text: &str, args: &[&str]) -> Output {
    let rules = dir.join("rules.mailflow");
    std::fs::write(&rules, text).unwrap();
    Command::new(BIN)
        .arg("check")
        .arg(&rules)
        .args(["--format", "json"])
        .args(args)
        .output()
        .unwrap()
}

/// The (code, message) of every finding.
fn findings(o: &Output) -> Vec<(String, String)> {
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stdout)));
    v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn codes(o: &Output) -> Vec<String> {
    findings(o).into_iter().map(|(c, _)| c).collect()
}

#[test]
fn check_flags_one_certificate_for_two_tenants_and_foreign_names() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (start, end) = (now() - 10 * DAY, now() + 3650 * DAY);
    cert(d, "edge.pem", &["edge.example.net"], start, end);
    cert(d, "t1.pem", &["edge.t1.example"], start, end);
    cert(d, "t2.pem", &["*.t2.example"], start, end);

    let shared = format!(
        "{DOMAINS}{}{}",
        tenant("To T1", "t1.example", "edge.pem"),
        tenant("To T2", "t2.example", "edge.pem")
    );
    let o = check(d, &shared, &[]);
    assert_eq!(o.status.code(), Some(0), "warnings only");
    let mut got = codes(&o);
    got.sort();
    // Shared, and named for neither tenant.
    assert_eq!(got, ["W070", "W071", "W071"], "{:?}", findings(&o));
    assert_eq!(
        check(d, &shared, &["--deny-warnings"]).status.code(),
        Some(1)
    );

    let distinct = format!(
        "{DOMAINS}{}{}",
        tenant("To T1", "t1.example", "t1.pem"),
        tenant("To T2", "t2.example", "t2.pem")
    );
    assert_eq!(codes(&check(d, &distinct, &[])), Vec::<String>::new());

    let swapped = format!(
        "{DOMAINS}{}{}",
        tenant("To T1", "t1.example", "t2.pem"),
        tenant("To T2", "t2.example", "t2.pem")
    );
    let f = findings(&check(d, &swapped, &[]));
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f.iter().any(|(c, _)| c == "W070"), "{f:?}");
    assert!(
        f.iter().any(|(c, m)| c == "W071" && m.contains("`To T1`")),
        "{f:?}"
    );
}

#[test]
fn check_warns_about_expiry_within_the_window_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let n = now();
    let soon = cert(
        d,
        "soon.pem",
        &["relay.t1.example"],
        n - 300 * DAY,
        n + 10 * DAY,
    );
    let gone = cert(
        d,
        "gone.pem",
        &["relay.t1.example"],
        n - 300 * DAY,
        n - 5 * DAY,
    );
    cert(
        d,
        "later.pem",
        &["relay.t1.example"],
        n + 5 * DAY,
        n + 400 * DAY,
    );
    let expiring = format!("{DOMAINS}{}", server("Internet", "soon.pem"));
    let f = findings(&check(d, &expiring, &[]));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "W072");
    let date = mailflow::x509::date(soon);
    assert!(f[0].1.contains(&format!("expires on {date}, in ")), "{f:?}");
    // The window: 30 days unless told; a narrower one leaves it out; 0 turns it off.
    assert_eq!(
        codes(&check(d, &expiring, &["--cert-expiry-days", "20"])),
        ["W072"]
    );
    assert!(codes(&check(d, &expiring, &["--cert-expiry-days", "5"])).is_empty());
    assert!(codes(&check(d, &expiring, &["--cert-expiry-days", "0"])).is_empty());

    // A send connector's client certificate counts too, and an expired one says so.
    let expired = format!("{DOMAINS}{}", tenant("To T1", "t1.example", "gone.pem"));
    let f = findings(&check(d, &expired, &[]));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "W073");
    assert!(
        f[0].1
            .ends_with(&format!("expired on {}", mailflow::x509::date(gone))),
        "{f:?}"
    );
    assert!(codes(&check(d, &expired, &["--cert-expiry-days", "0"])).is_empty());

    let early = format!("{DOMAINS}{}", server("Internet", "later.pem"));
    assert_eq!(codes(&check(d, &early, &[])), ["W074"]);
    assert!(codes(&check(d, &early, &["--cert-expiry-days", "0"])).is_empty());

    let bad = check(d, &expiring, &["--cert-expiry-days", "-1"]);
    assert_eq!(bad.status.code(), Some(2), "not a number of days");
}

/// The relay reads the certificates at load; `/metrics` shows each one's `notAfter`, and a
/// reload after a renewal shows the new one.
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_exports_each_certificates_expiry_and_a_reload_renews_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let n = now();
    let server_until = cert(
        d,
        "server.pem",
        &["relay.t1.example"],
        n - DAY,
        n + 20 * DAY,
    );
    let client_until = cert(d, "t1.pem", &["edge.t1.example"], n - DAY, n + 400 * DAY);
    let rules = d.join("rules.mailflow");
    std::fs::write(
        &rules,
        format!(
            "{DOMAINS}{}{}",
            server("Loopback", "server.pem"),
            tenant("To T1", "t1.example", "t1.pem")
        ),
    )
    .unwrap();
    let relay = Relay::start(&rules, &d.join("spool"), &[s("--admin"), s("127.0.0.1:0")]);
    let admin = relay.admin.unwrap();
    let series = |connector: &str, kind: &str, file: &str| {
        format!(
            "mailflow_certificate_expiry_timestamp_seconds{{connector=\"{connector}\",kind=\"{kind}\",path=\"{}\"}} ",
            d.join(file).display()
        )
    };
    let metrics = http_get(admin, "/metrics");
    assert!(
        metrics.contains("# TYPE mailflow_certificate_expiry_timestamp_seconds gauge\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "{}{server_until}\n",
            series("Loopback", "server", "server.pem")
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "{}{client_until}\n",
            series("To T1", "client", "t1.pem")
        )),
        "{metrics}"
    );

    let renewed = cert(
        d,
        "server.pem",
        &["relay.t1.example"],
        n - DAY,
        n + 380 * DAY,
    );
    assert_ne!(renewed, server_until);
    let out = Command::new(BIN)
        .args(["reload", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let expected = format!("{}{renewed}\n", series("Loopback", "server", "server.pem"));
    assert!(
        wait_until(10, || http_get(admin, "/metrics").contains(&expected)).await,
        "{}",
        http_get(admin, "/metrics")
    );
}
