//! Reading a block's generic `name values` lines against the block's schema: unknown names
//! (with a suggestion), repeated single-valued settings and wrong numbers of values are
//! reported here, so each block's resolver only reads what it asked for.

use crate::ast::{Setting, Text};
use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::source::Span;
use std::collections::HashMap;

/// How many values a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arity {
    /// No value: present or not.
    Flag,
    /// Exactly one value.
    One,
    /// Two values on one line (`header "Name" "value"`); may repeat.
    Pair,
    /// One or more comma-separated values; may repeat.
    List,
    /// Comma-separated groups of several values; may repeat.
    Groups,
}

/// The settings a block allows.
pub(crate) type Schema = &'static [(&'static str, Arity)];

/// The settings of one block, by name.
pub(crate) struct Settings<'a> {
    by_name: HashMap<&'static str, Vec<&'a Setting>>,
}

impl<'a> Settings<'a> {
    /// Sorts `settings` by name, reporting problems into `diags`.
    pub(crate) fn read(
        block: &str,
        settings: &'a [Setting],
        schema: Schema,
        diags: &mut Vec<Diagnostic>,
    ) -> Self {
        let mut by_name: HashMap<&'static str, Vec<&'a Setting>> = HashMap::new();
        for s in settings {
            let Some(&(name, arity)) = schema.iter().find(|(n, _)| *n == s.name.value) else {
                let mut d = Diagnostic::new(
                    Code::E015,
                    format!("a {block} has no setting `{}`", s.name.value),
                )
                .primary(s.name.span, "unknown setting");
                d = match did_you_mean(&s.name.value, schema.iter().map(|(n, _)| *n)) {
                    Some(n) => d.help(format!("did you mean `{n}`?")),
                    None => d.help(format!(
                        "a {block} takes: {}",
                        schema
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                diags.push(d);
                continue;
            };
            let values: usize = s.groups.iter().map(Vec::len).sum();
            let ok = match arity {
                Arity::Flag => values == 0,
                Arity::One => values == 1,
                Arity::Pair => s.groups.len() == 1 && values == 2,
                Arity::List => values >= 1 && s.groups.iter().all(|g| g.len() == 1),
                Arity::Groups => values >= 1,
            };
            if !ok {
                let expected = match arity {
                    Arity::Flag => "no value",
                    Arity::One => "exactly one value",
                    Arity::Pair => "two values",
                    Arity::List => "values separated by commas",
                    Arity::Groups => "at least one value",
                };
                diags.push(
                    Diagnostic::new(Code::E014, format!("`{name}` takes {expected}"))
                        .primary(s.span, format!("`{name}` with {values} value(s)"))
                        .help(match arity {
                            Arity::Flag => format!("write `{name}` alone on its line"),
                            Arity::List => {
                                format!("separate the values with commas: `{name} a, b`")
                            }
                            _ => "see docs/language.md for this setting".to_string(),
                        }),
                );
                continue;
            }
            let entry = by_name.entry(name).or_default();
            if matches!(arity, Arity::Flag | Arity::One) {
                if let Some(first) = entry.first() {
                    diags.push(
                        Diagnostic::new(Code::E016, format!("`{name}` is given more than once"))
                            .primary(s.span, "given again here")
                            .secondary(first.span, "first given here")
                            .help("keep one of them"),
                    );
                    continue;
                }
            }
            entry.push(s);
        }
        Settings { by_name }
    }

    /// The single value of a `One` setting.
    pub(crate) fn one(&self, name: &str) -> Option<&'a Text> {
        self.by_name
            .get(name)
            .and_then(|v| v.first())
            .and_then(|s| s.groups.first())
            .and_then(|g| g.first())
    }

    /// The span of a flag, if set.
    pub(crate) fn flag(&self, name: &str) -> Option<Span> {
        self.by_name
            .get(name)
            .and_then(|v| v.first())
            .map(|s| s.name.span)
    }

    /// All values of a `List` setting, across repeats.
    pub(crate) fn list(&self, name: &str) -> Vec<&'a Text> {
        self.groups(name).into_iter().flatten().collect()
    }

    /// All groups of a setting, across repeats.
    pub(crate) fn groups(&self, name: &str) -> Vec<&'a [Text]> {
        self.by_name
            .get(name)
            .map(|v| {
                v.iter()
                    .flat_map(|s| s.groups.iter().map(Vec::as_slice))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the setting was given at all.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}
