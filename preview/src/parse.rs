//! Driving html5ever, with a guard that keeps the cost of hostile nesting linear.
//!
//! html5ever checks element scopes by walking its stack of open elements, so a page that is
//! just `<div>` repeated makes it quadratic (50 000 nested `<div>`s: minutes in a debug
//! build). A fetched page is untrusted, so tokens pass through a [`Guard`] first: it models the
//! stack of open elements and, once [`MAX_DEPTH`] containers are open, drops further container
//! start tags (as browsers cap their DOM depth). Text, void elements (`<meta>`, `<img>`,
//! `<link>`…), raw-text elements (`<title>`, `<script>`…) and end tags always pass, so what a
//! preview reads is still seen. Ordinary pages never come near the limit.

use std::cell::{Cell, RefCell};

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::{
    BufferQueue, EndTag, StartTag, Tag, TagToken, Token, TokenSink, TokenSinkResult, Tokenizer,
    TokenizerOpts,
};
use html5ever::tree_builder::{TreeBuilder, TreeBuilderOpts, TreeSink};
use html5ever::{LocalName, TokenizerResult};
use scraper::{Html, HtmlTreeSink};

/// At most this many containers are modelled open at once.
const MAX_DEPTH: usize = 256;

/// Start tags that never deepen the tree: void and raw-text elements, the document's own
/// `html`/`head`/`body`, and elements that implicitly close one of their kind wherever it is
/// open in scope (`<p>`, `<li>`, `<td>`, `<a>`…) rather than nest in it. Headings, `<option>`
/// and the ruby elements close one of their kind only when it is the current node, so they
/// can nest through another element (`<h1><option><h1>…`): they are containers, modelled by
/// [`sibling_class`].
#[rustfmt::skip]
const FLAT: &[&str] = &[
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "img", "input",
    "keygen", "link", "meta", "param", "source", "track", "wbr", "image", "script", "style",
    "title", "textarea", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext", "html",
    "head", "body", "p", "li", "dt", "dd", "tr", "td", "th", "tbody", "thead", "tfoot",
    "caption", "colgroup", "a", "nobr", "button", "form", "select",
];

/// Elements that close the current node when it is of their class (headings; `option` and
/// `optgroup`; the ruby annotations) instead of nesting in it: 0 for any other element.
fn sibling_class(name: &str) -> u8 {
    match name {
        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => 1,
        "option" | "optgroup" => 2,
        "rb" | "rt" | "rp" | "rtc" => 3,
        _ => 0,
    }
}

/// Start tags that make the tree builder leave foreign (`svg`/`math`) content.
#[rustfmt::skip]
const BREAKOUT: &[&str] = &[
    "b", "big", "blockquote", "body", "br", "center", "code", "dd", "div", "dl", "dt", "em",
    "embed", "h1", "h2", "h3", "h4", "h5", "h6", "head", "hr", "i", "img", "li", "listing",
    "menu", "meta", "nobr", "ol", "p", "pre", "ruby", "s", "small", "span", "strong", "strike",
    "sub", "sup", "table", "tt", "u", "ul", "var",
];

/// The HTML "special" elements a container can be (an end tag of an ordinary element is
/// ignored when one of these is open inside it).
#[rustfmt::skip]
const SPECIAL: &[&str] = &[
    "address", "applet", "article", "aside", "blockquote", "button", "caption", "center",
    "colgroup", "dd", "details", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure",
    "footer", "form", "frameset", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "li",
    "listing", "main", "marquee", "menu", "nav", "object", "ol", "p", "pre", "search", "section",
    "select", "summary", "table", "tbody", "td", "template", "tfoot", "th", "thead", "tr", "ul",
];

/// Scope boundaries: an end tag of a special element is ignored when one of these is open
/// inside it.
#[rustfmt::skip]
const SCOPE: &[&str] = &[
    "applet", "caption", "html", "table", "td", "th", "marquee", "object", "template",
];

/// Formatting elements: closed implicitly, the tree builder may re-open them later.
#[rustfmt::skip]
const FORMATTING: &[&str] = &[
    "b", "big", "code", "em", "font", "i", "s", "small", "strike", "strong", "tt", "u",
];

