//! What the commands answer: reports only as the sender asked, filters at their edges,
//! exit codes and JSON as docs/relay.md gives them.

use super::*;

/// A bounce reports only as the sender asked and only what it failed: nothing for
/// NOTIFY=NEVER, nothing for a message from `<>` (a report of a report), and for a message
/// whose other recipient was delivered, a report naming the pending recipient alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_bounce_reports_only_as_asked_and_only_what_it_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let sink = Sink::start(SinkOptions::default()).await;
    let mut relay = start(&spool, dead_port(), sink.addr.port(), None, &[]);
    let dead = ["user@dead.example"];
    let never = [s("never")];
    send(
        relay.addr,
        "app@origin.example",
        &dead,
        " NOTIFY=NEVER",
        &never,
    )
    .await;
    send(relay.addr, "", &dead, "", &[s("null")]).await;
    let both = ["half@out.example", "half@dead.example"];
    let half = [s("half")];
    send(
        relay.addr,
        "app@origin.example",
        &both,
        " NOTIFY=FAILURE",
        &half,
    )
    .await;
    assert!(wait_until(20, || sink.messages().len() == 1).await);
    assert!(
        wait_until(20, || {
            let (_, doc) = qj(&spool, &["list", "--state", "delivered"]);
            ids(&doc).len() == 1
        })
        .await
    );
    let (_, doc) = qj(&spool, &["list"]);
    assert_eq!(ids(&doc).len(), 3, "{doc}");
    let (code, reply) = qj(&spool, &["bounce", "--domain", "DEAD.example."]);
    assert_eq!(code, 0, "{reply}");
    assert_eq!(strings(&reply["done"]), ids(&doc).into_iter().collect());

    assert!(wait_until(20, || sink.messages().len() == 2).await);
    assert!(
        wait_until(20, || queue(&spool, &["list"]).status.code() == Some(1)).await,
        "nothing left, no report queued"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = sink.messages();
    assert_eq!(got.len(), 2, "the delivery and one report");
    let report = got.iter().find(|m| m.mail_from.is_empty()).unwrap();
    assert_eq!(report.rcpts, ["app@origin.example"]);
    let text = data_text(report);
    assert!(
        text.contains("<half@origin.example>")
            && text.contains("Final-Recipient: rfc822; half@dead.example")
            && !text.contains("half@out.example")
            && text.contains("Action: failed"),
        "{text}"
    );
    let fails = || relay.track(&["--event", "FAIL"]);
    assert!(
        wait_until(10, || fails().len() == 3).await,
        "one FAIL per bounced recipient: {:?}",
        fails()
    );
    relay.terminate().await;
}

