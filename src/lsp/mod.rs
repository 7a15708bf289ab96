//! `mailflow lsp`: a language server over stdio. It checks every open `.mailflow` buffer as
//! `mailflow check` would (open files as their buffers hold them, the rest from disk),
//! re-checks the open files an edit concerns, and publishes the findings, answers hover (keywords, diagnostic codes, name references) and
//! go-to-definition (connector, recipient and rule names, across included files).
//!
//! Synchronous by design: one thread handles one message at a time (checking a rule file
//! takes milliseconds); [`transport`] frames the messages, `lsp-types` types their contents.

pub mod analysis;
pub mod position;
pub mod transport;

use analysis::{Analysis, IncludeCache, canonical, file_path};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{GotoDefinition, HoverRequest, Request as _};
use lsp_types::{
    DidChangeTextDocumentParams, DidCloseTextDocumentParams, DidOpenTextDocumentParams,
    GotoDefinitionParams, GotoDefinitionResponse, Hover, HoverContents, HoverParams,
    HoverProviderCapability, MarkupContent, MarkupKind, OneOf, PublishDiagnosticsParams,
    ServerCapabilities, ServerInfo, TextDocumentSyncCapability, TextDocumentSyncKind, Url,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use transport::{Incoming, code};

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `shutdown` then `exit`, as the protocol asks.
    Clean,
    /// `exit` without `shutdown`, or the input closed.
    Abrupt,
}

/// What the server offers.
pub fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        ..ServerCapabilities::default()
    }
}

/// Serves on stdin and stdout until `exit` or the end of input.
pub fn run_stdio() -> Outcome {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    serve(&mut stdin.lock(), &mut stdout.lock())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before `initialize`: only `initialize` and `exit` are answered.
    Uninitialized,
    Running,
    /// After `shutdown`: only `exit` is expected.
    ShuttingDown,
}

/// Reads messages from `input` and writes answers to `output` until `exit` or the end of
/// input. Bad messages are answered with errors; nothing the client sends stops the loop.
pub fn serve(input: &mut impl BufRead, output: &mut impl Write) -> Outcome {
    let mut server = Server {
        output,
        docs: HashMap::new(),
        nearby: IncludeCache::default(),
        state: State::Uninitialized,
    };
    loop {
        let sent = match transport::read(input) {
            Incoming::Closed => return Outcome::Abrupt,
            Incoming::Response => Ok(()),
            Incoming::Invalid { id, code, message } => {
                server.send(&transport::error(id, code, &message))
            }
            Incoming::Notification { method, .. } if method == "exit" => {
                return match server.state {
                    State::ShuttingDown => Outcome::Clean,
                    _ => Outcome::Abrupt,
                };
            }
            Incoming::Notification { method, params } => {
                // Notifications before `initialize` are dropped, as the protocol asks.
                if server.state == State::Running {
                    guarded(&method, || server.notification(&method, params)).unwrap_or(Ok(()))
                } else {
                    Ok(())
                }
            }
            Incoming::Request { id, method, params } => {
                match guarded(&method, || server.request(id.clone(), &method, params)) {
                    Some(sent) => sent,
                    None => server.send(&transport::error(
                        id,
                        code::INTERNAL_ERROR,
                        &format!("mailflow lsp failed while answering `{method}`"),
                    )),
                }
            }
        };
        if sent.is_err() {
            // The client closed its end: there is no one left to answer.
            return Outcome::Abrupt;
        }
    }
}

/// Runs one handler; a bug in it costs that one answer, not the editor's session.
fn guarded<T>(method: &str, f: impl FnOnce() -> T) -> Option<T> {
    let r = catch_unwind(AssertUnwindSafe(f));
    if r.is_err() {
        eprintln!("mailflow lsp: internal error while handling `{method}`");
    }
    r.ok()
}

struct Doc {
    version: i32,
    analysis: Analysis,
}

struct Server<'a, W: Write> {
    output: &'a mut W,
    docs: HashMap<Url, Doc>,
    nearby: IncludeCache,
    state: State,
}

type Sent = std::io::Result<()>;

