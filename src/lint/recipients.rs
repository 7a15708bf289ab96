//! Lints of recipients (being written).

use crate::diagnostic::Diagnostic;
use crate::model::RuleSet;

pub(super) fn check(_set: &RuleSet, _out: &mut Vec<Diagnostic>) {}
