//! Detectors: each a pattern for the shared scan and a validator that
//! confirms, narrows or splits what the pattern matched.
//!
//! Patterns are cheap and loose; validators hold the rules (Luhn and issuer
//! ranges, SSN area rules, IBAN mod 97, boundaries, context words).

/// What a keyed pattern allows between its name and the `:` or `=`: the
/// name's closing quote or bracket (`"password":`, `params[password]=`,
/// `card[cvc]=`, as Rails, PHP and Stripe's form bodies write fields; the
/// bracket also percent-encoded, `card%5Bcvc%5D=`, as those bodies go on
/// the wire and into HTTP clients' debug logs; the quote also escaped,
/// `\"cvv\":`, as JSON inside a JSON string or a logfmt value writes it,
/// or escaped again, `\\\"cvv\\\":`, JSON in JSON in JSON, as a container
/// runtime's JSON log file holds an application's JSON message that
/// quotes a JSON body; up to [`ESCAPES_MAX`] backslashes),
/// then spaces or tabs (aligned dumps: `Password          : …`). The
/// scanner's key test steps over the same bytes (`scanner::keyed`).
macro_rules! name_end {
    () => {
        r#"(?:\\{0,7}["']|\]|%5[Dd])?[ \t]*"#
    };
}

/// What a keyed pattern allows between its `:` or `=` and a value that is
/// not a free string: spaces or tabs (aligned, as `kubectl describe`
/// writes `DB_PASSWORD:        …`), then a quote, also escaped, or the
/// opening of Spring's validation message (`on field 'cvv': rejected
/// value [123]`).
macro_rules! value_open {
    () => {
        r#"[ \t]*(?:\\{0,7}["']|rejected value \[)?"#
    };
}

/// The most backslashes read before a quote: a quote escaped three times
/// over (the patterns' `\\{0,7}`).
pub const ESCAPES_MAX: usize = 7;

/// How many backslashes (up to [`ESCAPES_MAX`]) end `text` at `at`: the
/// escapes of a quote at `at`.
pub fn backslashes_before(text: &[u8], at: usize) -> usize {
    text[..at]
        .iter()
        .rev()
        .take(ESCAPES_MAX)
        .take_while(|&&b| b == b'\\')
        .count()
}

/// Spring's validation errors name a field, then its value in brackets:
/// `Field error in object 'form' on field 'password': rejected value
/// [hunter2]`.
pub const REJECTED: &[u8] = b"rejected value [";

/// An opening bracket, percent-encoded (`card%5Bcvd%5D=`): where a name
/// that counts only as its own word (`cvd`, `cid`, `pin`) may start,
/// as `\b` is not there (`5Bcvd`).
macro_rules! name_open {
    () => {
        r#"%5[Bb]"#
    };
}

/// What a keyed pattern's XML twin allows between its element's name and
/// its text: attributes (`<wsse:Password Type="…#PasswordText">`,
/// `<cvc xsi:type="xsd:string">`), the tag's `>` (not an empty element's
/// `/>`: its text is what follows it), then up to three spaces or tabs.
/// Not across a line: no pattern is.
macro_rules! element_open {
    () => {
        r#"(?:[ \t\r](?:[^<>\n]*[^/<>\n])?)?>[ \t]{0,3}"#
    };
}

/// A CDATA section's opening, which an element's text may stand in
/// (`<cvv><![CDATA[123]]></cvv>`).
macro_rules! cdata {
    () => {
        r#"(?:<!\[CDATA\[[ \t]{0,3})?"#
    };
}

pub mod aws_key_id;
pub mod aws_secret;
pub mod binds;
pub mod cvv;
pub mod email;
pub mod flag;
pub mod iban;
pub mod ip;
pub mod jwt;
pub mod pan;
pub mod phone;
pub mod pin;
pub mod private_key;
pub mod secret;
pub mod sql;
pub mod ssn;
pub mod track;

use std::ops::Range;

/// The detector types; the discriminant indexes per-type tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    Pan = 0,
    Email,
    Ssn,
    Phone,
    Ip,
    Iban,
    AwsKeyId,
    AwsSecret,
    Jwt,
    PrivateKey,
    Secret,
    Cvv,
}

impl Kind {
    pub const COUNT: usize = 12;
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::Pan,
        Kind::Email,
        Kind::Ssn,
        Kind::Phone,
        Kind::Ip,
        Kind::Iban,
        Kind::AwsKeyId,
        Kind::AwsSecret,
        Kind::Jwt,
        Kind::PrivateKey,
        Kind::Secret,
        Kind::Cvv,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pan => "pan",
            Kind::Email => "email",
            Kind::Ssn => "ssn",
            Kind::Phone => "phone",
            Kind::Ip => "ip",
            Kind::Iban => "iban",
            Kind::AwsKeyId => "aws_key_id",
            Kind::AwsSecret => "aws_secret",
            Kind::Jwt => "jwt",
            Kind::PrivateKey => "private_key",
            Kind::Secret => "secret",
            Kind::Cvv => "cvv",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn names() -> String {
        Kind::ALL.map(Kind::as_str).join(", ")
    }

    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// IP addresses are routine in logs and rarely personal data on their
    /// own; everything else is on unless switched off.
    pub fn on_by_default(self) -> bool {
        self != Kind::Ip
    }
}

