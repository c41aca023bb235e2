//! The daemons' logs: `tracing` to stderr, as text or as one JSON object a
//! line (`--log-format`), filtered by `RUST_LOG` (default `info`).

use clap::ValueEnum;

/// `--log-format` of `xdpsec dataplane` and `xdpsec ike`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event: time, level, target, message.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`),
    /// for journald, Loki or Elasticsearch.
    Json,
}

pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Logs the error that stops a daemon, with its chain of causes, as the
/// last event: in the log's own format, so a JSON log stays JSON to the end.
pub fn fatal(daemon: &str, error: &anyhow::Error) {
    tracing::error!("{daemon}: {error:#}");
}
