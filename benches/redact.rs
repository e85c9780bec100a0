//! Redaction throughput on one core: the corpus as text and as NDJSON,
//! and clean log lines (what most traffic is).

/// The allocator the `tokenvault` binary uses, so the figures are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenvault::redact::{Format, Redactor};

#[path = "common/corpus.rs"]
mod corpus;

fn redact(c: &mut Criterion) {
    let r = Redactor::default();
    let opts = r.options();
    let inputs = [
        ("logs.txt", Format::Text, corpus::read("logs.txt")),
        (
            "events.ndjson",
            Format::Ndjson,
            corpus::read("events.ndjson"),
        ),
        ("clean 32 MiB", Format::Text, corpus::clean(32 << 20)),
    ];
    let mut g = c.benchmark_group("redact");
    g.sample_size(10);
    for (name, format, data) in &inputs {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(*name, |b| {
            let mut out = Vec::with_capacity(data.len() + data.len() / 4);
            b.iter(|| {
                out.clear();
                let mut s = r.session(&opts, None);
                s.body(*format, data, &mut out).unwrap();
                s.findings.total()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, redact);
criterion_main!(benches);
