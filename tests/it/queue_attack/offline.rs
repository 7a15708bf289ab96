//! The stopped spool: its owner's alone, and what its owner does there holds at the next
//! start; a relay starts while the queue is read offline.

use super::*;

/// Every file under `dir`: its path, size and modification time.
fn files(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                let name = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, (md.len(), md.modified().unwrap()));
            }
        }
    }
    out
}

fn chown(path: &Path, owner: &str) {
    let ok = Command::new("chown")
        .args(["-R", owner])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// With the relay stopped, the spool belongs to its user: anyone else (root included) is
/// refused and writes nothing; its user deletes and holds, and at the next start what was
/// deleted is not delivered and what was held stays held until released.
#[tokio::test(flavor = "multi_thread")]
async fn the_stopped_spool_is_its_owners_and_what_they_do_there_holds() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = tmp.path().join("spool");
    let dead = dead_port();
    let mut relay = start(&spool, dead, dead_port(), None, &[]);
    let m = stuck(&relay, &spool, "offline-", 3).await;
    relay.terminate().await;

    chown(&spool, "nobody");
    let before = files(&spool);
    for args in [
        vec!["list"],
        vec!["hold", &m[0]],
        vec!["delete", &m[1]],
        vec!["retry", "--all"],
    ] {
        let out = queue(&spool, &args);
        assert_eq!(out.status.code(), Some(2), "root: {}", text(&out));
        assert!(text(&out).contains("uid 65534"), "{}", text(&out));
    }
    assert_eq!(files(&spool), before, "a refused command writes nothing");

    let out = queue_as("nobody", &spool, &["delete", &m[1], "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = queue_as(
        "nobody",
        &spool,
        &["hold", &m[0], "--domain", "nothing.example"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = queue_as("nobody", &spool, &["hold", "00000000DEADBEEF"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = queue_as("nobody", &spool, &["bounce", &m[2]]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = queue_as("nobody", &spool, &["list", "--format", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&doc), [m[0].clone(), m[2].clone()]);
    assert!(
        files(&spool).keys().all(|f| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(spool.join(f)).unwrap().uid() == 65534
        }),
        "what the owner's commands wrote stays the owner's"
    );

    // Back to the relay's user (root here) and started: m1 is gone, m0 held, m2 goes.
    chown(&spool, "root");
    let back = Sink::start_on(dead, SinkOptions::default()).await;
    let mut relay = start(&spool, dead, dead_port(), None, &[]);
    assert_eq!(held(&spool), 1);
    let (code, doc) = qj(&spool, &["retry", "--all"]);
    assert_eq!(code, 0, "{doc}");
    assert!(wait_until(10, || back.messages().len() == 1).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(back.messages().len(), 1, "m0 is held");
    let (code, _) = qj(&spool, &["release", "--all"]);
    assert_eq!(code, 0);
    assert!(wait_until(10, || back.messages().len() == 2).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got: BTreeSet<String> = back
        .messages()
        .iter()
        .map(|r| message_id(&data_text(r)))
        .collect();
    let want: BTreeSet<String> = ["<offline-0@origin.example>", "<offline-2@origin.example>"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want, "the deleted one is never delivered");
    relay.terminate().await;
}

/// An administrator's `queue list` on the stopped spool at the moment the relay starts
/// (the spool is theirs for an instant) does not keep the relay from starting.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_starts_while_the_queue_is_read_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut relay = start(&spool, dead_port(), dead_port(), None, &[]);
    stuck(&relay, &spool, "starting-", 2).await;
    relay.terminate().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (spool, stop) = (spool.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut codes = BTreeMap::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let out = queue(&spool, &["list"]);
                    *codes.entry(out.status.code()).or_insert(0) += 1;
                }
                codes
            })
        })
        .collect();
    for _ in 0..5 {
        let (code, log) = {
            let mut child = relay_command(&spool).spawn().unwrap();
            let mut line = String::new();
            let mut r = std::io::BufReader::new(child.stdout.take().unwrap());
            std::io::BufRead::read_line(&mut r, &mut line).unwrap();
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let out = child.wait_with_output().unwrap();
            (line, text(&out))
        };
        assert!(code.contains("listeners"), "the relay did not start: {log}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        let codes = r.join().unwrap();
        assert!(
            codes.keys().all(|c| *c == Some(0) || *c == Some(2)),
            "{codes:?}"
        );
    }
}
