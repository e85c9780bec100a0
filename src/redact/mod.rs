//! The redactor: finds cards and other personal data in log payloads and
//! replaces them before the logs are stored.
//!
//! - [`scanner`]: one multi-pattern pass over the input for every detector,
//!   then each detector's validator on its candidates.
//! - [`detectors`]: one file per detector (pattern + validator).
//! - [`action`]: what a finding becomes (mask, label).
//! - [`format`]: text (line by line), JSON (structure kept, numbers too)
//!   and NDJSON (a malformed line is scanned as text, never passed through).
//!
//! The engine knows nothing of HTTP: `/redact` and `tokenvault redact` both
//! drive [`Redactor`].

pub mod action;
pub mod detectors;
pub mod format;
pub mod scanner;

use std::collections::BTreeMap;

pub use action::Action;
pub use detectors::Kind;
pub use format::Format;
use scanner::{Finding, Scanner};

/// Per-request choices: which detectors run and what each finding becomes.
#[derive(Debug, Clone)]
pub struct Options {
    enabled: u32,
    actions: [Action; Kind::COUNT],
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
        }
    }
}

/// A bad option; names the part of the option at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionError(pub String);

impl Options {
    /// Parses `detectors=pan,email` (None: the defaults).
    pub fn with_detectors(mut self, list: Option<&str>) -> Result<Self, OptionError> {
        if let Some(list) = list {
            self.enabled = 0;
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let k = Kind::parse(name).ok_or_else(|| {
                    OptionError(format!(
                        "unknown detector {:?}; known: {}",
                        truncate(name),
                        Kind::names()
                    ))
                })?;
                self.enabled |= k.bit();
            }
        }
        Ok(self)
    }

    /// Parses `actions=pan:label,email:mask` (None: mask everything).
    pub fn with_actions(mut self, list: Option<&str>) -> Result<Self, OptionError> {
        if let Some(list) = list {
            for pair in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (k, a) = pair.split_once(':').ok_or_else(|| {
                    OptionError(format!("{:?}: expected detector:action", truncate(pair)))
                })?;
                let kind = Kind::parse(k).ok_or_else(|| {
                    OptionError(format!(
                        "unknown detector {:?}; known: {}",
                        truncate(k),
                        Kind::names()
                    ))
                })?;
                let action = Action::parse(a).ok_or_else(|| {
                    OptionError(format!(
                        "unknown action {:?}; known: mask, label",
                        truncate(a)
                    ))
                })?;
                self.actions[kind as usize] = action;
            }
        }
        Ok(self)
    }

    fn enabled(&self, k: Kind) -> bool {
        self.enabled & k.bit() != 0
    }

    fn action(&self, k: Kind) -> Action {
        self.actions[k as usize]
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Counts of findings per detector type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings(BTreeMap<&'static str, u64>);

impl Findings {
    pub fn add(&mut self, k: Kind) {
        *self.0.entry(k.as_str()).or_default() += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().map(|(k, v)| (*k, *v))
    }

    /// `pan=3, email=1`, the `Tokenvault-Findings` header form.
    pub fn header_value(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn merge(&mut self, other: &Findings) {
        for (k, v) in &other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }
}

/// The engine: a compiled scanner, shared by every request.
pub struct Redactor {
    scanner: Scanner,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new()
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self {
            scanner: Scanner::new(),
        }
    }

    /// Appends `input` to `out` with every enabled finding replaced;
    /// returns how many were.
    pub fn redact_into(
        &self,
        input: &[u8],
        opts: &Options,
        out: &mut Vec<u8>,
        findings: &mut Findings,
    ) -> usize {
        let mut found: Vec<Finding> = Vec::new();
        self.scanner.scan(input, &mut found);
        let mut at = 0;
        let mut n = 0;
        for f in found.iter().filter(|f| opts.enabled(f.kind)) {
            out.extend_from_slice(&input[at..f.range.start]);
            opts.action(f.kind)
                .apply(f.kind, &input[f.range.clone()], out);
            findings.add(f.kind);
            at = f.range.end;
            n += 1;
        }
        out.extend_from_slice(&input[at..]);
        n
    }

    /// `input` redacted, as a new string (for JSON string values).
    pub fn redact_str(
        &self,
        input: &str,
        opts: &Options,
        findings: &mut Findings,
    ) -> Option<String> {
        let mut out = Vec::with_capacity(input.len());
        if self.redact_into(input.as_bytes(), opts, &mut out, findings) == 0 {
            return None;
        }
        // Replacements are ASCII over ASCII matches, so UTF-8 is kept.
        Some(String::from_utf8(out).expect("redaction keeps UTF-8"))
    }

    /// A card held in a JSON number becomes a string holding its
    /// replacement; None when the number is no card or cards are off.
    pub fn redact_number(
        &self,
        digits: &str,
        opts: &Options,
        findings: &mut Findings,
    ) -> Option<String> {
        if !opts.enabled(Kind::Pan) || !detectors::pan::is_card_number(digits) {
            return None;
        }
        let mut out = Vec::new();
        opts.action(Kind::Pan)
            .apply(Kind::Pan, digits.as_bytes(), &mut out);
        findings.add(Kind::Pan);
        Some(String::from_utf8(out).expect("ASCII"))
    }
}
