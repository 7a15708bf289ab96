#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The VS Code extension in editor/vscode stays usable and in step with the language:
//! its manifest points at files that exist and parse, every keyword of
//! grammar/mailflow.pest is highlighted and has hover text in `mailflow lsp`, and sample
//! lines get the scopes they should.
//!
//! Highlighting is checked with a small TextMate tokenizer built on the `regex` crate, so
//! the grammar's regexes must stay in the subset Oniguruma (VS Code) and `regex` share: no
//! look-around, no back-references.

use regex::Regex;
use serde_json::Value;
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn extension() -> PathBuf {
    root().join("editor/vscode")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn grammar_json() -> Value {
    read_json(&extension().join("syntaxes/mailflow.tmLanguage.json"))
}

/// A path from package.json (`./x/y.json`), which must name an existing file.
fn contributed_file(entry: &Value, key: &str) -> PathBuf {
    let rel = entry[key]
        .as_str()
        .unwrap_or_else(|| panic!("package.json: `{key}` missing in {entry}"));
    let path = extension().join(rel.trim_start_matches("./"));
    assert!(
        path.is_file(),
        "package.json points at {rel}, which does not exist"
    );
    path
}

/// The one entry of a `contributes` array that is about the mailflow language.
fn contribution<'a>(package: &'a Value, kind: &str, key: &str) -> &'a Value {
    let entries = package["contributes"][kind]
        .as_array()
        .unwrap_or_else(|| panic!("package.json: contributes.{kind} is not an array"));
    entries
        .iter()
        .find(|e| e[key] == "mailflow")
        .unwrap_or_else(|| panic!("package.json: no contributes.{kind} entry with {key} mailflow"))
}

#[test]
fn manifest_points_at_existing_valid_files() {
    let package = read_json(&extension().join("package.json"));
    assert!(
        package["engines"]["vscode"].is_string(),
        "package.json needs engines.vscode"
    );

    let language = contribution(&package, "languages", "id");
    let extensions = language["extensions"]
        .as_array()
        .expect("languages[].extensions");
    assert!(
        extensions.iter().any(|e| e == ".mailflow"),
        "the language must claim .mailflow files"
    );
    let config = read_json(&contributed_file(language, "configuration"));
    assert_eq!(config["comments"]["lineComment"], "#");
    assert!(
        config["brackets"]
            .as_array()
            .expect("brackets")
            .iter()
            .any(|b| b[0] == "{" && b[1] == "}"),
        "braces must be brackets"
    );
    assert!(
        config["autoClosingPairs"]
            .as_array()
            .expect("autoClosingPairs")
            .iter()
            .any(|p| p["open"] == "\"" && p["close"] == "\""),
        "quotes must close automatically"
    );
    for marker in ["start", "end"] {
        let re = config["folding"]["markers"][marker]
            .as_str()
            .unwrap_or_else(|| panic!("folding.markers.{marker} missing"));
        Regex::new(re).unwrap_or_else(|e| panic!("folding marker {marker}: {e}"));
    }

    let grammar = contribution(&package, "grammars", "language");
    let tm = read_json(&contributed_file(grammar, "path"));
    assert_eq!(grammar["scopeName"], "source.mailflow");
    assert_eq!(
        tm["scopeName"], grammar["scopeName"],
        "scopeName differs from package.json"
    );

    let snippets = read_json(&contributed_file(
        contribution(&package, "snippets", "language"),
        "path",
    ));
    let snippets = snippets.as_object().expect("snippets.json is an object");
    let prefixes: BTreeSet<&str> = snippets
        .values()
        .filter_map(|s| s["prefix"].as_str())
        .collect();
    for construct in [
        "accepted-domain",
        "receive-connector",
        "send-connector",
        "rewrite",
        "rule",
        "contact",
        "group",
        "mail-user",
        "test",
    ] {
        assert!(
            prefixes.contains(construct),
            "no snippet with prefix {construct}"
        );
    }
    for (name, s) in snippets {
        let body = s["body"]
            .as_array()
            .unwrap_or_else(|| panic!("snippet {name}: no body"));
        assert!(
            body.first()
                .and_then(Value::as_str)
                .is_some_and(|l| l.starts_with(s["prefix"].as_str().unwrap_or("?"))),
            "snippet {name} must start with its keyword"
        );
    }
}

// ---------------------------------------------------------------- the pest grammar's keywords

