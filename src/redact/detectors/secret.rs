//! `password=`-style secrets and opaque bearer tokens: the key name is the
//! evidence, the value is what gets replaced.

use std::ops::Range;

use super::{
    Anchor, Detector, Finding, Kind, REJECTED, backslashes_before, push, value_start,
    value_start_in,
};

/// The names of [`NAMES`] as the pattern reads them.
macro_rules! name {
    () => {
        r#"(?i)(?:password|passwd|pwd|passphrase|secret|client[ _-]?secret|api[ _-]?key|access[ _-]?token|refresh[ _-]?token|auth[ _-]?token|session[ _-]?token|private[ _-]?key|secret[ _-]?key|(?:api|security|vault|github|npm|gitlab|slack|bot|private)[ _-]?token|transaction[ _-]?key|tran[ _-]?key|secret[ _-]?string|encryption[ _-]?key|signing[ _-]?key|hmac[ _-]?key|account[ _-]?key|shared[ _-]?access[ _-]?key|password[ _-]?(?:confirm(?:ation)?|digest|hash))"#
    };
}

/// `password=…`, `DB_PASSWORD=…`, `"api_key": "…"`, `client_secret: "two
/// words"`, `accessToken=…`, `{'pwd': '…'}`, `"password" => "…"`: any name
/// that ends in a key name, its words joined by `_`, `-` or nothing, as
/// the anchor reads names; a quoted value runs to its closing quote. A
/// single quote not closed (`password='hunter2","user":"o'brien"` in an
/// NDJSON line, whose `Value` walk reads `password='hunter2` alone) runs
/// to a `"` or the line's end.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Secret,
    pattern: concat!(
        name!(),
        "(?:[_-]?[12])?",
        name_end!(),
        r#"(?:=>|[:=])[ \t]*(?:rejected value \[[^\]\n]*\]|\\{1,7}"(?:[^"\\\n]|\\[^"\n])+\\{1,7}"|"[^"\n]+"|'[^'\n]+'|'[^'"\n]+|[^\s"',;&}\]]+)"#
    ),
    validate: validate_pair::<false>,
    anchor: Anchor::Key(NAMES),
};

/// `<password>two words</password>`, WS-Security's `<wsse:Password
/// Type="…">`, `<apiKey><![CDATA[…]]></apiKey>`: an element's text, to
/// the next `<` (in a CDATA section, which may hold `<`, to its `]]>`).
pub const ELEMENT: Detector = Detector {
    kind: Kind::Secret,
    pattern: concat!(
        name!(),
        element_open!(),
        r#"(?:<!\[CDATA\[[^\n]+?\]\]>|[^<\n]+)"#
    ),
    validate: validate_pair::<true>,
    anchor: Anchor::Element(NAMES),
};

/// A name/value pair's value, where the pair before it names a secret:
/// XML configuration's `<add key="ApiPassword" value="…"/>` and `<entry
/// key="db.password" value="…"/>`, AWS tags and container environments
/// printed as JSON inside a text line (`{"Name": "DB_PASSWORD", "Value":
/// "…"}`, CloudFormation's `ParameterKey`/`ParameterValue`), YAML's flow
/// style (`{name: DB_PASSWORD, value: …}`). Parsed JSON's pairs are read by
/// `redact::fields`; this finds them in text, under the names that rule
/// takes as spelled there, so that an NDJSON line this finds a pair in
/// across its strings is one that rule parses.
pub const NAMED: Detector = Detector {
    kind: Kind::Secret,
    pattern: concat!(
        r#"(?:[Nn]ame|NAME|[Kk]ey|KEY|[Pp]arameter(?:Key|Name)|parameter_(?:key|name))\\{0,7}["']?[ \t]*[:=][ \t]*(?:\\{0,7}["'][^"'\n]*|[A-Za-z0-9_./\-]*)(?:"#,
        name!(),
        r#")\\{0,7}["']?[ \t]*[,;]?[ \t]*\\{0,7}["']?(?:[Vv]alue|VALUE|[Pp]arameterValue|parameter_value)\\{0,7}["']?[ \t]*[:=][ \t]*(?:\\{1,7}"(?:[^"\\\n]|\\[^"\n])+\\{1,7}"|"[^"\n]+"|'[^'\n]+'|'[^'"\n]+|[^\s"',;&}\]]+)"#
    ),
    validate: validate_named,
    anchor: Anchor::Named,
};

