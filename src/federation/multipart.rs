//! A streaming reader of the `multipart/mixed` answer of
//! `GET /_matrix/federation/v1/media/download/{id}`: two parts, JSON metadata then either the
//! bytes (with their own headers) or a `Location` header to follow.
//!
//! Memory stays bounded: headers and the JSON part are capped, and the content is handed to
//! a sink chunk by chunk, holding back only as many bytes as the closing delimiter is long.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::collections::BTreeMap;

/// Largest header block or JSON part accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why a multipart answer was refused.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    /// Not the shape the spec describes.
    #[error("malformed multipart answer: {0}")]
    Malformed(&'static str),
    /// The body stream failed.
    #[error("reading the answer: {0}")]
    Read(String),
    /// The sink refused the content (too large, disk error).
    #[error("{0}")]
    Sink(String),
}

/// The second part's headers, lowercased names.
pub type PartHeaders = BTreeMap<String, String>;

/// The boundary parameter of a `multipart/mixed` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let (essence, params) = content_type.split_once(';')?;
    if !essence.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

struct Reader<S> {
    stream: S,
    buf: BytesMut,
}

impl<S, E> Reader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    async fn fill(&mut self) -> Result<bool, MultipartError> {
        match self.stream.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(MultipartError::Read(e.to_string())),
            None => Ok(false),
        }
    }

    /// Reads until `pat`, returning what came before it (bounded) and consuming `pat`.
    async fn until(&mut self, pat: &[u8], limit: usize) -> Result<Bytes, MultipartError> {
        loop {
            if let Some(i) = find(&self.buf, pat) {
                let out = self.buf.split_to(i).freeze();
                self.buf.advance(pat.len());
                return Ok(out);
            }
            if self.buf.len() > limit + pat.len() {
                return Err(MultipartError::Malformed("a part head is too long"));
            }
            if !self.fill().await? {
                return Err(MultipartError::Malformed("the answer ended early"));
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_headers(block: &[u8]) -> Result<PartHeaders, MultipartError> {
    let text = std::str::from_utf8(block)
        .map_err(|_| MultipartError::Malformed("part headers are not UTF-8"))?;
    let mut out = PartHeaders::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once(':')
            .ok_or(MultipartError::Malformed("a part header has no colon"))?;
        out.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    Ok(out)
}

/// Reads the two parts: returns the JSON metadata and the second part's headers, and feeds
/// the second part's content to `sink` (nothing when it is a `Location` part).
pub async fn read<S, E, F, Fut>(
    stream: S,
    boundary: &str,
    mut sink: F,
) -> Result<(serde_json::Value, PartHeaders), MultipartError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut r = Reader {
        stream,
        buf: BytesMut::new(),
    };
    let dash = format!("--{boundary}");
    // Preamble, then the first delimiter line.
    r.until(dash.as_bytes(), MAX_HEAD_BYTES).await?;
    r.until(b"\r\n", 256).await?;
    let head1 = r.until(b"\r\n\r\n", MAX_HEAD_BYTES).await?;
    let h1 = parse_headers(&head1)?;
    if !h1
        .get("content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"))
    {
        return Err(MultipartError::Malformed("the first part is not JSON"));
    }
    let delim = format!("\r\n--{boundary}");
    let json = r.until(delim.as_bytes(), MAX_HEAD_BYTES).await?;
    let meta: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|_| MultipartError::Malformed("the first part is not valid JSON"))?;
    r.until(b"\r\n", 256).await?;
    let head2 = r.until(b"\r\n\r\n", MAX_HEAD_BYTES).await?;
    let h2 = parse_headers(&head2)?;
    if h2.contains_key("location") {
        return Ok((meta, h2));
    }
    // Content: everything up to the next delimiter, streamed, holding back a possible
    // partial delimiter at the end of the buffer.
    let d = delim.as_bytes();
    loop {
        if let Some(i) = find(&r.buf, d) {
            let last = r.buf.split_to(i).freeze();
            if !last.is_empty() {
                sink(last).await.map_err(MultipartError::Sink)?;
            }
            return Ok((meta, h2));
        }
        let keep = d.len().saturating_sub(1);
        if r.buf.len() > keep {
            let ready = r.buf.split_to(r.buf.len() - keep).freeze();
            sink(ready).await.map_err(MultipartError::Sink)?;
        }
        if !r.fill().await? {
            return Err(MultipartError::Malformed(
                "the content part has no closing delimiter",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        body: &[u8],
        chunk: usize,
    ) -> Result<(serde_json::Value, PartHeaders, Vec<u8>), MultipartError> {
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut got = Vec::new();
        let got_ref = &mut got;
        let (meta, h) = read(futures_util::stream::iter(chunks), "xyz", |b| {
            got_ref.extend_from_slice(&b);
            async { Ok(()) }
        })
        .await?;
        Ok((meta, h, got))
    }

    fn answer(content: &[u8]) -> Vec<u8> {
        let mut v = b"--xyz\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\r\n--xyz\r\nContent-Type: image/png\r\nContent-Disposition: inline; filename=\"c.png\"\r\n\r\n".to_vec();
        v.extend_from_slice(content);
        v.extend_from_slice(b"\r\n--xyz--\r\n");
        v
    }

    #[tokio::test]
    async fn reads_both_parts_at_any_chunking() {
        let content: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        for chunk in [1, 2, 3, 7, 64, 1000, 100_000] {
            let (meta, h, got) = run(&answer(&content), chunk).await.unwrap();
            assert_eq!(meta["a"], 1);
            assert_eq!(h["content-type"], "image/png");
            assert_eq!(got, content, "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn content_that_looks_like_a_delimiter_prefix_survives() {
        let content = b"\r\n--xy\r\n--x".to_vec();
        let (_, _, got) = run(&answer(&content), 3).await.unwrap();
        assert_eq!(got, content);
    }

    #[tokio::test]
    async fn location_part_and_errors() {
        let body = b"--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz\r\nLocation: https://cdn.example/x\r\n\r\n\r\n--xyz--\r\n";
        let (_, h, got) = run(body, 5).await.unwrap();
        assert_eq!(h["location"], "https://cdn.example/x");
        assert!(got.is_empty());
        assert!(
            run(b"--xyz\r\nContent-Type: text/plain\r\n\r\nhi\r\n--xyz--", 4)
                .await
                .is_err()
        );
        assert!(run(&answer(b"abc")[..60], 4).await.is_err());
        assert!(run(b"garbage", 4).await.is_err());
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/mixed; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary("Multipart/Mixed;boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary("multipart/form-data; boundary=abc"), None);
        assert_eq!(boundary("multipart/mixed"), None);
    }
}
