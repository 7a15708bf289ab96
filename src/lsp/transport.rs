//! JSON-RPC 2.0 as LSP frames it on stdio: `Content-Length` headers, a blank line, a JSON body.
//! Reading never fails on bad input: a frame that cannot be read or understood comes back as
//! [`Incoming::Invalid`], which the server answers with an error response and carries on.

use serde_json::{Value, json};
use std::io::{self, BufRead, Read, Write};

/// JSON-RPC and LSP error codes.
pub mod code {
    /// The body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON, but not a request, notification or response.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The parameters do not fit the method.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The server failed while answering.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// A request came before `initialize`.
    pub const SERVER_NOT_INITIALIZED: i64 = -32002;
}

/// The largest body accepted; longer ones are skipped and answered with an error, so a
/// wrong `Content-Length` cannot make the server reserve gigabytes.
pub const MAX_BODY: usize = 64 << 20;

/// One message read from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A call that wants an answer.
    Request {
        /// Number or string, echoed in the answer.
        id: Value,
        /// `textDocument/hover`, ...
        method: String,
        /// `null` when absent.
        params: Value,
    },
    /// A call that wants none.
    Notification {
        /// `textDocument/didOpen`, ...
        method: String,
        /// `null` when absent.
        params: Value,
    },
    /// An answer to a request; the server sends none, so there is nothing to match it to.
    Response,
    /// A frame that could not be read or understood; answer with this error.
    Invalid {
        /// The request's id when it could be read, else `null`.
        id: Value,
        /// One of [`code`].
        code: i64,
        /// What was wrong.
        message: String,
    },
    /// The input ended (or cannot be read any more).
    Closed,
}

/// Reads the next message.
pub fn read(input: &mut impl BufRead) -> Incoming {
    let length = match read_headers(input) {
        Ok(Some(Ok(n))) => n,
        Ok(Some(Err(message))) => return invalid(Value::Null, code::PARSE_ERROR, message),
        Ok(None) | Err(_) => return Incoming::Closed,
    };
    if length > MAX_BODY {
        return match io::copy(&mut input.take(length as u64), &mut io::sink()) {
            Ok(n) if n == length as u64 => invalid(
                Value::Null,
                code::INVALID_REQUEST,
                format!("a message of {length} bytes is over the limit of {MAX_BODY}"),
            ),
            _ => Incoming::Closed,
        };
    }
    let mut body = Vec::new();
    match input.take(length as u64).read_to_end(&mut body) {
        Ok(n) if n == length => {}
        _ => return Incoming::Closed,
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return invalid(Value::Null, code::PARSE_ERROR, format!("not JSON: {e}")),
    };
    classify(value)
}

/// The body length named by the next header block: `None` at the end of input, an error
/// message when the block has no usable `Content-Length`.
fn read_headers(input: &mut impl BufRead) -> io::Result<Option<Result<usize, String>>> {
    let mut length: Option<Result<usize, String>> = None;
    let mut any = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if read_line_tail(input, &mut line)? == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if any {
                break;
            }
            // Blank lines between frames are harmless.
            continue;
        }
        any = true;
        // Searched anywhere in the line rather than at its start: after a frame whose length
        // was wrong, the next header may follow left-over body bytes on the same line.
        let lower = text.to_ascii_lowercase();
        if let Some(at) = lower.rfind("content-length:") {
            let value = text
                .get(at + "content-length:".len()..)
                .unwrap_or("")
                .trim();
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("`Content-Length: {value}` is not a byte count")),
            );
        }
    }
    Ok(Some(length.unwrap_or_else(|| {
        Err("a message without a `Content-Length` header".to_string())
    })))
}

/// How much of a header line is kept: a line is searched for `Content-Length:` near its end,
/// so a line of any length (left-over body bytes, or an endless line with no newline) costs
/// this much memory, not its length.
const LINE_KEEP: usize = 4096;

