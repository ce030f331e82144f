//! Decoding an HTML body to text: which charset applies, and the decoding itself.
//!
//! The order is: a byte-order mark, then the `charset` of the `Content-Type` header, then a
//! `<meta charset>` / `<meta http-equiv="Content-Type" content="…charset=…">` found in the first
//! 1024 bytes (the WHATWG prescan, byte for byte), else UTF-8. A label `encoding_rs` does not
//! know (or the `replacement` encoding) falls through to the next source. Decoding never fails:
//! malformed bytes become U+FFFD.

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8, WINDOWS_1252, X_USER_DEFINED};

/// How far into the body the `<meta>` prescan looks.
const PRESCAN_BYTES: usize = 1024;

/// Decodes an HTML body to text (see the module docs for the charset order).
pub fn decode_html(body: &[u8], content_type: Option<&str>) -> String {
    if let Some((encoding, bom)) = Encoding::for_bom(body) {
        return encoding
            .decode_without_bom_handling(&body[bom..])
            .0
            .into_owned();
    }
    html_encoding(body, content_type)
        .decode_without_bom_handling(body)
        .0
        .into_owned()
}

/// The encoding [`decode_html`] uses for `body`.
pub fn html_encoding(body: &[u8], content_type: Option<&str>) -> &'static Encoding {
    if let Some((encoding, _)) = Encoding::for_bom(body) {
        return encoding;
    }
    content_type
        .and_then(|header| extract_charset(header.as_bytes()))
        .or_else(|| prescan(&body[..body.len().min(PRESCAN_BYTES)]))
        .unwrap_or(UTF_8)
}

/// The encoding a label names, unless unknown or `replacement`.
fn usable(label: &[u8]) -> Option<&'static Encoding> {
    Encoding::for_label(label).filter(|encoding| encoding.name() != "replacement")
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

fn starts_with_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len() && haystack[..needle.len()].eq_ignore_ascii_case(needle)
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| at + from)
}

/// The WHATWG "algorithm for extracting a character encoding from a meta element", also
/// applied to the `Content-Type` header (`text/html; charset="…"`).
fn extract_charset(s: &[u8]) -> Option<&'static Encoding> {
    let mut pos = 0;
    loop {
        let at = (pos..s.len().saturating_sub(6))
            .find(|&i| starts_with_ignore_case(&s[i..], b"charset"))?;
        pos = at + 7;
        while s.get(pos).is_some_and(|&b| is_space(b)) {
            pos += 1;
        }
        if s.get(pos) != Some(&b'=') {
            continue;
        }
        pos += 1;
        while s.get(pos).is_some_and(|&b| is_space(b)) {
            pos += 1;
        }
        return match *s.get(pos)? {
            quote @ (b'"' | b'\'') => {
                let end = s[pos + 1..].iter().position(|&b| b == quote)?;
                usable(&s[pos + 1..pos + 1 + end])
            }
            _ => {
                let end = s[pos..]
                    .iter()
                    .position(|&b| is_space(b) || b == b';')
                    .map_or(s.len(), |n| pos + n);
                usable(&s[pos..end])
            }
        };
    }
}

/// The WHATWG "prescan a byte stream to determine its encoding", over at most 1024 bytes.
fn prescan(b: &[u8]) -> Option<&'static Encoding> {
    let mut pos = 0;
    while pos < b.len() {
        let rest = &b[pos..];
        if rest.starts_with(b"<!--") {
            pos = find(b, pos + 2, b"-->")? + 3;
            continue;
        }
        if starts_with_ignore_case(rest, b"<meta")
            && rest.get(5).is_some_and(|&c| is_space(c) || c == b'/')
        {
            pos += 6;
            if let Some(encoding) = meta_charset(b, &mut pos) {
                return Some(encoding);
            }
        } else if rest.first() == Some(&b'<')
            && (rest.get(1).is_some_and(u8::is_ascii_alphabetic)
                || (rest.get(1) == Some(&b'/') && rest.get(2).is_some_and(u8::is_ascii_alphabetic)))
        {
            while b.get(pos).is_some_and(|&c| !is_space(c) && c != b'>') {
                pos += 1;
            }
            while attribute(b, &mut pos).is_some() {}
        } else if rest.starts_with(b"<!") || rest.starts_with(b"</") || rest.starts_with(b"<?") {
            pos = find(b, pos + 1, b">")?;
        }
        pos += 1;
    }
    None
}

