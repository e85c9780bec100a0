//! Bearer API keys.
//!
//! Config holds only SHA-256 digests of keys, so a leaked config file does
//! not leak keys. Keys are high-entropy, which is why a plain hash (not a
//! password hash) is enough. Every configured digest is compared, in
//! constant time, so timing tells nothing about which key nearly matched.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::Principal;

/// Parses `sha256:<hex>` or `<hex>` into 32 bytes.
pub fn parse_digest(s: &str) -> Option<[u8; 32]> {
    let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
    let bytes = hex::decode(hex_part).ok()?;
    bytes.try_into().ok()
}

/// The digest form config expects for a key.
pub fn digest_hex(key: &str) -> String {
    crate::crypto::to_hex(digest::digest(&digest::SHA256, key.as_bytes()).as_ref())
}

/// Numbers each set of keys loaded, so a memo of a key proved under one
/// set is not taken under the next (a reload may revoke it).
static KEY_SETS: AtomicU64 = AtomicU64::new(1);

/// The configured keys.
#[derive(Clone, Default)]
pub struct ApiKeys {
    entries: Vec<(String, [u8; 32])>,
    /// Which load these are (0: the empty default, which proves no key).
    set: u64,
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
            set: KEY_SETS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// As [`ApiKeys::authenticate`], first asking `memo`, the key this
    /// connection last proved: a keep-alive client sends the same key on
    /// every request, and its SHA-256 (no SHA extensions on the machines
    /// we measure) and the compare against every digest were about 6,600
    /// instructions of each. The memo holds only a key that matched, under
    /// this very set of keys.
    pub fn authenticate_with(&self, presented: &str, memo: &KeyMemo) -> Option<Principal> {
        if let Some(p) = memo.recall(self.set, presented) {
            return Some(p);
        }
        let p = self.authenticate(presented)?;
        memo.keep(self.set, presented, &p);
        Some(p)
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

/// The API key one connection last proved, with its principal and the
/// set of keys it was proved under. Dropped (and zeroed) with the
/// connection.
#[derive(Default)]
pub struct KeyMemo(Mutex<Option<Proved>>);

struct Proved {
    set: u64,
    key: Zeroizing<String>,
    principal: Principal,
}

impl KeyMemo {
    /// The principal of `presented` if it is the key proved under `set`
    /// (compared in constant time for keys of one length).
    fn recall(&self, set: u64, presented: &str) -> Option<Principal> {
        let memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let proved = memo.as_ref()?;
        let same =
            proved.set == set && bool::from(proved.key.as_bytes().ct_eq(presented.as_bytes()));
        same.then(|| proved.principal.clone())
    }

    fn keep(&self, set: u64, presented: &str, principal: &Principal) {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *memo = Some(Proved {
            set,
            key: Zeroizing::new(presented.to_owned()),
            principal: principal.clone(),
        });
    }
}

/// Checks a bearer against a single digest in constant time (`/metrics`).
pub fn matches_digest(presented: &str, want: &[u8; 32]) -> bool {
    let d = digest::digest(&digest::SHA256, presented.as_bytes());
    bool::from(want.ct_eq(d.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, &str)]) -> ApiKeys {
        let map = pairs
            .iter()
            .map(|(n, k)| (n.to_string(), digest_hex(k)))
            .collect();
        ApiKeys::from_settings(&map)
    }

    /// The memo answers only the key it proved, only under the set of keys
    /// it proved it under: a reload that revokes the key is not bypassed.
    #[test]
    fn a_memo_answers_only_its_key_under_its_set_of_keys() {
        let memo = KeyMemo::default();
        let first = keys(&[("admin", "key-a"), ("support", "key-b")]);
        assert!(first.authenticate_with("wrong", &memo).is_none());
        assert!(memo.0.lock().unwrap().is_none(), "a failed key is not kept");
        let p = first.authenticate_with("key-a", &memo).unwrap();
        assert_eq!(p.as_str(), "apikey:admin");
        assert_eq!(memo.recall(first.set, "key-a"), Some(p.clone()));
        assert_eq!(memo.recall(first.set, "key-b"), None);
        assert_eq!(memo.recall(first.set, "key-"), None);
        // Another key on the same connection replaces the memo.
        let q = first.authenticate_with("key-b", &memo).unwrap();
        assert_eq!(q.as_str(), "apikey:support");
        assert_eq!(memo.recall(first.set, "key-a"), None);
        // The same digests loaded again are another set: key-b is revoked
        // in it, and the memo does not keep it alive.
        let reloaded = keys(&[("admin", "key-a")]);
        assert!(reloaded.authenticate_with("key-b", &memo).is_none());
        assert_eq!(
            reloaded.authenticate_with("key-a", &memo).unwrap().as_str(),
            "apikey:admin"
        );
    }
}
