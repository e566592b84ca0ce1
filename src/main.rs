//! `roster`: parses flags and hands over to [`roster::cli`].

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = roster::cli::Cli::parse();
    let settings = match roster::config::Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The one-shot commands print what they made (tokens, keys) on stdout; their progress
    // logs stay quiet unless something goes wrong (`RUST_LOG` still overrides).
    let mut log = settings.log.clone();
    if !matches!(cli.command, roster::cli::Command::Serve) {
        log.level = "warn".into();
    }
    roster::telemetry::init(&log);
    match roster::cli::run(cli, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
