//! Settings: defaults, then a TOML file, then `TOKENVAULT_*` variables,
//! then command-line flags; read once into a typed struct and validated, so
//! a typo stops start-up with a message naming the key instead of being
//! ignored.
//!
//! Every scalar key of the file can be set from the environment as
//! `TOKENVAULT_` + its path in upper case with `__` between levels
//! (`TOKENVAULT_STORE__KIND`, `TOKENVAULT_KEYS__KMS__PAN`). Roles and API
//! keys come from the file only. Each key is documented on its field below
//! and in the README's configuration reference.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::vault::token::TokenFormat;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Goes into the key provider's encryption context (`prod`, `staging`).
    pub environment: String,
    /// Address the HTTPS listener binds.
    pub listen: SocketAddr,
    /// Where the embedded store, master key, certificate and audit log live;
    /// relative paths below resolve against it.
    pub data_dir: PathBuf,
    pub tls: TlsSettings,
    pub store: StoreSettings,
    pub keys: KeySettings,
    /// API key name → SHA-256 of the key (hex, `sha256:` prefix optional).
    /// The principal is `apikey:NAME`.
    pub api_keys: BTreeMap<String, String>,
    pub auth: AuthSettings,
    pub roles: Vec<RoleSettings>,
    pub tokens: TokenSettings,
    pub limits: Limits,
    pub audit: AuditSettings,
    pub metrics: MetricsSettings,
    pub redact: RedactSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            environment: "dev".into(),
            listen: "127.0.0.1:8443".parse().expect("valid default"),
            data_dir: PathBuf::from("./tokenvault-data"),
            tls: TlsSettings::default(),
            store: StoreSettings::default(),
            keys: KeySettings::default(),
            api_keys: BTreeMap::new(),
            auth: AuthSettings::default(),
            roles: Vec::new(),
            tokens: TokenSettings::default(),
            limits: Limits::default(),
            audit: AuditSettings::default(),
            metrics: MetricsSettings::default(),
            redact: RedactSettings::default(),
        }
    }
}

/// `[redact]`: the redaction engine's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactSettings {
    /// Detectors on by default (absent: every detector but `ip`).
    pub detectors: Option<Vec<String>>,
    /// Detector → default action (`mask`, `label`, `hash`, `tokenize`,
    /// `drop`); unlisted detectors mask.
    pub actions: BTreeMap<String, String>,
    /// Extra JSON field names → the type their values hold
    /// (`national_id = "ssn"`), on top of the built-in names.
    pub fields: BTreeMap<String, String>,
}

impl RedactSettings {
    pub fn engine(&self) -> crate::redact::EngineSettings {
        crate::redact::EngineSettings {
            detectors: self.detectors.clone(),
            actions: self.actions.clone(),
            fields: self.fields.clone(),
        }
    }
}

/// `[tls]`: with no `cert`/`key`, a self-signed pair is generated in
/// `DATA/tls/` for `localhost` and `127.0.0.1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// CA bundle for client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
    /// `off`, `optional` (a certificate, when sent, must verify) or
    /// `required` (no certificate, no handshake).
    pub client_auth: ClientAuth,
    /// How often the certificate files are checked for a change (a changed
    /// pair is loaded for new handshakes; a bad one is refused, the old one
    /// kept).
    pub reload_seconds: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            client_auth: ClientAuth::Off,
            reload_seconds: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Off,
    Optional,
    Required,
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub kind: StoreKind,
    /// SQLite file (relative to `data_dir`).
    pub path: PathBuf,
    /// DynamoDB table (made by `tokenvault migrate`).
    pub table: Option<String>,
    /// KMS key (id, ARN or alias) `migrate` gives the table for its
    /// encryption at rest; absent: the AWS managed key for DynamoDB.
    pub sse_kms_key: Option<String>,
    /// How often expired records and idempotency entries are deleted from
    /// the embedded store (DynamoDB's TTL does it there).
    pub purge_interval_ms: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            path: "vault.db".into(),
            table: None,
            sse_kms_key: None,
            purge_interval_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Sqlite,
    Dynamodb,
}

/// `[keys]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeySettings {
    pub kind: KeyKind,
    /// Local provider: the 256-bit master key file (relative to `data_dir`).
    pub master_key: PathBuf,
    /// A new data key per classification each epoch.
    pub data_key_epoch_seconds: i64,
    /// How long an unwrapped data key stays in memory.
    pub cache_seconds: i64,
    /// KMS: classification (`pan`, `pii`) → key id, ARN or alias; the
    /// optional `system` entry wraps the service-held secrets instead of
    /// the `pan` key.
    pub kms: BTreeMap<String, String>,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            kind: KeyKind::Local,
            master_key: "master.key".into(),
            data_key_epoch_seconds: 86_400,
            cache_seconds: 300,
            kms: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Local,
    Kms,
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub iam: Option<IamSettings>,
}

