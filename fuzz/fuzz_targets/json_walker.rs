//! The JSON and NDJSON walkers on arbitrary input: never panic; a document
//! that parses comes out as a document that parses; NDJSON keeps its line
//! count; and each NDJSON line comes out of the raw walker as the same
//! document as out of the `Value` walker.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tokenvault::redact::{Format, Options, Redactor};

/// Compiled once: building the scanner per input would be all the fuzzer did.
static REDACTOR: LazyLock<Redactor> = LazyLock::new(Redactor::default);

fuzz_target!(|data: &[u8]| {
    let redactor = &*REDACTOR;
    let opts = Options::default().with_actions(Some("cvv:drop,email:label")).unwrap();
    let mut session = redactor.session(&opts, None);
    let mut out = Vec::new();
    if session.body(Format::Json, data, &mut out).is_ok() {
        serde_json::from_slice::<serde_json::Value>(&out).expect("redacted JSON parses");
    }
    let mut session = redactor.session(&opts, None);
    let mut out = Vec::new();
    session.body(Format::Ndjson, data, &mut out).unwrap();
    let lines_in = data.iter().filter(|&&b| b == b'\n').count();
    let lines_out = out.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(lines_in, lines_out, "NDJSON line count changed");
    // Without `drop`, duplicate keys end the same way in both walkers
    // (the last one wins), so the documents must be equal.
    let opts = Options::default().with_actions(Some("email:label")).unwrap();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        redactor.session(&opts, None).ndjson_line(line, &mut a).unwrap();
        redactor
            .session(&opts, None)
            .ndjson_line_parsed(line, &mut b)
            .unwrap();
        let parsed = |v: &[u8]| serde_json::from_slice::<serde_json::Value>(v).ok();
        if let (Some(x), Some(y)) = (parsed(&a), parsed(&b)) {
            assert!(same(&x, &y), "the walkers disagree: {x} / {y}");
        }
    }
});

/// Equal documents, floats within rounding: the `Value` walker writes a
/// float back in its own shortest form, which `serde_json` (without its
/// `float_roundtrip` feature) may read back one unit in the last place
/// away from the text the raw walker keeps as it was.
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) if x.is_f64() || y.is_f64() => {
                p == q || (p - q).abs() <= p.abs().max(q.abs()) * 1e-15
            }
            _ => x == y,
        },
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Object(x), Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
