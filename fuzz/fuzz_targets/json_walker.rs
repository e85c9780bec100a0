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
            assert_eq!(x, y, "the walkers disagree");
        }
    }
});
