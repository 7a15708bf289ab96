//! The relay end to end, over real TCP on 127.0.0.1: the `mailflow relay` binary started on
//! free ports with a rule set from `rules/` (production listen addresses, ranges and smart
//! hosts replaced by --listen/--remote/--smart-host), Python's smtplib as the client
//! (`tests/support/smtp_client.py`), and recording sinks and a DNS server as the next hops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::dns::{DnsServer, Zone};
use support::sink::{Sink, SinkOptions};
use support::tls::{TestCa, server_config};

use support::relay::*;

/// Seed 002 end to end: EOP's outbound mail is rewritten to the shared domain, replies come
/// back rewritten to the tenant, other tenants cannot relay through EOP's connector, and
/// everything between relay and EOP is TLS with the certificates checked.
#[tokio::test(flavor = "multi_thread")]
async fn seed_002_shared_domain_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    std::fs::write(tmp.path().join("ca.pem"), &ca.cert_pem).unwrap();
    // The tenants' EOP endpoints: TLS with Microsoft's name, issued by the test CA.
    let eop = Sink::start(SinkOptions::default().tls(server_config(
        &ca.issue(&["mail.protection.outlook.com"]),
        None,
    )))
    .await;
    // The internet, reached by MX.
    let internet = Sink::start(SinkOptions::default()).await;
    let dns = DnsServer::start(
        Zone::new()
            .mx("fabrikam.com", 10, "mx.fabrikam.com")
            .a("mx.fabrikam.com", std::net::Ipv4Addr::LOCALHOST),
    )
    .await;
    let relay = Relay::start(
        &root().join("rules/shared-domain.mailflow"),
        &tmp.path().join("spool"),
        &[
            s("--listen"),
            s("From EOP=127.0.0.1:0"),
            s("--listen"),
            s("Internet=127.0.0.1:0"),
            s("--remote"),
            s("From EOP=127.0.0.2"),
            s("--smart-host"),
            format!("To Tenant1={}", eop.addr),
            s("--smart-host"),
            format!("To Tenant2={}", eop.addr),
            s("--dns"),
            dns.addr.to_string(),
            s("--mx-port"),
            internet.addr.port().to_string(),
            s("--ca-file"),
            tmp.path().join("ca.pem").display().to_string(),
            s("--retry-min"),
            s("1s"),
            s("--queue-interval"),
            s("1s"),
        ],
    );
    let (cert, key) = write_pem(
        &ca.issue_client("mail.protection.outlook.com"),
        tmp.path(),
        "eop-client",
    );
    let eop_client = |extra: &[&str]| {
        let mut a = port_args(&relay);
        a.extend(
            [
                "--source",
                "127.0.0.2",
                "--starttls",
                "--cert",
                &cert,
                "--key",
                &key,
            ]
            .map(s),
        );
        a.extend(extra.iter().map(|x| s(x)));
        a
    };

    // Outbound from tenant 1 through EOP: XOORG is offered to EOP's verified certificate,
    // and the sender is rewritten to the shared domain in the envelope and the headers.
    let out = client(eop_client(&[
        "--from",
        "John.Smith@tenant1.myexchlab.com",
        "--to",
        "alex.wilber@fabrikam.com",
        "--mail-option",
        "XOORG=tenant1.myexchlab.com",
        "--message",
        root()
            .join("rules/messages/outbound-john.eml")
            .to_str()
            .unwrap(),
    ]))
    .await;
    assert!(
        !out["ehlo"]
            .as_array()
            .unwrap()
            .contains(&Value::from("xoorg")),
        "XOORG before TLS: {out}"
    );
    assert!(
        out["ehlo_tls"]
            .as_array()
            .unwrap()
            .contains(&Value::from("xoorg")),
        "{out}"
    );
    assert_eq!(out["messages"][0]["data"][0], 250, "{out}");
    assert!(wait_until(10, || !internet.messages().is_empty()).await);
    let m = &internet.messages()[0];
    assert_eq!(m.mail_from, "John.Smith@myexchlab.com");
    assert_eq!(m.rcpts, ["alex.wilber@fabrikam.com"]);
    let text = data_text(m);
    assert_eq!(
        header(&text, "From"),
        Some("John Smith <John.Smith@myexchlab.com>")
    );
    // The edge's signature for the shared domain first (the example key; dkimpy checks it
    // in auth_seeds and relay_auth_out), then its Received line.
    let after_signature = &text[text.find("\r\nReceived: ").unwrap() + 2..];
    assert!(text.starts_with("DKIM-Signature: "), "{text}");
    assert!(after_signature.starts_with("Received: from client.test (127.0.0.2 [127.0.0.2])"));
    assert_eq!(
        header(&text, "Message-ID"),
        Some("<20210112091403.4f1c2a@tenant1.myexchlab.com>")
    );

    // A reply from the internet goes back to tenant 1, rewritten, over verified TLS.
    let reply = client(with_port(
        &relay,
        &[
            "--from",
            "alex.wilber@fabrikam.com",
            "--to",
            "John.Smith@myexchlab.com",
            "--message",
            root()
                .join("rules/messages/inbound-reply.eml")
                .to_str()
                .unwrap(),
        ],
    ))
    .await;
    assert_eq!(reply["messages"][0]["data"][0], 250, "{reply}");
    assert!(wait_until(10, || !eop.messages().is_empty()).await);
    let m = &eop.messages()[0];
    assert_eq!(m.rcpts, ["John.Smith@tenant1.myexchlab.com"]);
    assert!(m.tls, "the tenant connector requires TLS");
    assert_eq!(
        header(&data_text(m), "To"),
        Some("John Smith <John.Smith@tenant1.myexchlab.com>")
    );

    // Another Office 365 customer tries to relay through EOP's connector: its XOORG is not
    // ours, so it is anonymous and refused at RCPT (tests/it/relay_tenants.rs tries every form).
    let attempt = client(eop_client(&[
        "--from",
        "lee.gu@contoso.com",
        "--to",
        "victim@fabrikam.com",
        "--mail-option",
        "XOORG=contoso.com",
        "--message",
        root()
            .join("rules/messages/relay-attempt.eml")
            .to_str()
            .unwrap(),
    ]))
    .await;
    assert_eq!(attempt["messages"][0]["rcpt"][0][0], 550, "{attempt}");
    // The anonymous internet connector refuses the same relay attempt at RCPT.
    let open = client(with_port(
        &relay,
        &[
            "--from",
            "lee.gu@contoso.com",
            "--to",
            "victim@fabrikam.com",
        ],
    ))
    .await;
    assert_eq!(open["messages"][0]["rcpt"][0][0], 550, "{open}");
    assert!(
        open["messages"][0]["rcpt"][0][1]
            .as_str()
            .unwrap()
            .starts_with("5.7.54"),
        "{open}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        internet
            .messages()
            .iter()
            .all(|m| !m.rcpts.contains(&s("victim@fabrikam.com"))),
        "a relay attempt was delivered"
    );

    // EOP's connector requires TLS, and XOORG needs a trusted certificate.
    let plain = client(with_port(
        &relay,
        &[
            "--source",
            "127.0.0.2",
            "--from",
            "John.Smith@tenant1.myexchlab.com",
            "--to",
            "alex.wilber@fabrikam.com",
        ],
    ))
    .await;
    assert_eq!(plain["messages"][0]["mail"][0], 530, "{plain}");
    let no_cert = client(with_port(
        &relay,
        &[
            "--source",
            "127.0.0.2",
            "--starttls",
            "--from",
            "John.Smith@tenant1.myexchlab.com",
            "--to",
            "alex.wilber@fabrikam.com",
            "--mail-option",
            "XOORG=tenant1.myexchlab.com",
        ],
    ))
    .await;
    assert!(
        !no_cert["ehlo_tls"]
            .as_array()
            .unwrap()
            .contains(&Value::from("xoorg")),
        "{no_cert}"
    );
    assert_eq!(no_cert["messages"][0]["mail"][0], 555, "{no_cert}");

    // The tracking log tells the story, searchable by Message-ID.
    let events = relay.track(&[
        "--message-id",
        "20210112091403.4f1c2a@tenant1.myexchlab.com",
    ]);
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["event-id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"RECEIVE"), "{ids:?}");
    assert!(ids.contains(&"SEND"), "{ids:?}");
}

