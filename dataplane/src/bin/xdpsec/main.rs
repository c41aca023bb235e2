//! `xdpsec`: the data-plane process and the operator's CLI.
//!
//! ```text
//! xdpsec dataplane --config FILE [--null-cipher-benchmark] [--xdp-generic]
//! xdpsec ike --config FILE [--api-socket PATH] [--ike-socket PATH] [--state-file PATH]
//! xdpsec check [--dataplane FILE] [--ike FILE]
//! xdpsec initiate|terminate CONNECTION [--ike-socket PATH]
//! xdpsec rekey CONNECTION [--child | --ike] [--ike-socket PATH]
//! xdpsec connect CONNECTION [--tunnel NAME] [--subnet PREFIX]... [--no-firewall]
//! xdpsec disconnect [--state-file PATH]
//! xdpsec status      [--api-socket PATH] [--json]
//! xdpsec guard status|remove
//! xdpsec sa list     [--api-socket PATH] [--ike-socket PATH] [--json]
//! xdpsec policy list [--api-socket PATH] [--json]
//! ```
//!
//! One flag per socket, the same on every command: `--api-socket` is the
//! data plane's SA API (`[dataplane] api_socket`, the IKE config's
//! `daemon.api_socket`), `--ike-socket` the IKE daemon's control socket
//! (`daemon.control_socket`). The older `--socket` (which meant the SA API
//! on `status`, `sa list` and `policy list`, and the control socket on
//! `ike`) is kept as a hidden alias of each so that scripts keep working.
//! Exit statuses: [`exit`].
#![deny(unsafe_code)]

mod check;
mod connect;
mod exit;
mod generate;
mod ike;
mod logging;
mod show;

use clap::{Args, Parser, Subcommand};
use exit::{Exit, Failure};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use xdpsec_api::config::DEFAULT_API_SOCKET;
use xdpsec_api::{ApiClient, ApiError, Request, Response, StaticConfig};
use xdpsec_control::ctl::{CtlRequest, RekeyTarget};
use xdpsec_dataplane::daemon::{self, DaemonOptions};

#[derive(Debug, Parser)]
#[command(
    name = "xdpsec",
    version,
    about = "IPsec VPN gateway with an XDP/AF_XDP data plane",
    after_help = exit::HELP
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
        /// How the log is written (stderr; `RUST_LOG` filters it).
        #[arg(long, value_enum, default_value_t)]
        log_format: logging::LogFormat,
        /// Test only (feature `fault-injection`): worker 0 panics once after
        /// receiving this many packets.
        #[cfg(feature = "fault-injection")]
        #[arg(long, value_name = "PACKETS")]
        fault_worker_panic_after: Option<u64>,
        /// Test only (feature `fault-injection`): inserting this protected
        /// prefix into the XDP map fails.
        #[cfg(feature = "fault-injection")]
        #[arg(long, value_name = "PREFIX")]
        fault_fail_prefix: Option<xdpsec_api::Prefix>,
        /// Test only (feature `fault-injection`): a UMEM per copy-mode
        /// interface, as a zero-copy NIC has, so frames cross UMEMs on veth.
        #[cfg(feature = "fault-injection")]
        #[arg(long)]
        fault_umem_per_interface: bool,
    },
    /// Run the IKEv2 daemon: negotiates SAs and installs them in the data
    /// plane over the SA API. Needs CAP_NET_BIND_SERVICE for port 500 and
    /// access to the SA API socket, nothing more.
    Ike(ike::IkeArgs),
    /// Check a data-plane config, an IKE config, or both together, as the
    /// daemons would on start (the same loaders, the same file:field
    /// errors), the data plane's against this host's interfaces, queues
    /// and CPUs; prints `ok: FILE` per good file. Needs no privileges,
    /// changes nothing.
    Check(check::CheckArgs),
    /// Bring a configured IKE connection up.
    Initiate {
        /// The connection's name in the IKE config.
        connection: String,
        #[command(flatten)]
        ctl: ike::CtlArgs,
    },
    /// Take an IKE connection down (delete its IKE SA and Child SAs).
    Terminate {
        /// The connection's name.
        connection: String,
        #[command(flatten)]
        ctl: ike::CtlArgs,
    },
    /// Rekey a connection's Child SAs (default) or its IKE SA.
    Rekey {
        /// The connection's name.
        connection: String,
        /// Rekey the Child SAs (the default).
        #[arg(long, conflicts_with = "ike")]
        child: bool,
        /// Rekey the IKE SA.
        #[arg(long)]
        ike: bool,
        #[command(flatten)]
        ctl: ike::CtlArgs,
    },
    /// Remote-access client: bring the connection up, put the virtual IP on
    /// the tunnel interface, route everything (or --subnet) into it, point
    /// the resolver at the tunnel's DNS and block leaks around it.
    Connect(connect::ConnectArgs),
    /// End the `xdpsec connect` session: connection down, routes, resolver
    /// and firewall as they were.
    Disconnect(connect::DisconnectArgs),
    /// Worker statistics of the running data plane, the queues each worker
    /// serves and how each AF_XDP socket was bound (zero-copy or copy,
    /// rings, UMEM and its NUMA node, busy polling), and the fail-closed
    /// guard (also when the data plane is down).
    Status(ApiArgs),
    /// The fail-closed guard: the nftables table that drops protected
    /// traffic the kernel would otherwise send in cleartext.
    #[command(subcommand)]
    Guard(GuardCommand),
    /// Security associations.
    #[command(subcommand)]
    Sa(SaCommand),
    /// Security policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum SaCommand {
    /// List the SAs with their counters (never their keys); with the IKE
    /// daemon running, also its IKE and Child SAs.
    List(SaListArgs),
}

