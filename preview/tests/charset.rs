//! Charset detection and decoding of HTML bodies: BOM, header, `<meta>`, fallbacks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_ledger_preview::{decode_html, html_encoding, page_from_bytes};
use url::Url;

fn title(body: &[u8], content_type: Option<&str>) -> Option<String> {
    let base = Url::parse("https://example.com/").unwrap();
    page_from_bytes(body, content_type, &base)
        .og
        .get("og:title")
        .cloned()
}

#[test]
fn windows_1252_via_the_header() {
    let body = b"<html><head><title>Caf\xe9 \x80 5</title></head></html>";
    assert_eq!(
        title(body, Some("text/html; charset=windows-1252")).as_deref(),
        Some("Café € 5")
    );
    // Without a declaration the same bytes are (invalid) UTF-8: replacement characters.
    assert_eq!(
        title(body, Some("text/html")).as_deref(),
        Some("Caf\u{FFFD} \u{FFFD} 5")
    );
}

#[test]
fn iso_8859_1_via_meta_charset() {
    let body = b"<!doctype html><meta charset=\"ISO-8859-1\"><title>M\xfcnchen</title>";
    assert_eq!(title(body, None).as_deref(), Some("München"));
}

#[test]
fn shift_jis_via_meta_charset() {
    let body = b"<html><head><meta charset=Shift_JIS><title>\x93\xfa\x96{\x8c\xea</title>";
    assert_eq!(title(body, Some("text/html")).as_deref(), Some("日本語"));
}

#[test]
fn koi8_r_via_meta_charset_after_a_comment() {
    let body = b"<!-- a comment --><html><head><meta charset='koi8-r'>\
                 <title>\xf0\xd2\xc9\xd7\xc5\xd4 \xcd\xc9\xd2</title>";
    assert_eq!(title(body, None).as_deref(), Some("Привет мир"));
}

#[test]
fn charset_via_http_equiv() {
    let body = b"<html><head>\
        <META HTTP-EQUIV=\"Content-Type\" CONTENT=\"text/html; charset=koi8-r\">\
        <title>\xf0\xd2\xc9\xd7\xc5\xd4</title>";
    assert_eq!(title(body, None).as_deref(), Some("Привет"));
    // A `content` without the pragma declares nothing.
    let body = b"<meta content=\"text/html; charset=koi8-r\"><title>\xf0\xd2</title>";
    assert_eq!(html_encoding(body, None), encoding_rs::UTF_8);
}

#[test]
fn utf_16le_with_a_bom() {
    let body = b"\xff\xfe<\x00t\x00i\x00t\x00l\x00e\x00>\x00Z\x00o\x00\xeb\x00<\x00/\x00t\x00i\x00t\x00l\x00e\x00>\x00";
    assert_eq!(
        title(body, Some("text/html; charset=iso-8859-1")).as_deref(),
        Some("Zoë")
    );
    assert_eq!(html_encoding(body, None), encoding_rs::UTF_16LE);
}

#[test]
fn a_bom_overrides_the_header_and_meta() {
    let body = "\u{FEFF}<meta charset=koi8-r><title>Zoë</title>".as_bytes();
    assert_eq!(
        title(body, Some("text/html; charset=windows-1252")).as_deref(),
        Some("Zoë")
    );
    assert!(!decode_html(body, None).starts_with('\u{FEFF}'));
}

#[test]
fn the_header_overrides_meta() {
    let body = b"<meta charset=koi8-r><title>Caf\xe9</title>";
    assert_eq!(
        title(body, Some("text/html; charset=latin1")).as_deref(),
        Some("Café")
    );
}

#[test]
fn an_unknown_header_charset_falls_back_to_meta() {
    let body = b"<meta charset=koi8-r><title>\xf0\xd2\xc9\xd7\xc5\xd4</title>";
    assert_eq!(
        title(body, Some("text/html; charset=x-no-such-thing")).as_deref(),
        Some("Привет")
    );
    // …and an unknown meta label falls back to the next declaration, then UTF-8.
    let body = b"<meta charset=nope><meta charset=koi8-r><title>\xf0\xd2</title>";
    assert_eq!(html_encoding(body, None), encoding_rs::KOI8_R);
    assert_eq!(
        html_encoding(b"<meta charset=nope>", None),
        encoding_rs::UTF_8
    );
}

#[test]
fn meta_after_the_first_1024_bytes_is_not_seen() {
    let mut body = b"<html><head><!-- ".to_vec();
    body.extend(std::iter::repeat_n(b'x', 1100));
    body.extend(b" --><meta charset=koi8-r>");
    assert_eq!(html_encoding(&body, None), encoding_rs::UTF_8);
}

#[test]
fn utf_16_in_meta_means_utf_8() {
    let body = "<meta charset=utf-16><title>Zoë</title>".as_bytes();
    assert_eq!(html_encoding(body, None), encoding_rs::UTF_8);
    assert_eq!(title(body, None).as_deref(), Some("Zoë"));
}

#[test]
fn garbage_never_panics() {
    let inputs: [&[u8]; 8] = [
        b"",
        b"\xff",
        b"\xfe\xff\x00",
        b"\xef\xbb",
        b"<meta charset=",
        b"<meta http-equiv=content-type content='charset=\"",
        b"<!--",
        b"\x00\x80\xff<\xc3\x28>\xe2\x82",
    ];
    for body in inputs {
        for ct in [
            None,
            Some(""),
            Some("charset="),
            Some("text/html; charset=\"utf-8"),
        ] {
            let _ = decode_html(body, ct);
            let _ = title(body, ct);
        }
    }
}
