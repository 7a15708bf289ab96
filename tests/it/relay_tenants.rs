//! No relay for other Microsoft 365 customers (issue 13, item 1), over real TCP and TLS.
//!
//! Exchange Online Protection relays for every Microsoft 365 customer from the same addresses
//! with the same certificate. The relay is started with seed 002's rule set as shipped
//! (`rules/shared-domain.mailflow`) and as `mailflow import exchange` translates the seed's own
//! commands, and a client at an address the EOP connector accepts presents a certificate for
//! `mail.protection.outlook.com` (made by rcgen, from a CA the relay is told to trust). It tries
//! every way in: a spoofed inside sender with no XOORG and with another tenant's XOORG, and
//! look-alike recipients that contain the shared domain. Each is refused at RCPT; a recipient
//! of ours in the same transaction still gets its mail; our own tenant still relays. The sinks
//! behind the relay prove that nothing else left.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::dns::{DnsServer, Zone};
use support::relay::*;
use support::sink::{Sink, SinkOptions};
use support::tls::{TestCa, server_config};

/// The relay attempts, as (MAIL FROM, XOORG, RCPT TO): every one must get 550.
const ATTEMPTS: &[(&str, Option<&str>, &str)] = &[
    // A spoofed inside sender, with no XOORG and with another tenant's.
    (
        "John.Smith@tenant1.myexchlab.com",
        None,
        "victim@fabrikam.com",
    ),
    (
        "John.Smith@tenant1.myexchlab.com",
        Some("contoso.com"),
        "victim@fabrikam.com",
    ),
    (
        "John.Smith@myexchlab.com",
        Some("contoso.com"),
        "victim@fabrikam.com",
    ),
    // Recipients that contain the shared domain without being in it.
    (
        "lee.gu@contoso.com",
        Some("contoso.com"),
        "victim@myexchlab.com.evil.example",
    ),
    (
        "lee.gu@contoso.com",
        Some("contoso.com"),
        "myexchlab.com@evil.example",
    ),
    (
        "lee.gu@contoso.com",
        Some("contoso.com"),
        "\"myexchlab.com\"@evil.example",
    ),
    (
        "lee.gu@contoso.com",
        Some("contoso.com"),
        "tenant1.myexchlab.com@evil.example",
    ),
    // An XOORG that only looks like ours.
    (
        "lee.gu@contoso.com",
        Some("myexchlab.com.evil.example"),
        "victim@fabrikam.com",
    ),
];

struct Setup {
    relay: Relay,
    /// Where every send connector delivers.
    sink: Sink,
    cert: String,
    key: String,
    _tmp: tempfile::TempDir,
    /// Answers the verification of anonymous mail (nothing is published: every method
    /// reads `none`), so no query leaves the machine.
    _dns: DnsServer,
}

/// Starts the relay on `rules` with every receive connector in `receive` on a free port of
/// 127.0.0.1 (EOP's from 127.0.0.2) and every send connector in `send` to one sink.
async fn start(rules: &Path, tmp: tempfile::TempDir, receive: &[&str], send: &[&str]) -> Setup {
    let ca = TestCa::new();
    std::fs::write(tmp.path().join("ca.pem"), &ca.cert_pem).unwrap();
    // The tenants' endpoints require TLS with Microsoft's name; one sink plays every next hop.
    let sink = Sink::start(SinkOptions::default().tls(server_config(
        &ca.issue(&["mail.protection.outlook.com"]),
        None,
    )))
    .await;
    let dns = DnsServer::start(Zone::new()).await;
    let mut args = vec![
        s("--dns"),
        dns.addr.to_string(),
        s("--remote"),
        s("From EOP=127.0.0.2"),
        s("--ca-file"),
        tmp.path().join("ca.pem").display().to_string(),
        s("--queue-interval"),
        s("1s"),
    ];
    for c in receive {
        args.extend([s("--listen"), format!("{c}=127.0.0.1:0")]);
    }
    for c in send {
        args.extend([s("--smart-host"), format!("{c}={}", sink.addr)]);
    }
    let relay = Relay::start(rules, &tmp.path().join("spool"), &args);
    let (cert, key) = write_pem(
        &ca.issue_client("mail.protection.outlook.com"),
        tmp.path(),
        "eop-client",
    );
    Setup {
        relay,
        sink,
        cert,
        key,
        _tmp: tmp,
        _dns: dns,
    }
}

