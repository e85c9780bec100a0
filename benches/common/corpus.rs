//! Inputs shared by the benchmarks: the labelled corpus beside the
//! checkout and clean log lines built from it.

use std::path::PathBuf;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/eval/corpus")
}

pub fn read(name: &str) -> Vec<u8> {
    let p = dir().join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (../shared beside the checkout)", p.display()))
}

/// The corpus's secret-free lines, repeated to at least `bytes`.
pub fn clean(bytes: usize) -> Vec<u8> {
    let text = String::from_utf8(read("logs.txt")).unwrap();
    let truth = String::from_utf8(read("logs.truth.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut block = Vec::new();
    for t in truth.lines() {
        if t.contains("\"secrets\": []") {
            let n: usize = t["{\"line\": ".len()..t.find(',').unwrap()]
                .parse()
                .unwrap();
            block.extend_from_slice(lines[n].as_bytes());
            block.push(b'\n');
        }
    }
    let mut out = Vec::with_capacity(bytes + block.len());
    while out.len() < bytes {
        out.extend_from_slice(&block);
    }
    out
}
