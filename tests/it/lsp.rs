//! `mailflow lsp` driven the way an editor drives it: the built binary as a child process,
//! JSON-RPC with `Content-Length` framing over its stdin and stdout. Every case folder under
//! `tests/fixtures/lsp/` is opened, its diagnostics compared with `mailflow check --format
//! json`, its position markers asked (hover, definition), its `edit.mailflow` sent as a change,
//! and the conversation snapshotted. Adding a case is adding a folder (see its README.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use lsp_types::Url;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mailflow");
const WAIT: Duration = Duration::from_secs(30);

/// A running `mailflow lsp` and the messages it sent that nobody asked for yet.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    incoming: Receiver<Value>,
    pending: VecDeque<Value>,
    next_id: i64,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(BIN)
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, incoming) = channel();
        std::thread::spawn(move || {
            loop {
                let mut length = None;
                loop {
                    let mut line = String::new();
                    if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    assert!(line.ends_with("\r\n"), "header line {line:?}");
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    let (name, value) = line.split_once(": ").unwrap();
                    assert_eq!(name, "Content-Length", "only Content-Length is sent");
                    length = Some(value.parse::<usize>().unwrap());
                }
                let mut body = vec![0; length.expect("a Content-Length header")];
                stdout.read_exact(&mut body).unwrap();
                let value: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(value["jsonrpc"], "2.0");
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Server {
            child,
            stdin,
            incoming,
            pending: VecDeque::new(),
            next_id: 0,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    fn send(&mut self, message: &Value) {
        let body = message.to_string();
        self.send_raw(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    }

    fn recv(&mut self) -> Value {
        self.incoming
            .recv_timeout(WAIT)
            .expect("the server answers within 30 s")
    }

    /// Sends a request and returns the whole response (`result` or `error`).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(json!(id))
    }

    /// The response with this id; notifications met on the way are kept for later.
    fn response(&mut self, id: Value) -> Value {
        loop {
            let m = self.recv();
            if m.get("method").is_some() {
                self.pending.push_back(m);
                continue;
            }
            assert_eq!(m["id"], id, "answers come in order: {m}");
            return m;
        }
    }

    /// The result of a request that must succeed.
    fn request(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params);
        assert!(r.get("error").is_none(), "{method}: {r}");
        r["result"].clone()
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// The next `textDocument/publishDiagnostics`.
    fn published(&mut self) -> Value {
        let m = match self.pending.pop_front() {
            Some(m) => m,
            None => self.recv(),
        };
        assert_eq!(m["method"], "textDocument/publishDiagnostics", "{m}");
        m["params"].clone()
    }

    fn initialize(&mut self) -> Value {
        let r = self.request(
            "initialize",
            json!({"processId": null, "rootUri": null, "capabilities": {}}),
        );
        self.notify("initialized", json!({}));
        r
    }

    /// Waits for the process to end on its own.
    fn wait(mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > WAIT {
                let _ = self.child.kill();
                panic!("the server did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `shutdown` then `exit`: the process must end with status 0.
    fn finish(mut self) {
        assert_eq!(self.request("shutdown", Value::Null), Value::Null);
        self.notify("exit", Value::Null);
        let status = self.wait();
        assert_eq!(status.code(), Some(0));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn uri_path(uri: &str) -> PathBuf {
    canonical(&Url::parse(uri).unwrap().to_file_path().unwrap())
}

/// The UTF-16 column of a 1-based line and 1-based character column in `text`.
fn utf16_col(text: &str, line: u64, column: u64) -> u64 {
    let l = text.split('\n').nth(line as usize - 1).unwrap_or("");
    l.chars()
        .take(column as usize - 1)
        .map(|c| c.len_utf16() as u64)
        .sum()
}

fn position(text: &str, line: u64, column: u64) -> Value {
    json!({"line": line - 1, "character": utf16_col(text, line, column)})
}

/// The LSP range of a region of `check --format json` (1-based lines and character columns).
fn range(file: &Path, r: &Value) -> Value {
    let text = std::fs::read_to_string(file).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap();
    json!({
        "start": position(&text, n("line"), n("column")),
        "end": position(&text, n("end_line"), n("end_column")),
    })
}

/// The files a rule file brings in, directly or through others (for where the findings in
/// them are shown).
fn brought_in(file: &Path, out: &mut Vec<PathBuf>) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    for line in text.lines() {
        let line = line.trim_start();
        let Some(rest) = line
            .strip_prefix("include ")
            .or_else(|| line.strip_prefix("import rewrites "))
        else {
            continue;
        };
        let target = canonical(&file.parent().unwrap().join(rest.trim().trim_matches('"')));
        if !out.contains(&target) {
            out.push(target.clone());
            brought_in(&target, out);
        }
    }
}

/// The `include` line of `doc` that brings in `file`, as an LSP range.
fn include_range(doc: &Path, file: &Path) -> Value {
    let text = std::fs::read_to_string(doc).unwrap();
    for (i, line) in text.lines().enumerate() {
        let mut reached = Vec::new();
        let trimmed = line.trim_start();
        if !(trimmed.starts_with("include ") || trimmed.starts_with("import rewrites ")) {
            continue;
        }
        let q = line.find('"').unwrap();
        let target = canonical(
            &doc.parent()
                .unwrap()
                .join(line[q..].trim().trim_matches('"')),
        );
        brought_in(&target, &mut reached);
        if target == canonical(file) || reached.contains(&canonical(file)) {
            let start = line[..q].chars().count() as u64 + 1;
            let end = line.trim_end().chars().count() as u64 + 1;
            let l = i as u64 + 1;
            return json!({"start": position(&text, l, start), "end": position(&text, l, end)});
        }
    }
    panic!("{} brings in no {}", doc.display(), file.display());
}

/// What the server must publish for `doc` (its text saved at `checked`): `mailflow check
/// --format json` turned into LSP diagnostics by hand. With a `root` that includes `doc`, the
/// root's rule set is checked and only the findings in `doc` and the files it brings in count.
fn expected_diagnostics(doc: &Path, checked: &Path, root: Option<&Path>) -> Vec<Value> {
    let out = Command::new(BIN)
        .args(["check", "--format", "json"])
        .arg(root.unwrap_or(checked))
        .output()
        .unwrap();
    let mut from_doc = Vec::new();
    brought_in(checked, &mut from_doc);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let doc_canonical = canonical(doc);
    let checked_canonical = canonical(checked);
    // A finding in `checked` is one in `doc`.
    let real = |file: &str| {
        let p = canonical(Path::new(file));
        if p == checked_canonical {
            doc_canonical.clone()
        } else {
            p
        }
    };
    let mut all = Vec::new();
    for d in report["diagnostics"].as_array().unwrap() {
        let labels = d["labels"].as_array().unwrap();
        let main = labels
            .iter()
            .position(|l| l["primary"] == true)
            .or((!labels.is_empty()).then_some(0));
        let file = real(d["file"].as_str().unwrap());
        let in_doc = file == doc_canonical;
        if !in_doc && !from_doc.contains(&file) {
            continue;
        }
        // The text of the document is the text of `checked`.
        let read = |f: &PathBuf| {
            if *f == doc_canonical {
                checked.to_path_buf()
            } else {
                f.clone()
            }
        };
        let mut message = d["message"].as_str().unwrap().to_string();
        let place = if in_doc {
            let l = &labels[main.unwrap()];
            if !l["message"].as_str().unwrap().is_empty() {
                message = format!("{message}\n{}", l["message"].as_str().unwrap());
            }
            range(&read(&file), d)
        } else {
            let rel = file.strip_prefix(doc_canonical.parent().unwrap()).unwrap();
            message = format!("{}:{}:{}: {message}", rel.display(), d["line"], d["column"]);
            include_range(checked, &file)
        };
        if let Some(h) = d["help"].as_str() {
            message = format!("{message}\nhelp: {h}");
        }
        for n in d["notes"].as_array().unwrap() {
            message = format!("{message}\nnote: {}", n.as_str().unwrap());
        }
        let related: Vec<Value> = labels
            .iter()
            .enumerate()
            .filter(|(i, _)| !(Some(*i) == main && in_doc))
            .map(|(_, l)| {
                let f = real(l["file"].as_str().unwrap());
                let m = l["message"].as_str().unwrap();
                json!({
                    "location": {"uri": f.display().to_string(), "range": range(&read(&f), l)},
                    "message": if m.is_empty() { "here" } else { m },
                })
            })
            .collect();
        let mut lsp = json!({
            "range": place,
            "severity": if d["severity"] == "error" { 1 } else { 2 },
            "code": d["code"],
            "source": "mailflow",
            "message": message,
        });
        if !related.is_empty() {
            lsp["relatedInformation"] = json!(related);
        }
        all.push(lsp);
    }
    all
}

/// Published diagnostics with related locations as canonical paths (as the expectation has).
fn comparable(published: &Value) -> Vec<Value> {
    let mut diags = published["diagnostics"].as_array().unwrap().clone();
    for d in &mut diags {
        if let Some(related) = d
            .get_mut("relatedInformation")
            .and_then(Value::as_array_mut)
        {
            for r in related {
                let uri = r["location"]["uri"].as_str().unwrap();
                r["location"]["uri"] = json!(uri_path(uri).display().to_string());
            }
        }
    }
    diags
}

/// A position marker: a comment line whose `^` points into the closest non-marker line above.
struct Marker {
    line: usize,
    /// 0-based line and UTF-16 column it points at.
    target: (u64, u64),
    /// 1-based line and character column, for messages.
    shown: (usize, usize),
    kind: String,
    expect: String,
}

fn markers(text: &str) -> Vec<Marker> {
    let mut out = Vec::new();
    let mut target: Option<usize> = None;
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let caret = t
            .strip_prefix('#')
            .filter(|rest| rest.trim_start().starts_with('^'))
            .and_then(|_| line.find('^'));
        match (caret, target) {
            (Some(col_bytes), Some(tl)) => {
                let col = line[..col_bytes].chars().count();
                let spec = line[col_bytes + 1..].trim();
                let (kind, expect) = spec.split_once(':').expect("`kind: expectation`");
                let l = tl as u64 + 1;
                out.push(Marker {
                    line: i + 1,
                    target: (tl as u64, utf16_col(text, l, col as u64 + 1)),
                    shown: (tl + 1, col + 1),
                    kind: kind.trim().to_string(),
                    expect: expect.trim().to_string(),
                });
            }
            _ => target = Some(i),
        }
    }
    out
}

fn relative(text: &str, dir: &Path) -> String {
    let uri = Url::from_directory_path(dir).unwrap().to_string();
    text.replace(&uri, "./")
}

fn check_marker(s: &mut Server, uri: &str, dir: &Path, m: &Marker, log: &mut String) {
    let at = json!({
        "textDocument": {"uri": uri},
        "position": {"line": m.target.0, "character": m.target.1},
    });
    let place = format!("marker on line {} ({}:{})", m.line, m.shown.0, m.shown.1);
    match m.kind.as_str() {
        "hover" => {
            let r = s.request("textDocument/hover", at);
            log.push_str(&format!("--- hover {}:{}\n", m.shown.0, m.shown.1));
            if m.expect == "none" {
                assert_eq!(r, Value::Null, "{place}");
                log.push_str("none\n");
                return;
            }
            let md = r["contents"]["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{place}: no hover"));
            assert_eq!(r["contents"]["kind"], "markdown");
            assert!(md.contains(&m.expect), "{place}: {md}");
            let start = &r["range"]["start"];
            let end = &r["range"]["end"];
            assert!(
                start["line"] == m.target.0
                    && start["character"].as_u64().unwrap() <= m.target.1
                    && end["character"].as_u64().unwrap() >= m.target.1,
                "{place}: the hover range {} covers the position",
                r["range"]
            );
            log.push_str(&format!("{md}\n"));
        }
        "definition" => {
            let r = s.request("textDocument/definition", at);
            log.push_str(&format!("--- definition {}:{}\n", m.shown.0, m.shown.1));
            if m.expect == "none" {
                assert_eq!(r, Value::Null, "{place}");
                log.push_str("none\n");
                return;
            }
            let mut parts = m.expect.rsplitn(3, ':');
            let col: u64 = parts.next().unwrap().parse().unwrap();
            let line: u64 = parts.next().unwrap().parse().unwrap();
            let file = dir.join(parts.next().unwrap());
            let text = std::fs::read_to_string(&file).unwrap();
            let locations = r.as_array().unwrap_or_else(|| panic!("{place}: {r}"));
            assert_eq!(locations.len(), 1, "{place}: {r}");
            let loc = &locations[0];
            assert_eq!(
                uri_path(loc["uri"].as_str().unwrap()),
                canonical(&file),
                "{place}"
            );
            assert_eq!(
                loc["range"]["start"],
                position(&text, line, col),
                "{place}: {r}"
            );
            log.push_str(&format!(
                "{}\n",
                relative(&serde_json::to_string(loc).unwrap(), dir)
            ));
        }
        other => panic!("{place}: unknown marker kind `{other}`"),
    }
}

#[test]
fn every_case_speaks_lsp() {
    insta::glob!("../fixtures/lsp", "*/main.mailflow", |path| {
        let dir = path.parent().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let uri = Url::from_file_path(path).unwrap().to_string();
        let mut log = String::new();
        let mut s = Server::start();
        let init = s.initialize();
        assert_eq!(init["serverInfo"]["name"], "mailflow");
        assert_eq!(init["capabilities"]["textDocumentSync"], 1);

        s.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "mailflow", "version": 1, "text": text}}),
        );
        let published = s.published();
        assert_eq!(published["uri"], uri);
        assert_eq!(published["version"], 1);
        // A case may have a root that includes main.mailflow (see the fixtures' README).
        let root = dir.join("root.mailflow");
        let root = root.exists().then_some(root.as_path());
        let expected = expected_diagnostics(path, path, root);
        assert!(!expected.is_empty(), "a case starts with mistakes to show");
        assert_eq!(comparable(&published), expected);
        log.push_str(&format!(
            "=== didOpen: diagnostics\n{}\n",
            relative(
                &serde_json::to_string_pretty(&published["diagnostics"]).unwrap(),
                dir
            )
        ));

        let ms = markers(&text);
        assert!(!ms.is_empty(), "a case has markers");
        for m in &ms {
            check_marker(&mut s, &uri, dir, m, &mut log);
        }

        let edit = dir.join("edit.mailflow");
        if edit.exists() {
            let new_text = std::fs::read_to_string(&edit).unwrap();
            s.notify(
                "textDocument/didChange",
                json!({"textDocument": {"uri": uri, "version": 2},
                       "contentChanges": [{"text": new_text}]}),
            );
            let published = s.published();
            assert_eq!(published["version"], 2);
            assert_eq!(
                comparable(&published),
                expected_diagnostics(path, &edit, root)
            );
            log.push_str(&format!(
                "=== didChange to edit.mailflow: diagnostics\n{}\n",
                relative(
                    &serde_json::to_string_pretty(&published["diagnostics"]).unwrap(),
                    dir
                )
            ));
        }

        s.notify(
            "textDocument/didClose",
            json!({"textDocument": {"uri": uri}}),
        );
        let published = s.published();
        assert_eq!(published["uri"], uri);
        assert_eq!(published["diagnostics"], json!([]));
        s.finish();
        insta::assert_snapshot!(log);
    });
}

/// A change that fixes every mistake empties the diagnostics (and one that brings them back
/// shows them again), with ranged edits as well as whole-text ones.
#[test]
fn fixing_the_text_clears_the_diagnostics() {
    let uri = "untitled:Untitled-1";
    let mut s = Server::start();
    s.initialize();
    let broken =
        "accepted-domain contoso.com\ncontact \"Zoé\" { address zoé; external z@fabrikam.com }\n";
    s.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "mailflow", "version": 1, "text": broken}}),
    );
    let d = s.published();
    assert_eq!(d["diagnostics"][0]["code"], "E012");
    assert_eq!(
        d["diagnostics"][0]["range"],
        json!({"start": {"line": 1, "character": 24}, "end": {"line": 1, "character": 27}})
    );
    // Insert `@contoso.com` after `zoé` (UTF-16 column 27 of line 1).
    s.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{
            "range": {"start": {"line": 1, "character": 27}, "end": {"line": 1, "character": 27}},
            "text": "@contoso.com"}]}),
    );
    let d = s.published();
    assert_eq!(d["version"], 2);
    assert_eq!(d["diagnostics"], json!([]), "{d}");
    s.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 3}, "contentChanges": [{"text": broken}]}),
    );
    assert_eq!(s.published()["diagnostics"][0]["code"], "E012");
    s.finish();
}