impl Setup {
    /// One transaction from "EOP": TLS with Microsoft's client certificate.
    async fn send(
        &self,
        from: &str,
        xoorg: Option<&str>,
        to: &[&str],
        data: Option<&str>,
    ) -> Value {
        let mut a = vec![
            s("--port"),
            self.relay.listener("From EOP").port().to_string(),
            s("--source"),
            s("127.0.0.2"),
            s("--starttls"),
            s("--cert"),
            self.cert.clone(),
            s("--key"),
            self.key.clone(),
            s("--from"),
            s(from),
        ];
        for t in to {
            a.extend([s("--to"), s(t)]);
        }
        if let Some(x) = xoorg {
            a.extend([s("--mail-option"), format!("XOORG={x}")]);
        }
        if let Some(d) = data {
            a.extend([s("--data"), s(d)]);
        }
        let out = client(a).await;
        assert!(
            out["ehlo_tls"]
                .as_array()
                .unwrap()
                .contains(&Value::from("xoorg")),
            "the certificate was not trusted, so this tests nothing: {out}"
        );
        out
    }

    /// Tries every relay attempt, a transaction mixing our recipient with a foreign one, and
    /// our own tenant relaying; then checks what reached the next hops.
    async fn attack(&self) {
        for (from, xoorg, to) in ATTEMPTS {
            let out = self.send(from, *xoorg, &[to], None).await;
            let rcpt = &out["messages"][0]["rcpt"][0];
            assert_eq!(rcpt[0], 550, "{from} {xoorg:?} -> {to}: {out}");
            assert!(
                rcpt[1].as_str().unwrap().starts_with("5.7."),
                "{from} {xoorg:?} -> {to}: {out}"
            );
            assert!(out["messages"][0]["data"].is_null(), "{out}");
        }

        // Another tenant writing to one of our users and to a foreign domain at once: ours is
        // accepted, the other refused, and only ours is delivered.
        let mixed = self
            .send(
                "lee.gu@contoso.com",
                Some("contoso.com"),
                &["victim@fabrikam.com", "John.Smith@myexchlab.com"],
                Some("Subject: mixed\r\n\r\nhello\r\n"),
            )
            .await;
        let m = &mixed["messages"][0];
        assert_eq!(m["rcpt"][0][0], 550, "{mixed}");
        assert_eq!(m["rcpt"][1][0], 250, "{mixed}");
        assert_eq!(m["data"][0], 250, "{mixed}");

        // Our own tenant, vouched for by EOP's certificate, still relays.
        let ours = self
            .send(
                "John.Smith@tenant1.myexchlab.com",
                Some("tenant1.myexchlab.com"),
                &["alex.wilber@fabrikam.com"],
                Some("Subject: ours\r\n\r\nhello\r\n"),
            )
            .await;
        assert_eq!(ours["messages"][0]["rcpt"][0][0], 250, "{ours}");
        assert_eq!(ours["messages"][0]["data"][0], 250, "{ours}");

        assert!(wait_until(20, || self.sink.messages().len() >= 2).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut got: Vec<Vec<String>> = self
            .sink
            .messages()
            .iter()
            .map(|m| m.rcpts.clone())
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                vec![s("John.Smith@tenant1.myexchlab.com")],
                vec![s("alex.wilber@fabrikam.com")]
            ],
            "exactly our two messages left the relay"
        );
    }
}

/// Seed 002's rule set as shipped, every next hop the one sink.
async fn shipped() -> Setup {
    start(
        &root().join("rules/shared-domain.mailflow"),
        tempfile::tempdir().unwrap(),
        &["From EOP", "Internet"],
        &["To Internet", "To Tenant1", "To Tenant2"],
    )
    .await
}

/// Seed 002's rule set as shipped.
#[tokio::test(flavor = "multi_thread")]
async fn other_tenants_cannot_relay_with_the_shipped_rule_set() {
    let setup = shipped().await;
    setup.attack().await;
}

/// Seed 002's own commands, imported with `mailflow import exchange` (with the EOP ranges and
/// certificate filled in) and run as they come out.
#[tokio::test(flavor = "multi_thread")]
async fn other_tenants_cannot_relay_with_the_imported_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = import_seed_002(tmp.path());
    let setup = start(&rules, tmp, &["From EOP"], &["To Internet"]).await;
    setup.attack().await;
}

