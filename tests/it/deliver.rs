//! The outbound side against loopback servers: next hops from a test DNS server, delivery
//! to the recording SMTP sink (plaintext, STARTTLS both ways, per-recipient replies, hop
//! fail-over, body encoding, SMTPUTF8, client certificates), and DSNs parsed back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;
use support::outbound::{BODY, message, rcpts};

use mail_parser::MimeHeaders;
use mailflow::deliver::{
    self, Attempt, ClientConfig, DeliverError, DsnAction, DsnInput, FailedRecipient, Hop,
    OutboundMessage, OutboundRcpt, RcptOutcome, Resolver,
};
use mailflow::model::{OutboundTls, SendConnector, SmartHost, Spanned};
use mailflow::source::{FileId, Span};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use support::dns::{DnsServer, Zone};
use support::sink::{Sink, SinkOptions};
use support::tls::{self as certs, TestCa};

fn span() -> Span {
    Span::new(FileId(0), 0, 0)
}

fn connector(smart_hosts: &[(&str, u16)], tls: OutboundTls) -> SendConnector {
    SendConnector {
        name: Spanned::new("out".into(), span()),
        span: span(),
        address_spaces: Vec::new(),
        smart_hosts: smart_hosts
            .iter()
            .map(|(h, p)| {
                Spanned::new(
                    SmartHost {
                        host: h.to_string(),
                        port: *p,
                    },
                    span(),
                )
            })
            .collect(),
        tls: Spanned::new(tls, span()),
        tls_name: None,
        certificate: None,
        key: None,
        fqdn: Some("relay.example.test".into()),
        dkim_sign: true,
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------- next hops

#[tokio::test]
async fn mx_records_in_preference_order() {
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 20, "mx2.example.test")
            .mx("example.test", 10, "mx1.example.test")
            .a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 11))
            .a("mx2.example.test", Ipv4Addr::new(127, 0, 0, 12))
            .aaaa("mx2.example.test", "::1".parse().unwrap()),
    )
    .await;
    let resolver = Resolver::with_nameserver(dns.addr);
    let hops = deliver::next_hops(
        &resolver,
        &connector(&[], OutboundTls::Off),
        "Example.Test",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        hops,
        vec![
            Hop {
                host: "mx1.example.test".into(),
                addrs: vec![sa("127.0.0.11:25")],
                preference: 10
            },
            Hop {
                host: "mx2.example.test".into(),
                addrs: vec![sa("127.0.0.12:25"), sa("[::1]:25")],
                preference: 20
            },
        ]
    );
}

#[tokio::test]
async fn implicit_mx_uses_the_domain_address() {
    let dns =
        DnsServer::start(Zone::new().a("plain.example.test", Ipv4Addr::new(127, 0, 0, 20))).await;
    let resolver = Resolver::with_nameserver(dns.addr);
    let hops = deliver::next_hops(
        &resolver,
        &connector(&[], OutboundTls::Off),
        "plain.example.test",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(hops.len(), 1);
    assert_eq!(hops[0].host, "plain.example.test");
    assert_eq!(hops[0].addrs, vec![sa("127.0.0.20:25")]);
}

#[tokio::test]
async fn null_mx_nxdomain_and_servfail() {
    let dns = DnsServer::start(
        Zone::new()
            .null_mx("nomail.example.test")
            .a("nomail.example.test", Ipv4Addr::new(127, 0, 0, 30))
            .servfail("broken.example.test"),
    )
    .await;
    let resolver = Resolver::with_nameserver(dns.addr);
    let c = connector(&[], OutboundTls::Off);

    let e = deliver::next_hops(&resolver, &c, "nomail.example.test", &[])
        .await
        .unwrap_err();
    assert!(matches!(e, DeliverError::NullMx { .. }), "{e:?}");
    assert_eq!(
        (e.status().code, e.status().enhanced.as_str()),
        (556, "5.1.10")
    );

    let e = deliver::next_hops(&resolver, &c, "missing.example.test", &[])
        .await
        .unwrap_err();
    assert!(matches!(e, DeliverError::NoAddress { .. }), "{e:?}");
    assert!(e.is_permanent());

    let e = deliver::next_hops(&resolver, &c, "broken.example.test", &[])
        .await
        .unwrap_err();
    assert!(matches!(e, DeliverError::DnsTemporary { .. }), "{e:?}");
    assert!(!e.is_permanent());
}

#[tokio::test]
async fn smart_hosts_by_name_and_ip_literal_skip_mx() {
    let dns = DnsServer::start(
        Zone::new()
            .a("smart.example.test", Ipv4Addr::new(127, 0, 0, 40))
            .mx("example.test", 10, "mx1.example.test"),
    )
    .await;
    let resolver = Resolver::with_nameserver(dns.addr);
    let c = connector(
        &[
            ("smart.example.test", 2525),
            ("127.0.0.41", 587),
            ("[127.0.0.42]", 26),
        ],
        OutboundTls::Off,
    );
    let hops = deliver::next_hops(&resolver, &c, "example.test", &[])
        .await
        .unwrap();
    let got: Vec<(&str, Vec<SocketAddr>)> = hops
        .iter()
        .map(|h| (h.host.as_str(), h.addrs.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("smart.example.test", vec![sa("127.0.0.40:2525")]),
            ("127.0.0.41", vec![sa("127.0.0.41:587")]),
            ("[127.0.0.42]", vec![sa("127.0.0.42:26")]),
        ]
    );
    // Only the smart host's name was looked up: no MX, nothing for the literals.
    let names: Vec<String> = dns.queries().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().all(|n| n == "smart.example.test"), "{names:?}");
}

