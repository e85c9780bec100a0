//! JSON field-name rules: a field named like sensitive data is redacted
//! whatever its value looks like (a CVV is just three digits). Defaults
//! below; more come from `[redact.fields]`.

use std::collections::HashMap;

use aho_corasick::AhoCorasick;

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
    ("passphrase", Kind::Secret),
    ("secret", Kind::Secret),
    ("clientsecret", Kind::Secret),
    ("apikey", Kind::Secret),
    ("accesstoken", Kind::Secret),
    ("refreshtoken", Kind::Secret),
    ("authtoken", Kind::Secret),
    ("privatekey", Kind::Secret),
    ("secretaccesskey", Kind::AwsSecret),
    ("awssecretaccesskey", Kind::AwsSecret),
    ("pin", Kind::Secret),
    ("pinblock", Kind::Secret),
    ("ssn", Kind::Ssn),
    ("socialsecuritynumber", Kind::Ssn),
];

/// Field names (normalized: lower case, letters and digits only) → type,
/// and an automaton over the names for a one-pass "could any be here?".
#[derive(Debug, Clone)]
pub struct FieldRules {
    names: HashMap<String, Kind>,
    any: AhoCorasick,
}

/// Lower case, letters and digits only: `Card_Number` = `cardNumber`.
pub fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
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
        let any = AhoCorasick::new(names.keys()).expect("field names build an automaton");
        Self { names, any }
    }

    /// Whether any rule's name could be a key in `raw` JSON: a cheap,
    /// over-inclusive test on the letters of the line (case, `_` and `-`
    /// ignored), so a miss is certain and a hit only means "look closer".
    pub fn any_named_in(&self, raw: &[u8]) -> bool {
        let letters: Vec<u8> = raw
            .iter()
            .filter(|b| b.is_ascii_alphanumeric())
            .map(u8::to_ascii_lowercase)
            .collect();
        self.any.is_match(&letters)
    }

    /// The type a field of this name holds, if it names sensitive data:
    /// the name itself, or one ending in it (`db_password`, `card_cvv`);
    /// the shortest names (`pin`, `cid`) only exactly, as many words end in
    /// them.
    pub fn kind_of(&self, name: &str) -> Option<Kind> {
        if name.len() > 64 {
            return None;
        }
        let n = normalize(name);
        if let Some(k) = self.names.get(&n) {
            return Some(*k);
        }
        self.names
            .iter()
            .filter(|(rule, _)| !matches!(rule.as_str(), "pin" | "cid"))
            .find(|(rule, _)| n.ends_with(rule.as_str()))
            .map(|(_, k)| *k)
    }
}
