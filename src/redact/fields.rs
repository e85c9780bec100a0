//! JSON field-name rules: a field named like sensitive data is redacted
//! whatever its value looks like (a CVV is just three digits). Defaults
//! below; more come from `[redact.fields]`.

use std::collections::HashMap;

use super::Kind;
use super::detectors::{cvv, pin, secret};
use super::pairs::EndPairs;

/// Besides the card security code's names ([`cvv::NAMES`]), the PIN's
/// ([`pin::NAMES`]) and the secrets' ([`secret::NAMES`]), which the text
/// detectors anchor on too.
const DEFAULTS: &[(&str, Kind)] = &[
    ("cardnumber", Kind::Pan),
    ("cardno", Kind::Pan),
    ("ccnumber", Kind::Pan),
    ("creditcard", Kind::Pan),
    ("creditcardnumber", Kind::Pan),
    ("primaryaccountnumber", Kind::Pan),
    // A header's credential whatever its scheme (`Basic`, `Token`, …).
    ("authorization", Kind::Secret),
    ("secretaccesskey", Kind::AwsSecret),
    ("awssecretaccesskey", Kind::AwsSecret),
    // Magnetic-stripe tracks and EMV's track 2 equivalent (PCI DSS 3.3.1).
    ("track1", Kind::Secret),
    ("track2", Kind::Secret),
    ("track1data", Kind::Secret),
    ("track2data", Kind::Secret),
    ("trackdata", Kind::Secret),
    ("track2equivalent", Kind::Secret),
    ("track2equivalentdata", Kind::Secret),
    ("magstripe", Kind::Secret),
    ("magstripedata", Kind::Secret),
    ("ssn", Kind::Ssn),
    ("socialsecuritynumber", Kind::Ssn),
];

/// Field names (normalized: lower case, letters and digits only) → type,
/// bucketed by their last byte: every key of every JSON line is looked up,
/// and a bucket holds a handful of names to compare, with no hashing.
#[derive(Debug, Clone)]
pub struct FieldRules {
    by_last: Vec<Vec<(Box<str>, Kind)>>,
    /// The byte pairs names end in: common keys (`trace_id`, `duration`,
    /// `token`) end in a byte that names do, but rarely in a pair, and one
    /// bit test turns them away before their name is normalized and
    /// compared.
    pairs: EndPairs,
}

/// Names so short that many words end in them: they match only whole.
const WHOLE_ONLY: &[&str] = &["pin", "cid", "cvd", "cv2"];

/// Longest field name looked at: longer keys are not rules' names.
const MAX_NAME: usize = 64;

/// Keys whose string names the field a sibling holds
/// ([`FieldRules::names_a_pair`]), as spelled: lower case, capitalized or
/// upper case.
const PAIR_NAMES: &[&[u8]] = &[
    b"name",
    b"Name",
    b"NAME",
    b"key",
    b"Key",
    b"KEY",
    b"parameterKey",
    b"ParameterKey",
    b"parameter_key",
    b"parameterName",
    b"ParameterName",
    b"parameter_name",
];

/// The siblings that hold the named field's value, as spelled. Each ends
/// in `alue` or `ALUE`, which a block of lines is searched for before its
/// keys are looked at ([`FieldRules::names_a_pair`]).
const PAIR_VALUES: &[&[u8]] = &[
    b"value",
    b"Value",
    b"VALUE",
    b"parameterValue",
    b"ParameterValue",
    b"parameter_value",
];

/// Whether a key names its sibling's field.
fn is_pair_name(key: &[u8]) -> bool {
    PAIR_NAMES.contains(&key)
}

/// Whether a key holds the value its sibling names.
pub fn is_pair_value(key: &str) -> bool {
    PAIR_VALUES.contains(&key.as_bytes())
}

/// What every key of [`PAIR_VALUES`] ends in, with its closing quote.
static PAIR_VALUE_END: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 2]> =
    std::sync::LazyLock::new(|| {
        [
            memchr::memmem::Finder::new(b"alue\""),
            memchr::memmem::Finder::new(b"ALUE\""),
        ]
    });