#[tokio::test]
async fn hops_back_to_this_relay_are_loops() {
    let dns = DnsServer::start(
        Zone::new()
            .a("self.example.test", Ipv4Addr::new(127, 0, 0, 1))
            .mx("looped.example.test", 10, "self.example.test")
            .mx("backup.example.test", 5, "primary.example.test")
            .mx("backup.example.test", 10, "self.example.test")
            .mx("backup.example.test", 20, "worse.example.test")
            .a("primary.example.test", Ipv4Addr::new(192, 0, 2, 50))
            .a("worse.example.test", Ipv4Addr::new(192, 0, 2, 51)),
    )
    .await;
    let resolver = Resolver::with_nameserver(dns.addr);

    // A wildcard listener on the same port is this relay; another port is not.
    let smart = connector(&[("self.example.test", 25)], OutboundTls::Off);
    let e = deliver::next_hops(&resolver, &smart, "x.test", &[sa("0.0.0.0:25")])
        .await
        .unwrap_err();
    assert!(matches!(e, DeliverError::Loop { .. }), "{e:?}");
    assert_eq!(
        (e.status().code, e.status().enhanced.as_str()),
        (554, "5.4.4")
    );
    assert!(
        deliver::next_hops(&resolver, &smart, "x.test", &[sa("0.0.0.0:2525")])
            .await
            .is_ok()
    );
    let literal = connector(&[("127.0.0.1", 2525)], OutboundTls::Off);
    assert!(matches!(
        deliver::next_hops(&resolver, &literal, "x.test", &[sa("127.0.0.1:2525")]).await,
        Err(DeliverError::Loop { .. })
    ));

    // MX: we are the only MX.
    let mx = connector(&[], OutboundTls::Off);
    let local = [sa("[::]:25")];
    assert!(matches!(
        deliver::next_hops(&resolver, &mx, "looped.example.test", &local).await,
        Err(DeliverError::Loop { .. })
    ));
    // MX: only the better MX remains (RFC 5321 5.1).
    let hops = deliver::next_hops(&resolver, &mx, "backup.example.test", &local)
        .await
        .unwrap();
    let hosts: Vec<&str> = hops.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(hosts, ["primary.example.test"]);
}

// ---------------------------------------------------------------- delivery

fn config(tls: OutboundTls) -> ClientConfig {
    let roots = Arc::new(rustls::RootCertStore::empty());
    let mut cfg = ClientConfig::new("relay.example.test", tls, None, &roots, None);
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.command_timeout = Duration::from_secs(5);
    cfg.data_timeout = Duration::from_secs(5);
    cfg
}