/// Seed 000: a contact and a group in the cloud, reached from on-premises applications
/// (Internal) and from the internet (Anonymous), with AuthAs stamped on what is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn seed_000_contacts_and_groups_forward_to_the_cloud() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    std::fs::write(tmp.path().join("ca.pem"), &ca.cert_pem).unwrap();
    let cloud = Sink::start(SinkOptions::default().tls(server_config(
        &ca.issue(&["mail.protection.outlook.com"]),
        None,
    )))
    .await;
    let relay = Relay::start(
        &root().join("rules/cloud-groups.mailflow"),
        &tmp.path().join("spool"),
        &[
            s("--listen"),
            s("Internet=127.0.0.1:0"),
            s("--listen"),
            s("Internal applications=127.0.0.1:0"),
            s("--remote"),
            s("Internal applications=127.0.0.3"),
            s("--smart-host"),
            format!("To Office 365={}", cloud.addr),
            s("--ca-file"),
            tmp.path().join("ca.pem").display().to_string(),
            s("--queue-interval"),
            s("1s"),
        ],
    );
    let app = client(with_port(
        &relay,
        &[
            "--source",
            "127.0.0.3",
            "--starttls",
            "--from",
            "Administrator@domain.org",
            "--to",
            "board@domain.org",
        ],
    ))
    .await;
    assert_eq!(app["messages"][0]["data"][0], 250, "{app}");
    let internet = client(with_port(
        &relay,
        &[
            "--from",
            "dana.reyes@contoso.com",
            "--to",
            "officers@domain.org",
            "--to",
            "leadership@domain.org",
            "--message",
            root()
                .join("rules/messages/to-officers.eml")
                .to_str()
                .unwrap(),
        ],
    ))
    .await;
    // Leadership accepts only authenticated senders: refused at RCPT.
    assert_eq!(internet["messages"][0]["rcpt"][0][0], 250, "{internet}");
    assert_eq!(internet["messages"][0]["rcpt"][1][0], 550, "{internet}");
    assert!(
        internet["messages"][0]["rcpt"][1][1]
            .as_str()
            .unwrap()
            .starts_with("5.7.1")
    );
    assert_eq!(internet["messages"][0]["data"][0], 250, "{internet}");

    assert!(wait_until(10, || cloud.messages().len() == 2).await);
    let msgs = cloud.messages();
    let board = msgs
        .iter()
        .find(|m| m.rcpts == ["board@domain.mail.onmicrosoft.com"])
        .expect("the Board group reached its cloud contact");
    assert!(board.tls);
    assert_eq!(
        header(&data_text(board), "X-MS-Exchange-Organization-AuthAs"),
        Some("Internal")
    );
    let officers = msgs
        .iter()
        .find(|m| m.rcpts == ["officers@domain.mail.onmicrosoft.com"])
        .expect("the Officers contact forwarded");
    assert_eq!(
        header(&data_text(officers), "X-MS-Exchange-Organization-AuthAs"),
        Some("Anonymous")
    );
    // The tracking log names the group expansion and the contact's forwarding.
    let expand = relay.track(&["--event", "EXPAND"]);
    assert_eq!(expand.len(), 1, "{expand:?}");
    assert_eq!(expand[0]["related-recipient-address"], "board@domain.org");
    assert_eq!(
        expand[0]["recipient-address"][0],
        "board@domain.mail.onmicrosoft.com"
    );
    let resolve = relay.track(&["--event", "RESOLVE"]);
    assert_eq!(resolve.len(), 1, "{resolve:?}");
    assert_eq!(
        resolve[0]["related-recipient-address"],
        "officers@domain.org"
    );
}

