//! Trust only where it is earned, over real TCP against the relay binary: the organization's
//! headers never reach the Internet, a client certificate that does not verify is no
//! certificate (never a failed handshake), connection limits are per connector with a
//! ceiling for the relay, and postmaster and quoted local parts are what RFC 5321 says.
//! SECURITY.md says what each test proves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use std::path::Path;
use support::raw::Raw;
use support::relay::*;
use support::sink::{Received, Sink, SinkOptions};
use support::tls::{TestCa, self_signed};

/// The relay on `tests/fixtures/relay/trust.mailflow`, both send connectors delivering to one
/// sink, with `extra` arguments.
async fn start(tmp: &Path, extra: &[&str]) -> (Relay, Sink, TestCa) {
    Fixture {
        name: "trust.mailflow",
        listen: &["Internet", "Tenant"],
        send: &["Out", "To Tenant"],
    }
    .start(tmp, |t| t, extra)
    .await
}

fn head(m: &Received) -> String {
    data_text(m).split("\r\n\r\n").next().unwrap().to_string()
}

const ORGANIZATION_FAMILIES: &[&str] = &[
    "x-ms-exchange-organization-",
    "x-ms-exchange-crosspremises-",
    "x-ms-exchange-forest-",
    "x-ms-exchange-crosstenant-",
];

/// A message from inside the organization (the tenant's gateway, its verified certificate,
/// XOORG) to one Internet recipient and one tenant recipient: the sink receives the Internet
/// copy without any organization header family, and the tenant copy with them.
#[tokio::test(flavor = "multi_thread")]
async fn organization_headers_never_reach_the_internet() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, ca) = start(tmp.path(), &[]).await;
    let (mut c, _) = Raw::connect_from(relay.listener("Tenant"), "127.0.0.4").await;
    assert_eq!(c.cmd("EHLO gw.tenant.example").await.code, 250);
    assert_eq!(c.cmd("STARTTLS").await.status(), "220 2.0.0");
    let gateway = ca.issue_client("gw.tenant.example");
    let (mut c, _) = c
        .starttls_as(ca.roots(), "mx.example.com", Some(&gateway))
        .await
        .unwrap();
    let ehlo = c.cmd("EHLO gw.tenant.example").await;
    assert!(ehlo.text.lines().any(|l| l == "XOORG"), "{ehlo:?}");
    let r = c
        .cmd("MAIL FROM:<John.Smith@tenant.example> XOORG=tenant.example")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("RCPT TO:<alex@fabrikam.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<mary@tenant.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(
        "X-MS-Exchange-Organization-SCL: -1\r\n\
         X-MS-Exchange-CrossPremises-AuthAs: Internal\r\n\
         X-MS-Exchange-Forest-RulesExecuted: gw\r\n\
         X-MS-Exchange-CrossTenant-Id:\r\n 72f988bf-86f1-41af-91ab-2d7cd011db47\r\n\
         From: John Smith <John.Smith@tenant.example>\r\n\
         Subject: quarterly numbers\r\n\r\nX-MS-Exchange-Organization-AuthAs: body text\r\n.\r\n",
    )
    .await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    let _ = c.try_send("QUIT\r\n").await;
    assert!(wait_until(20, || sink.messages().len() == 2).await);
    let messages = sink.messages();
    let to = |rcpt: &str| {
        messages
            .iter()
            .find(|m| m.rcpts == [rcpt])
            .unwrap_or_else(|| panic!("no delivery to {rcpt}: {messages:?}"))
    };
    let internet = head(to("alex@fabrikam.example"));
    let lower = internet.to_ascii_lowercase();
    for family in ORGANIZATION_FAMILIES {
        assert!(
            !lower.contains(family),
            "{family} reached the Internet:\n{internet}"
        );
    }
    assert!(
        internet.contains("Subject: quarterly numbers"),
        "{internet}"
    );
    assert!(
        data_text(to("alex@fabrikam.example"))
            .contains("X-MS-Exchange-Organization-AuthAs: body text"),
        "the body is not touched"
    );
    let tenant = head(to("mary@tenant.example"));
    assert_eq!(
        header(&tenant, "X-MS-Exchange-Organization-AuthAs"),
        Some("Internal"),
        "{tenant}"
    );
    assert!(
        tenant
            .to_ascii_lowercase()
            .contains("x-ms-exchange-organization-scl"),
        "{tenant}"
    );
}