fn hop(host: &str, addr: SocketAddr) -> Hop {
    Hop {
        host: host.into(),
        addrs: vec![addr],
        preference: 0,
    }
}

fn delivered(a: &Attempt) -> bool {
    a.outcomes
        .iter()
        .all(|o| matches!(o, RcptOutcome::Delivered { .. }))
}

fn temporary(o: &RcptOutcome) -> (u16, &str) {
    match o {
        RcptOutcome::Temporary(s) => (s.code, s.enhanced.as_str()),
        other => panic!("expected a temporary failure, got {other:?}"),
    }
}

fn permanent(o: &RcptOutcome) -> (u16, &str) {
    match o {
        RcptOutcome::Permanent(s) => (s.code, s.enhanced.as_str()),
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_delivery_with_and_without_pipelining() {
    for pipelining in [true, false] {
        let sink = Sink::start(SinkOptions {
            pipelining,
            ..SinkOptions::default()
        })
        .await;
        let r = rcpts(&["b@example.test", "c@example.test"]);
        let a = deliver::deliver(
            &config(OutboundTls::Off),
            &[hop("sink.test", sink.addr)],
            &message(&r, BODY),
        )
        .await;
        assert!(delivered(&a), "{a:?}");
        assert!(
            matches!(&a.outcomes[0], RcptOutcome::Delivered { reply } if reply.starts_with("250 2.0.0"))
        );
        assert_eq!(a.tls, None);
        assert_eq!((a.host.as_str(), a.addr), ("sink.test", Some(sink.addr)));
        let m = sink.messages();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].helo, "relay.example.test");
        assert_eq!(m[0].mail_from, "a@example.test");
        assert_eq!(m[0].rcpts, ["b@example.test", "c@example.test"]);
        assert_eq!(m[0].data, BODY);
        assert!(!m[0].tls);
    }
}

#[tokio::test]
async fn off_never_starttls_even_when_offered() {
    let sink = Sink::start(SinkOptions::default().tls(certs::server_config(
        &certs::self_signed(&["sink.test"]),
        None,
    )))
    .await;
    let r = rcpts(&["b@example.test"]);
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("sink.test", sink.addr)],
        &message(&r, BODY),
    )
    .await;
    assert!(delivered(&a));
    assert!(a.tls.is_none());
    assert!(!sink.messages()[0].tls);
}

#[tokio::test]
async fn opportunistic_tls_accepts_a_self_signed_certificate() {
    let sink = Sink::start(SinkOptions::default().tls(certs::server_config(
        &certs::self_signed(&["someone-else.test"]),
        None,
    )))
    .await;
    let r = rcpts(&["b@example.test"]);
    let a = deliver::deliver(
        &config(OutboundTls::Opportunistic),
        &[hop("sink.test", sink.addr)],
        &message(&r, BODY),
    )
    .await;
    assert!(delivered(&a), "{a:?}");
    assert!(
        a.tls.as_deref().is_some_and(|t| t.starts_with("TLSv1")),
        "{:?}",
        a.tls
    );
    let m = sink.messages();
    assert!(m[0].tls);
    // EHLO was sent again over TLS.
    assert_eq!(m[0].helo, "relay.example.test");
}

#[tokio::test]
async fn opportunistic_without_starttls_goes_plain() {
    let sink = Sink::start(SinkOptions::default()).await;
    let r = rcpts(&["b@example.test"]);
    let a = deliver::deliver(
        &config(OutboundTls::Opportunistic),
        &[hop("sink.test", sink.addr)],
        &message(&r, BODY),
    )
    .await;
    assert!(delivered(&a));
    assert!(a.tls.is_none());
}

fn required(ca: &TestCa, tls_name: Option<&str>) -> ClientConfig {
    let roots = Arc::new(ca.roots());
    let mut cfg = ClientConfig::new(
        "relay.example.test",
        OutboundTls::Required,
        tls_name.map(str::to_string),
        &roots,
        None,
    );
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.command_timeout = Duration::from_secs(5);
    cfg.data_timeout = Duration::from_secs(5);
    cfg
}

