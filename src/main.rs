//! The `kontakt` binary.

/// mimalloc instead of the system allocator: a request allocates many small, short-lived values (documents,
/// rows, JSON), and glibc's malloc spent about a tenth of the server's CPU on them in the profile-read benchmark.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kontakt::cli::run().await
}