/// `[auth.iam]`: callers proving an AWS IAM role with a signed
/// `sts:GetCallerIdentity`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamSettings {
    /// Must be a signed `X-Tokenvault-Server-Id`.
    pub server_id: String,
    pub sts_endpoint: String,
    pub sts_region: String,
    #[serde(default = "default_session_ttl")]
    pub session_ttl_seconds: u64,
    /// Plain http to STS, for a local emulator only.
    #[serde(default)]
    pub allow_insecure_sts: bool,
    /// Logins checking with STS at once; past it a login answers 503 with
    /// `Retry-After` (the endpoint needs no credentials, so this bounds
    /// what anyone can make it ask of STS).
    #[serde(default = "default_concurrent_logins")]
    pub max_concurrent_logins: usize,
}

fn default_session_ttl() -> u64 {
    900
}

fn default_concurrent_logins() -> usize {
    64
}

/// `[[roles]]`: who may do what.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSettings {
    pub name: String,
    /// Patterns: `apikey:NAME`, `cert:URI`, `cert:dns:NAME`, `iam:ARN`; `*`
    /// matches a run without `/` or `:`, `**` also crosses `/`.
    pub principals: Vec<String>,
    /// `tokenize`, `detokenize`, `detokenize:masked`, `metadata`, `redact`,
    /// `admin`.
    pub permissions: Vec<String>,
    /// Limits the role to these classifications (all when absent).
    #[serde(default)]
    pub classifications: Option<Vec<String>>,
    /// Full detokenize needs a `reason`.
    #[serde(default)]
    pub require_reason: bool,
    /// Detokenize rate per principal (0: unlimited).
    #[serde(default)]
    pub detokenize_per_minute: u32,
}

/// `[tokens]`: defaults for `/tokenize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    pub format: TokenFormat,
    pub deterministic: bool,
    /// 0: tokens never expire.
    pub default_ttl_seconds: i64,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            format: TokenFormat::Random,
            deterministic: false,
            default_ttl_seconds: 0,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// JSON request bodies.
    pub body_bytes: usize,
    /// Streamed text and NDJSON redaction.
    pub redact_stream_bytes: u64,
    /// Items per batch.
    pub batch: usize,
    /// How long a request may run before it is answered for it: a `408`
    /// while its body is still arriving, a `503` with `Retry-After` once
    /// the service itself is what is slow (a stalled disk or dependency).
    /// A streamed redaction's clock stops when its head goes; from then
    /// on `stream_idle_ms` bounds it.
    pub request_timeout_ms: u64,
    /// How long a streamed redaction may wait on its client, for the next
    /// piece of its body or for room to send more output, before it is
    /// ended: a stalled client must not hold a redaction thread.
    pub stream_idle_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 1 << 20,
            redact_stream_bytes: 1 << 30,
            batch: 1000,
            request_timeout_ms: 30_000,
            stream_idle_ms: 30_000,
        }
    }
}

/// `[audit]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    pub sink: AuditSink,
    /// File sink (relative to `data_dir`).
    pub path: PathBuf,
    /// File sink: start a new file past this size (0: never by size).
    pub max_bytes: u64,
    /// File sink: start a new file when the UTC day changes.
    pub rotate_daily: bool,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            sink: AuditSink::File,
            path: "audit.log".into(),
            max_bytes: 256 << 20,
            rotate_daily: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSink {
    File,
    Stdout,
    Dynamodb,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// SHA-256 (hex) of a bearer `/metrics` requires; empty: none required.
    pub bearer_digest: String,
}