#[tokio::test]
async fn required_tls_verifies_the_certificate_name() {
    let ca = TestCa::new();
    let sink = Sink::start(
        SinkOptions::default().tls(certs::server_config(&ca.issue(&["mx.example.test"]), None)),
    )
    .await;
    let r = rcpts(&["b@example.test"]);
    let hops = [hop("mx.example.test", sink.addr)];

    // The hop's name matches the certificate.
    let a = deliver::deliver(&required(&ca, None), &hops, &message(&r, BODY)).await;
    assert!(delivered(&a), "{a:?}");
    assert!(a.tls.is_some());
    assert!(sink.messages()[0].tls);

    // A connector tls_name that does not match: deferred, nothing sent.
    let a = deliver::deliver(
        &required(&ca, Some("other.example.test")),
        &hops,
        &message(&r, BODY),
    )
    .await;
    assert_eq!(temporary(&a.outcomes[0]), (454, "4.7.5"));
    assert_eq!(sink.messages().len(), 1);

    // A certificate from a CA we do not trust: deferred too.
    let a = deliver::deliver(&required(&TestCa::new(), None), &hops, &message(&r, BODY)).await;
    assert_eq!(temporary(&a.outcomes[0]), (454, "4.7.5"));
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn required_tls_without_starttls_delivers_nothing() {
    let ca = TestCa::new();
    let sink = Sink::start(SinkOptions::default()).await;
    let r = rcpts(&["b@example.test"]);
    let a = deliver::deliver(
        &required(&ca, None),
        &[hop("mx.example.test", sink.addr)],
        &message(&r, BODY),
    )
    .await;
    assert_eq!(temporary(&a.outcomes[0]), (454, "4.7.5"));
    assert!(sink.messages().is_empty());
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn each_recipient_gets_its_own_outcome() {
    for pipelining in [true, false] {
        let sink = Sink::start(
            SinkOptions {
                pipelining,
                ..SinkOptions::default()
            }
            .rcpt("bad@", "550 5.1.1 no such user")
            .rcpt("slow@", "450 4.2.1 try later")
            .rcpt("bare@", "550 no enhanced code"),
        )
        .await;
        let r = rcpts(&[
            "ok@example.test",
            "slow@example.test",
            "bad@example.test",
            "bare@example.test",
        ]);
        let a = deliver::deliver(
            &config(OutboundTls::Off),
            &[hop("sink.test", sink.addr)],
            &message(&r, BODY),
        )
        .await;
        assert!(
            matches!(a.outcomes[0], RcptOutcome::Delivered { .. }),
            "{a:?}"
        );
        assert_eq!(temporary(&a.outcomes[1]), (450, "4.2.1"));
        assert_eq!(permanent(&a.outcomes[2]), (550, "5.1.1"));
        assert_eq!(permanent(&a.outcomes[3]), (550, "5.0.0"));
        match &a.outcomes[2] {
            RcptOutcome::Permanent(s) => assert!(s.text.contains("no such user"), "{}", s.text),
            _ => unreachable!(),
        }
        let m = sink.messages();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].rcpts, ["ok@example.test"]);
    }
}

#[tokio::test]
async fn all_recipients_refused_sends_no_data() {
    let sink = Sink::start(SinkOptions::default().rcpt("", "550 5.7.1 relaying denied")).await;
    let r = rcpts(&["x@example.test", "y@example.test"]);
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("sink.test", sink.addr)],
        &message(&r, BODY),
    )
    .await;
    assert_eq!(permanent(&a.outcomes[0]), (550, "5.7.1"));
    assert_eq!(permanent(&a.outcomes[1]), (550, "5.7.1"));
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn dead_and_unwilling_hops_are_skipped() {
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let busy = Sink::start(SinkOptions {
        greeting: 421,
        ..SinkOptions::default()
    })
    .await;
    let good = Sink::start(SinkOptions::default()).await;
    let r = rcpts(&["b@example.test"]);
    let hops = [
        hop("dead.test", closed),
        hop("busy.test", busy.addr),
        hop("good.test", good.addr),
    ];
    let a = deliver::deliver(&config(OutboundTls::Off), &hops, &message(&r, BODY)).await;
    assert!(delivered(&a), "{a:?}");
    assert_eq!(a.host, "good.test");
    assert_eq!(a.addr, Some(good.addr));
    assert_eq!(busy.connections(), 1);
    assert_eq!(good.messages().len(), 1);

    // Nothing reachable: temporary for everyone.
    let a = deliver::deliver(&config(OutboundTls::Off), &hops[..2], &message(&r, BODY)).await;
    assert_eq!(temporary(&a.outcomes[0]).0 / 100, 4);
    let a = deliver::deliver(&config(OutboundTls::Off), &hops[..1], &message(&r, BODY)).await;
    assert_eq!(temporary(&a.outcomes[0]), (451, "4.4.1"));
}

