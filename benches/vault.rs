//! The vault's hot-path pieces on one core: card parsing, token
//! generation (and a slotted token's slot read back), sealing and opening
//! a record, fingerprinting.

/// The allocator the `tokenvault` binary uses, so the figures are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, criterion_group, criterion_main};
use tokenvault::crypto::envelope::{Binding, FORMAT_VERSION, open, seal};
use tokenvault::crypto::fingerprint::FingerprintKey;
use tokenvault::crypto::slot::SlotKey;
use tokenvault::crypto::{DataKey, Randomness};
use tokenvault::vault::pan::Pan;
use tokenvault::vault::token::Token;

fn vault(c: &mut Criterion) {
    let mut g = c.benchmark_group("vault");
    g.bench_function("Pan::parse", |b| {
        b.iter(|| Pan::parse("4111 1111 1111 1111").unwrap().len())
    });
    g.bench_function("Token::random", |b| b.iter(Token::random));
    // A slotted token as the embedded store makes one: its slot and 64
    // random bits through AES, then base62; and reading the slot back.
    let slots = SlotKey::new(&DataKey::from_bytes([9; 32]));
    let mut rng = Randomness::for_records(1000);
    let mut slot = 0;
    g.bench_function("Token::slotted", |b| {
        b.iter(|| {
            slot += 1;
            Token::slotted(&slots, slot, &mut rng)
        })
    });
    let slotted = Token::slotted(&slots, 42, &mut rng);
    g.bench_function("slot of a token", |b| {
        b.iter(|| slots.open(slotted.block().unwrap()))
    });
    let pan = Pan::parse("4111111111111111").unwrap();
    g.bench_function("Token::preserving", |b| {
        b.iter(|| Token::preserving(&pan, false).unwrap())
    });
    let dk = DataKey::from_bytes([7; 32]);
    let binding = Binding {
        token: "tok_FORl3FnIyAedSrx8rNbHlV00",
        classification: "pan",
        data_key_id: "dk/pan/20000",
        format_version: FORMAT_VERSION,
    };
    g.bench_function("seal", |b| {
        b.iter(|| seal(&dk, &binding, b"4111111111111111").unwrap())
    });
    let sealed = seal(&dk, &binding, b"4111111111111111").unwrap();
    g.bench_function("open", |b| {
        b.iter(|| open(&dk, &binding, &sealed.nonce, &sealed.ciphertext).unwrap())
    });
    let fp = FingerprintKey::new("fp1", &dk);
    g.bench_function("fingerprint", |b| {
        b.iter(|| fp.fingerprint("pan", b"4111111111111111"))
    });
    g.finish();
}

criterion_group!(benches, vault);
criterion_main!(benches);
