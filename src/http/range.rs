//! Single-range `Range: bytes=` requests (RFC 9110 §14.1.2).

/// A parsed `Range` header against a content length.
#[derive(Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// Serve everything (no range, or one we ignore, such as several ranges).
    Full,
    /// Serve `start..=end`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// The range lies outside the content: 416.
    Unsatisfiable,
}

/// Parses a single-range `bytes=` header (RFC 9110 §14.1.2).
pub fn parse_range(value: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return ByteRange::Full;
        };
        if n == 0 || size == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Part {
            start: size - n.min(size),
            end: size - 1,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return ByteRange::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return ByteRange::Full,
        }
    };
    if start >= size {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part {
        start,
        end: end.min(size - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), ByteRange::Full);
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            ByteRange::Part { start: 0, end: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            ByteRange::Part { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            ByteRange::Part { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            ByteRange::Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            ByteRange::Part { start: 8, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), ByteRange::Full);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), ByteRange::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), ByteRange::Full);
    }
}
