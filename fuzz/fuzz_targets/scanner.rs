//! The text scanner on arbitrary bytes: never panics, keeps one output
//! line per input line, keeps UTF-8 valid, and leaves no card that the
//! vault's own card finder sees in a line it did not change.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tokenvault::redact::{Format, Options, Redactor};
use tokenvault::vault::pan::find_cards;

/// Compiled once: building the scanner per input would be all the fuzzer did.
static REDACTOR: LazyLock<Redactor> = LazyLock::new(Redactor::default);

fuzz_target!(|data: &[u8]| {
    let redactor = &*REDACTOR;
    for opts in [
        Options::default(),
        Options::default().with_actions(Some("pan:label,email:label,secret:drop,private_key:label")).unwrap(),
    ] {
        let mut session = redactor.session(&opts, None);
        let mut out = Vec::new();
        session.body(Format::Text, data, &mut out).unwrap();
        let lines_in = data.iter().filter(|&&b| b == b'\n').count();
        let lines_out = out.iter().filter(|&&b| b == b'\n').count();
        assert_eq!(lines_in, lines_out, "line count changed");
        if let Ok(text) = std::str::from_utf8(data) {
            let out = std::str::from_utf8(&out).expect("UTF-8 in, UTF-8 out");
            for (a, b) in text.split('\n').zip(out.split('\n')) {
                if a == b {
                    assert!(find_cards(a).is_empty(), "a card was left in an unchanged line");
                }
            }
        }
    }
});
