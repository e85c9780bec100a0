//! The redactor: finds cards and other personal data in log payloads and
//! replaces them before the logs are stored.
//!
//! - [`detectors`]: one file per detector (pattern, validator, and the
//!   anchor the scanner finds it by).
//! - [`scanner`]: one scan for all enabled detectors: a fixed handful of
//!   cheap passes find anchors (one per kind of anchor, not per
//!   detector), and patterns run only there.
//! - [`numeric`]: digit runs (cards, dashed SSNs, North American phones),
//!   found 64 bytes at a time.
//! - [`fields`]: JSON field-name rules (`cvv`, `password`, …).
//! - [`pairs`]: the byte pairs a set of names ends in, for a one-lookup
//!   first test of a key against them.
//! - `reach`: how far an anchored search for a value may read, so that
//!   a line of many separators costs linear time.
//! - [`action`]: what a finding becomes (mask, label, hash, tokenize, drop).
//! - [`format`](mod@format): text lines, JSON documents and NDJSON lines, walked by a
//!   [`Session`] that carries one request's options and findings; NDJSON
//!   lines without escapes are walked over their raw bytes.
//! - [`lines`]: splitting a byte stream into bounded lines, for streaming.
//!
//! The engine knows nothing of HTTP: `/redact` and `tokenvault redact` both
//! drive it. It reaches the vault only through [`action::Tokenizer`].

pub mod action;
pub mod detectors;
pub mod fields;
pub mod format;
pub mod lines;
pub mod numeric;
pub mod pairs;
mod reach;
pub mod scanner;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use action::{Action, ActionError, HashKey, Tokenizer, Tools};
pub use detectors::Kind;
use fields::FieldRules;
pub use format::{Format, Session};
use scanner::Scanner;

/// How many distinct detector sets keep a compiled scanner.
const SCANNER_CACHE: usize = 64;

/// One request's choices.
#[derive(Debug, Clone)]
pub struct Options {
    enabled: u32,
    actions: [Action; Kind::COUNT],
    /// Scan and count only; change nothing.
    pub report: bool,
    /// A line (or JSON document) that takes longer is masked whole.
    pub budget: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        let mut enabled = 0;
        for k in Kind::ALL {
            if k.on_by_default() {
                enabled |= k.bit();
            }
        }
        Self {
            enabled,
            actions: [Action::Mask; Kind::COUNT],
            report: false,
            budget: None,
        }
    }
}

/// A bad option. Says what kind of value is wrong, never echoes it: a
/// query string can hold anything, a card included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionError(pub String);

fn kind(name: &str) -> Result<Kind, OptionError> {
    Kind::parse(name)
        .ok_or_else(|| OptionError(format!("unknown detector; known: {}", Kind::names())))
}

impl Options {
    /// Replaces the enabled set with a comma-separated list (None: keep).
    pub fn with_detectors(mut self, list: Option<&str>) -> Result<Self, OptionError> {
        if let Some(list) = list {
            self.enabled = 0;
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                self.enabled |= kind(name)?.bit();
            }
        }
        Ok(self)
    }

    /// Sets actions from `pan:label,email:hash` (None: keep).
    pub fn with_actions(mut self, list: Option<&str>) -> Result<Self, OptionError> {
        for pair in list
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (k, a) = pair
                .split_once(':')
                .ok_or_else(|| OptionError("actions: expected detector:action pairs".into()))?;
            self = self.with_action(kind(k.trim())?, a.trim())?;
        }
        Ok(self)
    }

    /// Sets one detector's action by name.
    pub fn with_action(mut self, k: Kind, action: &str) -> Result<Self, OptionError> {
        let a = Action::parse(action).ok_or_else(|| {
            OptionError("unknown action; known: mask, label, hash, tokenize, drop".into())
        })?;
        if a == Action::Tokenize && k != Kind::Pan {
            return Err(OptionError("tokenize applies to pan only".into()));
        }
        self.actions[k as usize] = a;
        Ok(self)
    }

    pub fn enabled(&self, k: Kind) -> bool {
        self.enabled & k.bit() != 0
    }

    pub fn action(&self, k: Kind) -> Action {
        self.actions[k as usize]
    }

    /// Whether any enabled detector uses `a`.
    pub fn uses(&self, a: Action) -> bool {
        Kind::ALL
            .iter()
            .any(|&k| self.enabled(k) && self.action(k) == a)
    }
}

