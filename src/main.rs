//! The `tokenvault` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    tokenvault::cli::run()
}