#[derive(Debug, Args)]
struct SaListArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The IKE daemon's control socket (default: /run/xdpsec/ike.sock if
    /// it exists; without a daemon only the data plane's SAs are shown).
    #[arg(long, value_name = "PATH")]
    ike_socket: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum GuardCommand {
    /// Whether the guard is in place, its rules and what it dropped.
    Status,
    /// Lift the guard (in this network namespace): protected traffic then
    /// leaves in cleartext whenever no data plane takes it.
    Remove,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// List the policies.
    List(ApiArgs),
}

#[derive(Debug, Args)]
struct ApiArgs {
    /// The data plane's SA API socket (`[dataplane] api_socket`).
    #[arg(
        long = "api-socket",
        alias = "socket",
        value_name = "PATH",
        default_value = DEFAULT_API_SOCKET
    )]
    api_socket: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    if let Some(code) = generate::intercept::<Cli>() {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version come this way too, and are no error.
            let usage = e.use_stderr();
            e.print().ok();
            return if usage {
                Exit::Usage.into()
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Dataplane {
            config,
            null_cipher_benchmark,
            xdp_generic,
            log_format,
            #[cfg(feature = "fault-injection")]
            fault_worker_panic_after,
            #[cfg(feature = "fault-injection")]
            fault_fail_prefix,
            #[cfg(feature = "fault-injection")]
            fault_umem_per_interface,
        } => {
            #[cfg(feature = "fault-injection")]
            {
                if let Some(n) = fault_worker_panic_after {
                    xdpsec_dataplane::fault::panic_worker_after(n);
                }
                if let Some(p) = fault_fail_prefix {
                    xdpsec_dataplane::fault::fail_prefix(p.addr(), p.prefix_len());
                }
                if fault_umem_per_interface {
                    xdpsec_dataplane::fault::set_umem_per_interface();
                }
            }
            return dataplane(
                DaemonOptions {
                    config,
                    null_cipher_benchmark,
                    xdp_generic,
                },
                log_format,
            );
        }
        Command::Status(args) => status(&args),
        Command::Guard(GuardCommand::Status) => {
            print(&show::guard_line(&xdpsec_dataplane::guard::status())).map_err(Failure::from)
        }
        Command::Guard(GuardCommand::Remove) => xdpsec_dataplane::guard::remove()
            .map_err(|e| Failure::from(format!("removing the guard: {e:#}"))),
        Command::Ike(args) => return ike::run_daemon(args),
        Command::Check(args) => check::check(&args),
        Command::Initiate { connection, ctl } => {
            ike::command(&ctl, CtlRequest::Initiate { connection })
        }
        Command::Terminate { connection, ctl } => {
            ike::command(&ctl, CtlRequest::Terminate { connection })
        }
        Command::Rekey {
            connection,
            child: _,
            ike: rekey_ike,
            ctl,
        } => ike::command(
            &ctl,
            CtlRequest::Rekey {
                connection,
                target: if rekey_ike {
                    RekeyTarget::Ike
                } else {
                    RekeyTarget::Child
                },
            },
        ),
        Command::Connect(args) => connect::connect(&args),
        Command::Disconnect(args) => connect::disconnect(&args),
        Command::Sa(SaCommand::List(args)) => sa_list(&args),
        Command::Policy(PolicyCommand::List(args)) => {
            query(&args, Request::ListPolicies, |r| match r {
                Response::Policies { policies } => Some(show::policy_table(policies)),
                _ => None,
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("xdpsec: {}", failure.message);
            failure.exit.into()
        }
    }
}

fn dataplane(options: DaemonOptions, log_format: logging::LogFormat) -> ExitCode {
    logging::init(log_format);
    // Config errors (they name the file, the field and the line) come first,
    // whatever the rest of the start-up would fail on.
    if let Err(e) = StaticConfig::load(&options.config) {
        logging::fatal("xdpsec dataplane", &anyhow::Error::new(e));
        return Exit::Config.into();
    }
    match daemon::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::fatal("xdpsec dataplane", &e);
            exit::of_error(&e).into()
        }
    }
}