/// A confirmed finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub range: Range<usize>,
}

/// A detector's validator: given the haystack and a pattern match, push
/// the confirmed findings (none, the match, parts of it, or, for a PEM
/// block, the match extended to its end marker).
pub type Validator = fn(&[u8], Range<usize>, &mut Vec<Finding>);

/// One detector.
pub struct Detector {
    pub kind: Kind,
    pub pattern: &'static str,
    pub validate: Validator,
    /// How the scanner finds the places where the pattern can start.
    pub anchor: Anchor,
}

/// Where a detector's pattern can start, found without running the
/// pattern over every byte: a union of all patterns has no literal prefix,
/// so it runs a lazy DFA over the whole input; each anchor below is found
/// by `memchr` or a literal prefilter instead, and the pattern runs only
/// there.
#[derive(Debug, Clone, Copy)]
pub enum Anchor {
    /// The pattern starts with literals (`eyJ`, `AKIA`, `bearer`): all
    /// such patterns share one regex pass, whose prefilter skips to their
    /// literals.
    Literal,
    /// A `name = value` pair: tried at each `:` or `=` whose name (lower
    /// case, `_` and `-` dropped) ends in one of these.
    Key(&'static [&'static str]),
    /// An XML element `<name …>value<` (SOAP and XML gateway APIs:
    /// `<cardCode>`, `<cvNumber>`, `<wsse:Password>`): tried at each `<`
    /// whose element's local name (after a namespace prefix) ends in one of
    /// these, as `Key` reads names.
    Element(&'static [&'static str]),
    /// The value of a pair that the pair before it names (`key="ApiPassword"
    /// value="…"`, `{"Name": "DB_PASSWORD", "Value": "…"}`): tried at each
    /// `:` or `=` whose name ends in `value`, found on the keyed pass, and
    /// searched anchored where the naming pair's name starts.
    Named,
    /// Starts at a `+`.
    Plus,
    /// Found around each `'` (on the `+` pass, as one `memchr2`: a pass
    /// of its own cost 0.6% of a scan of secret-free text, which holds
    /// none), searched from where the trigger says a match would have to
    /// start, as `Infix`.
    Quote(InfixTrigger),
    /// Found around each occurrence of a literal (`://`, `%40`) by `memmem`,
    /// searched from where the trigger says a match would have to start,
    /// if anywhere. The occurrences wholly inside what an accepted match
    /// was found to hold are not looked at again, nor, when the third field is
    /// `Some(reach)`, those more than `reach` bytes before the end of any
    /// match: what a match starting there could find was seen already.
    Infix(&'static [u8], InfixTrigger, Option<usize>),
    /// Has an `@` (email): the match starts where the run of local-part
    /// bytes before the `@` starts.
    At,
    /// Tried at digit runs of nine digits or more or right after two
    /// capital letters: the function gets a run and its digit count and gives where
    /// the match would start, if anywhere (IBAN check digits after two
    /// capital letters; an SSN after a context word).
    Digits(DigitTrigger),
    /// Its own pass over the input (IP addresses: off by default).
    Own,
}

/// Given the haystack, the offset of an infix literal and where the
/// matches already accepted end (a match found from here on starts at or
/// after it, but for one whose literal straddles that end), the span a match would have to lie in (its start,
/// and a bound on its end), if anywhere: a check by hand, cheaper than a
/// search at every occurrence. The check and the span are bounded, by the
/// longest match there can be or by the anchor's reach, so a line of
/// nothing but the literal costs linear time.
pub type InfixTrigger = fn(&[u8], usize, usize) -> Option<Range<usize>>;

/// Given a digit run and its digit count, where a digit-anchored pattern
/// would have to start, if anywhere: it is searched anchored there.
pub type DigitTrigger = fn(&[u8], Range<usize>, usize) -> Option<usize>;

