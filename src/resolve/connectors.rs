//! Receive and send connectors: their settings, TLS files and limits.

use super::Resolver;
use super::settings::{Arity, Schema, Settings};
use super::values;
use crate::ast::{Block, Text};
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{
    AddressSpace, AddressSpacePattern, AuthLevel, DomainPattern, InboundTls, OutboundTls,
    ReceiveConnector, ReceiveLimits, SendConnector, Spanned,
};
use std::path::PathBuf;

pub(super) const RECEIVE: Schema = &[
    ("listen", Arity::List),
    ("remote", Arity::List),
    ("fqdn", Arity::One),
    ("tls", Arity::One),
    ("certificate", Arity::One),
    ("key", Arity::One),
    ("accept-oorg", Arity::List),
    ("auth", Arity::One),
    ("accept-any-recipient", Arity::Flag),
    ("max-message-size", Arity::One),
    ("max-recipients", Arity::One),
    ("max-connections-per-source", Arity::One),
    ("max-connections", Arity::One),
    ("connection-timeout", Arity::One),
    ("inactivity-timeout", Arity::One),
    ("max-header-size", Arity::One),
    ("max-hop-count", Arity::One),
];

pub(super) const SEND: Schema = &[
    ("address-space", Arity::Groups),
    ("smart-host", Arity::List),
    ("tls", Arity::One),
    ("tls-name", Arity::One),
    ("certificate", Arity::One),
    ("key", Arity::One),
    ("fqdn", Arity::One),
    ("dkim-sign", Arity::One),
];

#[derive(Clone, Copy)]
enum PemKind {
    Certificate,
    Key,
}

