//! Id and server-name parsers: never panic, and what parses prints back to a string that
//! parses to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use media_ledger_events::{ContentType, MediaId, MediaRef, ServerName, Sha256, UserId};

fn round_trip<T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug>(s: &str) {
    if let Ok(v) = s.parse::<T>() {
        let again: T = v
            .to_string()
            .parse()
            .unwrap_or_else(|_| panic!("{v} does not parse back"));
        assert_eq!(v, again);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    round_trip::<ServerName>(s);
    round_trip::<MediaId>(s);
    round_trip::<UserId>(s);
    round_trip::<MediaRef>(s);
    round_trip::<Sha256>(s);
    let _ = s.parse::<ContentType>();
    if let Ok(name) = s.parse::<ServerName>() {
        let _ = name.host();
    }
});