/// The bodies of the rules of a pest grammar, by name (`name = { body }`, any modifier).
fn pest_rules(source: &str) -> Vec<(String, String)> {
    let source: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let head = Regex::new(r"(?m)^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*[_@$!]?\{").unwrap();
    let mut rules = Vec::new();
    for c in head.captures_iter(&source) {
        let open = c.get(0).unwrap().end();
        let bytes = source.as_bytes();
        let (mut depth, mut i) = (1, open);
        while depth > 0 {
            match bytes[i] {
                // Quoted literals ("{", '\u{80}') may hold braces.
                q @ (b'"' | b'\'') => {
                    i += 1;
                    while bytes[i] != q {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                }
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        rules.push((c[1].to_string(), source[open..i - 1].to_string()));
    }
    rules
}

/// Every keyword of the language: the literals of the `kw_*` rules and of the atomic rules
/// that spell keywords out themselves.
fn pest_keywords() -> BTreeSet<String> {
    const ATOMIC: [&str; 5] = [
        "scope",
        "address_field",
        "text_op",
        "recipient_kind",
        "outbound_only",
    ];
    let source = std::fs::read_to_string(root().join("grammar/mailflow.pest")).unwrap();
    let literal = Regex::new(r#""((?:[^"\\]|\\.)*)""#).unwrap();
    let mut keywords = BTreeSet::new();
    let mut seen_atomic = BTreeSet::new();
    let mut kw_rules = 0;
    for (name, body) in pest_rules(&source) {
        if !(name.starts_with("kw_") || ATOMIC.contains(&name.as_str())) {
            continue;
        }
        if name.starts_with("kw_") {
            kw_rules += 1;
        } else {
            seen_atomic.insert(name.clone());
        }
        let words: Vec<String> = literal
            .captures_iter(&body)
            .map(|c| c[1].to_string())
            .collect();
        assert!(
            !words.is_empty(),
            "rule {name} of mailflow.pest spells no keyword"
        );
        keywords.extend(words);
    }
    assert_eq!(
        seen_atomic.len(),
        ATOMIC.len(),
        "atomic keyword rules found: {seen_atomic:?}"
    );
    assert!(
        kw_rules >= 40,
        "only {kw_rules} kw_ rules found in mailflow.pest"
    );
    keywords
}

#[test]
fn every_pest_keyword_has_hover_text() {
    let missing: Vec<String> = pest_keywords()
        .into_iter()
        .filter(|w| mailflow::keywords::lookup(w).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "keywords without hover text in src/keywords.rs: {missing:?}"
    );
}

/// Every `match` regex of the TextMate grammar, anywhere in it.
fn match_regexes(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("match", Value::String(s)) => out.push(s.clone()),
                    _ => match_regexes(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| match_regexes(v, out)),
        _ => {}
    }
}

/// The scope families a keyword of the language may get.
const KEYWORD_SCOPES: [&str; 4] = [
    "keyword.",
    "support.function.",
    "constant.language.",
    "variable.other.setting.",
];

#[test]
fn every_pest_keyword_is_in_the_editor_grammar() {
    let keywords = pest_keywords();
    let mut regexes = Vec::new();
    match_regexes(&grammar_json(), &mut regexes);
    let grammar = Grammar::load();
    let mut missing = Vec::new();
    for kw in &keywords {
        // An alternative of its own: `(kw|`, `|kw)`, `(?:kw)`...
        let alternative = Regex::new(&format!(r"[(:|]{}[|)]", regex::escape(kw))).unwrap();
        if !regexes.iter().any(|r| alternative.is_match(r)) {
            missing.push(format!("{kw}: in no `match` regex"));
            continue;
        }
        // And highlighted whole in a line where it could stand.
        let contexts = [
            (String::new(), ""),
            ("  ".to_string(), " x"),
            ("  x ".to_string(), " y"),
            ("import ".to_string(), ""),
        ];
        let highlighted = contexts.iter().any(|(before, after)| {
            let tokens = grammar.tokenize(&format!("{before}{kw}{after}"));
            whole_token_scopes(&tokens, before.len()..before.len() + kw.len())
                .iter()
                .any(|s| KEYWORD_SCOPES.iter().any(|p| s.starts_with(p)))
        });
        if !highlighted {
            missing.push(format!("{kw}: not highlighted as a keyword"));
        }
    }
    assert!(
        missing.is_empty(),
        "editor/vscode is behind grammar/mailflow.pest:\n{}",
        missing.join("\n")
    );
    for kw in [
        "include",
        "if",
        "mail-user",
        "contains-words",
        "outbound-only",
        "not-fired",
        "inside",
    ] {
        assert!(
            keywords.contains(kw),
            "keyword extraction lost {kw}: {keywords:?}"
        );
    }
}

// ---------------------------------------------------------------- a small TextMate tokenizer

enum Pattern {
    Match {
        re: Regex,
        name: Option<String>,
        captures: Vec<(usize, String)>,
    },
    Block {
        begin: Regex,
        end: Regex,
        name: Option<String>,
        content_name: Option<String>,
        begin_captures: Vec<(usize, String)>,
        end_captures: Vec<(usize, String)>,
        patterns: Vec<Pattern>,
    },
}

struct Grammar {
    scope: String,
    patterns: Vec<Pattern>,
}

fn compile(source: &Value, what: &str) -> Regex {
    let source = source
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string"));
    for look in ["(?=", "(?!", "(?<=", "(?<!"] {
        assert!(
            !source.contains(look),
            "{what} `{source}` uses look-around, which the regex crate (and this test) cannot check"
        );
    }
    Regex::new(source).unwrap_or_else(|e| {
        panic!("{what} `{source}` is outside the regex subset this test checks: {e}")
    })
}

fn captures(v: &Value) -> Vec<(usize, String)> {
    let Some(map) = v.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(k, c)| {
            Some((
                k.parse().expect("capture numbers"),
                c["name"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn name(v: &Value, key: &str) -> Option<String> {
    v[key].as_str().map(str::to_string)
}

impl Grammar {
    fn load() -> Self {
        let json = grammar_json();
        let scope = json["scopeName"].as_str().expect("scopeName").to_string();
        let patterns = Self::patterns(&json, &json["patterns"], 0);
        assert!(!patterns.is_empty(), "the grammar has no patterns");
        Self { scope, patterns }
    }

    fn patterns(json: &Value, list: &Value, depth: usize) -> Vec<Pattern> {
        let list = list.as_array().expect("`patterns` is an array");
        let mut out = Vec::new();
        for p in list {
            out.extend(Self::pattern(json, p, depth));
        }
        out
    }

    fn pattern(json: &Value, p: &Value, depth: usize) -> Vec<Pattern> {
        assert!(depth < 20, "includes nest too deep (a cycle?)");
        if let Some(target) = p["include"].as_str() {
            let key = target.strip_prefix('#').unwrap_or_else(|| {
                panic!("include {target}: only repository includes are checked")
            });
            let entry = &json["repository"][key];
            assert!(
                !entry.is_null(),
                "include {target}: no such repository entry"
            );
            return Self::pattern(json, entry, depth + 1);
        }
        if !p["match"].is_null() {
            return vec![Pattern::Match {
                re: compile(&p["match"], "match"),
                name: name(p, "name"),
                captures: captures(&p["captures"]),
            }];
        }
        if !p["begin"].is_null() {
            let both = &p["captures"];
            let pick = |k: &str| {
                if p[k].is_null() {
                    captures(both)
                } else {
                    captures(&p[k])
                }
            };
            return vec![Pattern::Block {
                begin: compile(&p["begin"], "begin"),
                end: compile(&p["end"], "end"),
                name: name(p, "name"),
                content_name: name(p, "contentName"),
                begin_captures: pick("beginCaptures"),
                end_captures: pick("endCaptures"),
                patterns: if p["patterns"].is_null() {
                    Vec::new()
                } else {
                    Self::patterns(json, &p["patterns"], depth + 1)
                },
            }];
        }
        assert!(
            !p["patterns"].is_null(),
            "a pattern with neither match, begin nor patterns: {p}"
        );
        Self::patterns(json, &p["patterns"], depth + 1)
    }

    /// The scopes of every byte of one line, outermost first, each with the id of the match
    /// that gave it (so that two adjacent tokens of one scope stay apart).
    fn tokenize(&self, line: &str) -> Vec<Vec<(String, usize)>> {
        struct Frame<'g> {
            patterns: &'g [Pattern],
            end: Option<(&'g Regex, &'g [(usize, String)])>,
            outer: Vec<(String, usize)>,
            inner: Vec<(String, usize)>,
        }
        enum Found<'g> {
            End,
            Match(&'g Pattern),
        }
        let mut bytes: Vec<Vec<(String, usize)>> = vec![Vec::new(); line.len()];
        let base = vec![(self.scope.clone(), 0)];
        let mut stack = vec![Frame {
            patterns: &self.patterns,
            end: None,
            outer: base.clone(),
            inner: base,
        }];
        let mut ids = 0;
        let mut pos = 0;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(
                steps < 10 * line.len() + 100,
                "the tokenizer loops on {line:?}"
            );
            let frame = stack.last().unwrap();
            let mut best: Option<(regex::Captures<'_>, Found<'_>)> = None;
            if let Some((end, _)) = frame.end {
                best = end.captures_at(line, pos).map(|c| (c, Found::End));
            }
            for p in frame.patterns {
                let re = match p {
                    Pattern::Match { re, .. } => re,
                    Pattern::Block { begin, .. } => begin,
                };
                if let Some(c) = re.captures_at(line, pos) {
                    let start = c.get(0).unwrap().start();
                    if best
                        .as_ref()
                        .is_none_or(|(b, _)| start < b.get(0).unwrap().start())
                    {
                        best = Some((c, Found::Match(p)));
                    }
                }
            }
            let Some((caps, found)) = best else {
                for b in &mut bytes[pos..] {
                    b.clone_from(&frame.inner);
                }
                break;
            };
            let whole = caps.get(0).unwrap().range();
            for b in &mut bytes[pos..whole.start] {
                b.clone_from(&frame.inner);
            }
            let mut paint =
                |scopes: &[(String, usize)], name: &Option<String>, groups: &[(usize, String)]| {
                    ids += 1;
                    let mut base = scopes.to_vec();
                    if let Some(n) = name {
                        base.push((n.clone(), ids));
                    }
                    for b in &mut bytes[whole.clone()] {
                        b.clone_from(&base);
                    }
                    for (g, scope) in groups {
                        if let Some(m) = caps.get(*g) {
                            ids += 1;
                            for b in &mut bytes[m.range()] {
                                b.push((scope.clone(), ids));
                            }
                        }
                    }
                    base
                };
            match found {
                Found::End => {
                    let groups = frame.end.unwrap().1;
                    paint(&frame.outer, &None, groups);
                    stack.pop();
                }
                Found::Match(Pattern::Match { name, captures, .. }) => {
                    paint(&frame.inner, name, captures);
                    if whole.is_empty() {
                        // No progress: step over one character.
                        let Some(c) = line[pos..].chars().next() else {
                            break;
                        };
                        let inner = stack.last().unwrap().inner.clone();
                        for b in &mut bytes[pos..pos + c.len_utf8()] {
                            b.clone_from(&inner);
                        }
                        pos += c.len_utf8();
                        continue;
                    }
                }
                Found::Match(Pattern::Block {
                    end,
                    name,
                    content_name,
                    begin_captures,
                    end_captures,
                    patterns,
                    ..
                }) => {
                    let outer = paint(&frame.inner, name, begin_captures);
                    let mut inner = outer.clone();
                    if let Some(c) = content_name {
                        ids += 1;
                        inner.push((c.clone(), ids));
                    }
                    stack.push(Frame {
                        patterns,
                        end: Some((end, end_captures)),
                        outer,
                        inner,
                    });
                }
            }
            pos = whole.end;
        }
        bytes
    }
}

/// The scopes given to exactly `range` by one match: on every byte of it and on neither
/// neighbour (two adjacent tokens of one scope stay apart by their match ids).
fn whole_token_scopes(bytes: &[Vec<(String, usize)>], range: Range<usize>) -> Vec<&str> {
    let Some(first) = bytes.get(range.start) else {
        return Vec::new();
    };
    first
        .iter()
        .filter(|entry| {
            bytes[range.clone()].iter().all(|b| b.contains(entry))
                && !(range.start > 0 && bytes[range.start - 1].contains(entry))
                && !bytes.get(range.end).is_some_and(|b| b.contains(entry))
        })
        .map(|(scope, _)| scope.as_str())
        .collect()
}

/// Checks tokens of `line`, found left to right: each must be one token of the given scope,
/// lie inside a token of a `~scope` with nothing more specific, or carry no scope but the
/// grammar's own when the scope is empty.
fn check(grammar: &Grammar, line: &str, expected: &[(&str, &str)], failures: &mut Vec<String>) {
    let bytes = grammar.tokenize(line);
    let mut from = 0;
    for (token, scope) in expected {
        let Some(at) = line[from..].find(token).map(|i| i + from) else {
            failures.push(format!(
                "{line:?}: the test's token {token:?} is not in the line"
            ));
            continue;
        };
        let range = at..at + token.len();
        from = range.end;
        let describe = || {
            let stacks: BTreeSet<Vec<&str>> = bytes[range.clone()]
                .iter()
                .map(|b| b.iter().map(|(s, _)| s.as_str()).collect())
                .collect();
            format!("{line:?}: {token:?} should be {scope:?}, has {stacks:?}")
        };
        if scope.is_empty() {
            if bytes[range.clone()].iter().any(|b| b.len() > 1) {
                failures.push(describe());
            }
        } else if let Some(within) = scope.strip_prefix('~') {
            if !bytes[range.clone()]
                .iter()
                .all(|b| b.last().is_some_and(|(s, _)| s == within))
            {
                failures.push(describe());
            }
        } else {
            let exact = whole_token_scopes(&bytes, range.clone()).contains(scope);
            if !exact {
                failures.push(describe());
            }
        }
    }
}

#[test]
fn sample_lines_get_their_scopes() {
    const COMMENT: &str = "comment.line.number-sign.mailflow";
    const STRING: &str = "string.quoted.double.mailflow";
    const ESCAPE: &str = "constant.character.escape.mailflow";
    const DECL: &str = "keyword.declaration.mailflow";
    const CONTROL: &str = "keyword.control.mailflow";
    const PREDICATE: &str = "support.function.predicate.mailflow";
    const OPERATOR: &str = "keyword.operator.mailflow";
    const ACTION: &str = "support.function.action.mailflow";
    const TEST: &str = "keyword.other.test.mailflow";
    const SETTING: &str = "variable.other.setting.mailflow";
    const ADDRESS: &str = "string.unquoted.address.mailflow";
    const IP: &str = "constant.numeric.ip.mailflow";
    const NUMBER: &str = "constant.numeric.mailflow";
    const ARROW: &str = "keyword.operator.arrow.mailflow";
    const DOMAIN: &str = "string.unquoted.domain.mailflow";
    const FLAG: &str = "constant.language.mailflow";
    const NONE: &str = "";
    // Inside a string, and nothing more specific.
    const IN_STRING: &str = "~string.quoted.double.mailflow";

    let samples: &[(&str, &[(&str, &str)])] = &[
        ("# hi", &[("# hi", COMMENT)]),
        (
            "  if sender outside",
            &[
                ("if", CONTROL),
                ("sender", PREDICATE),
                ("outside", OPERATOR),
            ],
        ),
        (
            "rewrite *.contoso.com -> contoso.com outbound-only",
            &[
                ("rewrite", DECL),
                ("*.contoso.com", DOMAIN),
                ("->", ARROW),
                ("contoso.com", DOMAIN),
                ("outbound-only", FLAG),
            ],
        ),
        (
            "rewrite \"Contoso subdomains\" *.contoso.com -> contoso.com outbound-only except legal.contoso.com,",
            &[
                ("\"Contoso subdomains\"", STRING),
                ("->", ARROW),
                ("except", CONTROL),
                ("legal.contoso.com", DOMAIN),
            ],
        ),
        (
            "rewrite \"David\" david@contoso.com -> david@northwindtraders.com",
            &[
                ("david@contoso.com", ADDRESS),
                ("->", ARROW),
                ("david@northwindtraders.com", ADDRESS),
            ],
        ),
        ("  stop", &[("stop", ACTION)]),
        (
            "  stop # the rest is left alone",
            &[("stop", ACTION), ("# the rest is left alone", COMMENT)],
        ),
        (
            "  if recipient contains-words \"myexchlab.com\" # not # a string",
            &[
                ("recipient", PREDICATE),
                ("contains-words", OPERATOR),
                ("\"myexchlab.com\"", STRING),
                ("# not # a string", COMMENT),
            ],
        ),
        (
            "rule \"Mark \\\"external\\\" # mail\" {",
            &[("rule", DECL), ("\"Mark \\\"external\\\" # mail\"", STRING)],
        ),
        (
            "rule \"Mark \\\"external\\\" # mail\" {",
            &[("\\\"", ESCAPE), ("\\\"", ESCAPE), ("# mail", IN_STRING)],
        ),
        (
            "  set-header \"X-Note\" \"C:\\\\ \\w\"",
            &[("set-header", ACTION), ("\\\\", ESCAPE), ("\\w", IN_STRING)],
        ),
        (
            "deleted mail-user \"Blog Test\" {",
            &[
                ("deleted", DECL),
                ("mail-user", DECL),
                ("\"Blog Test\"", STRING),
            ],
        ),
        (
            "import rewrites \"shared-domain/entries.csv\"",
            &[
                ("import", DECL),
                ("rewrites", DECL),
                ("\"shared-domain/entries.csv\"", STRING),
            ],
        ),
        ("include \"x.mailflow\"", &[("include", DECL)]),
        (
            "accepted-domain tenant1.myexchlab.com internal-relay",
            &[
                ("accepted-domain", DECL),
                ("tenant1.myexchlab.com", DOMAIN),
                ("internal-relay", FLAG),
            ],
        ),
        (
            "receive-connector \"From EOP\" {",
            &[("receive-connector", DECL), ("\"From EOP\"", STRING)],
        ),
        (
            "  listen 0.0.0.0:25",
            &[("listen", SETTING), ("0.0.0.0:25", IP)],
        ),
        ("  listen [::]:25", &[("listen", SETTING), ("[::]:25", IP)]),
        (
            "  remote 40.92.0.0/15, 2a01:111:f400::/48, 192.0.2.10-192.0.2.20, ::ffff:192.0.2.7",
            &[
                ("remote", SETTING),
                ("40.92.0.0/15", IP),
                ("2a01:111:f400::/48", IP),
                ("192.0.2.10-192.0.2.20", IP),
                ("::ffff:192.0.2.7", IP),
            ],
        ),
        (
            "    2a01:111:f403:c000::/51, 2001:db8::7",
            &[("2a01:111:f403:c000::/51", IP), ("2001:db8::7", IP)],
        ),
        ("  tls required", &[("tls", SETTING), ("required", FLAG)]),
        (
            "  tls-name mail.protection.outlook.com",
            &[
                ("tls-name", SETTING),
                ("mail.protection.outlook.com", DOMAIN),
            ],
        ),
        (
            "  auth externally-secured",
            &[("auth", SETTING), ("externally-secured", FLAG)],
        ),
        (
            "  accept-any-recipient",
            &[("accept-any-recipient", SETTING)],
        ),
        (
            "  max-message-size 36MB",
            &[("max-message-size", SETTING), ("36MB", NUMBER)],
        ),
        (
            "  max-connections-per-source 20",
            &[("max-connections-per-source", SETTING), ("20", NUMBER)],
        ),
        (
            "  connection-timeout 5m",
            &[("connection-timeout", SETTING), ("5m", NUMBER)],
        ),
        (
            "  smart-host tenant1-myexchlab-com.mail.protection.outlook.com",
            &[
                ("smart-host", SETTING),
                ("tenant1-myexchlab-com.mail.protection.outlook.com", DOMAIN),
            ],
        ),
        (
            "  smart-host smtp.contoso.com:587, [2001:db8::25]:25, 192.0.2.5",
            &[
                ("smtp.contoso.com:587", DOMAIN),
                ("[2001:db8::25]:25", IP),
                ("192.0.2.5", IP),
            ],
        ),
        (
            "  address-space * cost 10, contoso.jp cost 5",
            &[
                ("address-space", SETTING),
                ("*", DOMAIN),
                ("cost", SETTING),
                ("10", NUMBER),
                ("contoso.jp", DOMAIN),
            ],
        ),
        (
            "send-connector \"To Internet\" { address-space *; fqdn edge.contoso.com }",
            &[
                ("send-connector", DECL),
                ("address-space", SETTING),
                ("fqdn", SETTING),
                ("edge.contoso.com", DOMAIN),
            ],
        ),
        (
            "  address officers@domain.org, o'brien+x@sub.domain.org",
            &[
                ("address", SETTING),
                ("officers@domain.org", ADDRESS),
                ("o'brien+x@sub.domain.org", ADDRESS),
            ],
        ),
        (
            "  members \"Officers\", \"Board\"",
            &[
                ("members", SETTING),
                ("\"Officers\"", STRING),
                ("\"Board\"", STRING),
            ],
        ),
        (
            "  authenticated-senders-only",
            &[("authenticated-senders-only", SETTING)],
        ),
        ("  priority 0", &[("priority", CONTROL), ("0", NUMBER)]),
        ("  mode audit", &[("mode", CONTROL), ("audit", FLAG)]),
        (
            "  if size over 10MB",
            &[("size", PREDICATE), ("over", OPERATOR), ("10MB", NUMBER)],
        ),
        (
            "  if client-ip in 192.0.2.0/24",
            &[
                ("client-ip", PREDICATE),
                ("in", OPERATOR),
                ("192.0.2.0/24", IP),
            ],
        ),
        (
            "  if connector \"Inbound from Office 365\"",
            &[
                ("connector", PREDICATE),
                ("\"Inbound from Office 365\"", STRING),
            ],
        ),
        (
            "  if dkim pass, neutral for partner.example",
            &[
                ("if", CONTROL),
                ("dkim", PREDICATE),
                ("pass", FLAG),
                ("neutral", FLAG),
                ("partner.example", DOMAIN),
            ],
        ),
        (
            "  except dmarc fail",
            &[("except", CONTROL), ("dmarc", PREDICATE), ("fail", FLAG)],
        ),
        (
            "dkim-key \"example.com\" {",
            &[("dkim-key", DECL), ("\"example.com\"", STRING)],
        ),
        ("authentication {", &[("authentication", DECL)]),
        (
            "  arc-seal example.com",
            &[("arc-seal", SETTING), ("example.com", DOMAIN)],
        ),
        (
            "  srs-secret \"new secret\", \"old secret\"",
            &[("srs-secret", SETTING), ("\"new secret\"", STRING)],
        ),
        (
            "  srs-max-age 21d",
            &[("srs-max-age", SETTING), ("21d", NUMBER)],
        ),
        ("  dkim-sign off", &[("dkim-sign", SETTING), ("off", FLAG)]),
        (
            "  except originating-org uclabor.de",
            &[
                ("except", CONTROL),
                ("originating-org", PREDICATE),
                ("uclabor.de", DOMAIN),
            ],
        ),
        (
            "  except header \"X-Bulk\" matches \"^ok$\"",
            &[
                ("except", CONTROL),
                ("header", PREDICATE),
                ("matches", OPERATOR),
            ],
        ),
        (
            "  if subject contains \"invoice\"",
            &[("subject", PREDICATE), ("contains", OPERATOR)],
        ),
        (
            "  reject 550 5.7.1 \"Delivery not authorized\"",
            &[
                ("reject", ACTION),
                ("550", NUMBER),
                ("5.7.1", NUMBER),
                ("\"Delivery not authorized\"", STRING),
            ],
        ),
        (
            "  redirect-to a@contoso.com",
            &[("redirect-to", ACTION), ("a@contoso.com", ADDRESS)],
        ),
        (
            "  blind-copy-to audit@contoso.com",
            &[("blind-copy-to", ACTION), ("audit@contoso.com", ADDRESS)],
        ),
        (
            "  quarantine log@contoso.com",
            &[("quarantine", ACTION), ("log@contoso.com", ADDRESS)],
        ),
        (
            "  prepend-subject \"[large] \"",
            &[("prepend-subject", ACTION), ("\"[large] \"", STRING)],
        ),
        (
            "  log \"large message\"; disconnect",
            &[("log", ACTION), ("disconnect", ACTION)],
        ),
        ("test \"Our tenant relays\" {", &[("test", DECL)]),
        (
            "  client-ip 2a01:111:f403:c200::12",
            &[("client-ip", SETTING), ("2a01:111:f403:c200::12", IP)],
        ),
        (
            "  from John.Smith@tenant1.myexchlab.com",
            &[
                ("from", SETTING),
                ("John.Smith@tenant1.myexchlab.com", ADDRESS),
            ],
        ),
        (
            "  to a@fabrikam.com, b@fabrikam.com",
            &[
                ("to", SETTING),
                ("a@fabrikam.com", ADDRESS),
                ("b@fabrikam.com", ADDRESS),
            ],
        ),
        (
            "  tls-peer mail.protection.outlook.com",
            &[("tls-peer", SETTING)],
        ),
        (
            "  xoorg uclabor.de",
            &[("xoorg", SETTING), ("uclabor.de", DOMAIN)],
        ),
        ("  header \"Subject\" \"Hello\"", &[("header", SETTING)]),
        (
            "  message \"messages/to-officers.eml\"",
            &[("message", SETTING)],
        ),
        (
            "  expect auth-as internal",
            &[("expect", TEST), ("auth-as", TEST), ("internal", FLAG)],
        ),
        (
            "  expect originating-org none",
            &[
                ("expect", TEST),
                ("originating-org", PREDICATE),
                ("none", FLAG),
            ],
        ),
        (
            "  expect rejected 550 5.7.54 for officers@fabrikam.com",
            &[
                ("expect", TEST),
                ("rejected", TEST),
                ("550", NUMBER),
                ("5.7.54", NUMBER),
                ("for", TEST),
                ("officers@fabrikam.com", ADDRESS),
            ],
        ),
        (
            "  expect delivered a@b.example, c@d.example via \"To Office 365\"",
            &[
                ("delivered", TEST),
                ("a@b.example", ADDRESS),
                ("via", TEST),
                ("\"To Office 365\"", STRING),
            ],
        ),
        (
            "  expect not-fired \"Allow our tenant\"",
            &[("not-fired", TEST)],
        ),
        (
            "  expect no-header \"Bcc\"",
            &[("expect", TEST), ("no-header", TEST), ("\"Bcc\"", STRING)],
        ),
        (
            "  expect fired \"Allow\"; expect dropped",
            &[("fired", TEST), ("dropped", TEST)],
        ),
        (
            "  expect mail-from <>",
            &[("mail-from", TEST), ("<>", NONE)],
        ),
        (
            "  expect recipients x@y.example",
            &[("recipients", TEST), ("x@y.example", ADDRESS)],
        ),
        // Keywords inside bare words are not keywords.
        (
            "  members x-stop, log.contoso.com, x/in",
            &[
                ("x-stop", NONE),
                ("log.contoso.com", DOMAIN),
                ("x/in", NONE),
            ],
        ),
        (
            "rewrite a@b.example->c@d.example",
            &[
                ("a@b.example", ADDRESS),
                ("->", ARROW),
                ("c@d.example", ADDRESS),
            ],
        ),
        ("rules \"not an item\"", &[("rules", NONE)]),
    ];

    let grammar = Grammar::load();
    let mut failures = Vec::new();
    for (line, expected) in samples {
        check(&grammar, line, expected, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "wrong highlighting:\n{}",
        failures.join("\n")
    );
}

/// The lines of the real rule files and of the documentation's ```mailflow examples.
fn real_rule_lines() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = ["rules", "tests/fixtures/ok", "tests/fixtures/eval"]
        .iter()
        .map(|d| root().join(d))
        .filter(|d| d.is_dir())
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "mailflow") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.extend(
                    text.lines()
                        .map(|l| (path.display().to_string(), l.to_string())),
                );
            }
        }
    }
    for doc in ["README.md", "docs/language.md"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        let mut inside = false;
        for line in text.lines() {
            match line.trim_start() {
                "```mailflow" => inside = true,
                "```" => inside = false,
                _ if inside => out.push((doc.to_string(), line.to_string())),
                _ => {}
            }
        }
    }
    out
}

#[test]
fn real_rule_files_have_no_unscoped_words() {
    // A word of the language that the editor grammar does not know shows up here as a bare
    // word without a scope (values are addresses, domains, IPs, numbers, flags or strings).
    let grammar = Grammar::load();
    let word = Regex::new(r"^[a-z]+(?:-[a-z]+)*$").unwrap();
    let lines = real_rule_lines();
    assert!(
        lines.len() > 100,
        "too few rule lines found: {}",
        lines.len()
    );
    let mut unscoped = BTreeSet::new();
    for (origin, line) in &lines {
        let bytes = grammar.tokenize(line);
        let mut start = None;
        let end = Vec::new();
        for (i, b) in bytes.iter().enumerate().chain([(line.len(), &end)]) {
            match (b.len() == 1, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    for w in line[s..i].split_whitespace() {
                        if word.is_match(w) {
                            unscoped.insert(format!("{origin}: `{w}` in {line:?}"));
                        }
                    }
                    start = None;
                }
                _ => {}
            }
        }
    }
    assert!(
        unscoped.is_empty(),
        "words without a scope:\n{}",
        unscoped.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The extension's own grammar tests, run by `vscode-tmgrammar-test` from npm (the tool
/// VS Code grammar authors use, with the real Oniguruma engine): every line of
/// `editor/vscode/tests/*.test.mailflow` asserts the scopes of its tokens. The npm package
/// is installed from the lock file on first use (`.ci/run` does it up front).
#[test]
fn vscode_tmgrammar_test_passes() {
    let dir = extension();
    let tool = dir.join("node_modules/.bin/vscode-tmgrammar-test");
    if !tool.exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm is needed to install vscode-tmgrammar-test");
        assert!(status.success(), "npm ci failed in editor/vscode");
    }
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.mailflow"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    let out = std::process::Command::new(&tool)
        .args(&cases)
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains('✖'), "{text}");
}

/// Every scope the grammar can give a token is asserted somewhere in those tests, so a token
/// class cannot be added (or renamed) without a test saying where it appears.
#[test]
fn every_scope_is_asserted_by_a_grammar_test() {
    fn scopes(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "name" {
                        if let Some(s) = v.as_str() {
                            out.insert(s.to_string());
                        }
                    }
                    scopes(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| scopes(v, out)),
            _ => {}
        }
    }
    let mut all = BTreeSet::new();
    scopes(&grammar_json()["repository"], &mut all);
    let mut asserted = String::new();
    for e in std::fs::read_dir(extension().join("tests")).unwrap() {
        asserted.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    let missing: Vec<_> = all
        .iter()
        .filter(|s| !asserted.contains(&format!(" {s}")))
        .collect();
    assert!(missing.is_empty(), "scopes without a test: {missing:?}");
}
