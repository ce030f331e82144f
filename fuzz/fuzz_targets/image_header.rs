//! Image headers as the thumbnailer reads them before decoding (format guess, then the
//! dimensions only): never panic, never allocate for the claimed size.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reader) = image::ImageReader::new(std::io::Cursor::new(data)).with_guessed_format() {
        let _ = reader.into_dimensions();
    }
});
