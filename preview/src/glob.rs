//! Glob patterns, shared by the oEmbed provider schemes and the URL blocklist rules.
//!
//! Two dialects compile to the same tokens: Python's `fnmatch` (`*`, `?`, `[…]`, `[!…]`; used
//! by the blocklist) and Synapse's oEmbed URL globs (`*` is one or more characters, and only
//! domain-label characters inside the host). Matching is a set-of-states simulation: linear in
//! the text for each pattern token, so no pattern can make it backtrack exponentially.

/// A character class.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    /// Any character.
    Any,
    /// `[a-zA-Z0-9_-]` (Synapse's replacement for `*` inside an oEmbed host).
    DomainLabel,
    /// `[…]`: inclusive ranges (a single character is a range of one), maybe negated.
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Class {
    fn matches(&self, c: char, ascii_ci: bool) -> bool {
        match self {
            Class::Any => true,
            Class::DomainLabel => c.is_ascii_alphanumeric() || c == '_' || c == '-',
            Class::Set { negated, ranges } => {
                let hit = |c: char| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                let found = hit(c)
                    || (ascii_ci && (hit(c.to_ascii_lowercase()) || hit(c.to_ascii_uppercase())));
                found != *negated
            }
        }
    }
}

/// One pattern token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// This exact character.
    Literal(char),
    /// One character of the class.
    One(Class),
    /// Any run (possibly empty) of characters of the class.
    Star(Class),
}

/// A compiled glob, matched against a whole string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    tokens: Vec<Token>,
    ascii_ci: bool,
}

impl Glob {
    /// Python's `fnmatch` dialect; `ascii_ci` makes it ASCII case-insensitive.
    pub(crate) fn fnmatch(pattern: &str, ascii_ci: bool) -> Glob {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => tokens.push(Token::Star(Class::Any)),
                '?' => tokens.push(Token::One(Class::Any)),
                '[' => match parse_set(&chars[i + 1..]) {
                    Some((class, used)) => {
                        tokens.push(Token::One(class));
                        i += used;
                    }
                    None => tokens.push(Token::Literal('[')),
                },
                c => tokens.push(Token::Literal(c)),
            }
            i += 1;
        }
        Glob { tokens, ascii_ci }
    }

    /// Synapse's oEmbed URL glob (`_glob_to_pattern`): the scheme must be literally `http` or
    /// `https`; in the host `*` is one or more `[a-zA-Z0-9_-]`, elsewhere one or more of
    /// anything; every other character is literal. `None` for any other scheme.
    pub(crate) fn oembed(glob: &str) -> Option<Glob> {
        let (scheme, rest) = glob.split_once("://")?;
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let mut tokens: Vec<Token> = scheme
            .chars()
            .chain("://".chars())
            .map(Token::Literal)
            .collect();
        for (i, c) in rest.char_indices() {
            match c {
                '*' => {
                    let class = if i < host_end {
                        Class::DomainLabel
                    } else {
                        Class::Any
                    };
                    tokens.push(Token::One(class.clone()));
                    tokens.push(Token::Star(class));
                }
                c => tokens.push(Token::Literal(c)),
            }
        }
        Some(Glob {
            tokens,
            ascii_ci: false,
        })
    }

    /// Whether the glob matches the whole of `text`.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let n = self.tokens.len();
        // `states[j]`: the first `j` tokens can match the text read so far.
        let mut states = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        states[0] = true;
        self.close(&mut states);
        for c in text.chars() {
            next.fill(false);
            for (j, token) in self.tokens.iter().enumerate() {
                if !states[j] {
                    continue;
                }
                match token {
                    Token::Literal(l) => {
                        let same = *l == c || (self.ascii_ci && l.eq_ignore_ascii_case(&c));
                        next[j + 1] |= same;
                    }
                    Token::One(class) => next[j + 1] |= class.matches(c, self.ascii_ci),
                    Token::Star(class) => next[j] |= class.matches(c, self.ascii_ci),
                }
            }
            self.close(&mut next);
            std::mem::swap(&mut states, &mut next);
            if !states.contains(&true) {
                return false;
            }
        }
        states[n]
    }

    /// Lets every reached `*` also match nothing.
    fn close(&self, states: &mut [bool]) {
        for (j, token) in self.tokens.iter().enumerate() {
            if states[j] && matches!(token, Token::Star(_)) {
                states[j + 1] = true;
            }
        }
    }
}

/// A `[…]` set after its `[`: the class and how many characters it used (including `]`), or
/// `None` when it is not closed (then `[` is literal, as in `fnmatch`).
fn parse_set(chars: &[char]) -> Option<(Class, usize)> {
    let mut i = 0;
    let negated = chars.first() == Some(&'!');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Class::Set { negated, ranges }, i + 1));
        }
        first = false;
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                if c <= hi {
                    ranges.push((c, hi));
                }
                i += 3;
            }
            _ => {
                ranges.push((c, c));
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_dialect() {
        let glob = |p: &str, t: &str| Glob::fnmatch(p, false).matches(t);
        assert!(glob("*.example.com", "a.b.example.com"));
        assert!(!glob("*.example.com", "example.com"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("[a-c]x", "bx"));
        assert!(!glob("[!a-c]x", "bx"));
        assert!(glob("[]]", "]"));
        assert!(glob("[x", "[x"));
        assert!(glob("a-[0-9]-z", "a-5-z"));
        assert!(!glob("ABC", "abc"));
        assert!(Glob::fnmatch("*.EXAMPLE.com", true).matches("www.example.COM"));
    }

    #[test]
    fn oembed_dialect() {
        let glob = |p: &str, t: &str| Glob::oembed(p).is_some_and(|g| g.matches(t));
        assert!(glob(
            "https://*.youtube.com/watch*",
            "https://www.youtube.com/watch?v=x"
        ));
        assert!(!glob(
            "https://*.youtube.com/watch*",
            "https://www.youtube.com/watch"
        ));
        assert!(!glob(
            "https://*.youtube.com/watch*",
            "https://a.b.youtube.com/watch?v=1"
        ));
        assert!(!glob(
            "https://*.youtube.com/watch*",
            "http://www.youtube.com/watch?v=1"
        ));
        assert!(glob("https://vimeo.com/*?x=*", "https://vimeo.com/1?x=2"));
        assert!(Glob::oembed("spotify:*").is_none());
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a".repeat(50);
        let text = "a".repeat(10_000) + "b";
        assert!(!Glob::fnmatch(&pattern, false).matches(&text));
    }
}
