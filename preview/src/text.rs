//! Walking a parsed document, and turning its visible text into a description.
//!
//! The walk is iterative (no recursion, so a deeply nested page cannot overflow the stack).
//! The description reproduces Synapse's `parse_html_description` (which text nodes count) and
//! `summarize_paragraphs` (paragraphs until 200 characters, cut at a word boundary before 500
//! with "…"), character for character.

use ego_tree::NodeRef;
use scraper::Node;

/// Elements whose text is never part of a description (Synapse's `TAGS_TO_REMOVE`, plus
/// `template`, whose contents are inert).
const IGNORED_TAGS: [&str; 15] = [
    "head", "header", "nav", "aside", "footer", "script", "noscript", "style", "svg", "iframe",
    "video", "canvas", "img", "picture", "template",
];

/// ARIA roles of elements that are not meant for display (Synapse's `ARIA_ROLES_TO_IGNORE`).
const IGNORED_ROLES: [&str; 4] = ["directory", "menu", "menubar", "toolbar"];

/// Synapse's `summarize_paragraphs` sizes, in characters.
const MIN_SIZE: usize = 200;
const MAX_SIZE: usize = 500;

/// The node after `node` in document order, below `root`; `descend` says whether `node`'s own
/// children are visited.
pub(crate) fn next_node<'a>(
    root: NodeRef<'a, Node>,
    mut node: NodeRef<'a, Node>,
    descend: bool,
) -> Option<NodeRef<'a, Node>> {
    if descend {
        if let Some(child) = node.first_child() {
            return Some(child);
        }
    }
    loop {
        if node.id() == root.id() {
            return None;
        }
        if let Some(sibling) = node.next_sibling() {
            return Some(sibling);
        }
        node = node.parent()?;
    }
}

/// The text nodes below `root` that a reader would see, in document order.
struct VisibleText<'a> {
    root: NodeRef<'a, Node>,
    next: Option<NodeRef<'a, Node>>,
}

impl<'a> Iterator for VisibleText<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        while let Some(node) = self.next {
            let (descend, text) = match node.value() {
                Node::Text(text) => (false, Some(&*text.text)),
                Node::Element(element) => {
                    let hidden = IGNORED_TAGS.contains(&element.name())
                        || element
                            .attr("role")
                            .is_some_and(|role| IGNORED_ROLES.contains(&role));
                    (!hidden, None)
                }
                Node::Document | Node::Fragment => (true, None),
                _ => (false, None),
            };
            self.next = next_node(self.root, node, descend);
            if text.is_some() {
                return text;
            }
        }
        None
    }
}

/// A description from the visible text below `root` (Synapse's `parse_html_description`).
pub(crate) fn describe(root: NodeRef<'_, Node>) -> Option<String> {
    let text = VisibleText {
        root,
        next: Some(root),
    };
    summarize_paragraphs(text.map(|node| node.split_whitespace().collect::<Vec<_>>().join(" ")))
}

fn is_blank(c: char) -> bool {
    matches!(c, '\t' | ' ' | '\r' | '\n')
}

/// Replaces every run of characters matching `class` by `with`.
fn collapse(s: &str, class: fn(char) -> bool, with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars() {
        if class(c) {
            if !in_run {
                out.push_str(with);
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// `re.sub(r"[\t \r\n]*[\r\n]+", "\n\n", s)`: a blank run holding a line break becomes a
/// paragraph break (whatever follows its last line break is kept).
fn paragraph_breaks(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        match run.rfind(['\r', '\n']) {
            Some(last) => {
                out.push_str("\n\n");
                out.push_str(&run[last + 1..]);
            }
            None => out.push_str(run),
        }
        run.clear();
    };
    for c in s.chars() {
        if is_blank(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Synapse's `summarize_paragraphs`: paragraphs are added while the summary is under 200
/// characters; a summary over 500 is cut at a word boundary and ends with "…".
pub(crate) fn summarize_paragraphs<I>(paragraphs: I) -> Option<String>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let mut description = String::new();
    let mut chars = 0;
    for paragraph in paragraphs {
        if chars >= MIN_SIZE {
            break;
        }
        let paragraph = collapse(paragraph.as_ref(), is_blank, " ");
        chars += paragraph.chars().count() + 2;
        description.push_str(&paragraph);
        description.push_str("\n\n");
    }
    let description = collapse(description.trim(), |c| matches!(c, '\t' | ' '), " ");
    let description = paragraph_breaks(&description);
    if description.chars().count() <= MAX_SIZE {
        return (!description.is_empty()).then_some(description);
    }
    // Words with their preceding whitespace (`\s*\S+`), added while they fit.
    let mut summary = String::new();
    let mut summary_chars = 0;
    let mut rest = description.as_str();
    while !rest.is_empty() {
        let start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        let end = rest[start..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |n| start + n);
        if start == end {
            break;
        }
        let word = &rest[..end];
        let word_chars = word.chars().count();
        if word_chars + summary_chars < MAX_SIZE {
            summary.push_str(word);
            summary_chars += word_chars;
        } else {
            if summary_chars < MIN_SIZE {
                summary.push_str(word);
            }
            break;
        }
        rest = &rest[end..];
    }
    let summary = crate::bounds::cut_chars(&summary, MAX_SIZE);
    Some(format!("{}…", summary.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_paragraphs_are_joined_by_blank_lines() {
        assert_eq!(
            summarize_paragraphs(["Hello   world", "", "  second\tline "]).as_deref(),
            // Exactly Synapse's output: a paragraph's own leading space survives.
            Some("Hello world\n\n second line")
        );
        assert_eq!(summarize_paragraphs(["", "  "]), None);
    }

    #[test]
    fn long_text_is_cut_at_a_word_boundary() {
        let words = "lorem ipsum ".repeat(100);
        let summary = summarize_paragraphs([words.as_str()]).unwrap_or_default();
        assert!(
            summary.ends_with("ipsum…") || summary.ends_with("lorem…"),
            "{summary}"
        );
        assert!(summary.chars().count() <= MAX_SIZE + 1);
    }

    #[test]
    fn a_huge_word_is_cut_mid_word() {
        let summary = summarize_paragraphs(["x".repeat(800)]).unwrap_or_default();
        assert_eq!(summary.chars().count(), MAX_SIZE + 1);
    }

    #[test]
    fn paragraph_breaks_keep_what_follows_the_last_break() {
        assert_eq!(paragraph_breaks("a \n\n\n\n b"), "a\n\n b");
        assert_eq!(paragraph_breaks("a  b"), "a  b");
    }
}
