//! `xdpsec`: the data-plane process and the operator's CLI.
//!
//! ```text
//! xdpsec dataplane --config FILE [--null-cipher-benchmark] [--xdp-generic]
//! xdpsec status      [--socket PATH] [--json]
//! xdpsec sa list     [--socket PATH] [--json]
//! xdpsec policy list [--socket PATH] [--json]
//! ```
#![deny(unsafe_code)]

mod show;

use clap::{Args, Parser, Subcommand};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use xdpsec_api::config::DEFAULT_API_SOCKET;
use xdpsec_api::{ApiClient, ApiError, Request, Response, StaticConfig};
use xdpsec_dataplane::daemon::{self, DaemonOptions};

#[derive(Debug, Parser)]
#[command(
    name = "xdpsec",
    version,
    about = "IPsec VPN gateway with an XDP/AF_XDP data plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the data plane: XDP steering, AF_XDP workers, the SA API.
    Dataplane {
        /// The static config (TOML: [dataplane], [[interface]], [[sa]], [[policy]]).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Benchmark only: run the pipeline without encryption or authentication.
        #[arg(long)]
        null_cipher_benchmark: bool,
        /// Attach XDP in generic (skb) mode instead of native.
        #[arg(long)]
        xdp_generic: bool,
    },
    /// Worker statistics of the running data plane.
    Status(ApiArgs),
    /// Security associations.
    #[command(subcommand)]
    Sa(SaCommand),
    /// Security policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum SaCommand {
    /// List the SAs with their counters (never their keys).
    List(ApiArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// List the policies.
    List(ApiArgs),
}

#[derive(Debug, Args)]
struct ApiArgs {
    /// The data plane's SA API socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_API_SOCKET)]
    socket: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dataplane {
            config,
            null_cipher_benchmark,
            xdp_generic,
        } => {
            return dataplane(DaemonOptions {
                config,
                null_cipher_benchmark,
                xdp_generic,
            })
        }
        Command::Status(args) => query(&args, Request::WorkerStats, |r| match r {
            Response::WorkerStats { workers } => Some(show::worker_table(workers)),
            _ => None,
        }),
        Command::Sa(SaCommand::List(args)) => query(&args, Request::ListSas, |r| match r {
            Response::Sas { sas } => Some(show::sa_table(sas)),
            _ => None,
        }),
        Command::Policy(PolicyCommand::List(args)) => {
            query(&args, Request::ListPolicies, |r| match r {
                Response::Policies { policies } => Some(show::policy_table(policies)),
                _ => None,
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xdpsec: {message}");
            ExitCode::FAILURE
        }
    }
}

fn dataplane(options: DaemonOptions) -> ExitCode {
    // Config errors (they name the file, the field and the line) come first,
    // whatever the rest of the start-up would fail on.
    if let Err(e) = StaticConfig::load(&options.config) {
        eprintln!("xdpsec dataplane: {e}");
        return ExitCode::FAILURE;
    }
    match daemon::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpsec dataplane: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Sends one request and prints the reply, as JSON or through `table`.
fn query(
    args: &ApiArgs,
    request: Request,
    table: impl Fn(&Response) -> Option<String>,
) -> Result<(), String> {
    let op = request.op();
    let mut client = connect(&args.socket)?;
    let response = client
        .request(request)
        .map_err(|e| format!("{op} on {}: {e}", args.socket.display()))?;
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&response)
            .map_err(|e| format!("encoding the reply as JSON: {e}"))?;
        json.push('\n');
        json
    } else {
        table(&response).ok_or_else(|| {
            format!(
                "{op}: unexpected reply {:?} from the data plane",
                response.status()
            )
        })?
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `xdpsec sa list | head` is fine.
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(format!("writing the output: {e}")),
        _ => Ok(()),
    }
}

fn connect(socket: &Path) -> Result<ApiClient, String> {
    ApiClient::connect(socket).map_err(|e| match e {
        ApiError::Connect { path, source } => {
            let hint = match source.kind() {
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                    "the data plane is not running there (start it with \
                     `xdpsec dataplane --config FILE`, or pass --socket PATH)"
                }
                ErrorKind::PermissionDenied => {
                    "the socket is mode 0600: run this as the data plane's user (root)"
                }
                _ => "is the data plane running, and may this user open the socket (root)?",
            };
            format!(
                "cannot connect to the SA API at {}: {source}; {hint}",
                path.display()
            )
        }
        other => format!("SA API at {}: {other}", socket.display()),
    })
}
