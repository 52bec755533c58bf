//! The `custos` binary: parses the command line, sets up logging to standard error, runs the
//! command, and turns errors into a message and an exit status.

use clap::Parser;

fn main() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CUSTOS_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = custos::cli::Cli::parse();
    match custos::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {}", message(&e));
            std::process::exit(1);
        }
    }
}

/// The error and its causes, each once: many errors already name their cause in their own
/// message ("I/O error on PATH: CAUSE"), and repeating it would only confuse.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
