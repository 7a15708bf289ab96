//! Contacts, mail users and groups: their addresses (`-EmailAddresses` lists and `@{add=...}`)
//! and group members, by identity or address.

use super::*;

impl State<'_> {
    pub(super) fn email_addresses(&self, ctx: &mut Ctx, a: &Arg, addresses: &mut Vec<(String, B)>) {
        let Some(v) = &a.value else { return };
        if let Some(t) = v.items.first().filter(|t| t.kind == TokenKind::Hashtable) {
            // @{add=a,b; remove=c}
            let inner = t.text.trim_start_matches("@{").trim_end_matches('}');
            for part in inner.split(';') {
                let Some((k, vals)) = part.split_once('=') else {
                    continue;
                };
                let vals: Vec<String> = vals
                    .split(',')
                    .map(|x| strip_smtp(x.trim().trim_matches(['"', '\''])))
                    .filter(|x| !x.is_empty())
                    .collect();
                match k.trim().to_ascii_lowercase().as_str() {
                    "add" => {
                        for x in vals {
                            if !addresses.iter().any(|(y, _)| y.eq_ignore_ascii_case(&x)) {
                                addresses.push((x, ctx.blame(a.span)));
                            }
                        }
                    }
                    "remove" => {
                        addresses.retain(|(y, _)| !vals.iter().any(|x| x.eq_ignore_ascii_case(y)))
                    }
                    other => ctx.error(bad_value(a, other, "`add` or `remove`")),
                }
            }
            return;
        }
        let Some(vals) = self.arg_texts(ctx, a) else {
            return;
        };
        addresses.clear();
        // `SMTP:` marks the primary address; `smtp:` the others.
        let mut primary = None;
        for x in &vals {
            if x.starts_with("SMTP:") {
                primary = Some(strip_smtp(x));
            }
        }
        if let Some(p) = primary {
            addresses.push((p, ctx.blame(a.span)));
        }
        for x in vals {
            if x.len() > 5
                && !x.starts_with("SMTP:")
                && x.contains(':')
                && !x.to_ascii_lowercase().starts_with("smtp:")
            {
                ctx.error(bad_value(
                    a,
                    &x,
                    "SMTP addresses (other proxy address types have no mailflow meaning)",
                ));
                continue;
            }
            let x = strip_smtp(&x);
            if !addresses.iter().any(|(y, _)| y.eq_ignore_ascii_case(&x)) {
                addresses.push((x, ctx.blame(a.span)));
            }
        }
    }

    pub(super) fn member_ref(&self, ctx: &mut Ctx, id: &str, span: Span) -> Option<Member> {
        let want = lower(id);
        let found = self.objects.iter().enumerate().rev().find_map(|(i, o)| {
            let o = o.as_ref()?;
            (matches!(o.kind, Kind::Recipient(_)) && o.ids.contains(&want)).then_some(i)
        });
        if let Some(i) = found {
            return Some(Member::Object(i));
        }
        if id.contains('@') && !self.failed_objects.iter().any(|(_, i, _)| *i == want) {
            return Some(Member::Address(id.to_string()));
        }
        let kinds = [
            Kind::Recipient(RecipientKind::Contact),
            Kind::Recipient(RecipientKind::MailUser),
            Kind::Recipient(RecipientKind::Group),
        ];
        self.find(ctx, &kinds, id, span).map(Member::Object)
    }

    pub(super) fn member(&self, ctx: &mut Ctx, b: &mut Bound, obj: &mut Object, add: bool) {
        let Data::Recipient { members, .. } = &mut obj.data else {
            return;
        };
        let Some(a) = b.take("Member") else {
            ctx.errors_missing_member(obj);
            return;
        };
        let Some(v) = self.arg_text(ctx, &a) else {
            return;
        };
        let span = a.value.as_ref().map_or(a.span, |v| v.span);
        let Some(m) = self.member_ref(ctx, &v, span) else {
            return;
        };
        if add {
            if !members.iter().any(|(x, _)| *x == m) {
                members.push((m, ctx.blame(a.span)));
            }
        } else {
            members.retain(|(x, _)| *x != m);
        }
    }
}