/// SIGTERM stops the relay cleanly: exit status 0 and the pid file gone.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut relay = Relay::start(
        &root().join("tests/fixtures/relay/forward.mailflow"),
        &tmp.path().join("spool"),
        &forward_args(dead_port(), dead_port()),
    );
    let pid_file = relay.spool.join("mailflow.pid");
    assert!(pid_file.exists());
    relay.terminate().await;
    assert!(!pid_file.exists());
}

/// Seed 001: mail from the tenant to the external address a deleted user used to forward to
/// is delivered to that address, not bounced by the tombstone.
#[tokio::test(flavor = "multi_thread")]
async fn seed_001_deleted_user_is_delivered_not_bounced() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    std::fs::write(tmp.path().join("ca.pem"), &ca.cert_pem).unwrap();
    let internet = Sink::start(SinkOptions::default()).await;
    let dns = DnsServer::start(
        Zone::new()
            .mx("microsoft.com", 10, "mx.microsoft.test")
            .a("mx.microsoft.test", std::net::Ipv4Addr::LOCALHOST),
    )
    .await;
    let relay = Relay::start(
        &root().join("rules/deleted-user.mailflow"),
        &tmp.path().join("spool"),
        &[
            s("--listen"),
            s("Internet=127.0.0.1:0"),
            s("--listen"),
            s("From Office 365=127.0.0.1:0"),
            s("--remote"),
            s("From Office 365=127.0.0.2"),
            s("--dns"),
            dns.addr.to_string(),
            s("--mx-port"),
            internet.addr.port().to_string(),
            s("--ca-file"),
            tmp.path().join("ca.pem").display().to_string(),
            s("--queue-interval"),
            s("1s"),
        ],
    );
    let (cert, key) = write_pem(
        &ca.issue_client("mail.protection.outlook.com"),
        tmp.path(),
        "eop-client",
    );
    let out = client(with_port(
        &relay,
        &[
            "--source",
            "127.0.0.2",
            "--starttls",
            "--cert",
            &cert,
            "--key",
            &key,
            "--from",
            "DevUser@servicedomain.onmicrosoft.com",
            "--to",
            "user@microsoft.com",
            "--mail-option",
            "XOORG=domain.com",
            "--message",
            root()
                .join("rules/messages/to-deleted-user.eml")
                .to_str()
                .unwrap(),
        ],
    ))
    .await;
    assert_eq!(out["messages"][0]["rcpt"][0][0], 250, "{out}");
    assert_eq!(out["messages"][0]["data"][0], 250, "{out}");
    assert!(wait_until(10, || !internet.messages().is_empty()).await);
    assert_eq!(internet.messages()[0].rcpts, ["user@microsoft.com"]);
    assert!(relay.track(&["--event", "DSN"]).is_empty());
}

