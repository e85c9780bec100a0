//! Input formats: the same shape and content type out as in.

use serde_json::Value;

use super::{Findings, Options, Redactor};

/// A body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Line by line.
    Text,
    /// One JSON document; structure kept, strings, keys and numbers scanned.
    Json,
    /// One JSON document per line; a line that does not parse is scanned as
    /// text, never passed through.
    Ndjson,
}

impl Format {
    /// From a `Content-Type` (parameters ignored).
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/plain" => Some(Format::Text),
            "application/json" => Some(Format::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(Format::Ndjson)
            }
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            "ndjson" => Some(Format::Ndjson),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; charset=utf-8",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// A JSON body that is not JSON.
#[derive(Debug, thiserror::Error)]
#[error("the body is not valid JSON (line {line}, column {column})")]
pub struct JsonError {
    pub line: usize,
    pub column: usize,
}

impl Redactor {
    /// Redacts a whole body of `format` into `out`.
    pub fn redact_body(
        &self,
        format: Format,
        input: &[u8],
        opts: &Options,
        out: &mut Vec<u8>,
        findings: &mut Findings,
    ) -> Result<(), JsonError> {
        match format {
            Format::Text => {
                for line in input.split_inclusive(|&b| b == b'\n') {
                    self.redact_into(line, opts, out, findings);
                }
            }
            Format::Ndjson => {
                for line in input.split_inclusive(|&b| b == b'\n') {
                    self.redact_ndjson_line(line, opts, out, findings);
                }
            }
            Format::Json => {
                let mut v: Value = serde_json::from_slice(input).map_err(|e| JsonError {
                    line: e.line(),
                    column: e.column(),
                })?;
                self.redact_value(&mut v, opts, findings);
                serde_json::to_writer(&mut *out, &v).expect("writing to a Vec");
            }
        }
        Ok(())
    }

    /// One NDJSON line (with its newline, if any).
    pub fn redact_ndjson_line(
        &self,
        line: &[u8],
        opts: &Options,
        out: &mut Vec<u8>,
        findings: &mut Findings,
    ) {
        let (body, nl) = match line.strip_suffix(b"\n") {
            Some(b) => (b, &b"\n"[..]),
            None => (line, &b""[..]),
        };
        let trimmed = body.strip_suffix(b"\r").unwrap_or(body);
        if trimmed.iter().all(u8::is_ascii_whitespace) {
            out.extend_from_slice(line);
            return;
        }
        match serde_json::from_slice::<Value>(trimmed) {
            Ok(mut v) => {
                self.redact_value(&mut v, opts, findings);
                serde_json::to_writer(&mut *out, &v).expect("writing to a Vec");
                out.extend_from_slice(&body[trimmed.len()..]);
                out.extend_from_slice(nl);
            }
            Err(_) => {
                self.redact_into(line, opts, out, findings);
            }
        }
    }

    /// Redacts every string, key and card-holding number in place.
    pub fn redact_value(&self, v: &mut Value, opts: &Options, findings: &mut Findings) {
        match v {
            Value::String(s) => {
                if let Some(r) = self.redact_str(s, opts, findings) {
                    *s = r;
                }
            }
            Value::Number(n) => {
                if let Some(r) = self.redact_number(&n.to_string(), opts, findings) {
                    *v = Value::String(r);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.redact_value(item, opts, findings);
                }
            }
            Value::Object(map) => {
                let needs_key_change = map.keys().any(|k| {
                    let mut f = Findings::default();
                    self.redact_str(k, opts, &mut f).is_some()
                });
                if needs_key_change {
                    let old = std::mem::take(map);
                    for (k, mut val) in old {
                        let k = self.redact_str(&k, opts, findings).unwrap_or(k);
                        self.redact_value(&mut val, opts, findings);
                        map.insert(k, val);
                    }
                } else {
                    for val in map.values_mut() {
                        self.redact_value(val, opts, findings);
                    }
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: Format, input: &str) -> (String, Findings) {
        let r = Redactor::new();
        let mut out = Vec::new();
        let mut f = Findings::default();
        r.redact_body(
            format,
            input.as_bytes(),
            &Options::default(),
            &mut out,
            &mut f,
        )
        .unwrap();
        (String::from_utf8(out).unwrap(), f)
    }

    #[test]
    fn text_masks_cards_and_emails_and_keeps_tokens() {
        let (out, f) = run(
            Format::Text,
            "pay 4111 1111 1111 1111 by bob@example.com tok_FORl3FnIyAedSrx8rNbHlV\nts=1701541583094\n",
        );
        assert_eq!(
            out,
            "pay **** **** **** 1111 by *************** tok_FORl3FnIyAedSrx8rNbHlV\nts=1701541583094\n"
        );
        assert_eq!(f.header_value(), "email=1, pan=1");
    }

    #[test]
    fn json_numbers_become_strings_and_order_is_kept() {
        let (out, _) = run(
            Format::Json,
            r#"{"z":4111111111111111,"a":{"m":"x@y.io"},"n":12}"#,
        );
        assert_eq!(out, r#"{"z":"************1111","a":{"m":"******"},"n":12}"#);
    }

    #[test]
    fn ndjson_scans_malformed_lines_as_text() {
        let (out, f) = run(
            Format::Ndjson,
            "{\"c\":\"5555555555554444\"}\n{broken 5555555555554444\n",
        );
        assert_eq!(
            out,
            "{\"c\":\"************4444\"}\n{broken ************4444\n"
        );
        assert_eq!(f.header_value(), "pan=2");
    }
}