/// Whether raw JSON may hold a key of [`PAIR_VALUES`]: lines without one
/// hold no pair, and their keys need not be looked at for one. Asked of a
/// block of lines at once: a search per line cost 2% on NDJSON.
pub fn may_hold_a_pair(raw: &[u8]) -> bool {
    PAIR_VALUE_END.iter().any(|f| f.find(raw).is_some())
}

/// The keys of raw JSON (quoted names before a `:`), each with the bytes
/// after its `:`.
fn keys(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    memchr::memchr_iter(b':', raw).filter_map(|p| {
        let mut end = p;
        while end > 0 && raw[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        if end == 0 || raw[end - 1] != b'"' {
            return None;
        }
        let close = end - 1;
        let from = close.saturating_sub(MAX_NAME + 1);
        let open = from + memchr::memrchr(b'"', &raw[from..close])?;
        Some((&raw[open + 1..close], &raw[p + 1..]))
    })
}

/// The name a numbered name numbers: `password1` → `password`, `pin_2`
/// → `pin`; a `1` or `2` last, after a letter, one `_` or `-` between
/// them or none: as the scanner reads a pair's name
/// (`scanner::numbered_name_end`).
pub fn numbered(name: &[u8]) -> Option<&[u8]> {
    let (&digit, rest) = name.split_last()?;
    if !matches!(digit, b'1' | b'2') {
        return None;
    }
    let rest = match rest.split_last() {
        Some((b'_' | b'-', before)) => before,
        _ => rest,
    };
    rest.last()
        .is_some_and(u8::is_ascii_alphabetic)
        .then_some(rest)
}

/// Lower case, letters and digits only: `Card_Number` = `cardNumber`.
pub fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// [`normalize`] into a stack buffer: the walker asks for every key of
/// every document, and an allocation per key was a tenth of its time.
fn normalize_into<'b>(name: &[u8], buf: &'b mut [u8; MAX_NAME]) -> &'b str {
    let mut n = 0;
    for &b in name.iter().filter(|b| b.is_ascii_alphanumeric()) {
        buf[n] = b.to_ascii_lowercase();
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).expect("ASCII letters and digits")
}

fn defaults() -> HashMap<String, Kind> {
    let codes = cvv::NAMES.iter().chain(cvv::FIELD_NAMES);
    let pins = pin::NAMES.iter().chain(pin::FIELD_NAMES);
    let codes = codes.map(|n| (n, Kind::Cvv));
    let pins = pins.map(|n| (n, Kind::Secret));
    let secrets = secret::NAMES.iter().map(|n| (n, Kind::Secret));
    let rest = DEFAULTS.iter().map(|(n, k)| (n, *k));
    codes
        .chain(pins)
        .chain(secrets)
        .chain(rest)
        .map(|(n, k)| ((*n).to_owned(), k))
        .collect()
}

impl Default for FieldRules {
    fn default() -> Self {
        Self::from_names(defaults())
    }
}

impl FieldRules {
    /// The defaults plus `extra` (name → type name); unknown types refused.
    pub fn with(extra: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        let mut names = defaults();
        for (name, kind) in extra {
            let k = Kind::parse(kind).ok_or_else(|| {
                format!(
                    "redact.fields.{name}: unknown type {kind:?}; known: {}",
                    Kind::names()
                )
            })?;
            let n = normalize(name);
            if n.is_empty() {
                return Err(format!("redact.fields: {name:?} has no letters or digits"));
            }
            names.insert(n, k);
        }
        Ok(Self::from_names(names))
    }