/// The attributes of one `<meta …>`: its charset, if it declares a usable one.
fn meta_charset(b: &[u8], pos: &mut usize) -> Option<&'static Encoding> {
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut got_pragma = false;
    let mut need_pragma = None;
    // `None`: no charset seen yet; `Some(None)`: a label that names no usable encoding.
    let mut charset: Option<Option<&'static Encoding>> = None;
    while let Some((name, value)) = attribute(b, pos) {
        if seen.contains(&name) {
            continue;
        }
        match name.as_slice() {
            b"http-equiv" => got_pragma |= value == b"content-type",
            b"content" if charset.is_none() => {
                if let Some(encoding) = extract_charset(&value) {
                    charset = Some(Some(encoding));
                    need_pragma = Some(true);
                }
            }
            b"charset" if charset.is_none() => {
                charset = Some(usable(&value));
                need_pragma = Some(false);
            }
            _ => {}
        }
        seen.push(name);
    }
    if need_pragma? && !got_pragma {
        return None;
    }
    let encoding = charset??;
    Some(if encoding == UTF_16BE || encoding == UTF_16LE {
        UTF_8
    } else if encoding == X_USER_DEFINED {
        WINDOWS_1252
    } else {
        encoding
    })
}

/// The WHATWG prescan's "get an attribute": a lowercased name and value, or `None` at `>` or
/// at the end of the input.
fn attribute(b: &[u8], pos: &mut usize) -> Option<(Vec<u8>, Vec<u8>)> {
    while b.get(*pos).is_some_and(|&c| is_space(c) || c == b'/') {
        *pos += 1;
    }
    if *b.get(*pos)? == b'>' {
        return None;
    }
    let mut name = Vec::new();
    loop {
        match *b.get(*pos)? {
            b'=' if !name.is_empty() => {
                *pos += 1;
                break;
            }
            c if is_space(c) => {
                while b.get(*pos).is_some_and(|&c| is_space(c)) {
                    *pos += 1;
                }
                if *b.get(*pos)? != b'=' {
                    return Some((name, Vec::new()));
                }
                *pos += 1;
                break;
            }
            b'/' | b'>' => return Some((name, Vec::new())),
            c => name.push(c.to_ascii_lowercase()),
        }
        *pos += 1;
    }
    while b.get(*pos).is_some_and(|&c| is_space(c)) {
        *pos += 1;
    }
    let mut value = Vec::new();
    match *b.get(*pos)? {
        quote @ (b'"' | b'\'') => loop {
            *pos += 1;
            match *b.get(*pos)? {
                c if c == quote => {
                    *pos += 1;
                    return Some((name, value));
                }
                c => value.push(c.to_ascii_lowercase()),
            }
        },
        b'>' => return Some((name, value)),
        c => {
            value.push(c.to_ascii_lowercase());
            *pos += 1;
        }
    }
    loop {
        match *b.get(*pos)? {
            c if is_space(c) || c == b'>' => return Some((name, value)),
            c => value.push(c.to_ascii_lowercase()),
        }
        *pos += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_charset_from_headers_and_content() {
        assert_eq!(
            extract_charset(b"text/html; charset=ISO-8859-1"),
            Some(WINDOWS_1252)
        );
        assert_eq!(
            extract_charset(b"text/html;charset=\"koi8-r\""),
            Some(encoding_rs::KOI8_R)
        );
        assert_eq!(
            extract_charset(b"text/html; charset = 'utf-8' ; x=y"),
            Some(UTF_8)
        );
        assert_eq!(extract_charset(b"text/html"), None);
        assert_eq!(extract_charset(b"text/html; charset=bogus"), None);
        assert_eq!(extract_charset(b"charset"), None);
    }

    #[test]
    fn prescan_follows_the_spec() {
        assert_eq!(prescan(b"<meta charset=koi8-r>"), Some(encoding_rs::KOI8_R));
        assert_eq!(prescan(b"<!-- <meta charset=koi8-r> --><p>"), None);
        assert_eq!(prescan(b"<meta content='text/html; charset=sjis'>"), None);
        assert_eq!(
            prescan(b"<META HTTP-EQUIV=Content-Type CONTENT='text/html; charset=sjis'>"),
            Some(encoding_rs::SHIFT_JIS)
        );
        assert_eq!(prescan(b"<meta charset=utf-16le>"), Some(UTF_8));
        assert_eq!(
            prescan(b"<meta charset=bogus><meta charset=gbk>"),
            Some(encoding_rs::GBK)
        );
        assert_eq!(
            prescan(b"<div title='<meta charset=gbk>'><meta charset=big5>"),
            Some(encoding_rs::BIG5)
        );
        assert_eq!(prescan(b"<meta charset"), None);
    }
}
