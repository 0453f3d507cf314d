use clap::Parser as _;

// glibc's allocator showed up as 7% of the gateway's CPU at saturation (many small,
// short-lived allocations per request, across threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    aibridge::cli::run(aibridge::cli::Cli::parse()).await
}