    fn from_names(names: HashMap<String, Kind>) -> Self {
        let mut by_last = vec![Vec::new(); 256];
        for (name, kind) in names {
            let last = *name.as_bytes().last().expect("names are not empty");
            by_last[usize::from(last)].push((name.into_boxed_str(), kind));
        }
        // Longest first, so `creditcardnumber` wins over `cardnumber`.
        for bucket in &mut by_last {
            bucket.sort_by(|a: &(Box<str>, Kind), b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        }
        let pairs = EndPairs::new(by_last.iter().flatten().map(|(n, _)| n.as_bytes()));
        Self { by_last, pairs }
    }

    /// Whether raw JSON holds a key (a quoted name before a `:`) that names
    /// sensitive data. A line without one (nor a pair naming some,
    /// [`FieldRules::names_a_pair`]), and without escapes, can have its
    /// values checked by a scan of its raw bytes alone.
    pub fn names_a_key(&self, raw: &[u8]) -> bool {
        keys(raw).any(|(key, _)| self.kind_of_bytes(key).is_some())
    }

    /// Whether raw JSON holds a name/value pair whose name is a string
    /// naming sensitive data: `{"name": "DB_PASSWORD", "value": "..."}`
    /// (Kubernetes' and ECS's environment), `{"Key": "api_key", "Value":
    /// ...}` (AWS tags), CloudFormation's `ParameterKey`. The raw walker
    /// writes an object's members as it meets them and cannot tell the
    /// value from the name that comes after it, so such a line is parsed.
    pub fn names_a_pair(&self, raw: &[u8]) -> bool {
        keys(raw).any(|(key, rest)| is_pair_name(key) && self.names_in(rest).is_some())
    }

    /// How many name/value pairs in raw JSON name a type `enabled` takes:
    /// a parse keeps only the last of duplicate keys, and a walk that met
    /// fewer has lost a name (`{"name": "DB_PASSWORD", "value": …,
    /// "name": "x"}`).
    pub fn pairs_named(&self, raw: &[u8], enabled: impl Fn(Kind) -> bool) -> usize {
        keys(raw)
            .filter(|(key, rest)| is_pair_name(key) && self.names_in(rest).is_some_and(&enabled))
            .count()
    }

    /// The type the `value` member of `object` holds when a name member
    /// names sensitive data ([`FieldRules::names_a_pair`]).
    pub fn pair_kind(&self, object: &serde_json::Map<String, serde_json::Value>) -> Option<Kind> {
        object.iter().find_map(|(k, v)| match v {
            serde_json::Value::String(name) if is_pair_name(k.as_bytes()) => self.kind_of(name),
            _ => None,
        })
    }

    /// The type raw JSON after a key's `:` names, if it is a string naming
    /// sensitive data.
    fn names_in(&self, rest: &[u8]) -> Option<Kind> {
        let start = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let rest = rest[start..].strip_prefix(b"\"")?;
        let window = &rest[..rest.len().min(MAX_NAME + 1)];
        let end = memchr::memchr(b'"', window)?;
        self.kind_of_bytes(&window[..end])
    }

    /// The type a field of this name holds, if it names sensitive data:
    /// the name itself, or one ending in it (`db_password`, `card_cvv`);
    /// the shortest names (`pin`, `cid`) only exactly, as many words end in
    /// them. A secret's name numbered `1` or `2` ([`numbered`]) is its
    /// name's (`new_password1` and `new_password2`, as Django's forms
    /// name a password and its confirmation; `pin1`).
    pub fn kind_of(&self, name: &str) -> Option<Kind> {
        self.kind_of_bytes(name.as_bytes())
    }

    /// [`FieldRules::kind_of`] for a name in raw bytes.
    pub fn kind_of_bytes(&self, name: &[u8]) -> Option<Kind> {
        if name.len() > MAX_NAME {
            return None;
        }
        self.kind_of_whole(name).or_else(|| {
            // Secrets' names only: a numbered code or id (`cid1`, a
            // content id) is no card's.
            self.kind_of_whole(numbered(name)?)
                .filter(|&k| k == Kind::Secret)
        })
    }

    /// [`FieldRules::kind_of_bytes`], the name taken as it is. Inlined: a
    /// call per key of every document cost NDJSON 0.5%.
    #[inline(always)]
    fn kind_of_whole(&self, name: &[u8]) -> Option<Kind> {
        if name.len() > MAX_NAME {
            return None;
        }
        // Most keys (`ts`, `level`, `msg`) end in a byte no rule ends in,
        // most others in a pair none does.
        let mut tail = name.iter().rev().filter(|b| b.is_ascii_alphanumeric());
        let last = tail.next()?.to_ascii_lowercase();
        if self.by_last[usize::from(last)].is_empty() {
            return None;
        }
        // A one-byte key pairs with 0, which only one-byte names set.
        let second = tail.next().map_or(0, u8::to_ascii_lowercase);
        if !self.pairs.holds(second, last) {
            return None;
        }
        let mut buf = [0u8; MAX_NAME];
        let n = normalize_into(name, &mut buf);
        let last = *n.as_bytes().last()?;
        self.by_last[usize::from(last)]
            .iter()
            .find(|(rule, _)| {
                n.ends_with(&**rule) && (n.len() == rule.len() || !WHOLE_ONLY.contains(&&**rule))
            })
            .map(|(_, k)| *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule read plainly: normalize, then the longest name the key is
    /// or ends in (the shortest names only whole).
    /// A name numbered `1` or `2` after a letter, read as its name.
    fn reference(names: &HashMap<String, Kind>, key: &str) -> Option<Kind> {
        let n = normalize(key);
        if key.len() > MAX_NAME || n.is_empty() {
            return None;
        }
        let of = |n: &str| {
            names
                .iter()
                .filter(|(rule, _)| {
                    n.ends_with(rule.as_str())
                        && (n.len() == rule.len() || !WHOLE_ONLY.contains(&rule.as_str()))
                })
                .max_by(|a, b| a.0.len().cmp(&b.0.len()).then(b.0.cmp(a.0)))
                .map(|(_, k)| *k)
        };
        // Numbered: `1` or `2` last, one `_` or `-` or none before it, a
        // letter before that; secrets only.
        let k = key.as_bytes();
        let stem = match k {
            [.., b, j, b'1' | b'2'] if matches!(j, b'_' | b'-') && b.is_ascii_alphabetic() => {
                Some(&key[..k.len() - 2])
            }
            [.., b, b'1' | b'2'] if b.is_ascii_alphabetic() => Some(&key[..k.len() - 1]),
            _ => None,
        };
        of(&n).or_else(|| {
            stem.and_then(|s| of(&normalize(s)))
                .filter(|&k| k == Kind::Secret)
        })
    }

    #[test]
    fn lookups_agree_with_the_rule_read_plainly() {
        let extra = [("x", "email"), ("zq", "ssn"), ("Order-Ref", "pan")]
            .iter()
            .map(|(n, k)| ((*n).to_owned(), (*k).to_owned()))
            .collect();
        let rules = FieldRules::with(&extra).unwrap();
        let mut names = defaults();
        for (n, k) in &extra {
            names.insert(normalize(n), Kind::parse(k).unwrap());
        }
        let mut keys: Vec<String> = [
            "ts",
            "level",
            "msg",
            "trace_id",
            "order_id",
            "duration",
            "token",
            "status",
            "x",
            "ax",
            "a_x",
            "zq",
            "azq",
            "z",
            "q",
            "pin",
            "spin",
            "pin_",
            "cid",
            "acid",
            "Card_Number",
            "card-cvv",
            "db_password",
            "PWD",
            "orderRef",
            "order_ref_",
            "_",
            "",
            "é_pin",
            "password1",
            "password1_",
            "password.1",
            "password__1",
            "cid1",
            "new_password_2",
            "pin1",
            "spin1",
            "cvv2",
            "cvv22",
            "password12",
            "password0",
            "password3",
            "v1",
            "sha256",
            "1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for name in names.keys() {
            keys.push(name.clone());
            keys.push(format!("my_{name}"));
            keys.push(format!("{name}s"));
            keys.push(name.to_uppercase());
            keys.push(name[1..].to_owned());
            keys.push(format!("{name}2"));
            keys.push(format!("{name}_9"));
        }
        keys.push("a".repeat(MAX_NAME + 1) + "password");
        keys.push("a".repeat(MAX_NAME - 8) + "password1");
        for key in &keys {
            assert_eq!(rules.kind_of(key), reference(&names, key), "{key:?}");
        }
    }
}