impl Resolver<'_> {
    pub(super) fn receive_connector(&mut self, block: &Block) {
        let s = Settings::read(
            "receive connector",
            &block.settings,
            RECEIVE,
            &mut self.diags,
        );
        let name = Spanned::new(block.name.value.clone(), block.name.span);
        let listen = if s.has("listen") {
            s.list("listen")
                .into_iter()
                .filter_map(|t| {
                    self.check(values::socket_addr(t))
                        .map(|v| Spanned::new(v, t.span))
                })
                .collect()
        } else {
            vec![Spanned::new(
                std::net::SocketAddr::from(([0, 0, 0, 0], 25)),
                block.name.span,
            )]
        };
        let remote = s
            .list("remote")
            .into_iter()
            .filter_map(|t| {
                self.check(values::ip_range(t))
                    .map(|v| Spanned::new(v, t.span))
            })
            .collect();
        let certificate = s
            .one("certificate")
            .and_then(|t| self.pem_file(t, PemKind::Certificate));
        let key = s.one("key").and_then(|t| self.pem_file(t, PemKind::Key));
        let tls_default = if s.has("certificate") {
            InboundTls::Optional
        } else {
            InboundTls::Off
        };
        let tls = match s.one("tls") {
            Some(t) => Spanned::new(
                self.check(values::choice(
                    t,
                    "tls mode",
                    &[
                        ("off", InboundTls::Off),
                        ("optional", InboundTls::Optional),
                        ("required", InboundTls::Required),
                    ],
                ))
                .unwrap_or(tls_default),
                t.span,
            ),
            None => Spanned::new(tls_default, block.name.span),
        };
        let auth = match s.one("auth") {
            Some(t) => Spanned::new(
                self.check(values::choice(
                    t,
                    "authentication level",
                    &[
                        ("anonymous", AuthLevel::Anonymous),
                        ("partner", AuthLevel::Partner),
                        ("externally-secured", AuthLevel::ExternallySecured),
                    ],
                ))
                .unwrap_or(AuthLevel::Anonymous),
                t.span,
            ),
            None => Spanned::new(AuthLevel::Anonymous, block.name.span),
        };
        let accept_oorg: Vec<Spanned<DomainPattern>> = s
            .list("accept-oorg")
            .into_iter()
            .filter_map(|t| {
                self.check(values::domain_pattern(t))
                    .map(|v| Spanned::new(v, t.span))
            })
            .collect();
        let fqdn = s.one("fqdn").and_then(|t| self.check(values::domain(t)));

        let mut limits = ReceiveLimits::default();
        if let Some(t) = s.one("max-message-size") {
            limits.max_message_size = self
                .check(values::size(t))
                .unwrap_or(limits.max_message_size);
        }
        if let Some(t) = s.one("max-header-size") {
            limits.max_header_size = self
                .check(values::size(t))
                .unwrap_or(limits.max_header_size);
        }
        let num = |r: &mut Self, key: &str, min: u64, max: u64, slot: &mut u32| {
            if let Some(t) = s.one(key) {
                if let Some(v) = r.check(values::number(t, min, max)) {
                    *slot = u32::try_from(v).unwrap_or(*slot);
                }
            }
        };
        num(
            self,
            "max-recipients",
            1,
            100_000,
            &mut limits.max_recipients,
        );
        num(
            self,
            "max-connections-per-source",
            1,
            100_000,
            &mut limits.max_connections_per_source,
        );
        num(
            self,
            "max-connections",
            1,
            1_000_000,
            &mut limits.max_connections,
        );
        num(self, "max-hop-count", 1, 500, &mut limits.max_hop_count);
        if let Some(t) = s.one("connection-timeout") {
            limits.connection_timeout = self
                .check(values::duration(t))
                .unwrap_or(limits.connection_timeout);
        }
        if let Some(t) = s.one("inactivity-timeout") {
            limits.inactivity_timeout = self
                .check(values::duration(t))
                .unwrap_or(limits.inactivity_timeout);
        }

        if tls.value != InboundTls::Off
            && (certificate.is_none() || key.is_none())
            && !self.had_errors_in(block)
        {
            self.diags.push(
                Diagnostic::new(
                    Code::E034,
                    format!(
                        "receive connector `{}` offers tls without a certificate and key",
                        name.value
                    ),
                )
                .primary(tls.span, "tls is on here")
                .help("add `certificate \"path.pem\"` and `key \"path.key\"`"),
            );
        }
        if let Some(first) = accept_oorg.first() {
            if tls.value == InboundTls::Off {
                self.diags.push(
                    Diagnostic::new(
                        Code::E035,
                        format!(
                            "receive connector `{}` trusts xoorg without tls",
                            name.value
                        ),
                    )
                    .primary(first.span, "trusted only from a verified tls certificate")
                    .secondary(tls.span, "but tls is off")
                    .help("set `tls required` with a certificate and key"),
                );
            }
        }
        self.set.receive_connectors.push(ReceiveConnector {
            name,
            span: block.span,
            listen,
            remote,
            fqdn,
            tls,
            certificate,
            key,
            accept_oorg,
            auth,
            accept_any_recipient: s.flag("accept-any-recipient"),
            limits,
        });
    }

    pub(super) fn send_connector(&mut self, block: &Block) {
        let s = Settings::read("send connector", &block.settings, SEND, &mut self.diags);
        let name = Spanned::new(block.name.value.clone(), block.name.span);
        let mut address_spaces = Vec::new();
        for group in s.groups("address-space") {
            if let Some(space) = self.address_space(group) {
                address_spaces.push(space);
            }
        }
        if !s.has("address-space") && !self.had_errors_in(block) {
            self.diags.push(
                Diagnostic::new(
                    Code::E017,
                    format!("send connector `{}` has no `address-space`", name.value),
                )
                .primary(block.name.span, "this connector would never be chosen")
                .help("add e.g. `address-space *` for all domains"),
            );
        }
        let smart_hosts = s
            .list("smart-host")
            .into_iter()
            .filter_map(|t| {
                self.check(values::smart_host(t))
                    .map(|v| Spanned::new(v, t.span))
            })
            .collect();
        let tls = match s.one("tls") {
            Some(t) => Spanned::new(
                self.check(values::choice(
                    t,
                    "tls policy",
                    &[
                        ("off", OutboundTls::Off),
                        ("opportunistic", OutboundTls::Opportunistic),
                        ("required", OutboundTls::Required),
                    ],
                ))
                .unwrap_or(OutboundTls::Opportunistic),
                t.span,
            ),
            None => Spanned::new(OutboundTls::Opportunistic, block.name.span),
        };
        let tls_name = s.one("tls-name").and_then(|t| {
            let v = self.check(values::domain_pattern(t))?;
            Some(Spanned::new(v.to_string(), t.span))
        });
        if let Some(n) = &tls_name {
            if tls.value != OutboundTls::Required {
                self.diags.push(
                    Diagnostic::new(
                        Code::E036,
                        format!(
                            "send connector `{}` expects a certificate name without `tls required`",
                            name.value
                        ),
                    )
                    .primary(n.span, "this name is only checked over tls")
                    .secondary(tls.span, "but tls may be skipped")
                    .help("set `tls required`"),
                );
            }
        }
        let certificate = s
            .one("certificate")
            .and_then(|t| self.pem_file(t, PemKind::Certificate));
        let key = s.one("key").and_then(|t| self.pem_file(t, PemKind::Key));
        if s.has("certificate") != s.has("key") && !self.had_errors_in(block) {
            self.diags.push(
                Diagnostic::new(
                    Code::E034,
                    format!("send connector `{}` has a client certificate without its key, or a key without its certificate", name.value),
                )
                .primary(block.name.span, "both are needed to present a client certificate")
                .help("give both `certificate` and `key`, or neither"),
            );
        }
        let fqdn = s.one("fqdn").and_then(|t| self.check(values::domain(t)));
        let dkim_sign = match s.one("dkim-sign") {
            Some(t) => self
                .check(values::choice(
                    t,
                    "dkim-sign value",
                    &[("on", true), ("off", false)],
                ))
                .unwrap_or(true),
            None => true,
        };
        self.set.send_connectors.push(SendConnector {
            name,
            span: block.span,
            address_spaces,
            smart_hosts,
            tls,
            tls_name,
            certificate,
            key,
            fqdn,
            dkim_sign,
        });
    }

    fn address_space(&mut self, group: &[Text]) -> Option<AddressSpace> {
        let first = group.first()?;
        let pattern = match first.value.as_str() {
            "*" => AddressSpacePattern::All,
            "--" => AddressSpacePattern::AcceptedDomains,
            _ => AddressSpacePattern::Domain(self.check(values::domain_pattern(first))?),
        };
        let mut span = first.span;
        let cost = match group.get(1..) {
            Some([]) | None => 1,
            Some([kw, n]) if kw.value == "cost" => {
                span = span.to(n.span);
                u8::try_from(self.check(values::number(n, 1, 100))?).ok()?
            }
            Some(rest) => {
                let extra = rest.first().map_or(first.span, |t| t.span);
                self.diags.push(
                    Diagnostic::new(
                        Code::E014,
                        "an address space is a domain optionally followed by `cost N`",
                    )
                    .primary(extra, "unexpected here")
                    .help("write `address-space contoso.com cost 5, *.fabrikam.com`"),
                );
                return None;
            }
        };
        Some(AddressSpace {
            pattern,
            cost,
            span,
        })
    }

    fn pem_file(&mut self, t: &Text, kind: PemKind) -> Option<Spanned<PathBuf>> {
        let path = self.relative_path(t);
        let what = match kind {
            PemKind::Certificate => "certificate",
            PemKind::Key => "private key",
        };
        let problem = match crate::input::read_limited(&path) {
            Err(e) => Some(format!(
                "cannot read `{}`: {}",
                path.display(),
                super::io_reason(&e)
            )),
            Ok(bytes) => match kind {
                // The relay loads these files with the same reader, so what passes here loads.
                PemKind::Certificate => crate::pem::certificates(&bytes)
                    .err()
                    .map(|_| format!("`{}` holds no PEM certificate", path.display())),
                PemKind::Key => crate::pem::private_key(&bytes)
                    .err()
                    .map(|_| format!("`{}` holds no PEM private key", path.display())),
            },
        };
        match problem {
            None => Some(Spanned::new(path, t.span)),
            Some(why) => {
                self.diags.push(
                    Diagnostic::new(
                        Code::E033,
                        format!("the {what} file `{}` cannot be used", t.value),
                    )
                    .primary(t.span, why)
                    .help(format!(
                        "point at a PEM {what}; paths are relative to the rule file's folder"
                    )),
                );
                None
            }
        }
    }
}
