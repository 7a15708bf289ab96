//! Receive and send connectors: bindings, ranges, TLS, authentication, XOORG trust, limits,
//! and `Add-ADPermission`'s relay right.

use super::*;

impl State<'_> {
    pub(super) fn ad_permission(&self, ctx: &mut Ctx, b: &mut Bound, obj: &mut Object) {
        let Data::Receive(r) = &mut obj.data else {
            return;
        };
        let user = b.take("User");
        let rights = b.take("ExtendedRights");
        if let Some(a) = b.take("AccessRights") {
            ctx.error(bad_param(
                &a,
                "mailflow translates only extended rights on receive connectors",
            ));
        }
        let (Some(user), Some(rights)) = (user, rights) else {
            ctx.error(
                Diagnostic::new(Code::E075, "`Add-ADPermission` needs `-User` and `-ExtendedRights`")
                    .primary(obj.created.span, "for this connector")
                    .help("write `-User 'NT AUTHORITY\\Anonymous Logon' -ExtendedRights ms-Exch-SMTP-Accept-Any-Recipient`"),
            );
            return;
        };
        let Some(u) = self.arg_text(ctx, &user) else {
            return;
        };
        if !u.eq_ignore_ascii_case("NT AUTHORITY\\Anonymous Logon") {
            ctx.error(bad_value(
                &user,
                &u,
                "`NT AUTHORITY\\Anonymous Logon` (the clients of the connector)",
            ));
            return;
        }
        let Some(rs) = self.arg_texts(ctx, &rights) else {
            return;
        };
        for right in rs {
            if right.eq_ignore_ascii_case("ms-Exch-SMTP-Accept-Any-Recipient") {
                r.any_recipient = Some(ctx.blame(rights.span));
            } else {
                ctx.error(bad_value(&rights, &right, "`ms-Exch-SMTP-Accept-Any-Recipient` (relaying); mailflow has no other permissions"));
            }
        }
    }

    /// Leaves out (W043) the anonymous relay right of a connector that trusts XOORG as
    /// `ExternalAuthoritative`: its anonymous clients are the shared service's other
    /// customers, and the organization's own tenants relay as internal without the right.
    pub(super) fn shared_service_relay(&mut self) {
        let mut left_out = Vec::new();
        for o in self.objects.iter_mut().flatten() {
            let Data::Receive(r) = &mut o.data else {
                continue;
            };
            let trusts_tenants = r.oorg.as_ref().is_some_and(|(v, _)| !v.is_empty())
                && r.mechanisms
                    .as_ref()
                    .is_some_and(|(m, _)| m.iter().any(|x| x == "externalauthoritative"));
            if !trusts_tenants {
                continue;
            }
            if let Some(b) = r.any_recipient.take() {
                left_out.push((o.name.clone(), b.span));
            }
        }
        for (name, span) in left_out {
            self.findings.push(
                Diagnostic::new(
                    Code::W043,
                    format!("the anonymous relay right of `{name}` is left out"),
                )
                .primary(span, "would let every tenant of the shared service relay through you")
                .help("your tenants relay as internal when their XOORG names an accepted domain; if outside senders must relay too, add `accept-any-recipient` yourself"),
            );
        }
    }

    pub(super) fn receive(&self, ctx: &mut Ctx, c: &Command, b: &mut Bound, r: &mut Receive) {
        for sw in ["Internet", "Internal", "Partner", "Custom", "Client"] {
            if let Some(a) = b.take(sw) {
                self.usage(ctx, &a, sw, r);
            }
        }
        if let Some(a) = b.take("Usage") {
            if let Some(v) = self.arg_text(ctx, &a) {
                self.usage(ctx, &a, &v, r);
            }
        }
        if let Some(a) = b.take("Bindings") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                r.listen = Some((v, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("RemoteIPRanges") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                // Exchange's "everyone" is mailflow's default.
                let all = v.iter().all(|x| {
                    x == "0.0.0.0-255.255.255.255"
                        || x.eq_ignore_ascii_case("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
                });
                r.remote = if all {
                    None
                } else {
                    Some((v, ctx.blame(a.span)))
                };
            }
        }
        if let Some(a) = b.take("Fqdn") {
            if let Some(v) = self.arg_text(ctx, &a) {
                r.fqdn = Some((v, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("AuthMechanism") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                let mut kept = Vec::new();
                for m in v {
                    match m.to_ascii_lowercase().as_str() {
                        "tls" => {
                            self.need_certificate(ctx, &a, "`Tls` offers STARTTLS");
                            kept.push("tls".to_string());
                        }
                        "externalauthoritative" => kept.push("externalauthoritative".to_string()),
                        "none" => {}
                        "basicauth" | "basicauthrequiretls" | "integrated" | "exchangeserver" => {
                            ctx.diags.push(no_effect(&a, &m, "mailflow has no SMTP AUTH; clients are served as the connector's `auth` says"));
                        }
                        _ => ctx.error(bad_value(
                            &a,
                            &m,
                            "`Tls`, `ExternalAuthoritative` or `None`",
                        )),
                    }
                }
                r.mechanisms = Some((kept, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("PermissionGroups") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                let mut kept = Vec::new();
                for g in v {
                    match g.to_ascii_lowercase().as_str() {
                        "anonymoususers" | "partners" | "exchangeservers" => kept.push(g.to_ascii_lowercase()),
                        "none" | "custom" => {}
                        "exchangeusers" | "exchangelegacyservers" => ctx.diags.push(no_effect(
                            &a,
                            &g,
                            "mailflow has no SMTP AUTH: clients that would log on are served as the connector's `auth` says",
                        )),
                        _ => ctx.error(bad_value(&a, &g, "`AnonymousUsers`, `Partners`, `ExchangeServers`, `ExchangeUsers`")),
                    }
                }
                r.permissions = Some((kept, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("RequireTLS") {
            if let Some(v) = self.switch(ctx, &a) {
                if v {
                    self.need_certificate(ctx, &a, "`-RequireTLS $true`");
                }
                r.require_tls = Some((v, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("TlsDomainCapabilities") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                let mut names = Vec::new();
                for cap in v {
                    let cap = cap.trim_matches(['{', '}']).to_string();
                    match cap.split_once(':') {
                        Some((domain, what)) if what.eq_ignore_ascii_case("AcceptOorgProtocol") => {
                            names.push(domain.to_string());
                        }
                        Some((_, what)) => ctx.error(
                            bad_value(&a, what, "`AcceptOorgProtocol`").help(
                                "mailflow does not take over AuthAs from cross-premises headers (`AcceptCloudServicesMail`); use `auth externally-secured` with `accept-oorg` and `originating-org` rules",
                            ),
                        ),
                        None => ctx.error(bad_value(&a, &cap, "`DOMAIN:AcceptOorgProtocol`")),
                    }
                }
                if !names.is_empty() {
                    self.need_certificate(ctx, &a, "XOORG is offered only after STARTTLS");
                }
                r.oorg = Some((names, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("TlsCertificateName") {
            // Any value: the certificate comes from --certificate, and its name need not be
            // evaluated (`"<I>$($cert.Issuer)<S>$($cert.Subject)"`).
            if let Some(v) = &a.value {
                for t in &v.items {
                    if t.kind == TokenKind::Placeholder {
                        ctx.error(placeholder(t));
                    }
                    if let TokenKind::Variable { .. } = t.kind {
                        if !self.vars.contains_key(&lower(&t.text)) && !is_builtin(&t.text) {
                            ctx.error(undefined(t));
                        }
                    }
                }
            }
            self.need_certificate(
                ctx,
                &a,
                "`-TlsCertificateName` names the certificate for STARTTLS",
            );
        }
        for (p, key, conv) in [
            ("MaxMessageSize", "max-message-size", Conv::Size),
            ("MaxHeaderSize", "max-header-size", Conv::Size),
            ("MaxRecipientsPerMessage", "max-recipients", Conv::Number),
            (
                "MaxInboundConnectionPerSource",
                "max-connections-per-source",
                Conv::Number,
            ),
            ("MaxInboundConnection", "max-connections", Conv::Number),
            ("MaxHopCount", "max-hop-count", Conv::Number),
            ("ConnectionTimeout", "connection-timeout", Conv::Duration),
            (
                "ConnectionInactivityTimeout",
                "inactivity-timeout",
                Conv::Duration,
            ),
        ] {
            if let Some(a) = b.take(p) {
                if let Some(v) = self.arg_text(ctx, &a) {
                    match conv.apply(&v) {
                        Some(x) => {
                            r.limits.retain(|(k, _, _)| *k != key);
                            r.limits.push((key, x, ctx.blame(a.span)));
                        }
                        None => ctx.error(bad_value(&a, &v, conv.expected())),
                    }
                }
            }
        }
        for p in ["Banner", "ProtocolLoggingLevel"] {
            if let Some(a) = b.take(p) {
                ctx.diags.push(no_effect(
                    &a,
                    p,
                    "mailflow's greeting and logs are its own (docs/relay.md)",
                ));
            }
        }
        let _ = c;
    }

    pub(super) fn usage(&self, ctx: &mut Ctx, a: &Arg, usage: &str, r: &mut Receive) {
        match usage.to_ascii_lowercase().as_str() {
            "custom" => {}
            "internet" => r.usage = Some(("anonymous".into(), ctx.blame(a.span))),
            "partner" => r.usage = Some(("partner".into(), ctx.blame(a.span))),
            "internal" | "client" => ctx.error(bad_value(
                a,
                usage,
                "`Custom`, `Internet` or `Partner`: mailflow has no SMTP AUTH or Exchange server authentication",
            )),
            _ => ctx.error(bad_value(a, usage, "`Custom`, `Internet`, `Partner`")),
        }
    }

    pub(super) fn need_certificate(&self, ctx: &mut Ctx, a: &Arg, why: &str) {
        if self.options.certificate.is_none() || self.options.key.is_none() {
            ctx.error(
                Diagnostic::new(Code::E077, format!("tls needs a certificate: {why}"))
                    .primary(a.span, "needs a certificate and key")
                    .help("export the Exchange certificate to PEM and pass `--certificate FILE.pem --key FILE.key`"),
            );
        }
    }

    pub(super) fn send(&self, ctx: &mut Ctx, b: &mut Bound, s: &mut Send) {
        for sw in ["Internet", "Internal", "Partner", "Custom", "Usage"] {
            // The usage type only presets Exchange's defaults; mailflow's are the same.
            b.take(sw);
        }
        if let Some(a) = b.take("AddressSpaces") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                let mut spaces = Vec::new();
                for x in v {
                    let (kind, rest) = match x.split_once(':') {
                        Some((k, r)) => (k.to_string(), r.to_string()),
                        None => ("smtp".to_string(), x.clone()),
                    };
                    if !kind.eq_ignore_ascii_case("smtp") {
                        ctx.error(bad_value(&a, &x, "SMTP address spaces"));
                        continue;
                    }
                    let (domain, cost) = match rest.split_once(';') {
                        Some((d, c)) => (d.to_string(), c.trim().to_string()),
                        None => (rest, "1".to_string()),
                    };
                    spaces.push(if cost == "1" {
                        word(&domain)
                    } else {
                        format!("{} cost {}", word(&domain), word(&cost))
                    });
                }
                s.spaces = Some((spaces, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("SmartHosts") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                s.smart_hosts = Some((v, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("DNSRoutingEnabled") {
            if self.switch(ctx, &a) == Some(true) {
                s.smart_hosts = None;
            }
        }
        if let Some(a) = b.take("RequireTLS") {
            if let Some(v) = self.switch(ctx, &a) {
                s.require_tls = Some((v, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("IgnoreSTARTTLS") {
            if let Some(v) = self.switch(ctx, &a) {
                s.ignore_starttls = Some((v, ctx.blame(a.span)));
            }
        }
        let level = b.take("TlsAuthLevel");
        let domain = b.take("TlsDomain");
        if let Some(a) = &level {
            if let Some(v) = self.arg_text(ctx, a) {
                match v.to_ascii_lowercase().as_str() {
                    "domainvalidation" => match domain.as_ref().and_then(|d| self.arg_text(ctx, d))
                    {
                        Some(d) => s.tls_name = Some((d, ctx.blame(a.span))),
                        None => ctx.error(
                            Diagnostic::new(
                                Code::E075,
                                "`-TlsAuthLevel DomainValidation` needs `-TlsDomain`",
                            )
                            .primary(a.span, "which name must the certificate carry?")
                            .help("add `-TlsDomain mail.protection.outlook.com` (for example)"),
                        ),
                    },
                    "encryptiononly" | "certificatevalidation" => {
                        ctx.diags.push(no_effect(a, &v, "mailflow validates the next hop's certificate chain whenever TLS is required"));
                    }
                    _ => ctx.error(bad_value(
                        a,
                        &v,
                        "`EncryptionOnly`, `CertificateValidation` or `DomainValidation`",
                    )),
                }
            }
        } else if let Some(d) = &domain {
            ctx.error(bad_param(
                d,
                "`-TlsDomain` is used only with `-TlsAuthLevel DomainValidation`",
            ));
        }
        if let Some(a) = b.take("TlsCertificateName") {
            self.need_certificate(
                ctx,
                &a,
                "`-TlsCertificateName` names the client certificate",
            );
            s.certificate = Some(ctx.blame(a.span));
        }
        if let Some(a) = b.take("Fqdn") {
            if let Some(v) = self.arg_text(ctx, &a) {
                s.fqdn = Some((v, ctx.blame(a.span)));
            }
        }
        for p in ["ProtocolLoggingLevel", "MaxMessageSize"] {
            if let Some(a) = b.take(p) {
                ctx.diags.push(no_effect(
                    &a,
                    p,
                    "mailflow limits message size on receive connectors",
                ));
            }
        }
    }
}
