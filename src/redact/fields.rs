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

/// Field names (normalized: lower case, letters and digits only) → type.
#[derive(Debug, Clone)]
pub struct FieldRules(HashMap<String, Kind>);

/// Lower case, letters and digits only: `Card_Number` = `cardNumber`.
pub fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl Default for FieldRules {
    fn default() -> Self {
        Self(
            DEFAULTS
                .iter()
                .map(|(n, k)| ((*n).to_owned(), *k))
                .collect(),
        )
    }
}

impl FieldRules {
    /// The defaults plus `extra` (name → type name); unknown types refused.
    pub fn with(extra: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        let mut rules = Self::default();
        for (name, kind) in extra {
            let k = Kind::parse(kind).ok_or_else(|| {
                format!(
                    "redact.fields.{name}: unknown type {kind:?}; known: {}",
                    Kind::names()
                )
            })?;
            rules.0.insert(normalize(name), k);
        }
        Ok(rules)
    }

    /// The type a field of this name holds, if it names sensitive data.
    pub fn kind_of(&self, name: &str) -> Option<Kind> {
        if name.len() > 64 {
            return None;
        }
        self.0.get(&normalize(name)).copied()
    }
}