/// A DSN to a sender outside the organization returns the message without the
/// organization's headers: an Internet sender's message (stamped AuthAs Anonymous) is refused
/// by the tenant's next hop, and the report the sender gets holds the returned header block
/// without any organization header family.
#[tokio::test(flavor = "multi_thread")]
async fn dsns_leave_without_organization_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.issue(&["mx.example.com"]).write(tmp.path(), "edge");
    std::fs::write(tmp.path().join("ca.pem"), &ca.cert_pem).unwrap();
    let rules = tmp.path().join("trust.mailflow");
    std::fs::copy(root().join("tests/fixtures/relay/trust.mailflow"), &rules).unwrap();
    let tenant = Sink::start(SinkOptions::default().rcpt("gone@", "550 5.1.1 no such user")).await;
    let internet = Sink::start(SinkOptions::default()).await;
    let relay = Relay::start(
        &rules,
        &tmp.path().join("spool"),
        &[
            s("--listen"),
            s("Internet=127.0.0.1:0"),
            s("--listen"),
            s("Tenant=127.0.0.1:0"),
            s("--ca-file"),
            tmp.path().join("ca.pem").display().to_string(),
            s("--smart-host"),
            format!("Out={}", internet.addr),
            s("--smart-host"),
            format!("To Tenant={}", tenant.addr),
            s("--queue-interval"),
            s("1s"),
        ],
    );
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO mta.contoso.example").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<lee@contoso.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<gone@tenant.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send("Subject: hello\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert!(wait_until(20, || internet.messages().len() == 1).await);
    let dsn = &internet.messages()[0];
    assert_eq!(dsn.rcpts, ["lee@contoso.example"]);
    let text = data_text(dsn);
    assert!(
        text.contains("Subject: hello"),
        "the header block is returned: {text}"
    );
    let lower = text.to_ascii_lowercase();
    for family in ORGANIZATION_FAMILIES {
        assert!(!lower.contains(family), "{family} left in a DSN:\n{text}");
    }
}

/// A self-signed client certificate (as many MTAs present) is no reason to abort STARTTLS:
/// on the public connector none is asked for; on the connector that asks (`accept-oorg`) it
/// counts as no certificate, so XOORG is neither offered nor accepted, and the mail is taken.
#[tokio::test(flavor = "multi_thread")]
async fn unverifiable_client_certificates_are_no_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, ca) = start(tmp.path(), &[]).await;
    let stranger = TestCa::new();
    let cases: &[(&str, &str, support::tls::Pem)] = &[
        (
            "Internet",
            "127.0.0.1",
            self_signed(&["mta.fabrikam.example"]),
        ),
        ("Tenant", "127.0.0.4", self_signed(&["gw.tenant.example"])),
        (
            "Tenant",
            "127.0.0.4",
            stranger.issue_client("gw.tenant.example"),
        ),
    ];
    for (i, (connector, source, cert)) in cases.iter().enumerate() {
        let what = format!("case {i} on {connector}");
        let (mut c, g) = Raw::connect_from(relay.listener(connector), source).await;
        assert_eq!(g.code, 220);
        assert_eq!(c.cmd("EHLO mta.fabrikam.example").await.code, 250);
        assert_eq!(c.cmd("STARTTLS").await.status(), "220 2.0.0");
        let (mut c, _) = c
            .starttls_as(ca.roots(), "mx.example.com", Some(cert))
            .await
            .unwrap_or_else(|e| panic!("{what}: the handshake failed: {e}"));
        let ehlo = c.cmd("EHLO mta.fabrikam.example").await;
        assert_eq!(ehlo.code, 250, "{what}: {ehlo:?}");
        assert!(!ehlo.text.lines().any(|l| l == "XOORG"), "{what}: {ehlo:?}");
        assert_eq!(
            c.cmd("MAIL FROM:<a@fabrikam.example> XOORG=tenant.example")
                .await
                .status(),
            "555 5.5.4",
            "{what}"
        );
        assert_eq!(c.cmd("MAIL FROM:<a@fabrikam.example>").await.code, 250);
        let r = c.cmd("RCPT TO:<John.Smith@example.com>").await;
        assert_eq!(r.code, 250, "{what}: {r:?}");
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.send(format!("Subject: {what}\r\n\r\nhello\r\n.\r\n"))
            .await;
        assert_eq!(c.reply().await.unwrap().code, 250, "{what}");
        let _ = c.try_send("QUIT\r\n").await;
    }
    // OpenSSL (Python's ssl) presenting a self-signed certificate where one is asked for.
    let (cert, key) = write_pem(&self_signed(&["mta.python.example"]), tmp.path(), "python");
    let out = client(vec![
        s("--port"),
        relay.listener("Tenant").port().to_string(),
        s("--source"),
        s("127.0.0.4"),
        s("--starttls"),
        s("--cert"),
        cert,
        s("--key"),
        key,
        s("--from"),
        s("a@fabrikam.example"),
        s("--to"),
        s("John.Smith@example.com"),
    ])
    .await;
    assert_eq!(out["starttls"][0], 220, "{out}");
    assert!(
        !out["ehlo_tls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "xoorg"),
        "{out}"
    );
    assert_eq!(out["messages"][0]["data"][0], 250, "{out}");
    assert!(wait_until(20, || sink.messages().len() == cases.len() + 1).await);
    assert!(
        sink.messages()
            .iter()
            .all(|m| m.rcpts == ["John.Smith@tenant.example"])
    );
}