#[tokio::test]
async fn mail_refused_is_permanent_and_final() {
    let refusing = Sink::start(SinkOptions {
        mail_reply: "550 5.7.1 sender rejected".into(),
        ..SinkOptions::default()
    })
    .await;
    let other = Sink::start(SinkOptions::default()).await;
    let r = rcpts(&["b@example.test", "c@example.test"]);
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("a.test", refusing.addr), hop("b.test", other.addr)],
        &message(&r, BODY),
    )
    .await;
    assert_eq!(permanent(&a.outcomes[0]), (550, "5.7.1"));
    assert_eq!(permanent(&a.outcomes[1]), (550, "5.7.1"));
    assert_eq!(other.connections(), 0);
}

#[tokio::test]
async fn body_is_crlf_normalised_and_dot_stuffed() {
    let sink = Sink::start(SinkOptions::default()).await;
    let r = rcpts(&["b@example.test"]);
    let body =
        b"Subject: dots\n\n.leading dot\nbare lf\rbare cr\r\n..two\n.\nsmuggle\r\n.\r\r\nend";
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("sink.test", sink.addr)],
        &message(&r, body),
    )
    .await;
    assert!(delivered(&a), "{a:?}");
    let m = &sink.messages()[0];
    assert_eq!(
        m.data,
        b"Subject: dots\r\n\r\n.leading dot\r\nbare lf\r\nbare cr\r\n..two\r\n.\r\nsmuggle\r\n.\r\n\r\nend\r\n"
    );
    assert!(m.raw.starts_with(b"Subject: dots\r\n\r\n..leading dot\r\n"));
    for (i, b) in m.raw.iter().enumerate() {
        match b {
            b'\n' => assert_eq!(m.raw[i - 1], b'\r', "bare LF at {i}"),
            b'\r' => assert_eq!(m.raw[i + 1], b'\n', "bare CR at {i}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn smtputf8_needed_but_not_offered_is_permanent() {
    let sink = Sink::start(SinkOptions::default()).await;
    let r = rcpts(&["jörg@example.test"]);
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("sink.test", sink.addr)],
        &message(&r, BODY),
    )
    .await;
    assert_eq!(permanent(&a.outcomes[0]), (553, "5.6.7"));
    assert!(sink.messages().is_empty());

    // Declared by the message although the addresses are ASCII.
    let r = rcpts(&["b@example.test"]);
    let msg = OutboundMessage {
        smtputf8: true,
        ..message(&r, BODY)
    };
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("sink.test", sink.addr)],
        &msg,
    )
    .await;
    assert_eq!(permanent(&a.outcomes[0]), (553, "5.6.7"));

    // Offered: sent with the SMTPUTF8 parameter.
    let sink = Sink::start(SinkOptions {
        smtputf8: true,
        ..SinkOptions::default()
    })
    .await;
    let r = rcpts(&["jörg@example.test"]);
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("sink.test", sink.addr)],
        &message(&r, BODY),
    )
    .await;
    assert!(delivered(&a), "{a:?}");
    let m = &sink.messages()[0];
    assert!(
        m.mail_params.contains(&"SMTPUTF8".to_string()),
        "{:?}",
        m.mail_params
    );
    assert_eq!(m.rcpts, ["jörg@example.test"]);
}

