//! The `Range` header parser of downloads: never panics, and a part it accepts lies inside
//! the content.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../src/http/range.rs"]
#[allow(dead_code)]
mod range;

fuzz_target!(|input: (&str, u64)| {
    let (header, size) = input;
    match range::parse_range(Some(header), size) {
        range::ByteRange::Part { start, end } => {
            assert!(
                start <= end && end < size,
                "{header:?} over {size}: {start}-{end}"
            );
        }
        range::ByteRange::Full | range::ByteRange::Unsatisfiable => {}
    }
});
