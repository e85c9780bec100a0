//! The `tokenvault` binary: everything lives in the library.

/// mimalloc rather than glibc's malloc: requests allocate on a runtime
/// worker and free on another (or on the store and audit threads), and
/// glibc's arenas made malloc and free a tenth of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tokenvault::cli::run()
}