#[tokio::test]
async fn esmtp_parameters_only_when_offered() {
    let r = vec![OutboundRcpt {
        address: "b@example.test".into(),
        notify: Some("failure,delay".parse().unwrap()),
        orcpt: Some("rfc822;b+tag=x@example.test".into()),
    }];
    let msg = OutboundMessage {
        envid: Some("env 1"),
        ret_full: Some(false),
        eight_bit: true,
        ..message(&r, "Subject: é\r\n\r\nbody\r\n".as_bytes())
    };

    let sink = Sink::start(SinkOptions {
        dsn: true,
        size: Some(1_000_000),
        ..SinkOptions::default()
    })
    .await;
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("sink.test", sink.addr)],
        &msg,
    )
    .await;
    assert!(delivered(&a), "{a:?}");
    let m = &sink.messages()[0];
    let size = format!("SIZE={}", "Subject: é\r\n\r\nbody\r\n.\r\n".len());
    assert_eq!(
        m.mail_params,
        [size.as_str(), "BODY=8BITMIME", "RET=HDRS", "ENVID=env+201"]
    );
    assert_eq!(
        m.rcpt_params[0],
        [
            "NOTIFY=FAILURE,DELAY",
            "ORCPT=rfc822;b+2Btag+3Dx@example.test"
        ]
    );

    let sink = Sink::start(SinkOptions {
        eight_bit_mime: false,
        ..SinkOptions::default()
    })
    .await;
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("sink.test", sink.addr)],
        &msg,
    )
    .await;
    assert!(delivered(&a));
    let m = &sink.messages()[0];
    assert!(m.mail_params.is_empty(), "{:?}", m.mail_params);
    assert!(m.rcpt_params[0].is_empty());

    // Bigger than the advertised SIZE: bounced without sending.
    let sink = Sink::start(SinkOptions {
        size: Some(10),
        ..SinkOptions::default()
    })
    .await;
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("sink.test", sink.addr)],
        &msg,
    )
    .await;
    assert_eq!(permanent(&a.outcomes[0]), (552, "5.3.4"));
}

#[tokio::test]
async fn helo_when_ehlo_is_refused_and_null_sender() {
    let sink = Sink::start(SinkOptions {
        ehlo: false,
        ..SinkOptions::default()
    })
    .await;
    let r = rcpts(&["b@example.test"]);
    let msg = OutboundMessage {
        mail_from: None,
        ..message(&r, BODY)
    };
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("sink.test", sink.addr)],
        &msg,
    )
    .await;
    assert!(delivered(&a), "{a:?}");
    assert_eq!(sink.messages()[0].mail_from, "");
}

#[tokio::test]
async fn addresses_that_would_inject_commands_are_refused() {
    let sink = Sink::start(SinkOptions::default()).await;
    let r = rcpts(&[
        "b@example.test>\r\nRCPT TO:<evil@example.test",
        "ok@example.test",
    ]);
    let a = deliver::deliver(
        &config(OutboundTls::Off),
        &[hop("sink.test", sink.addr)],
        &message(&r, BODY),
    )
    .await;
    assert_eq!(permanent(&a.outcomes[0]).1, "5.1.3");
    assert!(matches!(a.outcomes[1], RcptOutcome::Delivered { .. }));
    assert_eq!(sink.messages()[0].rcpts, ["ok@example.test"]);
}

#[tokio::test]
async fn client_certificate_is_presented_when_configured() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca
        .issue_client("relay.example.test")
        .write(dir.path(), "client");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();

    let sink = Sink::start(SinkOptions::default().tls(certs::server_config(
        &ca.issue(&["mx.example.test"]),
        Some(&ca),
    )))
    .await;
    let roots = Arc::new(deliver::load_roots(&ca_file).unwrap());
    let mut c = connector(&[], OutboundTls::Required);
    c.certificate = Some(Spanned::new(cert, span()));
    c.key = Some(Spanned::new(key, span()));
    let mut cfg = ClientConfig::for_connector(&c, "default.test", roots.clone()).unwrap();
    assert_eq!(cfg.helo(), "relay.example.test");
    assert!(cfg.has_client_cert());
    cfg.command_timeout = Duration::from_secs(5);
    cfg.data_timeout = Duration::from_secs(5);

    let r = rcpts(&["b@example.test"]);
    let hops = [hop("mx.example.test", sink.addr)];
    let a = deliver::deliver(&cfg, &hops, &message(&r, BODY)).await;
    assert!(delivered(&a), "{a:?}");

    let plain =
        ClientConfig::for_connector(&connector(&[], OutboundTls::Required), "d.test", roots)
            .unwrap();
    let a = deliver::deliver(&plain, &hops, &message(&r, BODY)).await;
    assert!(delivered(&a), "{a:?}");

    let m = sink.messages();
    assert_eq!((m[0].tls, m[0].client_cert), (true, true));
    assert_eq!((m[1].tls, m[1].client_cert), (true, false));
}