/// Every regex detector (cards, dashed SSNs and North American phones are
/// found by the digit-run scan in `numeric`). Within one anchor kind,
/// where two patterns match at the same position the earlier wins, so
/// specific shapes come before loose ones.
pub const DETECTORS: &[Detector] = &[
    private_key::DETECTOR,
    jwt::DETECTOR,
    secret::BEARER,
    secret::URL_CREDENTIALS,
    secret::DETECTOR,
    secret::BASIC,
    secret::TOKEN_SCHEME,
    secret::VENDOR,
    binds::DETECTOR,
    flag::DETECTOR,
    flag::SINGLE_DASH,
    flag::MYSQL,
    sql::DETECTOR,
    secret::ELEMENT,
    secret::NAMED,
    cvv::DETECTOR,
    cvv::ELEMENT,
    pin::DETECTOR,
    pin::ELEMENT,
    aws_key_id::DETECTOR,
    iban::DETECTOR,
    email::DETECTOR,
    email::PERCENT_ENCODED,
    pan::PERCENT_ENCODED,
    ssn::DETECTOR,
    track::DETECTOR,
    phone::INTERNATIONAL,
    ip::V4,
    ip::V6,
    aws_secret::DETECTOR,
    aws_secret::ELEMENT,
];

/// True when the byte is a letter or digit.
pub fn alnum(b: Option<&u8>) -> bool {
    b.is_some_and(u8::is_ascii_alphanumeric)
}

/// A number stands alone: no letter or digit touches it, and it does not
/// continue a longer number through a separator (`12-345…`, `1.2.3`).
pub fn number_stands_alone(text: &[u8], r: &Range<usize>) -> bool {
    let before = r.start.checked_sub(1).and_then(|i| text.get(i));
    let before2 = r.start.checked_sub(2).and_then(|i| text.get(i));
    let after = text.get(r.end);
    let after2 = text.get(r.end + 1);
    let sep = |b: Option<&u8>| matches!(b, Some(b'-' | b'.' | b'/'));
    let digit = |b: Option<&u8>| b.is_some_and(u8::is_ascii_digit);
    let glued = alnum(before)
        || alnum(after)
        || (sep(before) && digit(before2))
        || (sep(after) && digit(after2));
    !glued
}

/// Whether one of `words` (lower case) appears within `window` bytes
/// before `at`, case-insensitively.
pub fn context_before(text: &[u8], at: usize, window: usize, words: &[&str]) -> bool {
    let start = at.saturating_sub(window);
    let hay: Vec<u8> = text[start..at].iter().map(u8::to_ascii_lowercase).collect();
    words
        .iter()
        .any(|w| hay.windows(w.len()).any(|x| x == w.as_bytes()))
}

/// Digits of a range, separators dropped.
pub fn digits(text: &[u8], r: &Range<usize>) -> Vec<u8> {
    text[r.clone()]
        .iter()
        .copied()
        .filter(u8::is_ascii_digit)
        .collect()
}

/// In a `name = value` / `"name": "value"` / `'name' => 'value'` match,
/// the offset where the value starts: after the first `=` or `:` (and a
/// `>` after an `=`), spaces, tabs and a quote (also escaped, `\"`, or
/// escaped again, `\\\"`), or
/// [`REJECTED`].
pub fn value_start(s: &[u8]) -> Option<usize> {
    let sep = s.iter().position(|&b| b == b'=' || b == b':')?;
    let mut start = sep + 1;
    if s[sep] == b'=' && s.get(start) == Some(&b'>') {
        start += 1;
    }
    while start < s.len() && matches!(s[start], b' ' | b'\t') {
        start += 1;
    }
    if s[start..].starts_with(REJECTED) {
        return Some(start + REJECTED.len());
    }
    let escapes = s[start..]
        .iter()
        .take(ESCAPES_MAX)
        .take_while(|&&b| b == b'\\')
        .count();
    if escapes > 0 && matches!(s.get(start + escapes), Some(b'"' | b'\'')) {
        start += escapes;
    }
    if matches!(s.get(start), Some(b'"' | b'\'')) {
        start += 1;
    }
    Some(start)
}

/// In an XML element's match (`Anchor::Element`), the offset where its
/// text starts: after the tag's `>` (attributes hold none), spaces, tabs
/// and a CDATA section's opening.
pub fn element_value_start(s: &[u8]) -> Option<usize> {
    let mut start = s.iter().position(|&b| b == b'>')? + 1;
    if s[start..].starts_with(b"<![CDATA[") {
        start += 9;
    }
    while start < s.len() && matches!(s[start], b' ' | b'\t') {
        start += 1;
    }
    Some(start)
}

/// Where a keyed detector's value starts: its text pair's
/// ([`value_start`]) or, for its XML twin, its element's
/// ([`element_value_start`]). The one validator serves both.
pub fn value_start_in<const ELEMENT: bool>(s: &[u8]) -> Option<usize> {
    if ELEMENT {
        element_value_start(s)
    } else {
        value_start(s)
    }
}

/// Pushes a finding of `kind` over `r`.
pub fn push(out: &mut Vec<Finding>, kind: Kind, r: Range<usize>) {
    out.push(Finding { kind, range: r });
}