fn forward_args(out: u16, dead: u16) -> Vec<String> {
    vec![
        s("--listen"),
        s("Loopback=127.0.0.1:0"),
        s("--smart-host"),
        format!("Out=127.0.0.1:{out}"),
        s("--smart-host"),
        format!("Dead=127.0.0.1:{dead}"),
        s("--retry-min"),
        s("1s"),
        s("--retry-max"),
        s("2s"),
        s("--queue-interval"),
        s("1s"),
    ]
}

/// A next hop that is down defers the message; once it is back, the retry delivers it.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_next_hop_that_recovers_gets_the_message() {
    let tmp = tempfile::tempdir().unwrap();
    let port = dead_port();
    let relay = Relay::start(
        &root().join("tests/fixtures/relay/forward.mailflow"),
        &tmp.path().join("spool"),
        &forward_args(dead_port(), port),
    );
    let out = client(with_port(
        &relay,
        &["--from", "app@origin.example", "--to", "user@dead.example"],
    ))
    .await;
    assert_eq!(out["messages"][0]["data"][0], 250, "{out}");
    assert!(
        wait_until(10, || !relay.track(&["--event", "DEFER"]).is_empty()).await,
        "no DEFER while the next hop is down"
    );
    // The next hop comes back on the same port.
    let sink = Sink::start_on(port, SinkOptions::default()).await;
    assert!(
        wait_until(15, || !sink.messages().is_empty()).await,
        "not delivered after the next hop recovered"
    );
    assert_eq!(sink.messages()[0].rcpts, ["user@dead.example"]);
    assert_eq!(
        header(&data_text(&sink.messages()[0]), "X-Relay-Test"),
        Some("tagged")
    );
    assert_eq!(relay.track(&["--event", "SEND"]).len(), 1);
}