#[test]
fn certificate_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = certs::self_signed(&["x.test"]).write(dir.path(), "x");
    let mut c = connector(&[], OutboundTls::Off);
    c.certificate = Some(Spanned::new(cert.clone(), span()));
    let roots = Arc::new(rustls::RootCertStore::empty());
    assert!(matches!(
        ClientConfig::for_connector(&c, "d.test", roots.clone()),
        Err(DeliverError::Certificate { .. })
    ));
    c.key = Some(Spanned::new(PathBuf::from("/nonexistent/key.pem"), span()));
    assert!(ClientConfig::for_connector(&c, "d.test", roots).is_err());
    assert!(deliver::load_roots(&dir.path().join("missing.pem")).is_err());
    // A key file is not a CA file.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    assert!(deliver::load_roots(&empty).is_err());
    assert!(!deliver::webpki_roots().is_empty());
}

// ---------------------------------------------------------------- DSN

const ORIGINAL: &[u8] =
    b"From: sender@example.test\nTo: gone@example.test\nSubject: the original\n\nsecret body line\n";

fn failed() -> Vec<FailedRecipient> {
    vec![
        FailedRecipient {
            address: "gone@example.test".into(),
            original: Some("rfc822;Gone@Example.test".into()),
            status: "5.1.1".into(),
            diagnostic: "smtp; 550 5.1.1 user unknown".into(),
            remote_mta: Some("mx.example.test".into()),
            action: DsnAction::Failed,
        },
        FailedRecipient {
            address: "later@example.test".into(),
            original: None,
            status: "4.4.1".into(),
            diagnostic: "connection refused\r\nInjected: header".into(),
            remote_mta: None,
            action: DsnAction::Delayed,
        },
    ]
}

fn dsn(ret_full: bool, recipients: &[FailedRecipient]) -> Vec<u8> {
    deliver::compose(&DsnInput {
        reporting_mta: "relay.example.test",
        original_sender: "sender@example.test",
        envid: Some("ENV-42"),
        ret_full,
        arrival_date: 1_700_000_000,
        recipients,
        original: ORIGINAL,
    })
}

fn assert_crlf_only(bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at {i}"),
            b'\r' => assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            _ => {}
        }
    }
}

fn part_body<'a>(raw: &'a [u8], part: &mail_parser::MessagePart<'_>) -> &'a str {
    std::str::from_utf8(&raw[part.offset_body as usize..part.offset_end as usize]).unwrap()
}

#[test]
fn dsn_headers_only_parses_back() {
    let r = failed();
    let raw = dsn(false, &r);
    assert_crlf_only(&raw);
    let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();

    let ct = msg.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(
        msg.from().and_then(|f| f.first()).and_then(|a| a.address()),
        Some("MAILER-DAEMON@relay.example.test")
    );
    assert_eq!(
        msg.to().and_then(|f| f.first()).and_then(|a| a.address()),
        Some("sender@example.test")
    );
    assert!(msg.header_raw("Injected").is_none());

    let root = msg.root_part();
    let subparts: Vec<&mail_parser::MessagePart<'_>> = match &root.body {
        mail_parser::PartType::Multipart(ids) => {
            ids.iter().map(|i| &msg.parts[*i as usize]).collect()
        }
        other => panic!("not multipart: {other:?}"),
    };
    assert_eq!(subparts.len(), 3);
    let types: Vec<String> = subparts
        .iter()
        .map(|p| {
            let ct = p.content_type().unwrap();
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );

    let status = part_body(&raw, subparts[1]);
    let fields: Vec<&str> = status.lines().collect();
    for expected in [
        "Reporting-MTA: dns; relay.example.test",
        "Original-Envelope-Id: ENV-42",
        "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000",
        "Final-Recipient: rfc822; gone@example.test",
        "Original-Recipient: rfc822; Gone@Example.test",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx.example.test",
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown",
        "Final-Recipient: rfc822; later@example.test",
        "Action: delayed",
        "Status: 4.4.1",
        "Diagnostic-Code: smtp; connection refused  Injected: header",
    ] {
        assert!(
            fields.contains(&expected),
            "missing {expected:?} in {status}"
        );
    }
    // Per-message block, then one block per recipient.
    assert_eq!(
        status
            .split("\r\n\r\n")
            .filter(|b| !b.trim().is_empty())
            .count(),
        3
    );

    let headers = part_body(&raw, subparts[2]);
    assert!(headers.contains("Subject: the original\r\n"));
    assert!(!headers.contains("secret body line"));
    assert!(part_body(&raw, subparts[0]).contains("gone@example.test"));
}