/// Bad input is answered with the error the protocol names and the session goes on.
#[test]
fn bad_input_gets_error_answers_not_a_crash() {
    let mut s = Server::start();
    // Before `initialize`: requests are refused, notifications dropped.
    let r = s.call("textDocument/hover", json!({}));
    assert_eq!(r["error"]["code"], -32002, "{r}");
    s.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": "untitled:a", "languageId": "mailflow", "version": 1, "text": "nonsense"}}),
    );
    // Had the didOpen been acted on, its diagnostics would arrive before this answer.
    s.initialize();
    assert!(s.pending.is_empty(), "{:?}", s.pending);

    // Not JSON, not an object, wrong id type: errors with a null id.
    for bad in [
        "{\"jsonrpc\":",
        "[1,2]",
        "{\"jsonrpc\":\"2.0\",\"id\":[],\"method\":\"x\"}",
    ] {
        s.send_raw(format!("Content-Length: {}\r\n\r\n{bad}", bad.len()).as_bytes());
        let r = s.response(Value::Null);
        assert!(
            [-32700, -32600].contains(&r["error"]["code"].as_i64().unwrap()),
            "{bad}: {r}"
        );
    }
    // A header block without a length.
    s.send_raw(b"Content-Type: application/json\r\n\r\n");
    assert_eq!(s.response(Value::Null)["error"]["code"], -32700);

    let r = s.call("workspace/symbol", json!({"query": ""}));
    assert_eq!(r["error"]["code"], -32601, "{r}");
    let r = s.call("textDocument/hover", json!({"nonsense": true}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = s.call("initialize", json!({"capabilities": {}}));
    assert_eq!(r["error"]["code"], -32600, "{r}");
    // Unknown notifications and changes to files never opened are not answered.
    s.notify("workspace/didChangeConfiguration", json!({"settings": {}}));
    s.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": "untitled:never", "version": 2}, "contentChanges": [{"text": "x"}]}),
    );
    // A hover on a file that is not open has no answer, but is not an error.
    let r = s.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": "untitled:never"}, "position": {"line": 0, "character": 0}}),
    );
    assert_eq!(r, Value::Null);
    assert!(s.pending.is_empty(), "{:?}", s.pending);

    // The server still works.
    s.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": "untitled:b", "languageId": "mailflow", "version": 1, "text": "stop"}}),
    );
    assert_eq!(s.published()["diagnostics"][0]["code"], "E001");

    // After `shutdown` only `exit` is expected.
    assert_eq!(s.request("shutdown", Value::Null), Value::Null);
    let r = s.call(
        "textDocument/hover",
        json!({"textDocument": {"uri": "untitled:b"}, "position": {"line": 0, "character": 0}}),
    );
    assert_eq!(r["error"]["code"], -32600, "{r}");
    s.notify("exit", Value::Null);
    assert_eq!(s.wait().code(), Some(0));
}