/// Parses a whole document.
pub(crate) fn document(html: &str) -> Html {
    let builder = TreeBuilder::new(
        HtmlTreeSink::new(Html::new_document()),
        TreeBuilderOpts::default(),
    );
    let guard = Guard::new(builder);
    let tokenizer = Tokenizer::new(guard, TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // Feed until all input is consumed (it stops at scripts and encoding indicators).
    while !matches!(tokenizer.feed(&input), TokenizerResult::Done) {}
    tokenizer.end();
    tokenizer.sink.inner.sink.finish()
}

/// The namespace an open element is modelled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    Html,
    Svg,
    MathMl,
}

/// A token filter in front of the tree builder (see the module docs).
struct Guard<S> {
    inner: S,
    /// The modelled stack of open containers.
    open: RefCell<Vec<(LocalName, Ns)>>,
    /// Formatting elements closed implicitly (the tree builder may reconstruct them).
    lingering: Cell<usize>,
}

/// The namespace `svg` and `math` open, whatever the context.
fn foreign_root(name: &str) -> Option<Ns> {
    match name {
        "svg" => Some(Ns::Svg),
        "math" => Some(Ns::MathMl),
        _ => None,
    }
}

/// Whether the tree builder applies foreign-content rules below the top of `open`: a foreign
/// element that is not an HTML (or MathML text) integration point. `annotation-xml` counts as
/// foreign (an over-estimate is safe, an under-estimate is not).
fn in_foreign(open: &[(LocalName, Ns)]) -> bool {
    match open.last() {
        Some((name, Ns::Svg)) => !matches!(&**name, "foreignobject" | "desc" | "title"),
        Some((name, Ns::MathMl)) => !matches!(&**name, "mi" | "mo" | "mn" | "ms" | "mtext"),
        _ => false,
    }
}

impl<S> Guard<S> {
    fn new(inner: S) -> Self {
        Guard {
            inner,
            open: RefCell::new(Vec::new()),
            lingering: Cell::new(0),
        }
    }

    /// Whether a start tag goes through (and the model updated).
    fn admit(&self, tag: &Tag) -> bool {
        let name = &*tag.name;
        let mut open = self.open.borrow_mut();
        if in_foreign(&open) && BREAKOUT.contains(&name) {
            // The tree builder leaves foreign content before handling this tag.
            while in_foreign(&open) {
                open.pop();
            }
        }
        let foreign = in_foreign(&open);
        // In foreign content every element nests unless it closes itself.
        let flat = if foreign {
            tag.self_closing
        } else {
            FLAT.contains(&name) || (tag.self_closing && foreign_root(name).is_some())
        };
        if flat {
            return true;
        }
        let class = sibling_class(name);
        if !foreign
            && class != 0
            && open
                .last()
                .is_some_and(|(top, ns)| *ns == Ns::Html && sibling_class(top) == class)
        {
            open.pop();
        }
        if open.len() + self.lingering.get() >= MAX_DEPTH {
            return false;
        }
        let ns = match (foreign_root(name), open.last()) {
            (Some(root), _) => root,
            (None, Some(&(_, parent))) if foreign => parent,
            (None, _) => Ns::Html,
        };
        open.push((tag.name.clone(), ns));
        true
    }

    /// Closes the innermost open `name` and whatever is open inside it, unless the tree
    /// builder would ignore the end tag: an ordinary element's when a special element is open
    /// inside it, a special element's when a scope boundary is (or anything foreign is: the
    /// model errs towards depth, never below it).
    fn close(&self, tag: &Tag) {
        let mut open = self.open.borrow_mut();
        let Some(at) = open.iter().rposition(|(name, _)| *name == tag.name) else {
            if FORMATTING.contains(&&*tag.name) {
                self.lingering.set(self.lingering.get().saturating_sub(1));
            }
            return;
        };
        let blockers: &[&str] = if SPECIAL.contains(&&*tag.name) {
            SCOPE
        } else {
            SPECIAL
        };
        if open[at + 1..]
            .iter()
            .any(|(name, ns)| *ns != Ns::Html || blockers.contains(&&**name))
        {
            return;
        }
        let implicit = open[at + 1..]
            .iter()
            .filter(|(name, _)| FORMATTING.contains(&&**name))
            .count();
        self.lingering.set(self.lingering.get() + implicit);
        open.truncate(at);
    }
}