#[test]
fn dsn_full_returns_the_whole_message() {
    let r = failed();
    let raw = dsn(true, &r[..1]);
    assert_crlf_only(&raw);
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(text.contains("Content-Type: message/rfc822"));
    assert!(text.contains("Subject: the original\r\n\r\nsecret body line\r\n"));
    assert!(text.contains("Subject: Undelivered Mail Returned to Sender"));
    let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
    let attached = msg
        .parts
        .iter()
        .find_map(|p| p.message())
        .expect("a message/rfc822 part");
    assert_eq!(attached.subject(), Some("the original"));

    let delayed = dsn(false, &r[1..]);
    assert!(
        String::from_utf8(delayed)
            .unwrap()
            .contains("Subject: Delayed Mail")
    );
}

#[tokio::test]
async fn a_silent_hop_times_out_and_the_next_is_used() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let good = Sink::start(SinkOptions::default()).await;
    let mut cfg = config(OutboundTls::Off);
    cfg.command_timeout = Duration::from_millis(300);
    let r = rcpts(&["b@example.test"]);
    let started = std::time::Instant::now();
    let a = deliver::deliver(
        &cfg,
        &[hop("silent.test", silent_addr), hop("good.test", good.addr)],
        &message(&r, BODY),
    )
    .await;
    assert!(delivered(&a), "{a:?}");
    assert_eq!(a.host, "good.test");
    assert!(started.elapsed() < Duration::from_secs(3));

    let a = deliver::deliver(&cfg, &[hop("silent.test", silent_addr)], &message(&r, BODY)).await;
    match &a.outcomes[0] {
        RcptOutcome::Temporary(s) => assert!(s.text.contains("timed out"), "{}", s.text),
        other => panic!("{other:?}"),
    }
    holder.abort();
}

/// A server that offers STARTTLS, agrees to it, then speaks no TLS at all.
async fn broken_starttls_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut r = BufReader::new(tcp);
                let mut line = String::new();
                r.get_mut().write_all(b"220 broken.test\r\n").await.unwrap();
                r.read_line(&mut line).await.unwrap();
                r.get_mut()
                    .write_all(b"250-broken.test\r\n250 STARTTLS\r\n")
                    .await
                    .unwrap();
                line.clear();
                r.read_line(&mut line).await.unwrap();
                r.get_mut()
                    .write_all(b"220 go ahead\r\nthis is not TLS\r\n\r\n")
                    .await
                    .unwrap();
                let _ = r.read_line(&mut line).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn opportunistic_handshake_failure_moves_on_without_plaintext() {
    let (broken, task) = broken_starttls_server().await;
    let good = Sink::start(SinkOptions::default()).await;
    let r = rcpts(&["b@example.test"]);
    let cfg = config(OutboundTls::Opportunistic);

    let a = deliver::deliver(&cfg, &[hop("broken.test", broken)], &message(&r, BODY)).await;
    assert_eq!(temporary(&a.outcomes[0]), (454, "4.7.5"));

    let a = deliver::deliver(
        &cfg,
        &[hop("broken.test", broken), hop("good.test", good.addr)],
        &message(&r, BODY),
    )
    .await;
    assert!(delivered(&a), "{a:?}");
    assert_eq!(a.host, "good.test");
    task.abort();
}