/// A bounce of a message whose recipients leave by two send connectors logs each FAIL
/// with its recipient's own connector (it used to give both the first one's).
#[tokio::test(flavor = "multi_thread")]
async fn a_bounce_logs_each_recipient_with_its_own_connector() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut relay = start(&spool, dead_port(), dead_port(), None, &[]);
    let two = ["a@dead.example", "b@else.example"];
    send(relay.addr, "app@origin.example", &two, "", &[s("two")]).await;
    let tried = || {
        let (_, doc) = qj(&spool, &["list"]);
        doc["messages"][0]["recipients"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["attempts"].as_u64() >= Some(1)))
    };
    assert!(wait_until(20, tried).await, "both deferred once");
    let (_, doc) = qj(&spool, &["list"]);
    let id = ids(&doc)[0].clone();
    let (code, reply) = qj(&spool, &["bounce", &id]);
    assert_eq!(code, 0, "{reply}");
    // The tracking log is written by its own thread, a moment after the bounce.
    assert!(wait_until(10, || relay.track(&["--event", "FAIL"]).len() == 2).await);
    let fails = relay.track(&["--event", "FAIL"]);
    let mut by: Vec<(String, String)> = fails
        .iter()
        .map(|e| {
            (
                e["recipient-address"][0].as_str().unwrap_or("").to_string(),
                e["connector-id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    by.sort();
    assert_eq!(
        by,
        [
            (s("a@dead.example"), s("Dead")),
            (s("b@else.example"), s("Out"))
        ],
        "{fails:?}"
    );
    relay.terminate().await;
}

/// Ids in lower case, unknown ids, `--older-than` at its edges, `--domain` with a trailing
/// dot or in capitals, `retry --domain` touching only that domain's recipient of a message
/// that has two; every exit code and JSON reply as docs/relay.md gives them.
#[tokio::test(flavor = "multi_thread")]
async fn filters_and_exit_codes_are_what_the_docs_say() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let dead = dead_port();
    let mut relay = start(&spool, dead, dead_port(), None, &[]);
    let two = ["a@dead.example", "b@else.example"];
    send(relay.addr, "app@origin.example", &two, "", &[s("two")]).await;
    let m = stuck(&relay, &spool, "one-", 1).await;
    let (_, doc) = qj(&spool, &["list", "--recipient", "b@else"]);
    let both = ids(&doc)[0].clone();
    let one = m[0].clone();
    let unknown = "00000000DEADBEEF";

    let (code, doc) = qj(&spool, &["show", &both.to_lowercase()]);
    assert_eq!((code, doc["reply"].as_str()), (0, Some("message")), "{doc}");
    let (code, doc) = qj(&spool, &["show", unknown]);
    assert_eq!((code, doc["reply"].as_str()), (1, Some("missing")), "{doc}");
    for action in ["delete", "retry", "bounce"] {
        let (code, doc) = qj(&spool, &[action, unknown]);
        assert_eq!(code, 1, "{action}: {doc}");
        assert_eq!(doc["skipped"][0]["why"], "not in the queue", "{doc}");
    }
    for target in [
        vec![unknown],
        vec!["--connector", "Nope"],
        vec!["--domain", "x."],
    ] {
        let mut args = vec!["release"];
        args.extend(target);
        let (code, doc) = qj(&spool, &args);
        assert_eq!(code, 1, "{args:?}: {doc}");
    }
    for args in [
        vec!["delete"],
        vec!["retry"],
        vec!["delete", &one, "--all"],
        vec!["bounce", &one, "--domain", "dead.example"],
        vec!["hold"],
        vec!["release"],
        vec!["release", &one, "--all"],
        vec!["list", "--older-than", "-1h"],
        vec!["list", "--older-than", "4y"],
        vec!["list", "--state", "stuck"],
    ] {
        let out = queue(&spool, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    let out = queue(&spool, &["export", unknown]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let count = |args: &[&str]| {
        let (code, doc) = qj(&spool, args);
        (code, doc["matched"].as_u64().unwrap_or(0))
    };
    assert_eq!(count(&["list", "--older-than", "0s"]), (0, 2));
    assert_eq!(count(&["list", "--older-than", "500ms"]), (0, 2));
    assert_eq!(count(&["list", "--older-than", "1000d"]), (1, 0));
    assert_eq!(
        count(&["list", "--older-than", "99999999999999999d"]),
        (1, 0)
    );
    assert_eq!(count(&["list", "--domain", "DEAD.Example."]), (0, 2));
    assert_eq!(count(&["list", "--domain", "else.example."]), (0, 1));
    assert_eq!(count(&["list", "--domain", "example"]), (1, 0));
    assert_eq!(count(&["list", "--connector", "dead"]), (0, 2));
    assert_eq!(count(&["list", "--sender", "<>"]), (1, 0));
    let (code, doc) = qj(&spool, &["summary", "--domain", "ELSE.EXAMPLE"]);
    assert_eq!(code, 0);
    let dests = doc["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 1, "{doc}");
    assert_eq!(dests[0]["domain"], "else.example");

    // Retry one recipient: only its destination of the message with two is made due (the
    // next hop is still down, so it is tried and deferred again).
    let (code, doc) = qj(&spool, &["retry", "--recipient", "a@dead"]);
    assert_eq!((code, doc["deliveries"].as_u64()), (0, Some(1)), "{doc}");
    let attempts = |addr: &str| {
        let (_, doc) = qj(&spool, &["show", &both]);
        doc["message"]["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == addr)
            .and_then(|r| r["attempts"].as_u64())
            .unwrap_or(0)
    };
    assert!(wait_until(10, || attempts("a@dead.example") == 2).await);
    assert_eq!(
        attempts("b@else.example"),
        1,
        "the other destination was not retried"
    );

    // Retry one domain: only that domain's recipient of the message with two goes.
    let back = Sink::start_on(dead, SinkOptions::default()).await;
    let (code, doc) = qj(&spool, &["retry", "--domain", "DEAD.EXAMPLE."]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["deliveries"], 2, "{doc}");
    assert!(wait_until(10, || back.messages().len() == 2).await);
    assert!(wait_until(10, || count(&["list"]) == (0, 1)).await);
    let (_, doc) = qj(&spool, &["show", &both]);
    let rcpts = doc["message"]["recipients"].as_array().unwrap();
    let state = |addr: &str| {
        rcpts
            .iter()
            .find(|r| r["address"] == addr)
            .map(|r| (r["state"].clone(), r["next_attempt"].as_u64()))
            .unwrap()
    };
    assert_eq!(state("a@dead.example").0, "delivered", "{doc}");
    let (st, next) = state("b@else.example");
    assert_eq!(st, "deferred", "{doc}");
    assert!(next.unwrap() > support_now() + 3000, "untouched: {doc}");
    assert_eq!(count(&["list", "--state", "delivered"]), (0, 1));
    let (code, doc) = qj(&spool, &["delete", &both.to_lowercase()]);
    assert_eq!((code, strings(&doc["done"])), (0, [both].into()), "{doc}");
    assert_eq!(queue(&spool, &["list"]).status.code(), Some(1), "empty");
    assert_eq!(metric(&relay, "mailflow_queue_size"), 0);
    relay.terminate().await;
}