/// Why settings were refused; names the key or variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Overrides from the command line, the last layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Settings {
    /// Reads settings: defaults, the TOML file (when given), `TOKENVAULT_*`
    /// from `env`, then `overrides`; validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Settings, ConfigError> {
        let mut table = toml::Table::try_from(Settings::default())
            .map_err(|e| ConfigError(format!("defaults: {e}")))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            let from_file: toml::Table = text
                .parse()
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            merge(&mut table, from_file);
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("TOKENVAULT_") && k != "TOKENVAULT_CONFIG")
            .collect();
        env.sort();
        for (var, value) in env {
            apply_env(&mut table, &var, &value)?;
        }
        let mut s: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.message().to_owned()))?;
        if let Some(l) = overrides.listen {
            s.listen = l;
        }
        if let Some(d) = &overrides.data_dir {
            s.data_dir = d.clone();
        }
        s.validate()?;
        Ok(s)
    }

    /// A path from the settings, resolved against `data_dir` when relative.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.data_dir.join(p)
        }
    }

    /// Whether the embedded development identities are in force: no API
    /// keys and no roles configured.
    pub fn uses_dev_credentials(&self) -> bool {
        self.api_keys.is_empty() && self.roles.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError(m));
        if self.environment.is_empty() {
            return fail("environment must not be empty".into());
        }
        if self.store.kind == StoreKind::Dynamodb {
            match self.store.table.as_deref() {
                None => {
                    return fail("store.table is required with store.kind = \"dynamodb\"".into());
                }
                Some(t) if !valid_table_name(t) => {
                    return fail(format!(
                        "store.table: {t:?} is not a DynamoDB table name (3 to 255 of a-z A-Z 0-9 _ - .)"
                    ));
                }
                Some(_) => {}
            }
        }
        if self.keys.kind == KeyKind::Kms {
            for class in crate::vault::value::Classification::ALL {
                let c = class.as_str();
                if self.keys.kms.get(c).is_none_or(|k| k.trim().is_empty()) {
                    return fail(format!(
                        "keys.kms.{c} is required with keys.kind = \"kms\" (a key id, ARN or alias)"
                    ));
                }
            }
            for name in self.keys.kms.keys() {
                if name != "system" && crate::vault::value::Classification::parse(name).is_none() {
                    return fail(format!(
                        "keys.kms.{name}: not a classification (pan, pii) or \"system\""
                    ));
                }
            }
        }
        if self.audit.sink == AuditSink::Dynamodb {
            return fail(
                "audit.sink = \"dynamodb\" is not available in this build; use \"file\" or \"stdout\""
                    .into(),
            );
        }
        if let Some(iam) = &self.auth.iam {
            if iam.server_id.trim().is_empty() || iam.sts_region.trim().is_empty() {
                return fail("auth.iam.server_id and auth.iam.sts_region must not be empty".into());
            }
            let https = iam.sts_endpoint.starts_with("https://");
            let plain_allowed = iam.allow_insecure_sts && iam.sts_endpoint.starts_with("http://");
            if !(https || plain_allowed) {
                return fail(
                    "auth.iam.sts_endpoint must be an https:// URL (http:// only with allow_insecure_sts = true, for a local emulator)"
                        .into(),
                );
            }
            if !(1..=10_000).contains(&iam.max_concurrent_logins) {
                return fail("auth.iam.max_concurrent_logins must be between 1 and 10000".into());
            }
            if !(60..=43_200).contains(&iam.session_ttl_seconds) {
                return fail("auth.iam.session_ttl_seconds must be between 60 and 43200".into());
            }
        }
        if self.tls.client_auth != ClientAuth::Off && self.tls.client_ca.is_none() {
            return fail(
                "tls.client_auth needs tls.client_ca (the CA bundle of client certificates)".into(),
            );
        }
        if !(1..=3600).contains(&self.tls.reload_seconds) {
            return fail("tls.reload_seconds must be between 1 and 3600".into());
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return fail("tls.cert and tls.key go together".into());
        }
        if self.keys.data_key_epoch_seconds < 60 {
            return fail("keys.data_key_epoch_seconds must be at least 60".into());
        }
        if self.keys.cache_seconds < 1 {
            return fail("keys.cache_seconds must be at least 1".into());
        }
        if self.tokens.default_ttl_seconds < 0 {
            return fail("tokens.default_ttl_seconds must be 0 (no expiry) or positive".into());
        }
        if !(1..=10_000).contains(&self.limits.batch) {
            return fail("limits.batch must be between 1 and 10000".into());
        }
        if !(1024..=64 << 20).contains(&self.limits.body_bytes) {
            return fail("limits.body_bytes must be between 1 KiB and 64 MiB".into());
        }
        if self.limits.redact_stream_bytes < 1024 {
            return fail("limits.redact_stream_bytes must be at least 1 KiB".into());
        }
        if !(100..=86_400_000).contains(&self.store.purge_interval_ms) {
            return fail("store.purge_interval_ms must be between 100 and 86400000".into());
        }
        // At most the idempotency lease (60 s): a request still running
        // past it could see its claim taken and purged, and its answer
        // not kept for replay.
        if !(100..=60_000).contains(&self.limits.request_timeout_ms) {
            return fail("limits.request_timeout_ms must be between 100 and 60000".into());
        }
        if !(100..=600_000).contains(&self.limits.stream_idle_ms) {
            return fail("limits.stream_idle_ms must be between 100 and 600000".into());
        }
        for (name, digest) in &self.api_keys {
            if crate::auth::api_key::parse_digest(digest).is_none() {
                return fail(format!(
                    "api_keys.{name}: expected the SHA-256 of the key as 64 hex digits (optionally after \"sha256:\")"
                ));
            }
        }
        if !self.metrics.bearer_digest.is_empty()
            && crate::auth::api_key::parse_digest(&self.metrics.bearer_digest).is_none()
        {
            return fail("metrics.bearer_digest: expected 64 hex digits".into());
        }
        crate::auth::policy::Policy::from_settings(&self.roles).map_err(ConfigError)?;
        crate::redact::Redactor::new(&self.redact.engine(), None)
            .map_err(|e| ConfigError(format!("redact: {e}")))?;
        Ok(())
    }
}

