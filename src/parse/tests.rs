use super::*;
use crate::diagnostic::Code;
use crate::source::SourceMap;

fn parse(text: &str) -> (File, Vec<Diagnostic>) {
    let mut map = SourceMap::new();
    let id = map.add("t.mailflow", text.to_string());
    parse_file(id, text)
}

#[test]
fn parses_every_construct() {
    let src = r#"# shared domain
include "other.mailflow"
import rewrites "entries.csv"
accepted-domain example.com authoritative
receive-connector "From EOP" {
  remote 40.92.0.0/15, 52.100.0.0/14
  tls required
}
send-connector "To Internet" { address-space * cost 1, example.com cost 5 }
rewrite "John" john@t1.example.com -> john@example.com
rewrite *.contoso.com -> contoso.com outbound-only except legal.contoso.com,
    corp.contoso.com
contact "Officers" { address officers@example.org; external o@x.onmicrosoft.com; hidden }
deleted mail-user "Blog" {
  address blog@example.com
}
rule "Drop" {
  priority 3
  if sender outside
  if recipient contains "example.com", "x"
  except header "X-Foo" matches "^a"
  reject 550 5.7.1 "no"
  set-header "X-Tag" "yes"
}
test "t" {
  from a@b.com
  to c@example.com
  expect delivered c@example.com via "To Internet"
  expect rejected 550 5.1.1 for x@example.com
  expect fired "Drop"
}
"#;
    let (file, diags) = parse(src);
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(file.items.len(), 11);
    let Item::Rewrite(r) = &file.items[6] else {
        panic!()
    };
    assert_eq!(r.exceptions.len(), 2);
    assert!(r.outbound_only.is_some());
    let Item::Rule(rule) = &file.items[9] else {
        panic!()
    };
    assert_eq!(rule.statements.len(), 6);
    let Item::Test(t) = &file.items[10] else {
        panic!()
    };
    assert_eq!(t.expectations.len(), 3);
    let ExpectationKind::Rejected {
        code,
        enhanced,
        recipients,
    } = &t.expectations[1].kind
    else {
        panic!()
    };
    assert_eq!(code.value, "550");
    assert_eq!(enhanced.as_ref().unwrap().value, "5.1.1");
    assert_eq!(recipients.len(), 1);
}

#[test]
fn one_bad_item_does_not_hide_the_others() {
    let src = "rewrite a@b.com => c@d.com\nrule \"x\" {\n  if sender nowhere\n  stop\n}\nrewrite a.com -> b.com\n";
    let (file, diags) = parse(src);
    assert_eq!(diags.len(), 2, "{diags:#?}");
    assert!(diags.iter().all(|d| d.code == Code::E001));
    assert_eq!(file.items.len(), 1);
    assert_eq!(file.broken[1].keyword, "rule");
    assert_eq!(file.broken[1].name.as_deref(), Some("x"));
}

#[test]
fn strings_unescape_quotes_and_backslashes_only() {
    let (file, diags) = parse("rule \"a \\\"b\\\" \\\\ \\w\" { stop }\n");
    assert!(diags.is_empty(), "{diags:#?}");
    let Item::Rule(r) = &file.items[0] else {
        panic!()
    };
    assert_eq!(r.name.value, "a \"b\" \\ \\w");
}

#[test]
fn big_files_parse_in_parallel_segments_in_order() {
    let mut src = String::new();
    for i in 0..20_000 {
        src.push_str(&format!(
            "rewrite \"U{i}\" u{i}@t.example.com -> u{i}@example.com\n"
        ));
        if i == 7_000 || i == 15_000 {
            src.push_str("rewrite broken => here\n");
        }
    }
    assert!(src.len() > super::PARALLEL_THRESHOLD);
    let (file, diags) = parse(&src);
    assert_eq!(diags.len(), 2);
    assert_eq!(file.items.len(), 20_000);
    let names: Vec<&str> = file
        .items
        .iter()
        .map(|i| match i {
            Item::Rewrite(r) => r.name.as_ref().unwrap().value.as_str(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(names[0], "U0");
    assert_eq!(names[19_999], "U19999");
    assert!(names.windows(2).all(|w| w[0] != w[1]));
}