fn import_seed_002(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    for f in ["edge.pem", "edge.key"] {
        std::fs::copy(
            root().join("rules/certs").join(f),
            dir.join("certs").join(f),
        )
        .unwrap();
    }
    let out = dir.join("seed-002.mailflow");
    let run = Command::new(BIN)
        .current_dir(dir)
        .args(["import", "exchange"])
        .arg(root().join("tests/fixtures/import/exchange/seed-002-shared-domain-filled.ps1"))
        .args([
            "--certificate",
            "certs/edge.pem",
            "--key",
            "certs/edge.key",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let findings = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{findings}");
    assert!(findings.contains("W043"), "{findings}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains("\n  accept-any-recipient"), "{text}");
    out
}

/// The header firewall on EOP's connector: another tenant's message to one of our users is
/// delivered without the trust headers it brought (Exchange Online acts on
/// `X-MS-Exchange-CrossPremises-*`), with `X-OriginatorOrg` from its trusted XOORG only and
/// AuthAs Anonymous. Names folded before their colon are no fields: the header ends there,
/// and those lines arrive as body text.
#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_trust_headers_are_stripped() {
    let setup = shipped().await;
    let forged = "X-MS-Exchange-CrossPremises-AuthAs: Internal\r\n\
         X-MS-Exchange-CrossPremises-SCL: -1\r\n\
         x-ms-exchange-crosspremises-authsource: edge.myexchlab.com\r\n\
         X-MS-Exchange-Forest-ArrivalHubServer: hub.myexchlab.com\r\n\
         X-MS-Exchange-CrossTenant-Id: 00000000-0000-0000-0000-000000000001\r\n\
         X-MS-Exchange-Organization-AuthAs: Internal\r\n\
         X-OriginatorOrg: tenant1.myexchlab.com\r\n\
         From: Lee <lee.gu@contoso.com>\r\n\
         Subject: trust me\r\n\
         X-MS-Exchange-Organization-AuthAs\r\n : Internal\r\n\
         X-MS-Exchange-CrossPremises-AuthAs\r\n\t:Internal\r\n\r\nhello\r\n";
    let out = setup
        .send(
            "lee.gu@contoso.com",
            Some("contoso.com"),
            &["John.Smith@myexchlab.com"],
            Some(forged),
        )
        .await;
    assert_eq!(out["messages"][0]["data"][0], 250, "{out}");
    assert!(wait_until(20, || setup.sink.messages().len() == 1).await);
    let text = data_text(&setup.sink.messages()[0]);
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    for gone in [
        "x-ms-exchange-crosspremises-",
        "x-ms-exchange-forest-",
        "x-ms-exchange-crosstenant-",
    ] {
        assert!(!head.contains(gone), "{gone} reached the tenant:\n{text}");
    }
    assert_eq!(head.matches("x-originatororg").count(), 1, "{text}");
    assert_eq!(header(&text, "X-OriginatorOrg"), Some("contoso.com"));
    assert_eq!(head.matches("x-ms-exchange-organization-authas").count(), 1);
    assert_eq!(
        header(&text, "X-MS-Exchange-Organization-AuthAs"),
        Some("Anonymous")
    );
}

/// On an internal connector without XOORG trust (seed 000's applications), the client is
/// trusted with the organization's headers, but not with `X-OriginatorOrg`: only a trusted
/// XOORG sets it.
#[tokio::test(flavor = "multi_thread")]
async fn x_originatororg_comes_only_from_a_trusted_xoorg() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let relay = Relay::start(
        &root().join("rules/cloud-groups.mailflow"),
        &tmp.path().join("spool"),
        &[
            s("--listen"),
            s("Internal applications=127.0.0.1:0"),
            s("--listen"),
            s("Internet=127.0.0.1:0"),
            s("--remote"),
            s("Internal applications=127.0.0.3"),
            s("--smart-host"),
            format!("To Exchange={}", sink.addr),
            s("--queue-interval"),
            s("1s"),
        ],
    );
    let out = client(vec![
        s("--port"),
        relay.listener("Internal applications").port().to_string(),
        s("--source"),
        s("127.0.0.3"),
        s("--starttls"),
        s("--from"),
        s("app@domain.org"),
        s("--to"),
        s("jordan.lee@domain.org"),
        s("--data"),
        s("X-OriginatorOrg: victim-tenant.example\r\nX-MS-Exchange-Organization-SCL: -1\r\nSubject: report\r\n\r\nhello\r\n"),
    ])
    .await;
    assert_eq!(out["messages"][0]["data"][0], 250, "{out}");
    assert!(wait_until(20, || sink.messages().len() == 1).await);
    let text = data_text(&sink.messages()[0]);
    assert_eq!(header(&text, "X-OriginatorOrg"), None, "{text}");
    assert_eq!(
        header(&text, "X-MS-Exchange-Organization-AuthAs"),
        Some("Internal")
    );
}
