//! The `kontakt` binary.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    kontakt::cli::run().await
}
