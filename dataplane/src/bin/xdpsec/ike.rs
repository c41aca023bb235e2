//! The IKE side of the binary: `xdpsec ike` (the daemon), and the CLI
//! commands that talk to it over its control socket (`initiate`,
//! `terminate`, `rekey`, and the IKE half of `sa list`).

use crate::exit::{self, Failure};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use xdpsec_control::ctl::{
    CtlClient, CtlError, CtlRequest, CtlResponse, IkeSaInfo, DEFAULT_CTL_SOCKET,
};
use xdpsec_control::daemon::{self, DaemonOptions};

/// `xdpsec ike`'s options; the socket and port options override the
/// config's `[daemon]` section.
#[derive(Debug, Args)]
pub struct IkeArgs {
    /// The IKE config (TOML, strongSwan vocabulary: connections, local,
    /// remote, children, proposals, secrets).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The data plane's SA API socket (config: `daemon.api_socket`).
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// The control socket to serve for `xdpsec initiate` and friends
    /// (config: `daemon.control_socket`); the other commands reach it
    /// with the same flag.
    #[arg(long = "ike-socket", alias = "socket", value_name = "PATH")]
    ike_socket: Option<PathBuf>,
    /// The state file that lets a restarted daemon resume.
    #[arg(long, value_name = "PATH", default_value = daemon::state::DEFAULT_STATE_FILE)]
    state_file: PathBuf,
    /// UDP port for IKE.
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// UDP port for IKE and ESP after NAT detection (RFC 3948).
    #[arg(long, value_name = "PORT")]
    port_nat_t: Option<u16>,
    /// How the log is written (stderr; `RUST_LOG` filters it).
    #[arg(long, value_enum, default_value_t)]
    log_format: crate::logging::LogFormat,
}

/// Options of the commands that talk to the daemon.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The IKE daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CTL_SOCKET)]
    ike_socket: PathBuf,
    /// How long to wait for the exchange to finish.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
}

impl CtlArgs {
    /// The control socket.
    pub fn socket(&self) -> &Path {
        &self.ike_socket
    }
}

/// Runs the daemon until SIGTERM or SIGINT. Logs go to stderr through
/// `tracing` (`RUST_LOG` filters them; default `info`).
pub fn run_daemon(args: IkeArgs) -> ExitCode {
    crate::logging::init(args.log_format);
    let options = DaemonOptions {
        config: args.config,
        api_socket: args.api_socket,
        ctl_socket: args.ike_socket,
        state_file: args.state_file,
        ike_port: args.port,
        nat_t_port: args.port_nat_t,
    };
    match daemon::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::logging::fatal("xdpsec ike", &e);
            exit::of_error(&e).into()
        }
    }
}

/// Sends one request and prints the daemon's message.
pub fn command(args: &CtlArgs, request: CtlRequest) -> Result<(), Failure> {
    let op = request.op();
    let mut client = connect(&args.ike_socket, Duration::from_secs(args.timeout.max(1)))?;
    match client.request(request) {
        Ok(CtlResponse::Ok { message }) => {
            println!("{message}");
            Ok(())
        }
        Ok(CtlResponse::Error { code, message }) => {
            Err(format!("{op}: {code:?}: {message}").into())
        }
        Ok(other) => Err(format!("{op}: unexpected answer {other:?}").into()),
        Err(e) => Err(format!("{op}: {e}").into()),
    }
}

/// The IKE SAs, or `None` when `socket` is the default one and nothing
/// listens there (no IKE daemon on this host: `sa list` shows the data
/// plane alone).
pub fn list_ike_sas(socket: Option<&Path>) -> Result<Option<Vec<IkeSaInfo>>, Failure> {
    let (path, explicit) = match socket {
        Some(p) => (p, true),
        None => (Path::new(DEFAULT_CTL_SOCKET), false),
    };
    if !explicit && !path.exists() {
        return Ok(None);
    }
    let mut client = match connect(path, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(_) if !explicit => return Ok(None),
        Err(e) => return Err(e),
    };
    match client.request(CtlRequest::ListSas) {
        Ok(CtlResponse::Sas { ike_sas }) => Ok(Some(ike_sas)),
        Ok(CtlResponse::Error { message, .. }) => Err(format!("list_sas: {message}").into()),
        Ok(other) => Err(format!("list_sas: unexpected answer {other:?}").into()),
        Err(e) => Err(format!("list_sas: {e}").into()),
    }
}

pub(crate) fn connect(path: &Path, timeout: Duration) -> Result<CtlClient, Failure> {
    CtlClient::connect(path, timeout).map_err(|e| match e {
        CtlError::Connect { path, source } => Failure::unreachable(format!(
            "cannot connect to the IKE daemon at {}: {source}; is `xdpsec ike` running \
             (or pass --ike-socket PATH)?",
            path.display()
        )),
        other => Failure::from(other.to_string()),
    })
}