/// DynamoDB's table naming rule.
fn valid_table_name(t: &str) -> bool {
    (3..=255).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Sets `TOKENVAULT_A__B=value` at `a.b`, typed like the value it replaces
/// (numbers and booleans parse; anything else stays a string).
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var["TOKENVAULT_".len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError(format!("{var}: malformed variable name")));
    }
    if matches!(path[0].as_str(), "roles" | "api_keys") {
        return Err(ConfigError(format!(
            "{var}: roles and API keys come from the config file only"
        )));
    }
    let (last, parents) = path.split_last().expect("non-empty");
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(ConfigError(format!("{var}: {p} is not a section"))),
        };
    }
    let typed = match t.get(last) {
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            value
                .parse()
                .map_err(|_| ConfigError(format!("{var}: expected an integer")))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            value
                .parse()
                .map_err(|_| ConfigError(format!("{var}: expected true or false")))?,
        ),
        Some(toml::Value::Table(_)) | Some(toml::Value::Array(_)) => {
            return Err(ConfigError(format!("{var}: names a section, not a value")));
        }
        _ => toml::Value::String(value.to_owned()),
    };
    t.insert(last.clone(), typed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_wins_over_file_and_flags_over_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "environment = \"staging\"\n[limits]\nbatch = 10\n").unwrap();
        let s = Settings::load(
            Some(&f),
            env(&[
                ("TOKENVAULT_LIMITS__BATCH", "20"),
                ("TOKENVAULT_LISTEN", "127.0.0.1:9"),
            ]),
            &Overrides {
                listen: Some("127.0.0.1:10".parse().unwrap()),
                data_dir: None,
            },
        )
        .unwrap();
        assert_eq!(s.environment, "staging");
        assert_eq!(s.limits.batch, 20);
        assert_eq!(s.listen.port(), 10);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Settings::load(
            None,
            env(&[("TOKENVAULT_STORE__KINDD", "x")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("kindd"), "{e}");
        let e = Settings::load(
            None,
            env(&[("TOKENVAULT_LIMITS__BATCH", "many")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("TOKENVAULT_LIMITS__BATCH"), "{e}");
        let e = Settings::load(
            None,
            env(&[("TOKENVAULT_TOKENS__FORMAT", "weird")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("weird"), "{e}");
    }

    #[test]
    fn production_backends_need_their_names() {
        let e = Settings::load(
            None,
            env(&[("TOKENVAULT_STORE__KIND", "dynamodb")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("store.table"), "{e}");
        let e = Settings::load(
            None,
            env(&[
                ("TOKENVAULT_KEYS__KIND", "kms"),
                ("TOKENVAULT_KEYS__KMS__PAN", "alias/p"),
            ]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("keys.kms.pii"), "{e}");
        let s = Settings::load(
            None,
            env(&[
                ("TOKENVAULT_STORE__KIND", "dynamodb"),
                ("TOKENVAULT_STORE__TABLE", "tokenvault-prod"),
                ("TOKENVAULT_KEYS__KIND", "kms"),
                ("TOKENVAULT_KEYS__KMS__PAN", "alias/p"),
                ("TOKENVAULT_KEYS__KMS__PII", "alias/q"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.keys.kms["pii"], "alias/q");
        let e = Settings::load(
            None,
            env(&[
                ("TOKENVAULT_STORE__KIND", "dynamodb"),
                ("TOKENVAULT_STORE__TABLE", "no spaces"),
            ]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("table name"), "{e}");
    }
}
