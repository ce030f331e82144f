//! The operator's URL blocklist, with Synapse's `url_preview_url_blacklist` semantics.
//!
//! A rule maps URL components to patterns; a URL is blocked iff **all** components of **some**
//! rule match. A pattern starting with `^` is a regular expression matched at the start of the
//! component (Python's `re.match`: anchored at the start only); any other pattern is an
//! `fnmatch` glob (`*`, `?`, `[…]`) over the whole component, case-sensitive as on Synapse's
//! POSIX hosts, except that `scheme`, `netloc` and `hostname` globs ignore ASCII case (the URL
//! parser lowercases those, Python's `urlsplit` does not).
//!
//! Components are those of Python's `urlsplit`: `scheme`, `netloc` (`user:pass@host:port`),
//! `hostname`, `port`, `username`, `password`, `path`, `query`, `fragment`, plus `urlparse`'s
//! `params` (after `;` in the last path segment). `query`, `fragment` and `params` are empty
//! when absent (so `*` matches them); `hostname`, `port`, `username` and `password` are absent
//! and then match nothing. Values are those of the parsed URL: percent-encoded, default port
//! omitted, lowercase host.

use std::collections::BTreeMap;

use regex::Regex;
use url::Url;

use crate::glob::Glob;

/// A URL component a rule can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    Scheme,
    Netloc,
    Hostname,
    Port,
    Username,
    Password,
    Path,
    Params,
    Query,
    Fragment,
}

const COMPONENTS: [(&str, Component); 10] = [
    ("scheme", Component::Scheme),
    ("netloc", Component::Netloc),
    ("hostname", Component::Hostname),
    ("port", Component::Port),
    ("username", Component::Username),
    ("password", Component::Password),
    ("path", Component::Path),
    ("params", Component::Params),
    ("query", Component::Query),
    ("fragment", Component::Fragment),
];

impl Component {
    fn value(self, url: &Url) -> Option<String> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        match self {
            Component::Scheme => Some(url.scheme().to_owned()),
            Component::Netloc => {
                let mut netloc = String::new();
                if !url.username().is_empty() || url.password().is_some() {
                    netloc.push_str(url.username());
                    if let Some(password) = url.password() {
                        netloc.push(':');
                        netloc.push_str(password);
                    }
                    netloc.push('@');
                }
                netloc.push_str(url.host_str().unwrap_or_default());
                if let Some(port) = url.port() {
                    netloc.push_str(&format!(":{port}"));
                }
                Some(netloc)
            }
            Component::Hostname => url.host_str().map(|host| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            }),
            Component::Port => url.port().map(|port| port.to_string()),
            Component::Username => non_empty(url.username()),
            Component::Password => url.password().map(str::to_owned),
            Component::Path => Some(url.path().to_owned()),
            Component::Params => {
                let path = url.path();
                let last = path.rfind('/').map_or(0, |i| i + 1);
                Some(
                    path[last..]
                        .split_once(';')
                        .map_or("", |(_, params)| params)
                        .to_owned(),
                )
            }
            Component::Query => Some(url.query().unwrap_or_default().to_owned()),
            Component::Fragment => Some(url.fragment().unwrap_or_default().to_owned()),
        }
    }
}

/// A component's pattern.
#[derive(Debug, Clone)]
enum Pattern {
    Regex(Regex),
    Glob(Glob),
}

/// Why a blocklist rule was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuleError {
    /// The rule has no component, so it would block every URL.
    #[error("a URL blocklist rule needs at least one component")]
    Empty,
    /// A component name that is not one of the supported ones.
    #[error(
        "unknown URL component `{0}` in a URL blocklist rule (expected one of scheme, netloc, \
         hostname, port, username, password, path, params, query, fragment)"
    )]
    UnknownComponent(String),
    /// A `^…` pattern that is not a valid regular expression.
    #[error("invalid regular expression `{pattern}` for `{component}` in a URL blocklist rule: {reason}")]
    BadRegex {
        /// The component it was given for.
        component: String,
        /// The pattern.
        pattern: String,
        /// What the regex compiler said.
        reason: String,
    },
}

/// One blocklist rule: every component must match for the rule to block a URL.
#[derive(Debug, Clone)]
pub struct UrlRule {
    parts: Vec<(Component, Pattern)>,
}

impl UrlRule {
    /// Parses a rule (component → pattern), as written in the configuration.
    pub fn new(parts: &BTreeMap<String, String>) -> Result<Self, RuleError> {
        if parts.is_empty() {
            return Err(RuleError::Empty);
        }
        let parts = parts
            .iter()
            .map(|(name, pattern)| {
                let component = COMPONENTS
                    .iter()
                    .find(|(known, _)| known == name)
                    .map(|&(_, component)| component)
                    .ok_or_else(|| RuleError::UnknownComponent(name.clone()))?;
                let pattern = if pattern.starts_with('^') {
                    // `re.match`: the whole pattern (alternations too) anchored at the start.
                    Pattern::Regex(Regex::new(&format!("^(?:{pattern})")).map_err(|e| {
                        RuleError::BadRegex {
                            component: name.clone(),
                            pattern: pattern.clone(),
                            reason: e.to_string(),
                        }
                    })?)
                } else {
                    let ascii_ci = matches!(
                        component,
                        Component::Scheme | Component::Netloc | Component::Hostname
                    );
                    Pattern::Glob(Glob::fnmatch(pattern, ascii_ci))
                };
                Ok((component, pattern))
            })
            .collect::<Result<_, RuleError>>()?;
        Ok(UrlRule { parts })
    }

    /// Whether every component of this rule matches `url`.
    pub fn matches(&self, url: &Url) -> bool {
        self.parts.iter().all(|(component, pattern)| {
            component.value(url).is_some_and(|value| match pattern {
                Pattern::Regex(regex) => regex.is_match(&value),
                Pattern::Glob(glob) => glob.matches(&value),
            })
        })
    }
}

/// Whether some rule blocks `url`.
pub fn is_blocked(rules: &[UrlRule], url: &Url) -> bool {
    rules.iter().any(|rule| rule.matches(url))
}
