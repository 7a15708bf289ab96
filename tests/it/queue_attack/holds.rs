//! Holds as a careless administrator names them, as a damaged or planted file leaves them,
//! and as they outlive kill -9, restarts and a message's lifetime.

use super::*;

/// A hold named as an administrator types it (a domain with a trailing dot or in capitals,
/// a connector in other case, an id in lower case) holds what the same words select in a
/// filter; a hold on a message that is not queued says so (exit 1) instead of holding
/// nothing silently.
#[tokio::test(flavor = "multi_thread")]
async fn holds_named_carelessly_hold_what_the_filters_take() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut relay = start(&spool, dead_port(), dead_port(), None, &[]);
    let m = stuck(&relay, &spool, "careless-", 3).await;
    assert_eq!(m.len(), 3);

    for (hold, release) in [
        (["--domain", "DEAD.Example."], ["--domain", "dead.example"]),
        (["--domain", "dead.example"], ["--domain", "Dead.Example."]),
        (["--connector", "dead"], ["--connector", "DEAD"]),
    ] {
        let (_, listed) = qj(&spool, &["list", hold[0], hold[1]]);
        assert_eq!(ids(&listed).len(), 3, "the filter {hold:?} takes them");
        let (code, doc) = qj(&spool, &["hold", hold[0], hold[1]]);
        assert_eq!(code, 0, "{doc}");
        assert_eq!(held(&spool), 3, "hold {hold:?}: {doc}");
        let (code, doc) = qj(&spool, &["hold", hold[0], &hold[1].to_lowercase()]);
        assert_eq!(code, 1, "already held: {doc}");
        let (code, doc) = qj(&spool, &["release", release[0], release[1]]);
        assert_eq!(code, 0, "release {release:?} after hold {hold:?}: {doc}");
        assert_eq!(held(&spool), 0, "{doc}");
        assert!(
            doc["holds"]["domains"].as_array().unwrap().is_empty()
                && doc["holds"]["connectors"].as_array().unwrap().is_empty(),
            "{doc}"
        );
    }

    // A connector the rules do not have: said so, nothing held.
    let (code, doc) = qj(
        &spool,
        &["hold", "--connector", "Daed", "--domain", "x.example"],
    );
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["skipped"][0]["what"], "send connector Daed", "{doc}");
    assert_eq!(
        strings(&doc["done"]),
        [s("domain x.example")].into(),
        "{doc}"
    );
    assert!(doc["holds"]["connectors"].as_array().unwrap().is_empty());
    let (code, _) = qj(&spool, &["release", "--domain", "x.example"]);
    assert_eq!(code, 0);

    let (code, doc) = qj(&spool, &["hold", &m[0].to_lowercase()]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(held(&spool), 1);
    let (code, doc) = qj(&spool, &["hold", "00000000DEADBEEF"]);
    assert_eq!(code, 1, "not queued: {doc}");
    assert!(
        doc["holds"]["messages"].as_array().unwrap().len() == 1,
        "a hold on nothing is not kept: {doc}"
    );
    let (code, doc) = qj(&spool, &["release", "--all"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(held(&spool), 0);
    relay.terminate().await;
}

/// Runs the relay on `spool` expecting it to refuse to start: its exit code and its log.
fn refuses_to_start(spool: &Path) -> (Option<i32>, String) {
    let mut child = relay_command(spool).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the relay started on a damaged spool");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out))
}

/// A damaged holds file (garbage, a folder in its place) keeps the relay from starting with
/// a message naming it, and the queue command says the same; nothing is delivered, deleted
/// or released because of it. A symlink in its place is replaced, never written through.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_holds_file_stops_the_relay_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let dead = dead_port();
    let mut relay = start(&spool, dead, dead_port(), None, &[]);
    let m = stuck(&relay, &spool, "damaged-", 2).await;
    let (code, _) = qj(&spool, &["hold", &m[0]]);
    assert_eq!(code, 0);
    relay.terminate().await;
    let file = spool.join("holds.json");
    let good = std::fs::read(&file).unwrap();

    std::fs::write(&file, b"\x00\xffnot json{{{").unwrap();
    let (code, log) = refuses_to_start(&spool);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("holds.json"), "{log}");
    let out = queue(&spool, &["list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("holds.json"), "{}", text(&out));
    let out = queue(&spool, &["release", "--all"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"\x00\xffnot json{{{",
        "left for the administrator to look at"
    );

    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let (code, log) = refuses_to_start(&spool);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("holds.json"), "{log}");
    let out = queue(&spool, &["hold", &m[1]]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("holds.json"), "{}", text(&out));
    std::fs::remove_dir(&file).unwrap();

    // A symlink to a file elsewhere is read, and replaced by the next change.
    let elsewhere = tmp.path().join("elsewhere.json");
    std::fs::write(&elsewhere, &good).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    let back = Sink::start_on(dead, SinkOptions::default()).await;
    let mut relay = start(&spool, dead, dead_port(), None, &[]);
    assert_eq!(held(&spool), 1, "the hold survived all this");
    let (code, doc) = qj(&spool, &["retry", "--all"]);
    assert_eq!(code, 0, "{doc}");
    assert!(wait_until(10, || back.messages().len() == 1).await);
    let (code, doc) = qj(&spool, &["hold", "--domain", "x.example"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        std::fs::read(&elsewhere).unwrap(),
        good,
        "not written through"
    );
    assert!(!std::fs::symlink_metadata(&file).unwrap().is_symlink());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(back.messages().len(), 1, "the held one stays");
    let (_, doc) = qj(&spool, &["list"]);
    assert_eq!(ids(&doc), [m[0].clone()], "nothing lost");
    relay.terminate().await;
}

/// A symlink planted where the holds file is written before it replaces the old one
/// (`holds.json.tmp`) is not written through, online or offline: the file it points at
/// keeps its bytes.
#[tokio::test(flavor = "multi_thread")]
async fn a_planted_temporary_holds_file_is_not_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let mut relay = start(&spool, dead_port(), dead_port(), None, &[]);
    let plant = || {
        let link = spool.join("holds.json.tmp");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
    };
    plant();
    let (code, doc) = qj(&spool, &["hold", "--domain", "a.example"]);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious\n",
        "online: {doc}"
    );
    assert_eq!(code, 0, "{doc}");
    relay.terminate().await;
    plant();
    let (code, doc) = qj(&spool, &["hold", "--domain", "b.example"]);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious\n",
        "offline: {doc}"
    );
    assert_eq!(code, 0, "{doc}");
    let (_, doc) = qj(&spool, &["list"]);
    assert_eq!(
        doc["holds"]["domains"],
        serde_json::json!(["a.example", "b.example"])
    );
}

