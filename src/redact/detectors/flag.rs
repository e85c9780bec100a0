//! Command-line flags whose next word is a secret (`docker login
//! --password …`, `vault login --token …`, `--db-password '…'`), as CI
//! jobs and process listings print commands. `--password=…` is a pair
//! and read as one ([`super::secret::DETECTOR`]).

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};

/// A flag whose name ends in a secret's name, then spaces and its value:
/// quoted, or a bare word that does not start with `-` (the next flag:
/// `--password --verbose` holds none).
pub const DETECTOR: Detector = Detector {
    kind: Kind::Secret,
    pattern: r#"--(?i:(?:[a-z0-9]+[-_])*(?:password|passwd|passphrase|secret|api[-_]?key|secret[-_]?key|token))[ \t]+(?:"[^"\n]+"|'[^'\n]+'|[^\s"'\-][^\s"']*)"#,
    validate,
    anchor: Anchor::Infix(b"--", flag_start, None),
};

/// Single-dash flags of the tools that take passwords so: Java's
/// `keytool` and `jarsigner` (`-storepass changeit`, `-keypass`,
/// `-srcstorepass`, `-deststorepass`), and OpenSSL's
/// `-passin`/`-passout`/`-pass`/`-password` with a `pass:` value
/// (`env:`, `file:` and `fd:` name where the password is, and are kept).
/// Found on the pass of credentials known by their own prefix, whose
/// prefilter holds these flags' names: a pass of their own around each
/// `pass` cost 3.4% of a scan of clean logs, and this one 1.1%
/// (BENCHMARKS.md). Java's flags are matched from `storepass` and
/// `keypass`: their six spellings from the `-` made the scan 4.8%
/// slower (`-dest` shares its start with common words).
pub const SINGLE_DASH: Detector = Detector {
    kind: Kind::Secret,
    pattern: r#"(?:store|key)pass\b[ \t]+(?:"[^"\n]+"|'[^'\n]+'|[^\s"'\-][^\s"']*)|-pass(?:in|out|word)?\b[ \t]+(?:'pass:[^'\n]+'|"pass:[^"\n]+"|["']?pass:[^\s"']+)"#,
    validate: validate_single_dash,
    anchor: Anchor::Own,
};

/// MySQL's clients (`mysql`, `mysqldump`, `mysqladmin`, …) take the
/// password glued to `-p` (`mysql -u root -pS3cret db`; a bare `-p`
/// prompts, and the next word is the database). The pattern is the
/// command's name; its flags are read by hand, up to 256 bytes and not
/// past a shell's `;`, `|`, `&`, `<` or `>` (`mysql && netstat -plnt`),
/// a quoted argument passed over whole (`-e "SELECT 1; …"`): a pattern
/// through to the `-p` hid what stood between (a key in `mysql -e "…"`)
/// from the rest of its pass.
pub const MYSQL: Detector = Detector {
    kind: Kind::Secret,
    pattern: r#"mysql[a-z]{0,8}[ \t]"#,
    validate: validate_mysql,
    anchor: Anchor::Own,
};

/// How far after a MySQL client's name its `-p` is looked for.
const MYSQL_FLAGS: usize = 256;

/// Whether the flag or command at `at` stands alone: at the text's
/// start, or after a space, a tab, a quote or (a command's path) `/`.
fn stands_alone(text: &[u8], at: usize) -> bool {
    at == 0 || matches!(text[at - 1], b' ' | b'\t' | b'"' | b'\'' | b'/')
}

