//! Bearer API keys.
//!
//! Config holds only SHA-256 digests of keys, so a leaked config file does
//! not leak keys. Keys are high-entropy, which is why a plain hash (not a
//! password hash) is enough. Every configured digest is compared, in
//! constant time, so timing tells nothing about which key nearly matched.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use subtle::ConstantTimeEq;

use super::Principal;

/// Parses `sha256:<hex>` or `<hex>` into 32 bytes.
pub fn parse_digest(s: &str) -> Option<[u8; 32]> {
    let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
    let bytes = hex::decode(hex_part).ok()?;
    bytes.try_into().ok()
}

/// The digest form config expects for a key.
pub fn digest_hex(key: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, key.as_bytes()))
}

/// The configured keys.
#[derive(Clone, Default)]
pub struct ApiKeys {
    entries: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(n, _)| n))
            .finish()
    }
}

impl ApiKeys {
    /// From `[api_keys]`; digests were checked when settings loaded.
    pub fn from_settings(map: &BTreeMap<String, String>) -> Self {
        Self {
            entries: map
                .iter()
                .filter_map(|(n, d)| parse_digest(d).map(|d| (n.clone(), d)))
                .collect(),
        }
    }

    /// The principal of a presented key, if any configured key matches.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let d = digest::digest(&digest::SHA256, presented.as_bytes());
        let mut found: Option<&str> = None;
        for (name, want) in &self.entries {
            if bool::from(want.ct_eq(d.as_ref())) {
                found = Some(name);
            }
        }
        found.map(|n| Principal::new(format!("apikey:{n}")))
    }
}

/// Checks a bearer against a single digest in constant time (`/metrics`).
pub fn matches_digest(presented: &str, want: &[u8; 32]) -> bool {
    let d = digest::digest(&digest::SHA256, presented.as_bytes());
    bool::from(want.ct_eq(d.as_ref()))
}