/// Counts per type, and (in report mode) the JSON paths where they were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    counts: [u64; Kind::COUNT],
    pub paths: BTreeMap<String, &'static str>,
}

impl Findings {
    pub fn add(&mut self, k: Kind) {
        self.counts[k as usize] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// (type, count) for every type found, in type order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Kind::ALL
            .iter()
            .filter(|k| self.counts[**k as usize] > 0)
            .map(|k| (k.as_str(), self.counts[*k as usize]))
    }

    /// `pan=3, email=1`, the `Tokenvault-Findings` form.
    pub fn header_value(&self) -> String {
        self.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `?report=true` answer: counts and paths, never values.
    pub fn report(&self) -> serde_json::Value {
        let findings: serde_json::Map<String, serde_json::Value> =
            self.iter().map(|(k, v)| (k.to_owned(), v.into())).collect();
        serde_json::json!({ "findings": findings, "paths": self.paths })
    }
}

/// Engine-wide settings (from `[redact]`).
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// Detector names on by default (None: the built-in set).
    pub detectors: Option<Vec<String>>,
    /// Detector name → action name.
    pub actions: BTreeMap<String, String>,
    /// Extra field names → type name.
    pub fields: BTreeMap<String, String>,
}

/// The engine: compiled scanners, field rules, defaults, and the hash key.
pub struct Redactor {
    defaults: Options,
    fields: FieldRules,
    hash_key: Option<HashKey>,
    scanners: Mutex<HashMap<u32, Arc<Scanner>>>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(&EngineSettings::default(), None).expect("built-in settings are valid")
    }
}

impl Redactor {
    pub fn new(settings: &EngineSettings, hash_key: Option<HashKey>) -> Result<Self, OptionError> {
        let mut defaults = Options::default();
        if let Some(list) = &settings.detectors {
            defaults = defaults.with_detectors(Some(&list.join(",")))?;
        }
        for (k, a) in &settings.actions {
            defaults = defaults.with_action(kind(k)?, a)?;
        }
        let fields = FieldRules::with(&settings.fields).map_err(OptionError)?;
        let r = Self {
            defaults,
            fields,
            hash_key,
            scanners: Mutex::new(HashMap::new()),
        };
        r.scanner(r.defaults.enabled);
        Ok(r)
    }

    /// The configured defaults, to refine per request.
    pub fn options(&self) -> Options {
        self.defaults.clone()
    }

    pub fn has_hash_key(&self) -> bool {
        self.hash_key.is_some()
    }

    fn scanner(&self, enabled: u32) -> Arc<Scanner> {
        let mut cache = self.scanners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(&enabled) {
            return s.clone();
        }
        if cache.len() >= SCANNER_CACHE {
            cache.retain(|k, _| *k == self.defaults.enabled);
        }
        let s = Arc::new(Scanner::new(enabled));
        cache.insert(enabled, s.clone());
        s
    }

    /// A session for one request or stream.
    pub fn session<'a>(
        &'a self,
        opts: &'a Options,
        tokenizer: Option<&'a dyn Tokenizer>,
    ) -> Session<'a> {
        Session::new(
            self.scanner(opts.enabled),
            opts,
            &self.fields,
            Tools {
                hash_key: self.hash_key.as_ref(),
                tokenizer,
            },
        )
    }

    /// Redacts free text (a detokenize reason, before it is audited) with
    /// every detector masking, whatever the configured defaults: text that
    /// lands in the audit log is never left to an operator's choice.
    pub fn redact_text(&self, s: &str) -> String {
        let all = Kind::ALL.iter().fold(0, |m, k| m | k.bit());
        let opts = Options {
            enabled: all,
            ..Options::default()
        };
        let mut session = self.session(&opts, None);
        let mut out = Vec::with_capacity(s.len());
        match session.text_line(s.as_bytes(), &mut out) {
            // Mask and label keep UTF-8; hash/tokenize never run without tools.
            Ok(()) => String::from_utf8(out).unwrap_or_else(|_| "[REDACTED]".into()),
            Err(_) => "[REDACTED]".into(),
        }
    }
}

#[cfg(test)]
mod tests;
