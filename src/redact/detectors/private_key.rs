//! PEM and OpenPGP private keys. The finding runs from `-----BEGIN …
//! PRIVATE KEY-----` to its end marker, or, when the end is not in this
//! input, to the end of the input: fail closed. Line-by-line formats
//! carry the open block over to the next lines (see `format`).

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};

/// PEM's `… PRIVATE KEY-----` and OpenPGP's armoured `… PRIVATE KEY
/// BLOCK-----`.
pub const DETECTOR: Detector = Detector {
    kind: Kind::PrivateKey,
    pattern: r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----",
    validate,
    anchor: Anchor::Literal,
};

/// What an end marker ends in, after `-----END `.
const END_TAILS: [&[u8]; 2] = [b"PRIVATE KEY-----", b"PRIVATE KEY BLOCK-----"];

fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let end = find_end(&text[m.end..]).map_or(text.len(), |e| m.end + e);
    push(out, Kind::PrivateKey, m.start..end);
}

/// Whether `s` holds a begin marker with no end marker after it: a key
/// left open, whose body follows on the lines after `s`. Read from the
/// bytes, not from findings: a begin marker inside an earlier finding is
/// merged into it and takes that finding's type.
pub fn opens_block(s: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = memchr::memmem::find(&s[from..], b"-----BEGIN ") {
        let name = from + i + 11;
        if let Some(n) = begin_tail(&s[name..])
            && find_end(&s[name + n..]).is_none()
        {
            return true;
        }
        from = name;
    }
    false
}

/// After `-----BEGIN `, the length of the rest of a private key's begin
/// marker (`[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----`, as [`DETECTOR`]'s
/// pattern), if `s` starts with one. The name's run of letters, digits
/// and spaces must end in the key's type, as `-` is not in the run.
fn begin_tail(s: &[u8]) -> Option<usize> {
    let run = s
        .iter()
        .position(|&b| !(b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '))
        .unwrap_or(s.len());
    let name = &s[..run];
    let key = name.ends_with(b"PRIVATE KEY") || name.ends_with(b"PRIVATE KEY BLOCK");
    (key && s[run..].starts_with(b"-----")).then_some(run + 5)
}

/// The offset just past the first `-----END … PRIVATE KEY-----` in `s`.
pub fn find_end(s: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].windows(9).position(|w| w == b"-----END ") {
        let start = from + i + 9;
        // The whole end marker is on one line: a block of lines must not
        // end a key's masking at a marker split across two.
        let line_end = memchr::memchr(b'\n', &s[start..]).map_or(s.len(), |n| start + n);
        let limit = (start + 60).min(line_end);
        for tail in END_TAILS {
            if let Some(j) = s[start..limit].windows(tail.len()).position(|w| w == tail) {
                return Some(start + j + tail.len());
            }
        }
        from = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte reading of begin markers agrees with the detector's
    /// pattern on markers, near misses and markers with their ends.
    #[test]
    fn opens_block_reads_begin_markers_as_the_pattern_does() {
        let pattern = regex_automata::meta::Regex::new(DETECTOR.pattern).unwrap();
        let by_pattern = |s: &[u8]| {
            pattern
                .find_iter(s)
                .any(|m| find_end(&s[m.end()..]).is_none())
        };
        for s in [
            "-----BEGIN PRIVATE KEY-----",
            "x -----BEGIN RSA PRIVATE KEY----- y",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----",
            "-----BEGIN EC2 PRIVATE KEY-----",
            "-----BEGIN -----BEGIN PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY----- -----END PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----a-----END RSA PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY----- -----END PRIVATE KEY----- -----BEGIN PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY----",
            "-----BEGIN private KEY-----",
            "-----BEGIN PUBLIC KEY-----",
            "-----BEGIN PRIVATE KEYS-----",
            "-----BEGIN PRIVATE KEY BLOC-----",
            "-----BEGIN RSA-PRIVATE KEY-----",
            "-----BEGINPRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----\n-----END RSA\nPRIVATE KEY-----",
            "",
        ] {
            let s = s.as_bytes();
            assert_eq!(
                opens_block(s),
                by_pattern(s),
                "{}",
                String::from_utf8_lossy(s)
            );
        }
        assert!(opens_block(b"x -----BEGIN PRIVATE KEY-----"));
        assert!(!opens_block(b"-----BEGIN PUBLIC KEY-----"));
    }
}