impl<W: Write> Server<'_, W> {
    fn send(&mut self, message: &Value) -> Sent {
        transport::write(self.output, message)
    }

    fn request(&mut self, id: Value, method: &str, params: Value) -> Sent {
        let reply = match (self.state, method) {
            (State::Uninitialized, "initialize") => {
                self.state = State::Running;
                transport::ok(
                    id,
                    json!({
                        "capabilities": capabilities(),
                        "serverInfo": ServerInfo {
                            name: "mailflow".to_string(),
                            version: Some(env!("CARGO_PKG_VERSION").to_string()),
                        },
                    }),
                )
            }
            (State::Uninitialized, _) => transport::error(
                id,
                code::SERVER_NOT_INITIALIZED,
                &format!("`{method}` before `initialize`"),
            ),
            (State::ShuttingDown, _) => transport::error(
                id,
                code::INVALID_REQUEST,
                &format!("`{method}` after `shutdown`: only `exit` is expected"),
            ),
            (State::Running, "initialize") => transport::error(
                id,
                code::INVALID_REQUEST,
                "`initialize` was already received",
            ),
            (State::Running, "shutdown") => {
                self.state = State::ShuttingDown;
                self.docs.clear();
                transport::ok(id, Value::Null)
            }
            (State::Running, HoverRequest::METHOD) => match parse::<HoverParams>(params) {
                Ok(p) => transport::ok(id, to_json(self.hover(p))),
                Err(e) => transport::error(id, code::INVALID_PARAMS, &e),
            },
            (State::Running, GotoDefinition::METHOD) => {
                match parse::<GotoDefinitionParams>(params) {
                    Ok(p) => transport::ok(id, to_json(self.definition(p))),
                    Err(e) => transport::error(id, code::INVALID_PARAMS, &e),
                }
            }
            (State::Running, _) => transport::error(
                id,
                code::METHOD_NOT_FOUND,
                &format!("mailflow lsp does not handle `{method}`"),
            ),
        };
        self.send(&reply)
    }

    fn hover(&self, p: HoverParams) -> Option<Hover> {
        let at = p.text_document_position_params;
        let doc = self.docs.get(&at.text_document.uri)?;
        let (md, range) = doc.analysis.hover(at.position)?;
        Some(Hover {
            contents: HoverContents::Markup(MarkupContent {
                kind: MarkupKind::Markdown,
                value: md,
            }),
            range: Some(range),
        })
    }

    fn definition(&self, p: GotoDefinitionParams) -> Option<GotoDefinitionResponse> {
        let at = p.text_document_position_params;
        let doc = self.docs.get(&at.text_document.uri)?;
        let locations = doc.analysis.definition(at.position);
        (!locations.is_empty()).then_some(GotoDefinitionResponse::Array(locations))
    }

    fn notification(&mut self, method: &str, params: Value) -> Sent {
        match method {
            DidOpenTextDocument::METHOD => match parse::<DidOpenTextDocumentParams>(params) {
                Ok(p) => {
                    let d = p.text_document;
                    self.update(d.uri, d.text, d.version)
                }
                Err(e) => ignored(method, &e),
            },
            DidChangeTextDocument::METHOD => match parse::<DidChangeTextDocumentParams>(params) {
                Ok(p) => {
                    let uri = p.text_document.uri;
                    let Some(mut text) = self.docs.get(&uri).map(|d| d.analysis.text().to_string())
                    else {
                        return ignored(method, &format!("`{uri}` is not open"));
                    };
                    for change in p.content_changes {
                        match change.range {
                            None => text = change.text,
                            // Full sync is what the server asks for; ranges work all the same.
                            Some(r) => {
                                let index = position::LineIndex::new(&text);
                                let start = index.offset(&text, r.start);
                                let end = index.offset(&text, r.end).max(start);
                                text.replace_range(start..end, &change.text);
                            }
                        }
                    }
                    self.update(uri, text, p.text_document.version)
                }
                Err(e) => ignored(method, &e),
            },
            DidCloseTextDocument::METHOD => match parse::<DidCloseTextDocumentParams>(params) {
                Ok(p) => {
                    let uri = p.text_document.uri;
                    self.docs.remove(&uri);
                    self.publish(uri.clone(), Vec::new(), None)?;
                    // Files that read its buffer read the disk's copy from now on.
                    self.recheck_related(&uri)
                }
                Err(e) => ignored(method, &e),
            },
            // `initialized`, `$/cancelRequest` (answers are immediate), saves, settings.
            _ => Ok(()),
        }
    }

    fn update(&mut self, uri: Url, text: String, version: i32) -> Sent {
        let open = self.open_texts(&uri);
        let analysis = Analysis::new(&uri, &text, &open, &mut self.nearby);
        let diagnostics = analysis.diagnostics();
        self.docs.insert(uri.clone(), Doc { version, analysis });
        self.publish(uri.clone(), diagnostics, Some(version))?;
        self.recheck_related(&uri)
    }

    /// The text of every open file but `except`, by canonical path.
    fn open_texts(&self, except: &Url) -> HashMap<PathBuf, String> {
        self.docs
            .iter()
            .filter(|(u, _)| *u != except)
            .filter_map(|(u, d)| Some((canonical(&file_path(u)?), d.analysis.text().to_string())))
            .collect()
    }

    /// After `uri` changed (or closed): checks again, and publishes for, every other open
    /// file whose rule set read it, or that its own rule set now reads: an edit to an
    /// included file shows up in the file that includes it, and the other way round.
    fn recheck_related(&mut self, uri: &Url) -> Sent {
        let Some(changed) = file_path(uri).map(|p| canonical(&p)) else {
            return Ok(());
        };
        let own = self.docs.get(uri).map(|d| &d.analysis);
        let related: Vec<Url> = self
            .docs
            .iter()
            .filter(|(u, _)| *u != uri)
            .filter(|(u, d)| {
                d.analysis.reads(&changed)
                    || own.is_some_and(|a| file_path(u).is_some_and(|p| a.reads(&canonical(&p))))
            })
            .map(|(u, _)| u.clone())
            .collect();
        for u in related {
            let open = self.open_texts(&u);
            let Some(doc) = self.docs.get_mut(&u) else {
                continue;
            };
            doc.analysis = Analysis::new(&u, doc.analysis.text(), &open, &mut self.nearby);
            let (diagnostics, version) = (doc.analysis.diagnostics(), doc.version);
            self.publish(u, diagnostics, Some(version))?;
        }
        Ok(())
    }

    fn publish(
        &mut self,
        uri: Url,
        diagnostics: Vec<lsp_types::Diagnostic>,
        version: Option<i32>,
    ) -> Sent {
        let params = PublishDiagnosticsParams {
            uri,
            diagnostics,
            version,
        };
        self.send(&transport::notification(
            PublishDiagnostics::METHOD,
            to_json(params),
        ))
    }
}

fn parse<P: serde::de::DeserializeOwned>(params: Value) -> Result<P, String> {
    serde_json::from_value(params).map_err(|e| format!("invalid parameters: {e}"))
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A notification cannot be answered; say on stderr (the editor's server log) why it was
/// not acted on.
fn ignored(method: &str, why: &str) -> Sent {
    eprintln!("mailflow lsp: ignored `{method}`: {why}");
    Ok(())
}
