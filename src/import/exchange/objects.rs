//! Creating objects (`New-`, `Enable-MailUser`) and the parameters `New-` and `Set-` share:
//! every kind's settings, checked and recorded with the parameter they come from.

use super::*;

impl State<'_> {
    pub(super) fn create(
        &mut self,
        ctx: &mut Ctx,
        c: &Command,
        kind: Kind,
        b: &mut Bound,
    ) -> Option<Object> {
        let name_arg = b.take("Name");
        let name = match &name_arg {
            Some(a) => a.value.as_ref().and_then(|v| self.resolve_one(ctx, v)),
            None => None,
        };
        let blame = ctx.blame(c.name_span);
        let data = match kind {
            Kind::Domain => {
                let d = b.take("DomainName");
                let domain = match d.as_ref().and_then(|a| a.value.as_ref()) {
                    Some(v) => self.resolve_one(ctx, v)?,
                    None => {
                        ctx.error(missing(c, "DomainName", "the domain"));
                        return None;
                    }
                };
                Data::Domain {
                    domain,
                    kind: None,
                    subdomains: None,
                }
            }
            Kind::Receive => Data::Receive(Box::default()),
            Kind::Send => Data::Send(Box::default()),
            Kind::Rewrite => Data::Rewrite {
                internal: String::new(),
                external: String::new(),
                outbound_only: false,
                exceptions: Vec::new(),
                last: blame,
            },
            Kind::Recipient(_) => Data::Recipient {
                addresses: Vec::new(),
                external: None,
                hidden: None,
                members: Vec::new(),
                auth_only: None,
            },
            Kind::Rule => Data::Rule {
                mode: None,
                statements: Vec::new(),
            },
        };
        let name = match (name, &data) {
            (Some(n), _) => n,
            (None, Data::Domain { domain, .. }) => domain.clone(),
            (None, Data::Rewrite { .. } | Data::Recipient { .. }) if name_arg.is_none() => {
                String::new()
            }
            (None, _) => {
                if name_arg.is_none() {
                    ctx.error(missing(c, "Name", "its name"));
                }
                return None;
            }
        };
        Some(Object {
            kind,
            ids: if name.is_empty() {
                Vec::new()
            } else {
                vec![lower(&name)]
            },
            name,
            display: None,
            origin: vec![ctx.unit],
            created: blame,
            data,
        })
    }

    pub(super) fn enable_mailuser(
        &mut self,
        ctx: &mut Ctx,
        c: &Command,
        mut b: Bound,
        id: String,
        span: Span,
    ) {
        let mut obj = Object {
            kind: Kind::Recipient(RecipientKind::MailUser),
            ids: vec![lower(&id)],
            name: id,
            display: None,
            origin: vec![ctx.unit],
            created: ctx.blame(span),
            data: Data::Recipient {
                addresses: Vec::new(),
                external: None,
                hidden: None,
                members: Vec::new(),
                auth_only: None,
            },
        };
        if let Some(a) = b.take("Name") {
            if let Some(n) = a.value.as_ref().and_then(|v| self.resolve_one(ctx, v)) {
                obj.ids.push(lower(&n));
            }
        }
        self.settings(ctx, c, &mut b, &mut obj, None);
        self.leftover(ctx, c, b);
        ctx.effects.push(Effect::Create(obj));
    }

    /// New-/Set- parameters of every kind.
    pub(super) fn settings(
        &mut self,
        ctx: &mut Ctx,
        c: &Command,
        b: &mut Bound,
        obj: &mut Object,
        target: Option<usize>,
    ) {
        // Directory-only parameters: the comment above the item quotes the whole command.
        for p in [
            "OrganizationalUnit",
            "FirstName",
            "LastName",
            "Initials",
            "Type",
            "ManagedBy",
            "Notes",
            "Comment",
            "Comments",
            "Server",
            "TransportRole",
            "SourceTransportServers",
            "MakeDefault",
        ] {
            b.take(p);
        }
        if let Some(a) = b.take("Name") {
            // `Set-X -Name NEW` renames; later commands may use either name.
            if let Some(n) = a.value.as_ref().and_then(|v| self.resolve_one(ctx, v)) {
                obj.ids.push(lower(&n));
                obj.name = n;
            }
        }
        if let Some(a) = b.take("Enabled") {
            if self.switch(ctx, &a) == Some(false) {
                ctx.error(
                    Diagnostic::new(
                        Code::E072,
                        format!(
                            "a disabled {} has no mailflow equivalent",
                            obj.kind.describe()
                        ),
                    )
                    .primary(a.span, "`-Enabled $false`")
                    .help("leave the object out of the rule set, or comment it out after import"),
                );
            }
        }
        let kind = obj.kind;
        match &mut obj.data {
            Data::Domain {
                kind: dk,
                subdomains,
                ..
            } => {
                if let Some(a) = b.take("DomainType") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        let k = match v.to_ascii_lowercase().as_str() {
                            "authoritative" => "authoritative",
                            "internalrelay" => "internal-relay",
                            "externalrelay" => "external-relay",
                            _ => {
                                ctx.error(bad_value(
                                    &a,
                                    &v,
                                    "`Authoritative`, `InternalRelay` or `ExternalRelay`",
                                ));
                                return;
                            }
                        };
                        *dk = Some((k.to_string(), ctx.blame(a.span)));
                    }
                }
                if let Some(a) = b.take("MatchSubDomains") {
                    *subdomains = match self.switch(ctx, &a) {
                        Some(true) => Some(ctx.blame(a.span)),
                        _ => None,
                    };
                }
            }
            Data::Receive(r) => self.receive(ctx, c, b, r),
            Data::Send(s) => self.send(ctx, b, s),
            Data::Rewrite {
                internal,
                external,
                outbound_only,
                exceptions,
                last,
            } => {
                *last = ctx.blame(c.name_span);
                if let Some(a) = b.take("InternalAddress") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        *internal = v;
                    }
                }
                if let Some(a) = b.take("ExternalAddress") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        *external = v;
                    }
                }
                if let Some(a) = b.take("OutboundOnly") {
                    if let Some(v) = self.switch(ctx, &a) {
                        *outbound_only = v;
                    }
                }
                if let Some(a) = b.take("ExceptionList") {
                    if let Some(v) = self.arg_texts(ctx, &a) {
                        *exceptions = v;
                    }
                }
                for (v, p) in [
                    (&*internal, "InternalAddress"),
                    (&*external, "ExternalAddress"),
                ] {
                    // A value that failed to resolve is reported already.
                    if v.is_empty() && target.is_none() && !ctx.has_errors() {
                        ctx.error(missing(c, p, "a required value"));
                    }
                }
                if obj.name.is_empty() {
                    obj.ids.push(lower(internal));
                }
            }
            Data::Recipient {
                addresses,
                external,
                hidden,
                members,
                auth_only,
            } => {
                if let Some(a) = b.take("DisplayName") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        obj.ids.push(lower(&v));
                        obj.display = Some(v);
                    }
                }
                if let Some(a) = b.take("Alias") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        obj.ids.push(lower(&v));
                    }
                }
                if let Some(a) = b.take("PrimarySmtpAddress") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        let v = strip_smtp(&v);
                        addresses.retain(|(x, _)| !x.eq_ignore_ascii_case(&v));
                        addresses.insert(0, (v.clone(), ctx.blame(a.span)));
                        obj.ids.push(lower(&v));
                    }
                }
                if let Some(a) = b.take("EmailAddresses") {
                    self.email_addresses(ctx, &a, addresses);
                    for (x, _) in addresses.iter() {
                        obj.ids.push(lower(x));
                    }
                }
                if let Some(a) = b.take("ExternalEmailAddress") {
                    if kind == Kind::Recipient(RecipientKind::Group) {
                        ctx.error(bad_param(
                            &a,
                            "a distribution group has no external address",
                        ));
                    } else if let Some(v) = self.arg_text(ctx, &a) {
                        *external = Some((strip_smtp(&v), ctx.blame(a.span)));
                    }
                }
                if let Some(a) = b.take("HiddenFromAddressListsEnabled") {
                    *hidden = match self.switch(ctx, &a) {
                        Some(true) => Some(ctx.blame(a.span)),
                        _ => None,
                    };
                }
                if let Some(a) = b.take("RequireSenderAuthenticationEnabled") {
                    if kind == Kind::Recipient(RecipientKind::Group) {
                        *auth_only = match self.switch(ctx, &a) {
                            Some(true) => Some(ctx.blame(a.span)),
                            _ => None,
                        };
                    } else {
                        ctx.error(bad_param(
                            &a,
                            "mailflow refuses unauthenticated senders only for groups",
                        ));
                    }
                }
                if let Some(a) = b.take("Members") {
                    if kind != Kind::Recipient(RecipientKind::Group) {
                        ctx.error(bad_param(&a, "only a distribution group has members"));
                    } else if let Some(v) = self.arg_texts(ctx, &a) {
                        members.clear();
                        for m in v {
                            if let Some(m) = self.member_ref(
                                ctx,
                                &m,
                                a.value.as_ref().map_or(a.span, |v| v.span),
                            ) {
                                members.push((m, ctx.blame(a.span)));
                            }
                        }
                    }
                }
                if target.is_none() && !ctx.has_errors() {
                    if addresses.is_empty() {
                        ctx.error(
                            Diagnostic::new(
                                Code::E075,
                                format!("`{}` has no `-PrimarySmtpAddress`", c.name),
                            )
                            .primary(c.name_span, "the address would come from an email address policy")
                            .help("mailflow has no email address policies: add `-PrimarySmtpAddress ADDRESS`"),
                        );
                    }
                    if external.is_none() && kind != Kind::Recipient(RecipientKind::Group) {
                        ctx.error(missing(c, "ExternalEmailAddress", "where its mail goes"));
                    }
                }
            }
            Data::Rule { mode, statements } => {
                if let Some(a) = b.take("Priority") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        match v.parse::<usize>() {
                            Ok(p) => {
                                let index = target.unwrap_or(self.objects.len());
                                ctx.effects.push(Effect::Priority(index, p));
                            }
                            Err(_) => ctx.error(bad_value(&a, &v, "a whole number from 0")),
                        }
                    }
                }
                if let Some(a) = b.take("Mode") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        match v.to_ascii_lowercase().as_str() {
                            "enforce" => *mode = None,
                            "audit" => *mode = Some(("audit".to_string(), ctx.blame(a.span))),
                            _ => ctx.error(bad_value(&a, &v, "`Enforce` or `Audit`")),
                        }
                    }
                }
                self.rule(ctx, c, b, statements);
            }
        }
    }
}
