use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    aibridge::cli::run(aibridge::cli::Cli::parse()).await
}