/// Key names of [`DETECTOR`] and [`ELEMENT`], and of JSON fields whose
/// value is a secret whatever it looks like (`redact::fields`).
pub const NAMES: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "clientsecret",
    "apikey",
    "accesstoken",
    "refreshtoken",
    "authtoken",
    "sessiontoken",
    "privatekey",
    "secretkey",
    "apitoken",
    "securitytoken",
    "vaulttoken",
    "githubtoken",
    "npmtoken",
    "gitlabtoken",
    "slacktoken",
    "bottoken",
    "privatetoken",
    "transactionkey",
    "trankey",
    "secretstring",
    "encryptionkey",
    "signingkey",
    "hmackey",
    "accountkey",
    "sharedaccesskey",
    "passwordconfirm",
    "passwordconfirmation",
    // A password's hash (Rails' `password_digest`, `password_hash`
    // columns): bcrypt and its kin are cracked offline from a log.
    "passworddigest",
    "passwordhash",
];

/// Credentials whose own prefix says what they are, wherever they stand
/// (`stripe key sk_live_…`, `export GITHUB_TOKEN ghp_…`): Stripe's secret
/// and restricted keys, GitHub's tokens, Slack's, Google's API keys,
/// GitLab's personal tokens; publishable keys (`pk_live_`) are public and
/// left alone. AWS session tokens too, by the base64 of their first bytes
/// (`IQoJb3JpZ2lu…`, `AgoJb3JpZ2lu…`, `FwoGZXIvYXdz…`, `FQoGZXIvYXdz…`,
/// `AQoDYXdz…`), percent-encoded as well: they stand under names that are
/// no key (IMDS's `"Token"`, botocore's `Credentials(…, token='…')`),
/// and a presigned URL's `X-Amz-Security-Token` escapes their `/`, `+`
/// and `=` (twice over, `%252F`, in a URL nested in another). Each
/// starts a word (`\b`): a credential glued to a word is none, and a run
/// of glued prefixes, each rejected and read again to the run's end, had
/// cost quadratic time. (A nested URL's escaped `=` glues its token:
/// `…Token%3DIQoJ…` is not found here; matching `%3D` too put the
/// prefilter past its fast form, +1.7% on clean logs.) A pass of their own, whose prefilter holds only their
/// prefixes: beside `eyJ`, `AKIA` and `bearer` in the literal pass they
/// slowed its prefilter by 9-21% (BENCHMARKS.md).
pub const VENDOR: Detector = Detector {
    kind: Kind::Secret,
    pattern: r"\b(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}|(?:ghp|gho|ghu|ghs|ghr)_[0-9A-Za-z]{36,}|github_pat_[0-9A-Za-z_]{22,}|xox[abposr]-[0-9A-Za-z\-]{10,}|AIza[0-9A-Za-z_\-]{35}|glpat-[0-9A-Za-z_\-]{20,}|(?:(?:IQoJ|AgoJ)b3JpZ2lu|F[wQ]oGZXIvYXdz|AQoDYXdz)(?:[0-9A-Za-z+/]|%(?:25)?2[BbFf]){8,}(?:=|%(?:25)?3[Dd]){0,2})",
    validate: validate_vendor,
    anchor: Anchor::Own,
};

/// `Authorization: Token <credential>` (Django REST framework's scheme,
/// and others'): the credential is replaced.
pub const TOKEN_SCHEME: Detector = Detector {
    kind: Kind::Secret,
    pattern: concat!(
        r#"(?i)authorization"#,
        name_end!(),
        "[:=]",
        value_open!(),
        r#"token[ \t]+[A-Za-z0-9._~+/\-]{8,}=*"#
    ),
    validate: validate_token_scheme,
    anchor: Anchor::Key(&["authorization"]),
};

/// `Bearer <opaque token>` (a JWT after `Bearer` is reported as a JWT).
pub const BEARER: Detector = Detector {
    kind: Kind::Secret,
    pattern: r"(?i)\bbearer[ \t]+[A-Za-z0-9._~+/|\-]+=*",
    validate: validate_bearer,
    anchor: Anchor::Literal,
};

/// `Authorization: Basic <base64 of user:password>` (and
/// `Proxy-Authorization`, `"authorization": "Basic …"`): the encoded pair
/// is replaced. Anchored on the header's name, like the pairs above: as a
/// literal `basic` (any case) it cost the scan of secret-free text about
/// 5%. Confirmed by decoding: printable text with a `:` in it.
pub const BASIC: Detector = Detector {
    kind: Kind::Secret,
    pattern: concat!(
        r#"(?i)authorization"#,
        name_end!(),
        "[:=]",
        value_open!(),
        r#"basic[ \t]+[A-Za-z0-9+/]{4,}={0,2}"#
    ),
    validate: validate_basic,
    anchor: Anchor::Key(&["authorization"]),
};