fn held_count(spool: &Path) -> u64 {
    let (_, doc) = qj(spool, &["list", "--state", "held", "--limit", "1"]);
    doc["matched"].as_u64().unwrap_or(0)
}

/// A send connector held with 1,000 messages queued, through a kill -9 and a clean
/// restart: nothing goes while held; released, every message arrives once.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_held_messages_survive_kill_9_and_arrive_once_released() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let sink = Sink::start(SinkOptions::default()).await;
    let out = sink.addr.port();
    let mut relay = start(&spool, dead_port(), out, None, &[]);
    let (code, _) = qj(&spool, &["hold", "--connector", "Out"]);
    assert_eq!(code, 0);
    let acknowledged = load(&relay, "held-", 1000).await;
    assert!(wait_until(20, || held_count(&spool) == 1000).await);
    assert_eq!(metric(&relay, "mailflow_queue_held_deliveries"), 1000);

    relay.kill9();
    let mut relay = start(&spool, dead_port(), out, None, &[]);
    assert_eq!(held_count(&spool), 1000, "after kill -9");
    relay.terminate().await;
    let mut relay = start(&spool, dead_port(), out, None, &[]);
    assert_eq!(held_count(&spool), 1000, "after a clean restart");
    assert_eq!(metric(&relay, "mailflow_queue_held_deliveries"), 1000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(sink.messages().is_empty(), "nothing goes while held");

    let (code, doc) = qj(&spool, &["release", "--connector", "out"]);
    assert_eq!(code, 0, "{doc}");
    assert!(
        wait_until(60, || sink.messages().len() >= 1000).await,
        "{} arrived",
        sink.messages().len()
    );
    let mut arrived: BTreeMap<String, usize> = BTreeMap::new();
    for m in sink.messages() {
        *arrived.entry(message_id(&data_text(&m))).or_default() += 1;
    }
    assert!(arrived.values().all(|n| *n == 1), "delivered twice");
    assert_eq!(arrived.into_keys().collect::<BTreeSet<_>>(), acknowledged);
    assert!(wait_until(10, || queue(&spool, &["list"]).status.code() == Some(1)).await);
    assert_eq!(metric(&relay, "mailflow_queue_size"), 0);
    relay.terminate().await;
}

/// A message held past its lifetime does not expire while held; released, it bounces as it
/// would have, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_held_past_its_lifetime_bounces_once_released() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let sink = Sink::start(SinkOptions::default()).await;
    let mut relay = start(
        &spool,
        dead_port(),
        sink.addr.port(),
        None,
        &["--lifetime", "3s"],
    );
    let (code, _) = qj(&spool, &["hold", "--domain", "dead.example"]);
    assert_eq!(code, 0);
    send(
        relay.addr,
        "app@origin.example",
        &["late@dead.example"],
        "",
        &[s("late")],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(held(&spool), 1, "held mail does not expire");
    assert!(sink.messages().is_empty(), "no report while held");
    let (code, _) = qj(&spool, &["release", "--domain", "DEAD.EXAMPLE"]);
    assert_eq!(code, 0);
    assert!(wait_until(10, || sink.messages().len() == 1).await);
    assert!(wait_until(10, || queue(&spool, &["list"]).status.code() == Some(1)).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = sink.messages();
    assert_eq!(got.len(), 1, "one report");
    assert!(got[0].mail_from.is_empty());
    let dsn = data_text(&got[0]);
    assert!(
        dsn.contains("Action: failed") && dsn.contains("late@dead.example"),
        "{dsn}"
    );
    relay.terminate().await;
}

/// A stopped spool takes a hold on any send connector name (it has no rules to check it
/// against); the relay says at its start that a name its rules lack holds nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_connector_held_offline_that_the_rules_lack_is_told_at_the_start() {
    let (_tmp, spool, log, _) = place();
    let mut relay = start(&spool, dead_port(), dead_port(), None, &[]);
    relay.terminate().await;
    for name in ["Daed", "Dead"] {
        let (code, doc) = qj(&spool, &["hold", "--connector", name]);
        assert_eq!(code, 0, "{doc}");
    }
    let mut relay = start(
        &spool,
        dead_port(),
        dead_port(),
        Some(&log),
        &["--log", "warn"],
    );
    relay.terminate().await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("send connector `Daed` is held") && text.contains("holds nothing"),
        "{text}"
    );
    assert!(!text.contains("`Dead` is held"), "{text}");
}