impl<S: TokenSink> TokenSink for Guard<S> {
    type Handle = S::Handle;

    fn process_token(&self, token: Token, line_number: u64) -> TokenSinkResult<S::Handle> {
        if let TagToken(tag) = &token {
            match tag.kind {
                StartTag if !self.admit(tag) => return TokenSinkResult::Continue,
                StartTag => {}
                EndTag => self.close(tag),
            }
        }
        self.inner.process_token(token, line_number)
    }

    fn end(&self) {
        self.inner.end();
    }

    fn adjusted_current_node_present_but_not_in_html_namespace(&self) -> bool {
        self.inner
            .adjusted_current_node_present_but_not_in_html_namespace()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(html: &Html) -> usize {
        html.tree
            .nodes()
            .map(|node| node.ancestors().count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn ordinary_documents_parse_as_html5ever_does() {
        let html = "<!doctype html><title>T</title><div><p>a<p>b<ul><li>x<li>y</ul>\
                    <table><tr><td>1<td>2</table><svg><path/><path/></svg></div>";
        assert_eq!(document(html), Html::parse_document(html));
    }

    /// Tag soup with fewer start tags than the cap: the guard must be invisible.
    fn soup() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let tag = prop::sample::select(vec![
            "div",
            "p",
            "li",
            "ul",
            "b",
            "i",
            "a",
            "table",
            "tr",
            "td",
            "svg",
            "math",
            "g",
            "title",
            "script",
            "style",
            "h1",
            "span",
            "template",
            "select",
            "option",
            "font",
            "textarea",
            "meta",
            "img",
            "link",
            "foreignObject",
            "noscript",
            "plaintext",
        ]);
        let piece = (tag, 0..4u8, "[a-z &<>/\"]{0,6}").prop_map(|(tag, kind, text)| match kind {
            0 => format!("<{tag}>{text}"),
            1 => format!("</{tag}>{text}"),
            2 => format!("<{tag}/>{text}"),
            _ => format!("<{tag} x='{text}'>"),
        });
        prop::collection::vec(piece, 0..120).prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        #[test]
        fn the_guard_is_invisible_below_the_cap(html in soup()) {
            proptest::prop_assert_eq!(document(&html), Html::parse_document(&html));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn repeated_soup_stays_shallow(unit in soup()) {
            let doc = document(&unit.repeat(40_000 / (unit.len() + 1)));
            proptest::prop_assert!(depth(&doc) < 4 * MAX_DEPTH + 16, "{}", depth(&doc));
        }
    }

    #[test]
    fn hostile_nesting_is_capped() {
        let html = "<div>".repeat(20_000) + "<meta property=og:title content=deep>text";
        let doc = document(&html);
        assert!(depth(&doc) < MAX_DEPTH + 10, "{}", depth(&doc));
        let text: String = doc.root_element().text().collect();
        assert_eq!(text, "text");
        for (unit, bound) in [
            ("<b>x</p>", 2),
            ("<div><b a=1><b a=2><b a=3></div>t", 4),
            ("<svg><title>", 2),
            ("<svg><desc><div>", 2),
            ("<h1><span>", 2),
            ("<option x=''><h1/>", 4),
            ("<rt><rt><b>", 4),
            ("<table><td>", 4),
            ("<ul><li>", 2),
            ("<svg/><span>", 2),
            ("<svg><desc><g><p>", 3),
            ("<math><mi><svg><foreignobject><div>", 3),
            ("<svg><g><div>", 2),
            ("<math><title>", 2),
            ("<math><annotation-xml><title>", 2),
            ("<svg><mi><title><mi>", 2),
        ] {
            let doc = document(&unit.repeat(5_000));
            assert!(
                depth(&doc) < bound * MAX_DEPTH + 10,
                "{unit}: {}",
                depth(&doc)
            );
        }
    }
}
