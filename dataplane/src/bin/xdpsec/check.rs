//! `xdpsec check [--dataplane FILE] [--ike FILE]`: whether the daemons
//! would start on these configs, without starting them. Each file goes
//! through the loader its daemon uses (so a file this passes is one the
//! daemon takes, and an error reads as the daemon's would: the file and
//! the field); the data-plane config is then checked against this host
//! (the checks the data plane makes before it attaches anything); with
//! both, the IKE daemon must install its SAs where the data plane serves
//! the SA API. Needs no privileges and changes nothing.

use crate::exit::Failure;
use clap::{ArgGroup, Args};
use std::path::{Path, PathBuf};
use xdpsec_api::{ConfigError, StaticConfig};
use xdpsec_control::config::IkeConfig;

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("files")
        .required(true)
        .multiple(true)
        .args(["dataplane", "ike"])
))]
pub struct CheckArgs {
    /// A data-plane config (what `xdpsec dataplane --config` reads),
    /// checked against this network namespace: interfaces, RX queues,
    /// workers, CPUs.
    #[arg(long, value_name = "FILE")]
    dataplane: Option<PathBuf>,
    /// An IKE config (what `xdpsec ike --config` reads), with the
    /// certificates and keys it names.
    #[arg(long, value_name = "FILE")]
    ike: Option<PathBuf>,
}

/// The problems found, per file, in the order the files were given.
#[derive(Debug, Default)]
struct Report {
    files: Vec<(PathBuf, Vec<ConfigError>)>,
}

impl Report {
    fn add(&mut self, file: &Path, problems: Vec<ConfigError>) {
        match self.files.iter_mut().find(|(f, _)| f == file) {
            Some((_, list)) => list.extend(problems),
            None => self.files.push((file.to_owned(), problems)),
        }
    }
}

pub fn check(args: &CheckArgs) -> Result<(), Failure> {
    let mut report = Report::default();
    let dataplane = args
        .dataplane
        .as_deref()
        .and_then(|file| match StaticConfig::load(file) {
            Ok(config) => {
                report.add(file, xdpsec_dataplane::daemon::check_host(&config, file));
                Some((file, config))
            }
            Err(e) => {
                report.add(file, vec![e]);
                None
            }
        });
    let ike =
        args.ike
            .as_deref()
            .and_then(|file| match xdpsec_control::daemon::load_config(file) {
                Ok((config, _)) => {
                    report.add(file, xdpsec_control::daemon::check_host(&config, file));
                    Some((file, config))
                }
                Err(e) => {
                    report.add(file, vec![e]);
                    None
                }
            });
    if let (Some((dp_file, dp)), Some((ike_file, ike))) = (&dataplane, &ike) {
        report.add(ike_file, together(dp_file, dp, ike_file, ike));
    }

    let mut problems = 0;
    for (file, list) in &report.files {
        if list.is_empty() {
            println!("ok: {}", file.display());
        }
        for e in list {
            eprintln!("xdpsec check: {e}");
            problems += 1;
        }
    }
    if problems == 0 {
        Ok(())
    } else {
        Err(Failure::config(format!(
            "check: {problems} problem(s); the daemons would refuse to start on these configs"
        )))
    }
}

/// What must agree between the two configs: the IKE daemon installs its
/// SAs over the SA API the data plane serves, and its own control socket
/// is another path.
fn together(
    dp_file: &Path,
    dp: &StaticConfig,
    ike_file: &Path,
    ike: &IkeConfig,
) -> Vec<ConfigError> {
    let api = &dp.dataplane.api_socket;
    let problem = |field: &str, reason: String| ConfigError {
        file: ike_file.to_owned(),
        field: Some(field.to_owned()),
        reason,
        location: None,
    };
    let mut problems = Vec::new();
    if ike.daemon.api_socket != *api {
        problems.push(problem(
            "daemon.api_socket",
            format!(
                "{} is not the data plane's SA API socket: {} has dataplane.api_socket = {}; \
                 the IKE daemon could not install its SAs (make them the same path)",
                ike.daemon.api_socket.display(),
                dp_file.display(),
                api.display()
            ),
        ));
    }
    if ike.daemon.control_socket == *api {
        problems.push(problem(
            "daemon.control_socket",
            format!(
                "{} is the data plane's SA API socket (dataplane.api_socket in {}); the IKE \
                 daemon's control socket must be another path",
                api.display(),
                dp_file.display()
            ),
        ));
    }
    problems
}
