//! PEM and OpenPGP private keys. The finding runs from `-----BEGIN …
//! PRIVATE KEY-----` to its end marker, or, when the end is not in this
//! input, to the end of the input: fail closed. Line-by-line formats
//! carry the open block over to the next lines (see `format`).

use std::ops::Range;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::{Anchor, Detector, Finding, Kind, push};

/// PEM's `… PRIVATE KEY-----` and OpenPGP's armoured `… PRIVATE KEY
/// BLOCK-----`. Found at each `-----BEGIN ` on a pass of its own, not
/// with the other literal-prefixed patterns: there an earlier match that
/// runs into the marker (`Bearer abcdefghij-----BEGIN`, whose value may
/// hold dashes) is skipped whole and would hide it, and with it the key's
/// body up to its end marker.
pub const DETECTOR: Detector = Detector {
    kind: Kind::PrivateKey,
    pattern: r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----",
    validate,
    anchor: Anchor::Infix(BEGIN, begin_marker, None),
};

/// What every begin marker starts with.
const BEGIN: &[u8] = b"-----BEGIN ";

/// What every end marker starts with.
const END: &[u8] = b"-----END ";

/// The span of the begin marker at `at` (an occurrence of [`BEGIN`]), if
/// it is a private key's: the pattern then confirms it there.
fn begin_marker(text: &[u8], at: usize, _from: usize) -> Option<Range<usize>> {
    let name = at + BEGIN.len();
    marker_tail(&text[name..]).map(|n| at..name + n)
}

fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let end = find_end(&text[m.end..]).map_or(text.len(), |e| m.end + e);
    push(out, Kind::PrivateKey, m.start..end);
}

/// Whether `s` holds a begin marker with no end marker after it: a key
/// left open, whose body follows on the lines after `s`. Read from the
/// bytes, not from findings: a begin marker inside an earlier finding is
/// merged into it and takes that finding's type.
pub fn opens_block(s: &[u8]) -> bool {
    open_after(s, false, 0)
}

/// Whether a key is open after `s`, given whether one was open before it,
/// counting only the markers that end past `seen` (those before were
/// counted on an earlier piece of the same line, which `s` overlaps by
/// `seen` bytes so that a marker cut between the two is found whole).
/// Open, an end marker closes; closed, a begin marker opens.
pub fn open_after(s: &[u8], mut open: bool, seen: usize) -> bool {
    let mut at = 0;
    loop {
        let marker = if open {
            find_end(&s[at..])
        } else {
            find_begin(&s[at..])
        };
        let Some(n) = marker else {
            return open;
        };
        at += n;
        if at > seen {
            open = !open;
        }
    }
}

/// The offset just past the first private key's begin marker in `s`.
fn find_begin(s: &[u8]) -> Option<usize> {
    static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(BEGIN));
    find_marker(s, &FINDER)
}

/// The offset just past the first `-----END … PRIVATE KEY-----` in `s`.
/// Its name is read as a begin marker's: a type found anywhere after
/// `-----END ` (`-----END PGP PRIVATE KEY BLOCK----- -----BEGIN PRIVATE
/// KEY-----`) would make one marker of an end and the next key's begin,
/// and leave that key's body in the clear. A marker is on one line: a
/// block of lines must not end a key's masking at one split across two.
pub fn find_end(s: &[u8]) -> Option<usize> {
    static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(END));
    find_marker(s, &FINDER)
}

/// The offset just past the first marker in `s` that starts with what
/// `prefix` finds and ends as a private key's does. The finders are
/// built once: these run on every line a walk changes.
fn find_marker(s: &[u8], prefix: &Finder<'_>) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = prefix.find(&s[from..]) {
        let name = from + i + prefix.needle().len();
        if let Some(n) = marker_tail(&s[name..]) {
            return Some(name + n);
        }
        from = name;
    }
    None
}

/// After `-----BEGIN ` or `-----END `, the length of the rest of a
/// private key's marker (`[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----`, as
/// [`DETECTOR`]'s pattern), if `s` starts with one. The name's run of
/// letters, digits and spaces must end in the key's type, as `-` is not
/// in the run.
fn marker_tail(s: &[u8]) -> Option<usize> {
    let run = s
        .iter()
        .position(|&b| !(b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '))
        .unwrap_or(s.len());
    let name = &s[..run];
    let key = name.ends_with(b"PRIVATE KEY") || name.ends_with(b"PRIVATE KEY BLOCK");
    (key && s[run..].starts_with(b"-----")).then_some(run + 5)
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
        assert!(opens_block(
            b"-----BEGIN PRIVATE KEY----- -----END PRIVATE KEY----- -----BEGIN EC PRIVATE KEY-----"
        ));
        assert!(!opens_block(b"-----BEGIN PUBLIC KEY-----"));
    }

    /// A line read in pieces, each overlapping the one before, ends in the
    /// state the whole line does, wherever the cuts fall.
    #[test]
    fn open_after_pieces_agrees_with_the_whole() {
        let line = b"a -----BEGIN RSA PRIVATE KEY----- MIIE -----END RSA PRIVATE KEY----- b \
            -----BEGIN PGP PRIVATE KEY BLOCK----- c -----END PGP PRIVATE KEY BLOCK----- \
            -----BEGIN PRIVATE KEY----- d";
        const OVERLAP: usize = 64;
        for cut in 1..line.len() {
            for open in [false, true] {
                let mut state = open;
                let mut carry = Vec::new();
                for piece in line.chunks(cut) {
                    let mut window = std::mem::take(&mut carry);
                    let seen = window.len();
                    window.extend_from_slice(piece);
                    state = open_after(&window, state, seen);
                    carry = window[window.len().saturating_sub(OVERLAP)..].to_vec();
                }
                assert!(state, "cut {cut}, open {open}");
            }
        }
        assert!(open_after(line, false, 0) && open_after(line, true, 0));
        assert!(!open_after(&line[..line.len() - 5], false, 0));
    }
}