/// `exit` without `shutdown`, and the editor going away, end the server with status 1.
#[test]
fn exit_without_shutdown_is_status_1() {
    let mut s = Server::start();
    s.initialize();
    s.notify("exit", Value::Null);
    assert_eq!(s.wait().code(), Some(1));

    let mut s = Server::start();
    s.initialize();
    s.stdin = None;
    assert_eq!(s.wait().code(), Some(1));
}

/// The VS Code extension starts `mailflow.server.path lsp` and gets a working server: its
/// activation runs under Node with stand-ins for the modules only VS Code provides.
#[test]
fn the_vscode_extension_starts_the_server() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("editor/vscode/test/activate.js");
    let out = Command::new("node")
        .arg(&script)
        .arg(BIN)
        .output()
        .expect("Node.js is needed (.ci/run installs the nodejs package)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// The next publication is for `uri` and finds nothing.
fn published_clean(s: &mut Server, uri: &str) {
    let p = s.published();
    assert_eq!(
        (p["uri"].as_str(), &p["diagnostics"]),
        (Some(uri), &json!([])),
        "{p}"
    );
}

/// Two open files of one rule set see each other's unsaved text: an edit to the included
/// file is checked, and published, for the file that includes it; closing the included file
/// unsaved goes back to the disk's copy.
#[test]
fn an_edit_to_an_included_file_rechecks_the_file_that_includes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let shared_text = "accepted-domain contoso.com\n\
                       receive-connector \"Internet\" { auth anonymous }\n\
                       send-connector \"To Internet\" { address-space * }\n";
    let main_text = "include \"shared.mailflow\"\n\n\
                     rule \"Only from the internet\" {\n  if connector \"Internet\"\n  stop\n}\n";
    let shared = tmp.path().join("shared.mailflow");
    let main = tmp.path().join("main.mailflow");
    std::fs::write(&shared, shared_text).unwrap();
    std::fs::write(&main, main_text).unwrap();
    let shared_uri = Url::from_file_path(&shared).unwrap().to_string();
    let main_uri = Url::from_file_path(&main).unwrap().to_string();
    let mut s = Server::start();
    s.initialize();
    let open = |s: &mut Server, uri: &str, text: &str| {
        s.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "mailflow", "version": 1, "text": text}}),
        );
    };
    let change = |s: &mut Server, uri: &str, version: i32, text: &str| {
        s.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": version},
                   "contentChanges": [{"text": text}]}),
        );
    };

    open(&mut s, &main_uri, main_text);
    published_clean(&mut s, &main_uri);
    // Opening the included file publishes for it, and again for the file that reads it.
    open(&mut s, &shared_uri, shared_text);
    published_clean(&mut s, &shared_uri);
    let p = s.published();
    assert_eq!(
        (p["uri"].as_str(), &p["version"]),
        (Some(main_uri.as_str()), &json!(1))
    );

    // Renaming the connector in the unsaved buffer breaks the reference in main.mailflow.
    change(
        &mut s,
        &shared_uri,
        2,
        &shared_text.replace("\"Internet\" {", "\"Outside\" {"),
    );
    published_clean(&mut s, &shared_uri);
    let p = s.published();
    assert_eq!(p["uri"], main_uri);
    assert_eq!(
        p["version"], 1,
        "main.mailflow's own version: it did not change"
    );
    assert_eq!(p["diagnostics"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["diagnostics"][0]["code"], "E010");
    assert_eq!(
        p["diagnostics"][0]["range"]["start"],
        json!({"line": 3, "character": 15})
    );

    // Moved down a line in the buffer: go to definition lands where the buffer has it.
    change(&mut s, &shared_uri, 3, &format!("# moved\n{shared_text}"));
    assert_eq!(s.published()["uri"], shared_uri);
    published_clean(&mut s, &main_uri);
    let def = s.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": main_uri}, "position": {"line": 3, "character": 18}}),
    );
    assert_eq!(def[0]["uri"], shared_uri);
    // Line 2, 0-based: the buffer's line, not the disk's line 1; the name's span starts at its quote.
    assert_eq!(
        def[0]["range"]["start"],
        json!({"line": 2, "character": 18})
    );

    // Break it again, then close without saving: main.mailflow reads the disk's copy.
    change(&mut s, &shared_uri, 4, "");
    assert_eq!(s.published()["uri"], shared_uri);
    assert_eq!(s.published()["diagnostics"][0]["code"], "E010");
    s.notify(
        "textDocument/didClose",
        json!({"textDocument": {"uri": shared_uri}}),
    );
    published_clean(&mut s, &shared_uri);
    published_clean(&mut s, &main_uri);
    s.finish();
}