/// A message that cannot be delivered before its lifetime ends is bounced to its sender
/// with an RFC 3464 report; the bounce itself (null sender) would never bounce.
#[tokio::test(flavor = "multi_thread")]
async fn expiry_produces_a_dsn_to_the_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let mut args = forward_args(sink.addr.port(), dead_port());
    args.extend([s("--lifetime"), s("2s")]);
    let relay = Relay::start(
        &root().join("tests/fixtures/relay/forward.mailflow"),
        &tmp.path().join("spool"),
        &args,
    );
    let out = client(with_port(
        &relay,
        &["--from", "app@origin.example", "--to", "user@dead.example"],
    ))
    .await;
    assert_eq!(out["messages"][0]["data"][0], 250, "{out}");
    assert!(
        wait_until(20, || !sink.messages().is_empty()).await,
        "no DSN after expiry"
    );
    let dsn = &sink.messages()[0];
    assert_eq!(dsn.mail_from, "", "a DSN is sent from the null sender");
    assert_eq!(dsn.rcpts, ["app@origin.example"]);
    let text = data_text(dsn);
    assert!(text.contains("multipart/report"), "{text}");
    assert!(
        text.contains("report-type=delivery-status")
            || text.contains("report-type=\"delivery-status\"")
    );
    assert!(text.contains("Action: failed"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; user@dead.example")
            || text.contains("Final-Recipient: rfc822;user@dead.example"),
        "{text}"
    );
    assert!(text.contains("Status: 4.4.7"), "{text}");
    assert_eq!(relay.track(&["--event", "DSN"]).len(), 1);
}

/// kill -9 in the middle of a load: every message the relay acknowledged with 250 is
/// delivered after a restart on the same spool.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loses_no_acknowledged_message() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let port = dead_port();
    let rules = root().join("tests/fixtures/relay/forward.mailflow");
    // The next hop is down during the load, so the messages are only in the spool.
    let mut relay = Relay::start(&rules, &spool, &forward_args(port, dead_port()));
    let relay_port = relay.addr.port();
    let mut clients = Vec::new();
    for c in 0..4 {
        let args: Vec<String> = [
            "--port",
            &relay_port.to_string(),
            "--from",
            "app@origin.example",
            "--to",
            "user@example.net",
            "--count",
            "200",
            "--data",
            &format!("Subject: load\r\nX-Seq: {c}-{{seq}}\r\n\r\nmessage {c}-{{seq}}\r\n"),
        ]
        .map(s)
        .to_vec();
        clients.push(std::thread::spawn(move || {
            let mut child = Command::new("python3")
                .arg(root().join("tests/support/smtp_client.py"))
                .args(&args)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut acked = Vec::new();
            for line in BufReader::new(child.stdout.take().unwrap()).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["acked"][0] == 250 {
                    acked.push(v["seq"].as_str().unwrap_or_default().to_string());
                }
            }
            let _ = child.wait();
            acked
        }));
    }
    // Kill it once some messages are in.
    let t0 = Instant::now();
    while relay.track(&["--event", "RECEIVE"]).len() < 100 && t0.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.kill9();
    let acked: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        acked.len() >= 100,
        "only {} messages acknowledged",
        acked.len()
    );

    // Restart on the same spool with the next hop up.
    let sink = Sink::start_on(port, SinkOptions::default()).await;
    let _relay = Relay::start(&rules, &spool, &forward_args(port, dead_port()));
    let all_there = wait_until(60, || {
        let got: std::collections::HashSet<String> = sink
            .messages()
            .iter()
            .filter_map(|m| header(&data_text(m), "X-Seq").map(str::to_string))
            .collect();
        acked.iter().all(|a| got.contains(a))
    })
    .await;
    let got = sink.messages().len();
    eprintln!(
        "kill -9: {} acknowledged before the kill, {got} delivered after the restart",
        acked.len()
    );
    assert!(
        all_there,
        "{} acknowledged, {got} delivered after the restart",
        acked.len()
    );
}

