//! The `multipart/mixed` reader of federation answers, fed arbitrary bodies in arbitrary
//! chunks: an error or two parts, never a panic, and never more content than was sent.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

#[path = "../../src/federation/multipart.rs"]
#[allow(dead_code)]
mod multipart;

fuzz_target!(|input: (&str, Vec<Vec<u8>>)| {
    let (content_type, chunks) = input;
    let _ = multipart::boundary(content_type);
    let sent: usize = chunks.iter().map(Vec::len).sum();
    let stream = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Bytes::from(c))),
    );
    let mut got = 0usize;
    let result = futures_executor::block_on(multipart::read(stream, "b0undary", |chunk| {
        got += chunk.len();
        async { Ok(()) }
    }));
    let _ = result;
    assert!(got <= sent);
});