/// The value after the flag's spaces (OpenSSL's after its `pass:`),
/// inside its quotes.
fn validate_single_dash(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    if s.starts_with(b"-pass") {
        if !stands_alone(text, m.start) || m.start > 0 && text[m.start - 1] == b'/' {
            return;
        }
        // `pass:…`, or `'pass:…'`: the value after the scheme, to the
        // quote that closes it (if any: a line cut inside it keeps the
        // rest).
        let Some(scheme) = memchr::memmem::find(s, b"pass:").filter(|&i| i > 5) else {
            return;
        };
        let end = if matches!(s[scheme - 1], b'\'' | b'"') && s[s.len() - 1] == s[scheme - 1] {
            m.end - 1
        } else {
            m.end
        };
        push_value(text, m.start + scheme + 5..end, out);
        return;
    }
    // Java's flags are matched from their `storepass` or `keypass`: the
    // flag starts at the `-` before it, or before its `src` or `dest`.
    let before = &text[..m.start];
    let flag = [&b"-"[..], b"-src", b"-dest"]
        .iter()
        .find(|p| before.ends_with(p))
        .map(|p| m.start - p.len());
    if !flag.is_some_and(|at| stands_alone(text, at) && (at == 0 || text[at - 1] != b'/')) {
        return;
    }
    let gap = s
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(s.len());
    push_value(text, m.start + gap..m.end, out);
}

/// The value glued to the first ` -p` among the client's flags: to the
/// next blank, or inside its quotes.
fn validate_mysql(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    if !stands_alone(text, m.start) {
        return;
    }
    let flags = &text[m.end - 1..text.len().min(m.end + MYSQL_FLAGS)];
    // The first ` -p` outside quotes, before the command ends.
    let mut quote = None;
    let mut found = None;
    for (i, &b) in flags.iter().enumerate() {
        match (quote, b) {
            (_, b'\n') => break,
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b';' | b'|' | b'&' | b'<' | b'>') => break,
            (None, b'-')
                if i > 0
                    && matches!(flags[i - 1], b' ' | b'\t')
                    && flags.get(i + 1) == Some(&b'p') =>
            {
                found = Some(i + 2);
                break;
            }
            _ => {}
        }
    }
    let Some(p) = found else {
        return;
    };
    let start = m.end - 1 + p;
    let value = &text[start..];
    let len = match value.first() {
        Some(&q @ (b'"' | b'\'')) => match memchr::memchr2(q, b'\n', &value[1..]) {
            Some(i) if value[1 + i] == q => i + 2,
            _ => return,
        },
        Some(b) if !b.is_ascii_whitespace() && *b != b'-' => value
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(value.len()),
        _ => return,
    };
    push_value(text, start..start + len, out);
}

/// A value, after its blanks and inside its quotes, unless already masked.
fn push_value(text: &[u8], r: Range<usize>, out: &mut Vec<Finding>) {
    let (mut start, mut end) = (r.start, r.end);
    while start < end && matches!(text[start], b' ' | b'\t') {
        start += 1;
    }
    if end > start + 1 && matches!(text[start], b'"' | b'\'') && text[end - 1] == text[start] {
        start += 1;
        end -= 1;
    }
    let value = &text[start..end];
    if start < end && !value.starts_with(b"***") && !value.starts_with(b"[REDACTED") {
        push(out, Kind::Secret, start..end);
    }
}

/// The longest match searched for, so that a line of flags costs linear
/// time. A value running past it is masked up to it; no secret is that
/// long.
const FLAG_MAX: usize = 1024;

/// The span of a match at the `--` at `at`, if it starts a flag: at the
/// start of the text or after a space, a tab or a quote, with a letter
/// after it (`git log -- path`, `----` and `a--b` are no flags).
fn flag_start(text: &[u8], at: usize, _from: usize) -> Option<Range<usize>> {
    let starts = at == 0 || matches!(text[at - 1], b' ' | b'\t' | b'"' | b'\'');
    (starts && text.get(at + 2).is_some_and(u8::is_ascii_alphabetic))
        .then(|| at..text.len().min(at + FLAG_MAX))
}

/// The value: after the name's spaces, inside its quotes.
fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    if let Some(gap) = s.iter().position(|&b| b == b' ' || b == b'\t') {
        push_value(text, m.start + gap..m.end, out);
    }
}