/// A password in a URL's authority (`postgres://app:pw@db:5432/x`,
/// `redis://:pw@cache`, `smtp://ann@x.io:p@ss@mail`): the password (up to
/// the authority's last `@`) is replaced, the user name kept.
/// Tried anchored at each `://` (found by `memmem`), not in the literal
/// pass: there each URL cost about 900 instructions, and logs are full of
/// URLs. A URL with no `user:password@` before its path (the usual kind)
/// fails within a few bytes.
pub const URL_CREDENTIALS: Detector = Detector {
    kind: Kind::Secret,
    pattern: r#"://[^\s:/?#"'<>\\{}|^`]{0,256}:[^\s/?#"'<>\\{}|^`]{1,1024}@"#,
    validate: validate_url_credentials,
    anchor: Anchor::Infix(b"://", has_credentials, None),
};

/// The span of a match at the `://` at `at`, if the URL has `…:…@` in its
/// authority (up to whitespace, `/`, `?`, `#`, or a byte no URL holds raw,
/// such as a quote: a URL inside JSON in a log line ends there): the
/// pattern, checked by hand first, since a regex search per URL cost
/// about 430 instructions and nearly all fail. The password runs to the
/// authority's last `@`, as URL parsers read it: a raw `@` in a password
/// is common in DSNs. No match is longer than [`URL_CREDENTIALS_MAX`].
fn has_credentials(text: &[u8], at: usize, _from: usize) -> Option<Range<usize>> {
    let end = text.len().min(at + URL_CREDENTIALS_MAX);
    // One pass, ending at the first `@` after a `:` (the regex then finds
    // the last), or at the authority's end.
    let mut colon = false;
    for &b in text.get(at + 3..end)? {
        match b {
            b':' => colon = true,
            b'@' if colon => return Some(at..end),
            b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'\\' | b'{' | b'}' | b'|' | b'^'
            | b'`' => return None,
            b if b.is_ascii_whitespace() => return None,
            _ => {}
        }
    }
    None
}

/// The longest URL-credentials match: `://`, a user name of up to 256
/// bytes, `:`, a password of up to 1,024, `@`.
const URL_CREDENTIALS_MAX: usize = 3 + 256 + 1 + 1024 + 1;

