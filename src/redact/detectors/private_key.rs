//! PEM and OpenPGP private keys. The finding runs from `-----BEGIN …
//! PRIVATE KEY-----` to its end marker, or, when the end is not in this
//! input, to the end of the input: fail closed. Line-by-line formats
//! carry the open block over to the next lines (see `format`).

use std::ops::Range;
use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};

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
    follow(s, false).0
}

/// How many private keys' begin markers `s` holds.
pub fn count_begins(s: &[u8]) -> usize {
    let mut n = 0;
    let mut at = 0;
    while let Some(e) = find_begin(&s[at..]) {
        n += 1;
        at += e;
    }
    n
}

/// Whether a key is open after `s`, given whether one was open before it.
pub fn open_after(s: &[u8], open: bool) -> bool {
    follow(s, open).0
}

/// Where the text after the first end marker in `s` starts, if `s` has
/// one: just past it, or where a begin marker sharing its dashes starts.
pub fn past_end(s: &[u8]) -> Option<usize> {
    find_end(s).map(|e| after_end(s, e, false))
}

/// Where to look for a begin marker after an end marker that ends at `e`
/// in `s`: the two may share dashes (`-----END PRIVATE KEY-----BEGIN RSA
/// PRIVATE KEY-----`, or with more dashes between), and the second key
/// must not pass unseen. A begin marker's five dashes are the last five
/// of the run of dashes the end marker's end is in. With `cut`, `s` may
/// end inside such a begin marker (a piece of a line): its dashes are
/// kept for the next piece.
fn after_end(s: &[u8], e: usize, cut: bool) -> usize {
    let more = s[e..].iter().take(5).take_while(|&&b| b == b'-').count();
    let shared = e + more - 5;
    let next = &s[shared..];
    if next.starts_with(BEGIN) || cut && BEGIN.starts_with(next) {
        shared
    } else {
        e
    }
}

/// Reads `s` with a key open or not before it: open, an end marker
/// closes; closed, a begin marker opens. Gives whether a key is open
/// after `s`, and where the next search would start (just past the last
/// marker read, or at the dashes an end marker may share with a begin
/// marker after it, or 0): nothing from there on is a whole marker, so a
/// reader that gets `s` in pieces reads on from there, never again from
/// a marker it has read.
fn follow(s: &[u8], mut open: bool) -> (bool, usize) {
    let mut at = 0;
    loop {
        let marker = if open {
            find_end(&s[at..])
        } else {
            find_begin(&s[at..])
        };
        let Some(n) = marker else {
            return (open, at);
        };
        at += n;
        if open {
            at = after_end(s, at, true);
        }
        open = !open;
    }
}

/// Follows the private-key state through a line read in pieces (one too
/// long to hold, which is dropped): each piece is read after the end of
/// the pieces before it, so that a marker cut between two is found whole.
#[derive(Default)]
pub struct PieceReader {
    /// The end of the pieces read so far that may start a marker: from
    /// just past the last marker read, at most [`PIECE_OVERLAP`] bytes,
    /// or a marker cut in its type's name with the name's end.
    tail: Vec<u8>,
}

/// Bytes a [`PieceReader`] keeps of the pieces before: more than a marker
/// with any real key type takes.
const PIECE_OVERLAP: usize = 256;

/// The end of a cut marker's type name that a [`PieceReader`] keeps:
/// more than `PRIVATE KEY BLOCK`, all [`marker_tail`] reads of it.
const NAME_KEPT: usize = 32;

impl PieceReader {
    /// The state after `part`, given the state before it.
    pub fn read(&mut self, part: &[u8], open: bool) -> bool {
        static BEGIN_REV: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(BEGIN));
        static END_REV: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(END));
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(part);
        let (open, resume) = follow(&window, open);
        // The marker that would change the state, if it is cut: kept
        // whole, but for the middle of a long type name (a marker is
        // read by the end of its name), so memory stays bounded.
        let next = if open { &*END_REV } else { &*BEGIN_REV };
        if let Some(cut) = cut_marker(&window[resume..], next) {
            let name = resume + cut + next.needle().len();
            let run = name + name_run(&window[name..]);
            let from = run.saturating_sub(NAME_KEPT).max(name);
            window.drain(name..from);
            window.drain(..resume + cut);
        } else {
            window.drain(..window.len().saturating_sub(PIECE_OVERLAP).max(resume));
        }
        self.tail = window;
        open
    }

    /// The line ended: the next line is read on its own.
    pub fn end_line(&mut self) {
        self.tail.clear();
    }
}