/// SIGHUP and the admin port reload the rules; broken rules are refused and the old ones
/// keep working; /metrics counts what happened.
#[tokio::test(flavor = "multi_thread")]
async fn reload_keeps_the_old_rules_on_error_and_metrics_count() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let rules = tmp.path().join("rules.mailflow");
    std::fs::copy(root().join("tests/fixtures/relay/forward.mailflow"), &rules).unwrap();
    let mut args = forward_args(sink.addr.port(), dead_port());
    args.extend([s("--admin"), s("127.0.0.1:0")]);
    let relay = Relay::start(&rules, &tmp.path().join("spool"), &args);
    let admin = relay.admin.unwrap().to_string();

    std::fs::write(
        &rules,
        "receive-connector \"Loopback\" {\n  remote not-an-ip\n}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["reload", "--admin", &admin])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("E030"));
    // A rule set over the limits (a `contains` word of 2,000 characters) is refused the same
    // way, before anything is built from it.
    let huge = std::fs::read_to_string(root().join("tests/fixtures/relay/forward.mailflow"))
        .unwrap()
        .replace(
            "  priority 0\n",
            &format!(
                "  priority 0\n  if subject contains \"{}\"\n",
                "x".repeat(2000)
            ),
        );
    std::fs::write(&rules, huge).unwrap();
    let out = Command::new(BIN)
        .args(["reload", "--admin", &admin])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("E045"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Still relaying with the old rules.
    let sent = client(with_port(
        &relay,
        &["--from", "app@origin.example", "--to", "user@example.net"],
    ))
    .await;
    assert_eq!(sent["messages"][0]["data"][0], 250, "{sent}");
    assert!(wait_until(10, || sink.messages().len() == 1).await);

    // A good change takes effect: the rule now tags differently.
    let fixed = std::fs::read_to_string(root().join("tests/fixtures/relay/forward.mailflow"))
        .unwrap()
        .replace("\"tagged\"", "\"reloaded\"");
    std::fs::write(&rules, fixed).unwrap();
    let status = Command::new(BIN)
        .args(["reload", "--spool"])
        .arg(&relay.spool)
        .status()
        .unwrap();
    assert!(status.success());
    // SIGHUP is asynchronous: wait until the relay has counted the reload.
    let admin_addr = relay.admin.unwrap();
    assert!(
        wait_until(10, || http_get(admin_addr, "/metrics")
            .contains("mailflow_reloads_total 1\n"))
        .await,
        "SIGHUP did not reload"
    );
    let again = client(with_port(
        &relay,
        &["--from", "app@origin.example", "--to", "user@example.net"],
    ))
    .await;
    assert_eq!(again["messages"][0]["data"][0], 250, "{again}");
    assert!(
        wait_until(10, || sink
            .messages()
            .iter()
            .any(|m| header(&data_text(m), "X-Relay-Test") == Some("reloaded")))
        .await,
        "the reloaded rules never took effect"
    );

    let metrics = http_get(relay.admin.unwrap(), "/metrics");
    assert!(
        metrics.contains("mailflow_reloads_failed_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("mailflow_reloads_total 1"), "{metrics}");
    assert!(
        metrics.contains("mailflow_rule_hits_total{rule=\"Tag everything\"}"),
        "{metrics}"
    );
}