fn validate_basic(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let s = &text[m.clone()];
    let lower: Vec<u8> = s.iter().map(u8::to_ascii_lowercase).collect();
    // The first: the header's name holds none.
    let Some(basic) = lower.windows(5).position(|w| w == b"basic") else {
        return;
    };
    let start = basic
        + 5
        + s[basic + 5..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    // Held in a zeroizing buffer: it is the credential in the clear.
    let Ok(decoded) = LENIENT.decode(&s[start..]).map(zeroize::Zeroizing::new) else {
        return;
    };
    let printable = std::str::from_utf8(&decoded).is_ok_and(|t| !t.chars().any(char::is_control));
    if printable && decoded.contains(&b':') {
        push(out, Kind::Secret, m.start + start..m.end);
    }
}

/// A vendor's credential: the pattern's `\b` already refused one glued
/// to a word (`xsk_live_…`, `aghp_…`: part of something else).
fn validate_vendor(_text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    push(out, Kind::Secret, m);
}

/// The credential after the `Token` scheme's name.
fn validate_token_scheme(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let lower: Vec<u8> = s.iter().map(u8::to_ascii_lowercase).collect();
    // The first `token` before a space: the header's name holds none.
    let Some(scheme) = lower
        .windows(6)
        .position(|w| w[..5] == *b"token" && w[5].is_ascii_whitespace())
    else {
        return;
    };
    let start = scheme
        + 5
        + s[scheme + 5..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    push(out, Kind::Secret, m.start + start..m.end);
}

fn validate_url_credentials(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    // After `://` and the user name; up to the closing `@`.
    let Some(colon) = s[3..].iter().position(|&b| b == b':') else {
        return;
    };
    let start = 3 + colon + 1;
    let end = s.len() - 1;
    let password = &s[start..end];
    if password.starts_with(b"***") || password.starts_with(b"[REDACTED") || is_token(password) {
        return;
    }
    push(out, Kind::Secret, m.start + start..m.start + end);
}

fn validate_pair<const ELEMENT: bool>(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    // An ARN's resource type (`arn:aws:secretsmanager:…:secret:prod/db`),
    // in every IAM policy and CloudTrail event: a secret's name, not one.
    if !ELEMENT
        && m.start > 0
        && text[m.start - 1] == b':'
        && s.get(..7)
            .is_some_and(|n| n.eq_ignore_ascii_case(b"secret:"))
    {
        return;
    }
    let Some(start) = value_start_in::<ELEMENT>(s) else {
        return;
    };
    let quoted = |q: u8| !ELEMENT && s.ends_with(&[q]) && s[start - 1] == q;
    let end = if !ELEMENT && s[..start].ends_with(REJECTED) {
        s.len() - 1
    } else if quoted(b'"') || quoted(b'\'') {
        // An escaped quote closes an escaped one (`\"…\"`, `\\\"…\\\"`).
        let escapes = backslashes_before(s, start - 1).min(backslashes_before(s, s.len() - 1));
        s.len() - 1 - escapes
    } else if ELEMENT {
        // An element's text up to its trailing spaces; a CDATA section's,
        // to its `]]>` (text outside one cannot hold `]]>`).
        let text = s[start..].strip_suffix(b"]]>").unwrap_or(&s[start..]);
        start + text.trim_ascii_end().len()
    } else if let Some(end) = runs_to_line_end(text, &m, start) {
        end - m.start
    } else if s.ends_with(b")") && !s[start..].contains(&b'(') {
        // A call's or a repr's closing parenthesis (`Card(…,
        // password=hunter2)`, `(using password: YES)`), not the value's.
        s.len() - 1
    } else {
        runs_on(text, m.end) - m.start
    };
    if start >= end {
        return;
    }
    let s = &text[m.start..m.start + end];
    if !stands_in(&s[start..end]) {
        push(out, Kind::Secret, m.start + start..m.start + end);
    }
}

/// A value that stands in for a secret rather than being one: a vault
/// token, a mask already applied (ours, or Rails' `[FILTERED]`), a flag's
/// word.
pub fn stands_in(value: &[u8]) -> bool {
    let lower: Vec<u8> = value.iter().map(u8::to_ascii_lowercase).collect();
    is_token(value)
        || value.starts_with(b"***")
        || value.starts_with(b"[REDACTED")
        || value == b"[FILTERED]"
        || matches!(
            &lower[..],
            b"null" | b"true" | b"false" | b"none" | b"redacted" | b"yes" | b"no"
        )
}

/// The value of a [`NAMED`] match: past the naming pair's value (a quoted
/// one to its closing quote, which it cannot hold; a bare one to its last
/// name byte), the next separator's value, inside its quotes.
fn validate_named(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let Some(at) = value_start(s) else {
        return;
    };
    let naming_end = match s[at - 1] {
        q @ (b'"' | b'\'') => match s[at..].iter().position(|&b| b == q) {
            Some(n) => at + n,
            None => return,
        },
        _ => {
            at + s[at..]
                .iter()
                .take_while(|&&b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
                })
                .count()
        }
    };
    let Some(v) = value_start(&s[naming_end..]) else {
        return;
    };
    let start = naming_end + v;
    let mut end = s.len();
    if let q @ (b'"' | b'\'') = s[start - 1]
        && end > start
        && s[end - 1] == q
    {
        end -= 1;
        end -= backslashes_before(s, start - 1).min(backslashes_before(s, end));
    }
    if start < end && !stands_in(&s[start..end]) {
        push(out, Kind::Secret, m.start + start..m.start + end);
    }
}

/// Where a bare value ends that runs to its line's end: a YAML-style
/// line, `name: value` with the name (one word) first on its line after
/// indentation or a list's `- `, as configuration dumps and Kubernetes
/// manifests print them. A plain scalar there may hold spaces
/// (`password: correct horse battery staple`): all of it up to the line's
/// end is the value, less trailing spaces and a comment (` # …`). `None`
/// elsewhere, where a bare value is one word (`password: x user=bob`),
/// and for names of two words or more (`Login password: …`), which read
/// as prose.
fn runs_to_line_end(text: &[u8], m: &Range<usize>, start: usize) -> Option<usize> {
    let s = &text[m.clone()];
    let sep = s.iter().position(|&b| b == b':' || b == b'=')?;
    // The walk to the name's start may have taken indentation and a
    // list's `- ` with it, as it reads words joined by spaces and dashes.
    let indent = s[..sep]
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\t' | b'-'))
        .count();
    // A quoted name is a JSON key (`{"password": 12345, …}`), not YAML.
    if s[sep] != b':'
        || !matches!(s.get(sep + 1), Some(b' ' | b'\t'))
        || s[indent..sep].contains(&b' ')
        || matches!(s[..sep].trim_ascii_end().last(), Some(b'"' | b'\''))
    {
        return None;
    }
    let indented = text[m.start.saturating_sub(LINE_INDENT_MAX + 1)..m.start]
        .iter()
        .rev()
        .take_while(|&&b| matches!(b, b' ' | b'\t' | b'-'))
        .count();
    let line = m.start - indented;
    let opener = line.checked_sub(1).map(|i| text[i]);
    if indented > LINE_INDENT_MAX || !matches!(opener, None | Some(b'\n' | b'\r' | b'"')) {
        return None;
    }
    // A JSON string's opening quote starts a line too, as its text alone
    // would (the NDJSON walkers scan a line whole or each string alone,
    // and agree); the value then ends at the string's close.
    let quoted = opener == Some(b'"');
    let from = m.start + start;
    let rest = &text[from..];
    let mut end = rest
        .iter()
        .position(|&b| b == b'\n' || b == b'\r' || quoted && b == b'"')
        .unwrap_or(rest.len());
    if quoted && rest.get(end) == Some(&b'"') {
        // An escaped string's close (`\"`): its backslashes stay.
        end -= backslashes_before(rest, end);
    }
    if let Some(c) = rest[..end]
        .windows(2)
        .position(|w| matches!(w[0], b' ' | b'\t') && w[1] == b'#')
    {
        end = c;
    }
    let end = from + rest[..end].trim_ascii_end().len();
    (end > m.end).then_some(end)
}

/// Where a bare value that the pattern ended at `end` (before a `;` or a
/// `,`) really ends: a password may hold those bytes (`password=p4ss;w0rd`),
/// and what follows one is the value's still unless it starts another pair
/// (`Password=…;Database=x`, `password=x,user=y`), a space (`password=x;
/// path=/`, `{password=x, user=y}`) or a quote. Each piece taken is bare
/// bytes that end where a value would: at a space, a quote, a bracket's
/// close, a `&`, the text's end, or another `;` or `,` read the same way;
/// one that ends at a `=`, `:`, `(` or anything else is not taken. A
/// backslash stops the reading too: what an escape stands for is not known
/// here (`password=a;b\nc` in a line of text keeps `;b\nc`).
fn runs_on(text: &[u8], mut end: usize) -> usize {
    while let Some(b';' | b',') = text.get(end) {
        let piece = text[end + 1..]
            .iter()
            .take_while(|&&b| !b.is_ascii_whitespace() && !PIECE_STOPS.contains(&b))
            .count();
        let after = text.get(end + 1 + piece);
        if piece == 0 || after.is_some_and(|b| !b.is_ascii_whitespace() && !PIECE_ENDS.contains(b))
        {
            break;
        }
        end += 1 + piece;
    }
    end
}

/// Bytes a piece of a bare value [`runs_on`] reads cannot hold.
const PIECE_STOPS: &[u8] = b"\"',;&}])(=:<>\\";

/// Bytes a piece may end at, beside a space and the text's end.
const PIECE_ENDS: &[u8] = b"\"',;&}])";

/// The most bytes of indentation (and `- `) read before a YAML-style
/// line's name ([`runs_to_line_end`]).
const LINE_INDENT_MAX: usize = 64;

fn validate_bearer(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let start = 6 + s[6..]
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    // A short one must hold a digit (`Bearer a1b2c3d4`): prose's
    // `bearer authentication` and a client's `Bearer undefined` hold none.
    let value = &s[start..];
    let short = value.len() < 16 && !(value.len() >= 8 && value.iter().any(u8::is_ascii_digit));
    if short || is_token(value) {
        return;
    }
    let kind = if value.starts_with(b"eyJ") {
        Kind::Jwt
    } else {
        Kind::Secret
    };
    push(out, kind, m.start + start..m.end);
}

/// A vault token as a value is not a secret (it is what replaced one).
fn is_token(v: &[u8]) -> bool {
    std::str::from_utf8(v).is_ok_and(|t| crate::vault::token::Token::parse(t).is_ok())
}
