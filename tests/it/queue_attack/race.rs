//! Queue commands racing a load delivered to a slow next hop: bounce, delete and hold meet
//! messages delivered, half delivered, in flight and not yet attempted; every acknowledged
//! message (and recipient) ends up exactly once: delivered, removed as the reply says, or
//! reported.

use super::*;

/// A load held at the next hop's connector is released and, while it is being delivered
/// to a next hop that takes 5 ms per message, two at a time, `action --all` is run on it
/// (the command walks the queue about as fast as the deliveries do, so it meets every case). Every
/// acknowledged message ends up exactly once: delivered, removed by the command (as its
/// reply says), or still queued; none is delivered twice or both removed and delivered.
/// Returns the relay's reply, the Message-IDs it removed and the slow hop.
async fn race(action: &str) -> (Value, BTreeSet<String>, SlowHop) {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, log) = (tmp.path().join("spool"), tmp.path().join("relay.log"));
    let (mut relay, hop) = slow_relay(&spool, &log).await;
    let (code, _) = qj(&spool, &["hold", "--connector", "Out"]);
    assert_eq!(code, 0);
    let acknowledged = load(&relay, &format!("{action}-"), 300).await;
    let (_, before) = qj(&spool, &["list"]);
    assert_eq!(ids(&before).len(), 300);

    let (code, _) = qj(&spool, &["release", "--connector", "Out"]);
    assert_eq!(code, 0);
    let (code, reply) = qj(&spool, &[action, "--all"]);
    assert!(code == 0 || code == 1, "{reply}");
    let done = strings(&reply["done"]);
    let removed = message_ids_of(&before, &done);
    assert_eq!(removed.len(), done.len());

    // What the command skipped (being delivered) is delivered; then the queue is empty.
    assert!(
        wait_until(40, || queue(&spool, &["list"]).status.code() == Some(1)).await,
        "{}",
        text(&queue(&spool, &["list"]))
    );
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, data) in hop.delivered() {
        *delivered.entry(message_id(&data)).or_default() += 1;
    }
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let delivered: BTreeSet<String> = delivered.into_keys().collect();
    let both: Vec<_> = delivered.intersection(&removed).collect();
    assert!(
        both.is_empty(),
        "{} messages delivered and reported as {action}d: {both:?}",
        both.len()
    );
    let accounted: BTreeSet<String> = delivered.union(&removed).cloned().collect();
    assert_eq!(accounted, acknowledged, "lost or invented");
    assert!(
        !removed.is_empty() && !delivered.is_empty(),
        "the command raced nothing: {} removed, {} delivered",
        removed.len(),
        delivered.len()
    );
    for skip in reply["skipped"].as_array().into_iter().flatten() {
        let why = skip["why"].as_str().unwrap();
        assert!(
            why.starts_with("being delivered now") || why.starts_with("no longer queued"),
            "{skip}"
        );
    }
    assert_eq!(metric(&relay, "mailflow_queue_size"), 0);
    // The tracking log records what was done, not what was tried.
    let recorded = || {
        relay
            .track(&["--event", "ADMIN"])
            .iter()
            .filter(|e| e["source-context"].as_str().unwrap().starts_with(action))
            .map(|e| e["internal-message-id"].as_str().unwrap().to_string())
            .collect::<BTreeSet<String>>()
    };
    assert!(wait_until(10, || recorded().len() >= done.len()).await);
    assert_eq!(recorded(), done);
    relay.terminate().await;
    no_panics(&log);
    (reply, removed, hop)
}

/// Nothing a bounce reports as returned was delivered, and its report names only it.
#[tokio::test(flavor = "multi_thread")]
async fn bounce_racing_deliveries_returns_only_what_it_did_not_deliver() {
    let (reply, removed, hop) = race("bounce").await;
    // NOTIFY absent: a report per bounced message, naming that message.
    assert!(
        wait_until(30, || hop.reports().len() >= removed.len()).await,
        "{} reports for {} bounced",
        hop.reports().len(),
        removed.len()
    );
    let reports = hop.reports();
    assert_eq!(reports.len(), removed.len(), "{reply}");
    for r in &reports {
        let about: Vec<&String> = removed.iter().filter(|id| r.contains(*id)).collect();
        assert_eq!(about.len(), 1, "a report about one bounced message: {r}");
        assert!(r.contains("Action: failed") && r.contains("5.3.0"), "{r}");
    }
}