/// Reads one line (up to and including `\n`) into `line`, keeping only its last
/// [`LINE_KEEP`] bytes or so; returns how many bytes were consumed (0 at the end of input).
fn read_line_tail(input: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<usize> {
    let mut consumed = 0;
    loop {
        let n = input
            .by_ref()
            .take(LINE_KEEP as u64)
            .read_until(b'\n', line)?;
        consumed += n;
        if n == 0 || line.ends_with(b"\n") {
            return Ok(consumed);
        }
        if line.len() > 2 * LINE_KEEP {
            let cut = line.len() - LINE_KEEP;
            line.drain(..cut);
        }
    }
}

fn invalid(id: Value, code: i64, message: String) -> Incoming {
    Incoming::Invalid { id, code, message }
}

/// Sorts a JSON value into request, notification or response, as JSON-RPC 2.0 defines them.
pub fn classify(value: Value) -> Incoming {
    let Value::Object(mut obj) = value else {
        let what = if value.is_array() {
            "batches are not part of LSP"
        } else {
            "a message must be a JSON object"
        };
        return invalid(Value::Null, code::INVALID_REQUEST, what.to_string());
    };
    let id = obj.remove("id");
    let id_ok = matches!(id, None | Some(Value::Number(_) | Value::String(_)));
    let reply_id = if id_ok {
        id.clone().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    if !id_ok {
        return invalid(
            reply_id,
            code::INVALID_REQUEST,
            "`id` must be a number or a string".to_string(),
        );
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(
            reply_id,
            code::INVALID_REQUEST,
            "`jsonrpc` must be \"2.0\"".to_string(),
        );
    }
    let params = obj.remove("params").unwrap_or(Value::Null);
    match (obj.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) => Incoming::Request { id, method, params },
        (Some(Value::String(method)), None) => Incoming::Notification { method, params },
        (Some(_), _) => invalid(
            reply_id,
            code::INVALID_REQUEST,
            "`method` must be a string".to_string(),
        ),
        (None, Some(_)) if obj.contains_key("result") || obj.contains_key("error") => {
            Incoming::Response
        }
        (None, _) => invalid(
            reply_id,
            code::INVALID_REQUEST,
            "a message needs a `method` (or, for a response, a `result` or `error`)".to_string(),
        ),
    }
}

/// A successful answer.
pub fn ok(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// A failed answer.
pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

/// A notification from the server.
pub fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

/// Writes one framed message and flushes it.
pub fn write(output: &mut impl Write, message: &Value) -> io::Result<()> {
    let body = message.to_string();
    write!(output, "Content-Length: {}\r\n\r\n{body}", body.len())?;
    output.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn frame(body: &str) -> String {
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    }

    fn read_all(input: &str) -> Vec<Incoming> {
        let mut r = io::Cursor::new(input.as_bytes().to_vec());
        let mut out = Vec::new();
        loop {
            match read(&mut r) {
                Incoming::Closed => return out,
                m => out.push(m),
            }
        }
    }

    #[test]
    fn requests_notifications_and_responses() {
        let input = frame(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#)
            + &frame(r#"{"jsonrpc":"2.0","method":"exit"}"#)
            + &frame(r#"{"jsonrpc":"2.0","id":"a","result":null}"#);
        assert_eq!(
            read_all(&input),
            vec![
                Incoming::Request {
                    id: json!(1),
                    method: "initialize".into(),
                    params: json!({})
                },
                Incoming::Notification {
                    method: "exit".into(),
                    params: Value::Null
                },
                Incoming::Response,
            ]
        );
    }

    #[test]
    fn bad_frames_are_reported_and_reading_goes_on() {
        let after = frame(r#"{"jsonrpc":"2.0","method":"exit"}"#);
        let cases = [
            (frame("{not json"), code::PARSE_ERROR),
            (frame("[1]"), code::INVALID_REQUEST),
            (
                frame(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#),
                code::INVALID_REQUEST,
            ),
            (
                frame(r#"{"jsonrpc":"2.0","id":2,"method":7}"#),
                code::INVALID_REQUEST,
            ),
            (frame(r#"{"id":2,"method":"x"}"#), code::INVALID_REQUEST),
            (frame(r#"{"jsonrpc":"2.0","id":2}"#), code::INVALID_REQUEST),
            (
                "Content-Length: nine\r\n\r\n".to_string(),
                code::PARSE_ERROR,
            ),
            ("X-Other: 1\r\n\r\n".to_string(), code::PARSE_ERROR),
        ];
        for (bad, want) in cases {
            let got = read_all(&(bad.clone() + &after));
            assert!(
                matches!(got.first(), Some(Incoming::Invalid { code, .. }) if *code == want),
                "{bad:?}: {got:?}"
            );
            assert!(
                matches!(got.last(), Some(Incoming::Notification { method, .. }) if method == "exit"),
                "{bad:?}: {got:?}"
            );
        }
    }

    #[test]
    fn the_id_of_a_bad_request_is_kept_when_it_can_be() {
        let got = read_all(&frame(r#"{"jsonrpc":"2.0","id":"q","method":[]}"#));
        assert!(matches!(&got[0], Incoming::Invalid { id, .. } if id == "q"));
    }

    #[test]
    fn an_oversized_or_cut_off_body_does_not_allocate_it() {
        let huge = format!("Content-Length: {}\r\n\r\n{{}}", usize::MAX);
        assert_eq!(read_all(&huge), vec![]);
        let cut = "Content-Length: 100\r\n\r\n{\"jsonrpc\"";
        assert_eq!(read_all(cut), vec![]);
    }

    #[test]
    fn written_frames_read_back() {
        let mut out = Vec::new();
        let msg = notification("x/é", json!({"a": "😀"}));
        write(&mut out, &msg).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            read_all(&text),
            vec![Incoming::Notification {
                method: "x/é".into(),
                params: json!({"a": "😀"})
            }]
        );
    }
}
