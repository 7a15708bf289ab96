//! Address rewrite entries, from `rewrite` lines and imported CSV rows alike: the shapes
//! Exchange's New-AddressRewriteEntry accepts and refuses.

use super::Resolver;
use super::values;
use crate::ast::{Rewrite, Text};
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{
    DomainPattern, RewriteEntry, RewriteFrom, RewriteTo, Spanned, is_subdomain_or_same,
};

impl Resolver<'_> {
    pub(super) fn rewrite(&mut self, r: &Rewrite) {
        let Some(internal) = self.rewrite_internal(&r.internal) else {
            return;
        };
        let Some(external) = self.rewrite_external(&r.external) else {
            return;
        };
        let internal_is_address = matches!(internal, RewriteFrom::Address(_));
        let external_is_address = matches!(external, RewriteTo::Address(_));
        if internal_is_address != external_is_address {
            let (addr, dom) = if internal_is_address {
                (&r.internal, &r.external)
            } else {
                (&r.external, &r.internal)
            };
            self.diags.push(
                Diagnostic::new(
                    Code::E023,
                    format!(
                        "`{}` is an address but `{}` is a domain",
                        addr.value, dom.value
                    ),
                )
                .primary(
                    if internal_is_address {
                        r.external.span
                    } else {
                        r.internal.span
                    },
                    "this side is a domain",
                )
                .secondary(addr.span, "this side is an address")
                .help(if internal_is_address {
                    format!(
                        "write the full external address, e.g. `{}@{}`",
                        local_of(&r.internal.value),
                        r.external.value
                    )
                } else {
                    "write a domain on both sides, or an address on both sides".to_string()
                }),
            );
            return;
        }
        let wildcard = match &internal {
            RewriteFrom::Wildcard(parent) => Some(parent.clone()),
            _ => None,
        };
        if wildcard.is_some() && r.outbound_only.is_none() {
            self.diags.push(
                Diagnostic::new(
                    Code::E020,
                    format!("the wildcard entry `{}` must be outbound-only", r.internal.value),
                )
                .primary(r.internal.span, "many subdomains map to one external domain")
                .help(format!(
                    "inbound, the original subdomain cannot be recovered: add `outbound-only` after `{}`",
                    r.external.value
                )),
            );
        }
        let mut exceptions = Vec::new();
        for e in &r.exceptions {
            let Some(d) = self.check(values::domain(e)) else {
                continue;
            };
            match &wildcard {
                None => {
                    self.diags.push(
                        Diagnostic::new(
                            Code::E024,
                            format!(
                                "`{}` is not a wildcard entry, so it cannot have exceptions",
                                r.internal.value
                            ),
                        )
                        .primary(e.span, "exception on a non-wildcard entry")
                        .secondary(r.internal.span, "this is a single address or domain")
                        .help(format!(
                            "write `*.{}` to cover its subdomains, or remove `except`",
                            strip_local(&r.internal.value)
                        )),
                    );
                    break;
                }
                Some(parent) if !is_subdomain_or_same(&d, parent) => {
                    self.diags.push(
                        Diagnostic::new(
                            Code::E024,
                            format!(
                                "the exception `{}` is outside `{}`",
                                e.value, r.internal.value
                            ),
                        )
                        .primary(e.span, format!("not `{parent}` or one of its subdomains"))
                        .help("list only subdomains the wildcard would otherwise rewrite"),
                    );
                }
                Some(_) => exceptions.push(Spanned::new(d, e.span)),
            }
        }
        let name = r
            .name
            .as_ref()
            .map_or_else(|| r.internal.value.clone(), |n| n.value.clone());
        self.set.rewrites.push(RewriteEntry {
            name,
            named: r.name.is_some(),
            internal: Spanned::new(internal, r.internal.span),
            external: Spanned::new(external, r.external.span),
            exceptions,
            outbound_only: r.outbound_only.is_some() || wildcard.is_some(),
            span: r.span,
        });
    }

    fn rewrite_internal(&mut self, t: &Text) -> Option<RewriteFrom> {
        if t.value.contains('@') {
            return self.check(values::address(t)).map(RewriteFrom::Address);
        }
        match self.check(values::domain_pattern(t))? {
            DomainPattern::Exact(d) => Some(RewriteFrom::Domain(d)),
            DomainPattern::Wildcard(d) => Some(RewriteFrom::Wildcard(d)),
        }
    }

    fn rewrite_external(&mut self, t: &Text) -> Option<RewriteTo> {
        if t.value.contains('*') {
            self.diags.push(
                Diagnostic::new(
                    Code::E021,
                    format!("the external address `{}` is a wildcard", t.value),
                )
                .primary(t.span, "the outside world must see one address or domain")
                .help(format!(
                    "write the one external domain, e.g. `{}`",
                    t.value.trim_start_matches("*.").trim_start_matches('*')
                )),
            );
            return None;
        }
        if t.value.contains('@') {
            return self.check(values::address(t)).map(RewriteTo::Address);
        }
        self.check(values::domain(t)).map(RewriteTo::Domain)
    }
}

fn local_of(v: &str) -> &str {
    v.split('@').next().unwrap_or(v)
}

fn strip_local(v: &str) -> &str {
    v.rsplit('@').next().unwrap_or(v)
}