/// A delete racing deliveries loses and duplicates nothing.
#[tokio::test(flavor = "multi_thread")]
async fn delete_racing_deliveries_loses_and_duplicates_nothing() {
    let (_, _, hop) = race("delete").await;
    assert!(hop.reports().is_empty(), "a delete reports to no one");
}

/// A bounce racing deliveries of messages with two recipients in two domains: each
/// recipient is delivered or named in its sender's report, never both, never neither, and
/// none is delivered twice.
#[tokio::test(flavor = "multi_thread")]
async fn bounce_racing_half_delivered_messages_reports_only_the_undelivered_half() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, log) = (tmp.path().join("spool"), tmp.path().join("relay.log"));
    let (mut relay, hop) = slow_relay(&spool, &log).await;
    // two.example's half waits while one.example's goes: the bounce meets messages half
    // delivered, half being delivered and not yet attempted.
    let (code, _) = qj(
        &spool,
        &["hold", "--connector", "Out", "--domain", "two.example"],
    );
    assert_eq!(code, 0);
    let subjects: Vec<String> = (0..150).map(|i| format!("pair-{i}")).collect();
    let rcpts = ["x@one.example", "y@two.example"];
    let mut tasks = Vec::new();
    for part in subjects.chunks(50) {
        let (part, addr) = (part.to_vec(), relay.addr);
        tasks.push(tokio::spawn(async move {
            send(addr, "app@origin.example", &rcpts, "", &part).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (code, _) = qj(&spool, &["release", "--connector", "Out"]);
    assert_eq!(code, 0);
    assert!(wait_until(20, || hop.delivered().len() >= 30).await);
    let (code, reply) = qj(&spool, &["bounce", "--all"]);
    assert!(code == 0 || code == 1, "{reply}");
    let (code, _) = qj(&spool, &["release", "--all"]);
    assert_eq!(code, 0);
    assert!(wait_until(40, || queue(&spool, &["list"]).status.code() == Some(1)).await);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut delivered: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (_, to, data) in hop.delivered() {
        for r in to {
            *delivered.entry((message_id(&data), r)).or_default() += 1;
        }
    }
    assert!(delivered.values().all(|n| *n == 1), "delivered twice");
    let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
    for r in hop.reports() {
        let about: Vec<String> = subjects
            .iter()
            .map(|s| format!("<{s}@origin.example>"))
            .filter(|id| r.contains(&format!("Message-ID: {id}\r\n")))
            .collect();
        assert_eq!(about.len(), 1, "{r}");
        for rcpt in rcpts {
            if r.contains(&format!("Final-Recipient: rfc822; {rcpt}")) {
                let pair = (about[0].clone(), rcpt.to_string());
                assert!(
                    !delivered.contains_key(&pair),
                    "{pair:?} delivered and reported failed"
                );
                assert!(reported.insert(pair), "reported twice");
            }
        }
    }
    let half = subjects.iter().any(|s| {
        let id = format!("<{s}@origin.example>");
        let d = |r: &str| delivered.contains_key(&(id.clone(), r.to_string()));
        d(rcpts[0]) != d(rcpts[1])
    });
    assert!(half, "no message was caught half delivered");
    for s in &subjects {
        for rcpt in rcpts {
            let pair = (format!("<{s}@origin.example>"), rcpt.to_string());
            assert!(
                delivered.contains_key(&pair) || reported.contains(&pair),
                "{pair:?} neither delivered nor reported"
            );
        }
    }
    relay.terminate().await;
    no_panics(&log);
}

/// A hold put on a connector mid-load stops it: only the attempts in flight at that moment
/// (at most the destination's concurrency) finish; held messages deleted or bounced then
/// never go; released, the rest arrive once each.
#[tokio::test(flavor = "multi_thread")]
async fn a_hold_mid_load_stops_it_and_a_release_finishes_it() {
    let (_tmp, spool, log, _) = place();
    let hop = SlowHop::start(Duration::from_millis(50)).await;
    let mut relay = start(&spool, dead_port(), hop.addr.port(), Some(&log), &[]);
    let (code, _) = qj(&spool, &["hold", "--connector", "Out"]);
    assert_eq!(code, 0);
    let acknowledged = load(&relay, "mid-", 300).await;
    let (code, _) = qj(&spool, &["release", "--all"]);
    assert_eq!(code, 0);
    assert!(wait_until(20, || hop.delivered().len() >= 40).await);
    let (code, doc) = qj(&spool, &["hold", "--connector", "OUT"]);
    assert_eq!(code, 0, "{doc}");
    let at_hold = hop.delivered().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = hop.delivered().len();
    assert!(
        after <= at_hold + 20,
        "{at_hold} delivered at the hold, {after} two seconds later"
    );
    assert!(after < 300, "the hold stopped nothing");
    let (_, held_doc) = qj(&spool, &["list", "--state", "held"]);
    let held_ids = ids(&held_doc);
    assert_eq!(held_ids.len() + after, 300, "held + delivered");
    assert_eq!(
        metric(&relay, "mailflow_queue_held_deliveries"),
        held_ids.len() as u64
    );

    let (gone, bounced) = (&held_ids[..10], &held_ids[10..20]);
    let mut args = vec!["delete"];
    args.extend(gone.iter().map(String::as_str));
    let (code, doc) = qj(&spool, &args);
    assert_eq!(
        (code, doc["done"].as_array().unwrap().len()),
        (0, 10),
        "{doc}"
    );
    let mut args = vec!["bounce"];
    args.extend(bounced.iter().map(String::as_str));
    let (code, doc) = qj(&spool, &args);
    assert_eq!(
        (code, doc["done"].as_array().unwrap().len()),
        (0, 10),
        "{doc}"
    );

    let (code, _) = qj(&spool, &["release", "--connector", "out"]);
    assert_eq!(code, 0);
    assert!(
        wait_until(30, || hop.delivered().len() >= 280).await,
        "{}",
        hop.delivered().len()
    );
    assert!(wait_until(10, || hop.reports().len() >= 10).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut arrived: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, data) in hop.delivered() {
        *arrived.entry(message_id(&data)).or_default() += 1;
    }
    assert!(arrived.values().all(|n| *n == 1), "delivered twice");
    assert_eq!(arrived.len(), 280);
    let removed = message_ids_of(&held_doc, &held_ids[..20].iter().cloned().collect());
    assert_eq!(removed.len(), 20);
    assert!(
        removed.iter().all(|id| !arrived.contains_key(id)),
        "deleted or bounced, then delivered"
    );
    assert!(arrived.keys().all(|id| acknowledged.contains(id)));
    assert_eq!(hop.reports().len(), 10, "one report per bounce");
    for r in hop.reports() {
        let about: Vec<_> = acknowledged.iter().filter(|id| r.contains(*id)).collect();
        assert_eq!(about.len(), 1, "{r}");
        assert!(
            !arrived.contains_key(about[0]),
            "bounced and delivered: {r}"
        );
    }
    assert!(wait_until(10, || queue(&spool, &["list"]).status.code() == Some(1)).await);
    relay.terminate().await;
    no_panics(&log);
}

/// The races' relay: everything through Out to a next hop that answers each command 5 ms
/// late, two attempts at once per destination, its log in `log`.
async fn slow_relay(spool: &Path, log: &Path) -> (Relay, SlowHop) {
    let hop = SlowHop::start(Duration::from_millis(5)).await;
    let relay = start(
        spool,
        dead_port(),
        hop.addr.port(),
        Some(log),
        &["--destination-concurrency", "2"],
    );
    (relay, hop)
}
