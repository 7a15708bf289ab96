use super::*;

fn fmt(text: &str) -> String {
    let out = format_source(FileId(0), text).unwrap();
    assert_eq!(
        format_source(FileId(0), &out).unwrap(),
        out,
        "not idempotent"
    );
    out
}

#[test]
fn blocks_open_one_statement_per_line() {
    assert_eq!(
        fmt("send-connector \"To Internet\" { address-space *; fqdn edge.contoso.com }"),
        "send-connector \"To Internet\" {\n  address-space *\n  fqdn edge.contoso.com\n}\n"
    );
    assert_eq!(fmt("test \"t\" {  }\n"), "test \"t\" {}\n");
}

#[test]
fn comments_stay_where_they_were() {
    let src = "# head\n\n\n\nrule \"a\" {   # open\n\tstop   # why\n  # end\n} # after\n# tail\n";
    assert_eq!(
        fmt(src),
        "# head\n\nrule \"a\" { # open\n  stop # why\n  # end\n} # after\n\n# tail\n"
    );
}

#[test]
fn a_comment_in_an_empty_block_keeps_it_open() {
    assert_eq!(
        fmt("test \"t\" {\n# nothing yet\n}"),
        "test \"t\" {\n  # nothing yet\n}\n"
    );
}

#[test]
fn lists_fill_the_line_and_break_where_a_comment_is() {
    let ranges: Vec<String> = (0..20).map(|i| format!("10.{i}.0.0/16")).collect();
    let src = format!(
        "receive-connector \"a\" {{\n remote {}\n}}\n",
        ranges.join(",   ")
    );
    let out = fmt(&src);
    for line in out.lines() {
        assert!(line.chars().count() <= WIDTH, "{line}");
    }
    assert!(out.contains("\n    10."), "{out}");
    let src = "rewrite *.a.com -> a.com except b.a.com, # legal\n c.a.com,\n # finance\n d.a.com\n";
    assert_eq!(
        fmt(src),
        "rewrite *.a.com -> a.com except b.a.com, # legal\n  c.a.com,\n  # finance\n  d.a.com\n"
    );
}

#[test]
fn blank_lines_collapse_and_surround_blocks() {
    let src = "accepted-domain a.com\n\n\n\naccepted-domain b.com\naccepted-domain c.com\n# the relay\nreceive-connector \"r\" {\n\n  tls off\n\n\n  auth anonymous\n\n}\naccepted-domain d.com\n";
    assert_eq!(
        fmt(src),
        "accepted-domain a.com\n\naccepted-domain b.com\naccepted-domain c.com\n\n# the relay\nreceive-connector \"r\" {\n  tls off\n\n  auth anonymous\n}\n\naccepted-domain d.com\n"
    );
}

#[test]
fn crlf_stays_crlf_and_tokens_stay_as_written() {
    let src = "rule \"x\" {\r\n\tset-header \"X-A\"    \"C:\\\\ \\q\"\r\n}\r\n";
    assert_eq!(
        fmt(src),
        "rule \"x\" {\r\n  set-header \"X-A\" \"C:\\\\ \\q\"\r\n}\r\n"
    );
    assert_eq!(fmt(""), "");
    assert_eq!(fmt("\n\n  # only\n\n"), "# only\n");
}

#[test]
fn a_syntax_error_is_reported_not_formatted() {
    let err = format_source(FileId(0), "rule \"x\" {\n  explode\n}\n").unwrap_err();
    match err {
        FormatError::Syntax(d) => assert_eq!(d[0].code.id(), "E001"),
        FormatError::Unsafe(e) => panic!("{e}"),
    }
}

#[test]
fn the_safety_net_refuses_a_changed_output() {
    let src = "# a\nrule \"x\" {\n  stop\n}\n";
    let (tree, _) = parse_file(FileId(0), src);
    assert!(verify::check(src, &tree, src).is_ok());
    let dropped = verify::check(src, &tree, "rule \"x\" {\n  stop\n}\n").unwrap_err();
    assert!(dropped.contains("comments"), "{dropped}");
    let changed = verify::check(src, &tree, "# a\nrule \"x\" {\n  delete\n}\n").unwrap_err();
    assert!(changed.contains("item 1"), "{changed}");
    let quoted = verify::check(src, &tree, "# a\nrule x {\n  stop\n}\n").unwrap_err();
    assert!(quoted.contains("does not parse"), "{quoted}");
}

#[test]
fn verify_recipients_is_kept_after_the_domain_type() {
    assert_eq!(
        fmt("accepted-domain   t.example\tinternal-relay    verify-recipients\n"),
        "accepted-domain t.example internal-relay verify-recipients\n"
    );
    // The keyword alone is not taken for a type (check says W023 about it).
    assert_eq!(
        fmt("accepted-domain t.example  verify-recipients\n"),
        "accepted-domain t.example verify-recipients\n"
    );
}
