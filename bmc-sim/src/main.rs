//! `bmc-sim`: parse flags, set up logging, hand over to [`bmc_sim::run`].

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = bmc_sim::Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.max(1))
        .enable_all()
        .build()?
        .block_on(bmc_sim::run(args))
}
