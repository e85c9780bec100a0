//! The embedded default's development identities.
//!
//! With no API keys and no roles configured, `serve` makes one random key
//! for each of four roles, writes them once to `DATA/dev-credentials.json`
//! (0600) for the README's walk-through, and reuses them after.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::config::RoleSettings;

/// The four dev roles: name, permissions.
const DEV_ROLES: &[(&str, &[&str])] = &[
    ("checkout", &["tokenize", "redact"]),
    ("support", &["detokenize:masked", "metadata"]),
    ("admin", &["admin"]),
    ("log-shipper", &["redact"]),
];

/// Loads `dev-credentials.json`, creating it when absent, and returns
/// (api key name → SHA-256 digest, roles, whether it was created).
pub fn load_or_create(
    path: &Path,
) -> std::io::Result<(BTreeMap<String, String>, Vec<RoleSettings>, bool)> {
    let mut created = false;
    let keys: BTreeMap<String, String> = match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let rng = SystemRandom::new();
            let mut keys = BTreeMap::new();
            for (name, _) in DEV_ROLES {
                let mut b = [0u8; 24];
                rng.fill(&mut b)
                    .map_err(|_| std::io::Error::other("no OS random source"))?;
                keys.insert((*name).to_owned(), format!("tv_{name}_{}", hex::encode(b)));
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(serde_json::to_string_pretty(&keys)?.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            created = true;
            keys
        }
        Err(e) => return Err(e),
    };
    let digests = keys
        .iter()
        .map(|(n, k)| (n.clone(), super::api_key::digest_hex(k)))
        .collect();
    let roles = DEV_ROLES
        .iter()
        .map(|(name, perms)| RoleSettings {
            name: (*name).to_owned(),
            principals: vec![format!("apikey:{name}")],
            permissions: perms.iter().map(|p| (*p).to_owned()).collect(),
            classifications: None,
            require_reason: false,
            detokenize_per_minute: 0,
        })
        .collect();
    Ok((digests, roles, created))
}
