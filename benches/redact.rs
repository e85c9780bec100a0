//! Redaction throughput on one core: the corpus as text and as NDJSON,
//! and clean log lines (what most traffic is), in memory and as a 256 MiB
//! stream.

/// The allocator the `tokenvault` binary uses, so the figures are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenvault::redact::lines::{LineSplitter, Piece};
use tokenvault::redact::{Format, Redactor};

/// Bytes a read of the stream holds, as the command line reads stdin.
const READ: usize = 256 << 10;

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
    stream_clean(&mut g, &r);
    g.finish();
}

/// Clean lines as one stream of 256 MiB read 256 KiB at a time, through
/// the line splitter as `tokenvault redact` and `/redact` take a stream:
/// memory stays at one read and its output, however long the stream. The
/// reads are windows of the repeated block, so none is built whole. (1 MiB
/// when run as a test: `cargo test` passes no `--bench`.)
fn stream_clean(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    r: &Redactor,
) {
    let benching = std::env::args().any(|a| a == "--bench");
    let total: usize = if benching { 256 << 20 } else { 1 << 20 };
    let block = corpus::clean(1).len();
    let source = corpus::clean(READ + block);
    let reads = total / READ;
    let opts = r.options();
    g.throughput(Throughput::Bytes((reads * READ) as u64));
    g.bench_function("clean 256 MiB streamed", |b| {
        let mut out = Vec::with_capacity(2 * READ);
        b.iter(|| {
            let mut s = r.session(&opts, None);
            let mut lines = LineSplitter::new(1 << 20);
            let mut take = |p: Piece<'_>, out: &mut Vec<u8>| s.piece(Format::Text, p, out);
            for i in 0..reads {
                let at = (i * READ) % block;
                lines
                    .push(&source[at..at + READ], |p| take(p, &mut out))
                    .unwrap();
                out.clear();
            }
            lines.finish(|p| take(p, &mut out)).unwrap();
            out.clear();
            s.findings.total()
        })
    });
}

criterion_group!(benches, redact);
criterion_main!(benches);
