//! The URL blocklist: globs, `^` regexes, all-components rules, errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use media_ledger_preview::{is_blocked, RuleError, UrlRule};
use url::Url;

fn rule(parts: &[(&str, &str)]) -> Result<UrlRule, RuleError> {
    let parts: BTreeMap<String, String> = parts
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    UrlRule::new(&parts)
}

fn blocked(rules: &[UrlRule], s: &str) -> bool {
    is_blocked(rules, &Url::parse(s).unwrap())
}

#[test]
fn glob_on_netloc() {
    let rules = [rule(&[("netloc", "*.example.com")]).unwrap()];
    assert!(blocked(&rules, "https://www.example.com/"));
    assert!(
        blocked(&rules, "http://a.b.EXAMPLE.com/x"),
        "hosts are case-insensitive"
    );
    assert!(
        !blocked(&rules, "https://example.com/"),
        "`*.` needs a subdomain"
    );
    assert!(
        !blocked(&rules, "https://www.example.com:8443/"),
        "netloc includes the port"
    );
    assert!(!blocked(&rules, "https://example.com.evil.org/"));
    let rules = [rule(&[("netloc", "example.com")]).unwrap()];
    assert!(blocked(&rules, "https://example.com/a"));
    assert!(
        !blocked(&rules, "https://user@example.com/a"),
        "netloc includes userinfo"
    );
    let rules = [rule(&[("hostname", "example.co?")]).unwrap()];
    assert!(blocked(&rules, "https://user:pw@example.com:8443/a"));
}

#[test]
fn regex_on_path_is_anchored_at_the_start() {
    let rules = [rule(&[("path", "^/private")]).unwrap()];
    assert!(blocked(&rules, "https://example.com/private"));
    assert!(blocked(&rules, "https://example.com/private/docs?x=1"));
    assert!(!blocked(&rules, "https://example.com/public/private"));
    // Python's `re.match` anchors an alternation as a whole.
    let rules = [rule(&[("path", "^/a|/b")]).unwrap()];
    assert!(blocked(&rules, "https://example.com/b"));
    assert!(!blocked(&rules, "https://example.com/x/b"));
    // Globs match the whole component, and are case-sensitive outside the host.
    let rules = [rule(&[("path", "/files/*.pdf")]).unwrap()];
    assert!(blocked(&rules, "https://example.com/files/a/b.pdf"));
    assert!(!blocked(&rules, "https://example.com/files/b.PDF"));
}

#[test]
fn every_component_of_a_rule_must_match() {
    let rules = [rule(&[
        ("netloc", "example.com"),
        ("path", "^/admin"),
        ("query", "*token=*"),
    ])
    .unwrap()];
    assert!(blocked(&rules, "https://example.com/admin?token=1"));
    assert!(!blocked(&rules, "https://example.com/admin"));
    assert!(!blocked(&rules, "https://example.com/user?token=1"));
    assert!(!blocked(&rules, "https://other.com/admin?token=1"));
}

#[test]
fn some_rule_suffices() {
    let rules = [
        rule(&[("netloc", "a.example")]).unwrap(),
        rule(&[("netloc", "b.example")]).unwrap(),
    ];
    assert!(blocked(&rules, "https://a.example/"));
    assert!(blocked(&rules, "https://b.example/"));
    assert!(!blocked(&rules, "https://c.example/"));
    assert!(!blocked(&[], "https://a.example/"));
}

#[test]
fn scheme_rule() {
    let rules = [rule(&[("scheme", "http")]).unwrap()];
    assert!(blocked(&rules, "http://example.com/"));
    assert!(blocked(&rules, "HTTP://example.com/"));
    assert!(!blocked(&rules, "https://example.com/"));
}

#[test]
fn optional_components() {
    // Absent user/password/port match nothing; absent query/fragment/params are empty.
    let rules = [rule(&[("username", "*")]).unwrap()];
    assert!(!blocked(&rules, "https://example.com/"));
    assert!(blocked(&rules, "https://admin@example.com/"));
    let rules = [rule(&[("password", "secret")]).unwrap()];
    assert!(blocked(&rules, "https://u:secret@example.com/"));
    let rules = [rule(&[("port", "8*")]).unwrap()];
    assert!(blocked(&rules, "https://example.com:8080/"));
    assert!(!blocked(&rules, "https://example.com/"));
    let rules = [
        rule(&[("fragment", "*")]).unwrap(),
        rule(&[("query", "")]).unwrap(),
    ];
    assert!(blocked(&rules, "https://example.com/"));
    let rules = [rule(&[("fragment", "top")]).unwrap()];
    assert!(blocked(&rules, "https://example.com/#top"));
    let rules = [rule(&[("params", "type=*")]).unwrap()];
    assert!(blocked(&rules, "https://example.com/a;type=i"));
    assert!(!blocked(&rules, "https://example.com/a;b/c"));
}

#[test]
fn invalid_rules_are_errors_with_clear_messages() {
    let err = rule(&[("path", "^/(unclosed")]).unwrap_err();
    assert!(matches!(err, RuleError::BadRegex { .. }));
    let message = err.to_string();
    assert!(
        message.contains("^/(unclosed") && message.contains("path"),
        "{message}"
    );

    let err = rule(&[("host", "example.com")]).unwrap_err();
    assert!(matches!(&err, RuleError::UnknownComponent(c) if c == "host"));
    assert!(err.to_string().contains("netloc"));

    assert!(matches!(rule(&[]), Err(RuleError::Empty)));
}
