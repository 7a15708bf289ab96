//! Values: tokens resolved to text (variables, expandable strings, placeholders refused),
//! Exchange's sizes and time spans converted, and the findings shared by the translators.

use super::*;

impl State<'_> {
    pub(super) fn resolve_token(&self, ctx: &mut Ctx, t: &Token) -> Option<String> {
        match t.kind {
            TokenKind::Bare | TokenKind::Quoted { expandable: false }
                if !(t.kind == TokenKind::Bare && t.text.contains('$')) =>
            {
                Some(t.text.clone())
            }
            // Bare words expand variables too (`john@tenant1.$domain`).
            TokenKind::Bare | TokenKind::Quoted { .. } => {
                let mut out = String::new();
                let mut rest = t.text.as_str();
                while let Some(i) = rest.find('$') {
                    out.push_str(rest.get(..i).unwrap_or(""));
                    let after = rest.get(i + 1..).unwrap_or("");
                    let name: String = after
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name.is_empty() {
                        if after.starts_with('(') || after.starts_with('{') {
                            ctx.error(
                                Diagnostic::new(
                                    Code::E073,
                                    "this string holds an expression mailflow does not evaluate",
                                )
                                .primary(t.span, "`$(...)` inside")
                                .help("write the value itself"),
                            );
                            return None;
                        }
                        out.push('$');
                        rest = after;
                        continue;
                    }
                    match self.vars.get(&lower(&name)) {
                        Some(Var::Text(v)) => out.push_str(v),
                        _ => {
                            ctx.error(
                                Diagnostic::new(
                                    Code::E073,
                                    format!("`${name}` has no value mailflow knows"),
                                )
                                .primary(t.span, "used in this string")
                                .help(format!(
                                    "assign `${name} = \"...\"` before, or write the value itself"
                                )),
                            );
                            return None;
                        }
                    }
                    rest = after.get(name.len()..).unwrap_or("");
                }
                out.push_str(rest);
                Some(out)
            }
            TokenKind::Variable { member } => {
                if !member {
                    match t.text.to_ascii_lowercase().as_str() {
                        "true" => return Some("$true".into()),
                        "false" => return Some("$false".into()),
                        "null" => return Some(String::new()),
                        _ => {}
                    }
                }
                match self
                    .vars
                    .get(&lower(t.text.split('.').next().unwrap_or("")))
                {
                    Some(Var::Text(v)) if !member => Some(v.clone()),
                    Some(Var::Opaque(unit)) => {
                        let line = self.statements.get(*unit).map_or(0, |s| s.lines.0);
                        ctx.error(
                            Diagnostic::new(
                                Code::E073,
                                format!(
                                    "`${}` holds a value mailflow cannot work out (line {line})",
                                    t.text
                                ),
                            )
                            .primary(
                                t.span,
                                "mailflow runs no commands and evaluates no expressions",
                            )
                            .help("write the value itself"),
                        );
                        None
                    }
                    Some(Var::Text(_)) => {
                        ctx.error(
                            Diagnostic::new(
                                Code::E073,
                                format!("`${}` reads a property mailflow does not know", t.text),
                            )
                            .primary(t.span, "a property")
                            .help("write the value itself"),
                        );
                        None
                    }
                    None => {
                        ctx.error(undefined(t));
                        None
                    }
                }
            }
            TokenKind::Subexpression => {
                ctx.error(
                    Diagnostic::new(
                        Code::E073,
                        format!("`{}` is an expression mailflow does not evaluate", t.text),
                    )
                    .primary(t.span, "an expression")
                    .help("write the value itself"),
                );
                None
            }
            TokenKind::Hashtable => {
                ctx.error(
                    Diagnostic::new(
                        Code::E072,
                        "a hashtable is accepted only by `-EmailAddresses`",
                    )
                    .primary(t.span, "`@{...}`")
                    .help("write the values as a comma-separated list"),
                );
                None
            }
            TokenKind::Placeholder => {
                ctx.error(placeholder(t));
                None
            }
        }
    }

    pub(super) fn resolve_one(&self, ctx: &mut Ctx, v: &Value) -> Option<String> {
        if v.items.len() != 1 {
            ctx.error(
                Diagnostic::new(Code::E072, "one value is expected here, not a list")
                    .primary(v.span, "a list")
                    .help("give a single value"),
            );
            return None;
        }
        v.items.first().and_then(|t| self.resolve_token(ctx, t))
    }

    pub(super) fn arg_text(&self, ctx: &mut Ctx, a: &Arg) -> Option<String> {
        match &a.value {
            Some(v) => self.resolve_one(ctx, v),
            None => {
                ctx.error(
                    Diagnostic::new(Code::E075, format!("`-{}` has no value", a.name))
                        .primary(a.span, "a value must follow")
                        .help(format!("write `-{}:VALUE`", a.name)),
                );
                None
            }
        }
    }

    pub(super) fn arg_texts(&self, ctx: &mut Ctx, a: &Arg) -> Option<Vec<String>> {
        let v = a.value.as_ref()?;
        let mut out = Vec::new();
        let mut ok = true;
        for t in &v.items {
            match self.resolve_token(ctx, t) {
                // `"a,b"` in one string is a list too (as Exchange's multi-valued parameters read it).
                Some(s) => out.extend(
                    s.split(',')
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty()),
                ),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A boolean or switch parameter: `-X`, `-X:$true`, `-X $false`.
    pub(super) fn switch(&self, ctx: &mut Ctx, a: &Arg) -> Option<bool> {
        let Some(v) = &a.value else { return Some(true) };
        let t = self.resolve_one(ctx, v)?;
        match t.to_ascii_lowercase().as_str() {
            "$true" | "true" | "1" => Some(true),
            "$false" | "false" | "0" => Some(false),
            _ => {
                ctx.error(bad_value(a, &t, "`$true` or `$false`"));
                None
            }
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Conv {
    Size,
    Number,
    Duration,
}

impl Conv {
    pub(super) fn expected(self) -> &'static str {
        match self {
            Conv::Size => "a size such as `36MB` or `36 MB (37,748,736 bytes)`",
            Conv::Number => "a whole number",
            Conv::Duration => "a time span such as `00:05:00`",
        }
    }

    pub(super) fn apply(self, v: &str) -> Option<String> {
        match self {
            Conv::Number => v.trim().parse::<u64>().ok().map(|n| n.to_string()),
            Conv::Size => {
                // `36MB`, `36 MB`, `36 MB (37,748,736 bytes)`, `37748736`.
                let head = v.split('(').next().unwrap_or("").trim();
                let digits: String = head.chars().take_while(|c| c.is_ascii_digit()).collect();
                let unit = head
                    .get(digits.len()..)
                    .unwrap_or("")
                    .trim()
                    .to_ascii_uppercase();
                let n: u64 = digits.parse().ok()?;
                let unit = match unit.as_str() {
                    "" | "B" => "B",
                    "KB" => "KB",
                    "MB" => "MB",
                    "GB" => "GB",
                    _ => return None,
                };
                Some(if unit == "B" {
                    n.to_string()
                } else {
                    format!("{n}{unit}")
                })
            }
            Conv::Duration => {
                // [d.]hh:mm:ss
                let (days, rest) = match v.trim().split_once('.') {
                    Some((d, r)) if r.contains(':') => (d.parse::<u64>().ok()?, r),
                    _ => (0, v.trim()),
                };
                let parts: Vec<u64> = rest
                    .split(':')
                    .map(|p| p.parse::<u64>().ok())
                    .collect::<Option<_>>()?;
                let [h, m, s] = parts.as_slice() else {
                    return None;
                };
                let secs = days * 86400 + h * 3600 + m * 60 + s;
                Some(if secs % 86400 == 0 && secs > 0 {
                    format!("{}d", secs / 86400)
                } else if secs % 3600 == 0 && secs > 0 {
                    format!("{}h", secs / 3600)
                } else if secs % 60 == 0 && secs > 0 {
                    format!("{}m", secs / 60)
                } else {
                    format!("{secs}s")
                })
            }
        }
    }
}

pub(super) fn strip_smtp(v: &str) -> String {
    match v.split_once(':') {
        Some((k, rest)) if k.eq_ignore_ascii_case("smtp") => rest.to_string(),
        _ => v.to_string(),
    }
}

pub(super) fn is_builtin(name: &str) -> bool {
    ["true", "false", "null"].contains(&name.to_ascii_lowercase().as_str())
}
pub(super) fn unsupported(c: &Command) -> Diagnostic {
    let lc = c.name.to_ascii_lowercase();
    let help = if lc.contains("unifiedgroup") || lc.contains("msol") || lc.contains("mailbox") {
        "this configures Exchange Online or the directory, not the edge's mail flow; leave it where it runs"
    } else {
        "mailflow imports accepted domains, connectors, address rewrite entries, transport rules, contacts, mail users and groups (docs/import.md)"
    };
    Diagnostic::new(Code::E070, format!("`{}` cannot be imported", c.name))
        .primary(c.name_span, "not a cmdlet mailflow translates")
        .help(help)
}

pub(super) fn unsupported_in_pipeline(c: &Command) -> Diagnostic {
    Diagnostic::new(
        Code::E070,
        format!("`{}` cannot feed another command", c.name),
    )
    .primary(
        c.name_span,
        "only `Get-` commands naming one object may start a pipeline",
    )
    .help("write the commands one per line")
}

pub(super) fn placeholder(t: &Token) -> Diagnostic {
    let help = if t.text.to_ascii_lowercase().contains("eop") {
        "replace it with the Exchange Online Protection ranges (https://endpoints.office.com), e.g. `40.92.0.0/15, 40.107.0.0/16, 52.100.0.0/14, 104.47.0.0/17, 2a01:111:f400::/48`"
    } else {
        "replace it with the real value"
    };
    Diagnostic::new(Code::E073, format!("`{}` is a placeholder", t.text))
        .primary(t.span, "template text, not a value")
        .help(help)
}

pub(super) fn undefined(t: &Token) -> Diagnostic {
    Diagnostic::new(Code::E073, format!("`${}` is never assigned", t.text))
        .primary(t.span, "no value")
        .help(format!(
            "assign it before this line (`${} = \"...\"`), or write the value itself",
            t.text
        ))
}

pub(super) fn missing(c: &Command, param: &str, what: &str) -> Diagnostic {
    Diagnostic::new(Code::E075, format!("`{}` needs `-{param}`", c.name))
        .primary(c.name_span, format!("{what} is not given"))
        .help(format!("add `-{param} VALUE`"))
}

pub(super) fn bad_value(a: &Arg, v: &str, expected: &str) -> Diagnostic {
    Diagnostic::new(
        Code::E072,
        format!("`{v}` is not a value mailflow can import for `-{}`", a.name),
    )
    .primary(
        a.value.as_ref().map_or(a.span, |v| v.span),
        format!("expected {expected}"),
    )
    .help(format!("use {expected}"))
}

pub(super) fn bad_param(a: &Arg, why: &str) -> Diagnostic {
    Diagnostic::new(Code::E072, format!("`-{}` cannot be imported here", a.name))
        .primary(a.span, why.to_string())
        .help("remove it; docs/import.md lists what each cmdlet translates")
}

pub(super) fn no_effect(a: &Arg, what: &str, why: &str) -> Diagnostic {
    let message = if what == a.name {
        format!("`-{what}` is left out")
    } else {
        format!("`{what}` in `-{}` is left out", a.name)
    };
    Diagnostic::new(Code::W041, message)
        .primary(
            a.value.as_ref().map_or(a.span, |v| v.span),
            "no mailflow equivalent",
        )
        .help(why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_convert() {
        assert_eq!(
            Conv::Size.apply("36 MB (37,748,736 bytes)").as_deref(),
            Some("36MB")
        );
        assert_eq!(Conv::Size.apply("10485760").as_deref(), Some("10485760"));
        assert_eq!(Conv::Size.apply("unlimited"), None);
        assert_eq!(Conv::Duration.apply("00:05:00").as_deref(), Some("5m"));
        assert_eq!(Conv::Duration.apply("1.00:00:00").as_deref(), Some("1d"));
        assert_eq!(Conv::Duration.apply("00:00:45").as_deref(), Some("45s"));
    }
}