/// Where in `s` the last marker that `prefix` finds starts, if `s` ends
/// before it is whole: after its prefix, nothing but the run of its
/// type's name and fewer than the five dashes that close it.
fn cut_marker(s: &[u8], prefix: &FinderRev<'_>) -> Option<usize> {
    let at = prefix.rfind(s)?;
    let name = &s[at + prefix.needle().len()..];
    let dashes = &name[name_run(name)..];
    (dashes.len() < 5 && dashes.iter().all(|&b| b == b'-')).then_some(at)
}

/// The length of the run of capitals, digits and spaces `s` starts with:
/// a marker's type name.
fn name_run(s: &[u8]) -> usize {
    s.iter()
        .position(|&b| !(b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '))
        .unwrap_or(s.len())
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
    let run = name_run(s);
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

    /// A line read in pieces ends in the state the whole line does,
    /// wherever the cuts fall, from either state, shared dashes and long
    /// type names included.
    #[test]
    fn a_line_read_in_pieces_ends_as_the_whole() {
        let long = "A".repeat(300);
        let longer = "B".repeat(5000);
        let lines = [
            "a -----BEGIN RSA PRIVATE KEY----- MIIE -----END RSA PRIVATE KEY----- b \
             -----BEGIN PGP PRIVATE KEY BLOCK----- c -----END PGP PRIVATE KEY BLOCK----- \
             -----BEGIN PRIVATE KEY----- d"
                .to_owned(),
            "-----BEGIN PRIVATE KEY-----END PRIVATE KEY----- x".to_owned(),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----BEGIN RSA PRIVATE KEY-----"
                .to_owned(),
            "-----BEGIN PRIVATE KEY----- -----END PRIVATE KEY------BEGIN RSA PRIVATE KEY----- x"
                .to_owned(),
            "-----BEGIN PRIVATE KEY----- -----END PRIVATE KEY---------BEGIN RSA PRIVATE KEY-----"
                .to_owned(),
            format!("x -----BEGIN {long} PRIVATE KEY----- y"),
            format!("x -----BEGIN {long} PRIVATE KEY----- y -----END {long} PRIVATE KEY-----"),
            format!("x -----BEGIN {longer} PRIVATE KEY-----END PRIVATE KEY----- y"),
            format!("x -----BEGIN {longer} PRIVATE KEY----- -----END {longer} PRIVATE KEY----- y"),
            "-----END PRIVATE KEY----- -----BEGIN PUBLIC KEY-----".to_owned(),
        ];
        for line in &lines {
            let line = line.as_bytes();
            let cuts: Vec<usize> = if line.len() < 1000 {
                (1..=line.len()).collect()
            } else {
                vec![1, 2, 3, 5, 7, 31, 64, 255, 256, 257, 1000, 4999, line.len()]
            };
            for open in [false, true] {
                let whole = follow(line, open).0;
                for &cut in &cuts {
                    let mut reader = PieceReader::default();
                    let mut state = open;
                    for piece in line.chunks(cut) {
                        state = reader.read(piece, state);
                        assert!(reader.tail.len() <= PIECE_OVERLAP + 64, "cut {cut}");
                    }
                    let shown = String::from_utf8_lossy(&line[..line.len().min(80)]);
                    assert_eq!(state, whole, "cut {cut}, open {open}: {shown}");
                }
            }
        }
        // What the whole lines give.
        let states: Vec<bool> = lines.iter().map(|l| opens_block(l.as_bytes())).collect();
        assert_eq!(
            states,
            [
                true, true, true, true, true, true, false, true, false, false
            ]
        );
    }
}