/// `xdpsec status`: the workers, then the guard. With the data plane down,
/// says so and what protects the host meanwhile, and fails.
fn status(args: &ApiArgs) -> Result<(), Failure> {
    let guard = xdpsec_dataplane::guard::status();
    let response = match request_one(args, Request::WorkerStats) {
        Ok(response) => response,
        Err(e) => {
            return Err(Failure {
                message: format!(
                    "the data plane is not reachable: {}\n{}",
                    e.message,
                    show::guard_line(&guard).trim_end()
                ),
                ..e
            });
        }
    };
    let text = if args.json {
        json_text(&response)?
    } else {
        let Response::WorkerStats { workers } = &response else {
            return Err(unexpected(&Request::WorkerStats, &response).into());
        };
        show::worker_table(workers) + &show::guard_line(&guard)
    };
    Ok(print(&text)?)
}

/// Sends one request and prints the reply, as JSON or through `table`.
fn query(
    args: &ApiArgs,
    request: Request,
    table: impl Fn(&Response) -> Option<String>,
) -> Result<(), Failure> {
    let response = request_one(args, request.clone())?;
    let text = if args.json {
        json_text(&response)?
    } else {
        table(&response).ok_or_else(|| unexpected(&request, &response))?
    };
    Ok(print(&text)?)
}

fn request_one(args: &ApiArgs, request: Request) -> Result<Response, Failure> {
    let op = request.op();
    let mut client = connect(&args.api_socket)?;
    client
        .request(request)
        .map_err(|e| Failure::from(format!("{op} on {}: {e}", args.api_socket.display())))
}

fn unexpected(request: &Request, response: &Response) -> String {
    format!(
        "{}: unexpected reply {:?} from the data plane",
        request.op(),
        response.status()
    )
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String, String> {
    let mut json = serde_json::to_string_pretty(value)
        .map_err(|e| format!("encoding the reply as JSON: {e}"))?;
    json.push('\n');
    Ok(json)
}

/// The data plane's SAs, and the IKE daemon's IKE and Child SAs when it
/// runs (in JSON as `ike_sas` next to the data plane's `sas`).
fn sa_list(args: &SaListArgs) -> Result<(), Failure> {
    let response = request_one(&args.api, Request::ListSas)?;
    let Response::Sas { sas } = &response else {
        return Err(unexpected(&Request::ListSas, &response).into());
    };
    let ike_sas = ike::list_ike_sas(args.ike_socket.as_deref())?;
    let text = if args.api.json {
        let mut value = serde_json::to_value(&response)
            .map_err(|e| format!("encoding the reply as JSON: {e}"))?;
        if let (Some(ike_sas), Some(obj)) = (&ike_sas, value.as_object_mut()) {
            obj.insert(
                "ike_sas".to_owned(),
                serde_json::to_value(ike_sas)
                    .map_err(|e| format!("encoding the reply as JSON: {e}"))?,
            );
        }
        json_text(&value)?
    } else {
        let mut text = show::sa_table(sas);
        if let Some(ike_sas) = &ike_sas {
            text.push('\n');
            text.push_str(&show::ike_sa_table(ike_sas));
        }
        text
    };
    Ok(print(&text)?)
}

fn print(text: &str) -> Result<(), String> {
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

fn connect(socket: &Path) -> Result<ApiClient, Failure> {
    ApiClient::connect(socket).map_err(|e| match e {
        ApiError::Connect { path, source } => {
            let hint = match source.kind() {
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                    "the data plane is not running there (start it with \
                     `xdpsec dataplane --config FILE`, or pass --api-socket PATH)"
                }
                ErrorKind::PermissionDenied => {
                    "the socket is mode 0600: run this as the data plane's user (root)"
                }
                _ => "is the data plane running, and may this user open the socket (root)?",
            };
            Failure::unreachable(format!(
                "cannot connect to the SA API at {}: {source}; {hint}",
                path.display()
            ))
        }
        other => Failure::from(format!("SA API at {}: {other}", socket.display())),
    })
}
