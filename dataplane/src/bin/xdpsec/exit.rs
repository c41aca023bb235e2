//! The exit status of every `xdpsec` command, defined here and nowhere
//! else, so that a script can tell a typo in its own command line from a
//! broken config and from a daemon that is down (and retry only the last).

use std::process::ExitCode;
use xdpsec_api::{ApiError, ConfigError};
use xdpsec_control::ctl::CtlError;

/// Why a command failed, as its exit status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Anything not below (a request the daemon refused, an I/O error).
    Other = 1,
    /// The command line: an unknown flag, a missing argument (clap's own
    /// status for these, kept).
    Usage = 2,
    /// A config file that does not load or validate, or does not fit this
    /// host (`xdpsec check`, and the daemons refusing to start on it).
    Config = 3,
    /// The daemon the command talks to cannot be reached: nothing listens
    /// on the data plane's SA API socket or the IKE daemon's control
    /// socket, or this user may not open it.
    Unreachable = 4,
}

/// What `xdpsec --help` says about exit statuses.
pub const HELP: &str = "\
Exit status:
  0  success
  1  any other failure
  2  usage error (unknown flag, missing argument)
  3  config error (a file that does not load, validate or fit this host)
  4  daemon unreachable (the SA API or IKE control socket)";

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// A failed command: its message and exit status.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn config(message: impl Into<String>) -> Failure {
        Failure {
            exit: Exit::Config,
            message: message.into(),
        }
    }

    pub fn unreachable(message: impl Into<String>) -> Failure {
        Failure {
            exit: Exit::Unreachable,
            message: message.into(),
        }
    }
}

/// The commands' plain `String` errors are the "other" kind; the kinds
/// that have a status of their own are made where they are known.
impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            exit: Exit::Other,
            message,
        }
    }
}

/// The status of a daemon's start-up error, from the typed errors in its
/// chain: a config error (whatever context was added around it) or an SA
/// API that could not be reached.
pub fn of_error(e: &anyhow::Error) -> Exit {
    for cause in e.chain() {
        if cause.is::<ConfigError>() {
            return Exit::Config;
        }
        if matches!(
            cause.downcast_ref::<ApiError>(),
            Some(ApiError::Connect { .. })
        ) || matches!(
            cause.downcast_ref::<CtlError>(),
            Some(CtlError::Connect { .. })
        ) {
            return Exit::Unreachable;
        }
    }
    Exit::Other
}
