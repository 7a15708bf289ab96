//! `test` blocks: the envelope to evaluate and what should come of it. They are run by
//! `mailflow test`; here they are only checked.

use super::settings::{Arity, Schema, Settings};
use super::values;
use super::{RefKind, Resolver};
use crate::ast::{self, ExpectationKind, Text};
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{Address, AuthAs, Expect, Spanned, TestCase};

pub(super) const TEST: Schema = &[
    ("connector", Arity::One),
    ("client-ip", Arity::One),
    ("tls-peer", Arity::One),
    ("xoorg", Arity::One),
    ("from", Arity::One),
    ("to", Arity::List),
    ("header", Arity::Pair),
    ("message", Arity::One),
    ("auth", Arity::List),
];

impl Resolver<'_> {
    pub(super) fn test(&mut self, t: &ast::Test) {
        let block = ast::Block {
            name: t.name.clone(),
            settings: t.settings.clone(),
            span: t.span,
        };
        let s = Settings::read("test", &t.settings, TEST, &mut self.diags);
        let connector = s.one("connector").map(|c| {
            self.reference(RefKind::ReceiveConnector, c);
            Spanned::new(c.value.clone(), c.span)
        });
        let client_ip = s
            .one("client-ip")
            .and_then(|c| self.check(values::ip(c)).map(|ip| Spanned::new(ip, c.span)));
        let tls_peer = s
            .one("tls-peer")
            .and_then(|v| self.check(values::domain(v)));
        let xoorg = s.one("xoorg").and_then(|v| self.check(values::domain(v)));
        let from = match s.one("from") {
            Some(v) => self.check(values::sender(v)).unwrap_or(None),
            None => {
                self.missing(&block, "test", "from", "from sender@example.com");
                None
            }
        };
        let to: Vec<_> = s
            .list("to")
            .into_iter()
            .filter_map(|v| {
                self.check(values::address(v))
                    .map(|a| Spanned::new(a, v.span))
            })
            .collect();
        if !s.has("to") {
            self.missing(&block, "test", "to", "to recipient@example.com");
        }
        let mut headers = Vec::new();
        for g in s.groups("header") {
            if let [name, value] = g {
                headers.push((name.value.clone(), value.value.clone()));
            }
        }
        let message = s.one("message").and_then(|m| {
            let path = self.relative_path(m);
            match std::fs::metadata(&path) {
                Ok(md) if md.is_file() => Some(Spanned::new(path, m.span)),
                Ok(_) => {
                    self.unreadable(m, &path, "is not a file");
                    None
                }
                Err(e) => {
                    self.unreadable(m, &path, &super::io_reason(&e));
                    None
                }
            }
        });
        let auth = if s.has("auth") {
            self.test_auth(&s.list("auth"))
        } else {
            None
        };
        let mut expectations = Vec::new();
        for e in &t.expectations {
            if let Some(x) = self.expectation(e) {
                expectations.push(Spanned::new(x, e.span));
            }
        }
        self.set.tests.push(TestCase {
            name: Spanned::new(t.name.value.clone(), t.name.span),
            span: t.span,
            connector,
            client_ip,
            tls_peer,
            xoorg,
            from,
            to,
            headers,
            message,
            auth,
            expectations,
        });
    }

    pub(super) fn unreadable(&mut self, t: &Text, path: &std::path::Path, why: &str) {
        self.diags.push(
            Diagnostic::new(Code::E002, format!("cannot read `{}`", t.value))
                .primary(t.span, format!("`{}` {why}", path.display()))
                .help("paths are relative to the folder of the file that names them"),
        );
    }

    fn addrs(&mut self, ts: &[Text]) -> Option<Vec<Address>> {
        let out: Vec<_> = ts
            .iter()
            .filter_map(|t| self.check(values::address(t)))
            .collect();
        (out.len() == ts.len()).then_some(out)
    }

    fn expectation(&mut self, e: &ast::Expectation) -> Option<Expect> {
        Some(match &e.kind {
            ExpectationKind::Delivered { recipients, via } => {
                if let Some(v) = via {
                    self.reference(RefKind::SendConnector, v);
                }
                Expect::Delivered {
                    recipients: self.addrs(recipients)?,
                    via: via.as_ref().map(|v| v.value.clone()),
                }
            }
            ExpectationKind::Rejected {
                code,
                enhanced,
                recipients,
            } => {
                let c = code
                    .value
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (400..=599).contains(c));
                let Some(c) = c else {
                    self.diags.push(
                        Diagnostic::new(
                            Code::E060,
                            format!("`{}` is not a rejection code", code.value),
                        )
                        .primary(code.span, "expected a 4xx or 5xx code")
                        .help("write e.g. `expect rejected 550 5.1.1`"),
                    );
                    return None;
                };
                Expect::Rejected {
                    code: c,
                    enhanced: enhanced.as_ref().map(|t| t.value.clone()),
                    recipients: self.addrs(recipients)?,
                }
            }
            ExpectationKind::Dropped(ts) => Expect::Dropped(self.addrs(ts)?),
            ExpectationKind::Fired(ts) | ExpectationKind::NotFired(ts) => {
                for t in ts {
                    self.reference(RefKind::Rule, t);
                }
                let names = ts.iter().map(|t| t.value.clone()).collect();
                if matches!(e.kind, ExpectationKind::Fired(_)) {
                    Expect::Fired(names)
                } else {
                    Expect::NotFired(names)
                }
            }
            ExpectationKind::MailFrom(t) => Expect::MailFrom(self.check(values::sender(t))?),
            ExpectationKind::Recipients(ts) => Expect::Recipients(self.addrs(ts)?),
            ExpectationKind::Header(n, v) => Expect::Header(n.value.clone(), v.value.clone()),
            ExpectationKind::NoHeader(n) => Expect::NoHeader(n.value.clone()),
            ExpectationKind::AuthAs(t) => Expect::AuthAs(self.check(values::choice(
                t,
                "authentication result",
                &[
                    ("internal", AuthAs::Internal),
                    ("anonymous", AuthAs::Anonymous),
                    ("partner", AuthAs::Partner),
                ],
            ))?),
            ExpectationKind::OriginatingOrg(t) => Expect::OriginatingOrg(if t.value == "none" {
                None
            } else {
                Some(self.check(values::domain(t))?)
            }),
        })
    }
}
