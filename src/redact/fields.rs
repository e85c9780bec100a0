//! JSON field-name rules: a field named like sensitive data is redacted
//! whatever its value looks like (a CVV is just three digits). Defaults
//! below; more come from `[redact.fields]`.

use std::collections::HashMap;

use super::Kind;

const DEFAULTS: &[(&str, Kind)] = &[
    ("cvv", Kind::Cvv),
    ("cvv2", Kind::Cvv),
    ("cvc", Kind::Cvv),
    ("cvc2", Kind::Cvv),
    ("cid", Kind::Cvv),
    ("csc", Kind::Cvv),
    ("cardcode", Kind::Cvv),
    ("securitycode", Kind::Cvv),
    ("cardnumber", Kind::Pan),
    ("cardno", Kind::Pan),
    ("ccnumber", Kind::Pan),
    ("creditcard", Kind::Pan),
    ("creditcardnumber", Kind::Pan),
    ("primaryaccountnumber", Kind::Pan),
    ("password", Kind::Secret),
    ("passwd", Kind::Secret),
    ("pwd", Kind::Secret),
    ("passphrase", Kind::Secret),
    ("secret", Kind::Secret),
    ("clientsecret", Kind::Secret),
    ("apikey", Kind::Secret),
    ("accesstoken", Kind::Secret),
    ("refreshtoken", Kind::Secret),
    ("authtoken", Kind::Secret),
    ("privatekey", Kind::Secret),
    ("secretkey", Kind::Secret),
    ("secretaccesskey", Kind::AwsSecret),
    ("awssecretaccesskey", Kind::AwsSecret),
    ("pin", Kind::Secret),
    ("pinblock", Kind::Secret),
    ("ssn", Kind::Ssn),
    ("socialsecuritynumber", Kind::Ssn),
];

/// Field names (normalized: lower case, letters and digits only) → type,
/// bucketed by their last byte: every key of every JSON line is looked up,
/// and a bucket holds a handful of names to compare, with no hashing.
#[derive(Debug, Clone)]
pub struct FieldRules {
    by_last: Vec<Vec<(Box<str>, Kind)>>,
}

/// Names so short that many words end in them: they match only whole.
const WHOLE_ONLY: &[&str] = &["pin", "cid"];

/// Longest field name looked at: longer keys are not rules' names.
const MAX_NAME: usize = 64;

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
    DEFAULTS
        .iter()
        .map(|(n, k)| ((*n).to_owned(), *k))
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
        Self { by_last }
    }

    /// Whether raw JSON holds a key (a quoted name before a `:`) that names
    /// sensitive data. A line without one, and without escapes, can have
    /// its values checked by a scan of its raw bytes alone.
    pub fn names_a_key(&self, raw: &[u8]) -> bool {
        memchr::memchr_iter(b':', raw).any(|p| {
            let mut end = p;
            while end > 0 && raw[end - 1].is_ascii_whitespace() {
                end -= 1;
            }
            if end == 0 || raw[end - 1] != b'"' {
                return false;
            }
            let close = end - 1;
            let Some(open) = memchr::memrchr(b'"', &raw[close.saturating_sub(MAX_NAME + 1)..close])
            else {
                return false;
            };
            let open = close.saturating_sub(MAX_NAME + 1) + open;
            self.kind_of_bytes(&raw[open + 1..close]).is_some()
        })
    }

    /// The type a field of this name holds, if it names sensitive data:
    /// the name itself, or one ending in it (`db_password`, `card_cvv`);
    /// the shortest names (`pin`, `cid`) only exactly, as many words end in
    /// them.
    pub fn kind_of(&self, name: &str) -> Option<Kind> {
        self.kind_of_bytes(name.as_bytes())
    }

    /// [`FieldRules::kind_of`] for a name in raw bytes.
    pub fn kind_of_bytes(&self, name: &[u8]) -> Option<Kind> {
        if name.len() > MAX_NAME {
            return None;
        }
        // Most keys (`ts`, `level`, `msg`) end in a byte no rule ends in.
        let last = name.iter().rev().find(|b| b.is_ascii_alphanumeric())?;
        if self.by_last[usize::from(last.to_ascii_lowercase())].is_empty() {
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
