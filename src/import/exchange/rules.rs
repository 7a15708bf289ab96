//! `New-TransportRule` and `Set-TransportRule`: conditions, exceptions and actions as
//! mailflow rule statements.

use super::*;

impl State<'_> {
    pub(super) fn rule(
        &self,
        ctx: &mut Ctx,
        c: &Command,
        b: &mut Bound,
        st: &mut Vec<(String, String, B)>,
    ) {
        let put = |key: &str, text: String, blame: B, st: &mut Vec<(String, String, B)>| {
            st.retain(|(k, _, _)| k != key);
            st.push((key.to_string(), text, blame));
        };
        for (neg, prefix) in [(false, "if"), (true, "except")] {
            let p = |n: &str| {
                if neg {
                    format!("ExceptIf{n}")
                } else {
                    n.to_string()
                }
            };
            if let Some(a) = b.take(&p("FromScope")) {
                if let Some(v) = self.arg_text(ctx, &a) {
                    let scope = match v.to_ascii_lowercase().as_str() {
                        "inorganization" => "inside",
                        "notinorganization" => "outside",
                        _ => {
                            ctx.error(bad_value(&a, &v, "`InOrganization` or `NotInOrganization`"));
                            continue;
                        }
                    };
                    put(
                        &p("FromScope"),
                        format!("{prefix} sender {scope}"),
                        ctx.blame(a.span),
                        st,
                    );
                }
            }
            for (param, field, op) in [
                (
                    "AnyOfRecipientAddressContainsWords",
                    "recipient",
                    "contains-words",
                ),
                (
                    "AnyOfRecipientAddressMatchesPatterns",
                    "recipient",
                    "matches",
                ),
                // Exchange Online's and the Mailbox role's: the domain and its subdomains.
                ("RecipientDomainIs", "recipient", "domain-is"),
                ("SenderDomainIs", "sender", "domain-is"),
                ("FromAddressContainsWords", "sender", "contains-words"),
                ("FromAddressMatchesPatterns", "sender", "matches"),
                ("SubjectContainsWords", "subject", "contains-words"),
                ("SubjectMatchesPatterns", "subject", "matches"),
            ] {
                if let Some(a) = b.take(&p(param)) {
                    // `-AnyOfRecipientAddressContains` (seed 002) is PowerShell's abbreviation of
                    // ...ContainsWords; mailflow reads that spelling as a substring test, as
                    // docs/language.md explains.
                    let op = if param == "AnyOfRecipientAddressContainsWords"
                        && self.written_as(c, a.span, "AnyOfRecipientAddressContains")
                    {
                        "contains"
                    } else {
                        op
                    };
                    if let Some(v) = self.arg_texts(ctx, &a) {
                        let list: Vec<String> = v.iter().map(|x| string(x)).collect();
                        put(
                            &p(param),
                            format!("{prefix} {field} {op} {}", list.join(", ")),
                            ctx.blame(a.span),
                            st,
                        );
                    }
                }
            }
            for (name_param, value_param, op) in [
                (
                    "HeaderContainsMessageHeader",
                    "HeaderContainsWords",
                    "contains-words",
                ),
                (
                    "HeaderMatchesMessageHeader",
                    "HeaderMatchesPatterns",
                    "matches",
                ),
            ] {
                let n = b.take(&p(name_param));
                let v = b.take(&p(value_param));
                match (n, v) {
                    (None, None) => {}
                    (Some(n), Some(v)) => {
                        if let (Some(h), Some(vals)) =
                            (self.arg_text(ctx, &n), self.arg_texts(ctx, &v))
                        {
                            let list: Vec<String> = vals.iter().map(|x| string(x)).collect();
                            put(
                                &p(value_param),
                                format!("{prefix} header {} {op} {}", string(&h), list.join(", ")),
                                ctx.blame(v.span),
                                st,
                            );
                        }
                    }
                    (Some(a), None) | (None, Some(a)) => ctx.error(
                        Diagnostic::new(
                            Code::E075,
                            format!(
                                "`-{}` and `-{}` come together",
                                p(name_param),
                                p(value_param)
                            ),
                        )
                        .primary(a.span, "the other half is missing")
                        .help("give the header name and the words (or patterns)"),
                    ),
                }
            }
            if let Some(a) = b.take(&p("MessageSizeOver")) {
                if let Some(v) = self.arg_text(ctx, &a) {
                    match Conv::Size.apply(&v) {
                        Some(s) => put(
                            &p("MessageSizeOver"),
                            format!("{prefix} size over {s}"),
                            ctx.blame(a.span),
                            st,
                        ),
                        None => ctx.error(bad_value(&a, &v, Conv::Size.expected())),
                    }
                }
            }
            if let Some(a) = b.take(&p("SenderIpRanges")) {
                if let Some(v) = self.arg_texts(ctx, &a) {
                    put(
                        &p("SenderIpRanges"),
                        format!("{prefix} client-ip in {}", words(&v)),
                        ctx.blame(a.span),
                        st,
                    );
                }
            }
        }
        for (param, action) in [
            ("StopRuleProcessing", "stop"),
            ("DeleteMessage", "delete"),
            ("Disconnect", "disconnect"),
        ] {
            if let Some(a) = b.take(param) {
                match self.switch(ctx, &a) {
                    Some(true) => put(param, action.to_string(), ctx.blame(a.span), st),
                    Some(false) => st.retain(|(k, _, _)| k != param),
                    None => {}
                }
            }
        }
        if let Some(a) = b.take("Quarantine") {
            if self.switch(ctx, &a) == Some(true) {
                ctx.error(bad_param(&a, "mailflow quarantines to a mailbox it is given: write `quarantine ADDRESS` in the rule"));
            }
        }
        let code = b.take("SmtpRejectMessageRejectStatusCode");
        let enhanced = b.take("RejectMessageEnhancedStatusCode");
        let text = b
            .take("SmtpRejectMessageRejectText")
            .or(b.take("RejectMessageReasonText"));
        if code.is_some() || enhanced.is_some() || text.is_some() {
            let mut parts: Vec<String> = Vec::new();
            let mut basic = None;
            let mut enh = None;
            let mut blame = None;
            for a in [&code, &enhanced].into_iter().flatten() {
                blame = Some(ctx.blame(a.span));
                if let Some(v) = self.arg_text(ctx, a) {
                    if v.contains('.') {
                        enh = Some(v);
                    } else {
                        basic = Some(v);
                    }
                }
            }
            if let Some(e) = &enh {
                if basic.is_none() {
                    basic = Some(if e.starts_with('4') { "450" } else { "550" }.to_string());
                }
            }
            parts.extend(basic);
            parts.extend(enh);
            if let Some(t) = &text {
                blame = blame.or(Some(ctx.blame(t.span)));
                if let Some(v) = self.arg_text(ctx, t) {
                    if parts.is_empty() {
                        parts.push("550".into());
                        parts.push("5.7.1".into());
                    }
                    parts.push(string(&v));
                }
            }
            if let Some(blame) = blame {
                put("reject", format!("reject {}", parts.join(" ")), blame, st);
            }
        }
        for (param, action) in [
            ("RedirectMessageTo", "redirect-to"),
            ("AddToRecipients", "add-recipient"),
            ("CopyTo", "copy-to"),
            ("BlindCopyTo", "blind-copy-to"),
        ] {
            if let Some(a) = b.take(param) {
                if let Some(v) = self.arg_texts(ctx, &a) {
                    put(
                        param,
                        format!("{action} {}", words(&v)),
                        ctx.blame(a.span),
                        st,
                    );
                }
            }
        }
        let hn = b.take("SetHeaderName");
        let hv = b.take("SetHeaderValue");
        match (hn, hv) {
            (None, None) => {}
            (Some(n), Some(v)) => {
                if let (Some(n2), Some(v2)) = (self.arg_text(ctx, &n), self.arg_text(ctx, &v)) {
                    put(
                        "SetHeader",
                        format!("set-header {} {}", string(&n2), string(&v2)),
                        ctx.blame(n.span),
                        st,
                    );
                }
            }
            (Some(a), None) | (None, Some(a)) => ctx.error(
                Diagnostic::new(
                    Code::E075,
                    "`-SetHeaderName` and `-SetHeaderValue` come together",
                )
                .primary(a.span, "the other half is missing")
                .help("give both the header's name and its value"),
            ),
        }
        for (param, action, quote) in [
            ("RemoveHeader", "remove-header", true),
            ("PrependSubject", "prepend-subject", true),
            ("LogEventText", "log", true),
        ] {
            if let Some(a) = b.take(param) {
                if let Some(v) = self.arg_text(ctx, &a) {
                    let v = if quote { string(&v) } else { word(&v) };
                    put(param, format!("{action} {v}"), ctx.blame(a.span), st);
                }
            }
        }
    }

    /// Whether the parameter at `span` was written exactly as `spelling`.
    pub(super) fn written_as(&self, c: &Command, span: Span, spelling: &str) -> bool {
        c.elements.iter().any(|e| match e {
            Element::Param { name, span: s, .. } => {
                *s == span && name.eq_ignore_ascii_case(spelling)
            }
            _ => false,
        })
    }
}