/// `max-connections` counts each connector on its own: ten idle sessions fill the public
/// connector, whose next clients get 421 4.3.2, while the tenant's connector, whose own limit
/// (5) is below that count, still greets; `--max-connections` caps all connectors together;
/// the tenant's connector refuses past its own limit; a place freed is usable again.
#[tokio::test(flavor = "multi_thread")]
async fn connection_limits_are_per_connector_with_a_relay_ceiling() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, _sink, _) = start(tmp.path(), &["--max-connections", "12"]).await;
    let internet = relay.listener("Internet");
    let tenant = relay.listener("Tenant");
    let refused = |g: &support::raw::Reply, by_connector: bool| {
        assert_eq!(g.status(), "421 4.3.2", "{g:?}");
        assert_eq!(g.text.contains("connector"), by_connector, "{g:?}");
    };
    let mut idle = Vec::new();
    for i in 0..10 {
        // From several addresses: the limit is the connector's, not one source's.
        let (c, g) = Raw::connect_from(internet, &format!("127.0.0.{}", 10 + i % 3)).await;
        assert_eq!(g.code, 220, "session {i}: {g:?}");
        idle.push(c);
    }
    for source in ["127.0.0.1", "127.0.0.20"] {
        let (mut c, g) = Raw::connect_from(internet, source).await;
        refused(&g, true);
        assert!(c.closed().await);
    }
    // The tenant's connector does not count the public one's sessions...
    let mut tenants = Vec::new();
    for _ in 0..2 {
        let (t, g) = Raw::connect_from(tenant, "127.0.0.4").await;
        assert_eq!(g.code, 220, "{g:?}");
        tenants.push(t);
    }
    // ...but the relay's ceiling (12) counts everything.
    let (mut c, g) = Raw::connect_from(tenant, "127.0.0.4").await;
    refused(&g, false);
    assert!(c.closed().await);
    // Sessions that end give their places back; the tenant's connector fills to its own 5.
    for mut c in idle.drain(..5) {
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    for _ in 0..3 {
        let (t, g) = Raw::connect_from(tenant, "127.0.0.4").await;
        assert_eq!(g.code, 220, "{g:?}");
        tenants.push(t);
    }
    let (mut c, g) = Raw::connect_from(tenant, "127.0.0.4").await;
    refused(&g, true);
    assert!(c.closed().await);
    let (_again, g) = Raw::connect_from(internet, "127.0.0.1").await;
    assert_eq!(g.code, 220, "{g:?}");
}

/// RFC 5321 §4.5.1 and §4.1.2: `postmaster` (bare) and `postmaster@` the authoritative
/// domain are accepted and routed like the domain's other mail; `"John.Smith"@example.com`
/// is `John.Smith@example.com` and goes where it goes.
#[tokio::test(flavor = "multi_thread")]
async fn postmaster_and_quoted_local_parts_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = start(tmp.path(), &[]).await;
    let cases = [
        ("<postmaster>", "postmaster@example.com"),
        ("<PostMaster@example.com>", "PostMaster@example.com"),
        ("<\"John.Smith\"@example.com>", "John.Smith@tenant.example"),
        ("<John.Smith@example.com>", "John.Smith@tenant.example"),
        (
            "<\"John\\.Smith\"@Example.COM>",
            "John.Smith@tenant.example",
        ),
    ];
    for (rcpt, _) in &cases {
        let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
        assert_eq!(c.cmd("EHLO client.test").await.code, 250);
        assert_eq!(c.cmd("MAIL FROM:<lee@contoso.example>").await.code, 250);
        let r = c.cmd(&format!("RCPT TO:{rcpt}")).await;
        assert_eq!(r.status(), "250 2.1.5", "{rcpt}: {r:?}");
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.send(format!("Subject: to {rcpt}\r\n\r\nhello\r\n.\r\n"))
            .await;
        assert_eq!(c.reply().await.unwrap().code, 250, "{rcpt}");
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    // Other unknown addresses of the authoritative domain are still refused.
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<lee@contoso.example>").await.code, 250);
    for rcpt in [
        "<Jane.Doe@example.com>",
        "<\"Jane.Doe\"@example.com>",
        "<\"postmaster \"@example.com>",
    ] {
        assert_eq!(
            c.cmd(&format!("RCPT TO:{rcpt}")).await.status(),
            "550 5.1.1",
            "{rcpt}"
        );
    }
    assert!(wait_until(20, || sink.messages().len() == cases.len()).await);
    for (rcpt, want) in &cases {
        let subject = format!("to {rcpt}");
        let m = sink
            .messages()
            .into_iter()
            .find(|m| header(&data_text(m), "Subject") == Some(subject.as_str()))
            .unwrap_or_else(|| panic!("{rcpt} not delivered"));
        assert_eq!(m.rcpts, [*want], "{rcpt}");
    }
}
