//! `xdpsec connect CONNECTION` and `xdpsec disconnect`: a remote-access
//! client's session. `connect` has the IKE daemon bring the connection up,
//! reads the virtual IPs and DNS servers the gateway assigned, and sets the
//! host up around the tunnel interface (`xdpsec_dataplane::host_session`);
//! `disconnect` takes the connection down and puts the host back as it
//! was, from the state file `connect` left.

use crate::exit::Failure;
use crate::ike::{self, CtlArgs};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use xdpsec_api::Prefix;
use xdpsec_control::ctl::{CtlRequest, CtlResponse, IkeSaInfo};
use xdpsec_dataplane::host_session::{self, Plan, SessionState};

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The IKE connection (with `vips`) to bring up.
    connection: String,
    /// The data plane's tunnel interface (`role = "tunnel"` in its config).
    #[arg(long, value_name = "NAME", default_value = "xtun0")]
    tunnel: String,
    /// Route only this prefix into the tunnel (repeatable); default:
    /// everything.
    #[arg(long = "subnet", value_name = "PREFIX")]
    subnets: Vec<Prefix>,
    /// Do not block traffic outside the tunnel.
    #[arg(long)]
    no_firewall: bool,
    /// The resolver file to point at the tunnel's DNS servers.
    #[arg(long, value_name = "PATH", default_value = host_session::DEFAULT_RESOLV_CONF)]
    resolv_conf: PathBuf,
    #[command(flatten)]
    session: SessionArgs,
    #[command(flatten)]
    ctl: CtlArgs,
}

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    #[command(flatten)]
    session: SessionArgs,
    #[command(flatten)]
    ctl: CtlArgs,
}

#[derive(Debug, Args)]
struct SessionArgs {
    /// Where the session's state is kept (what to undo on disconnect).
    #[arg(long, value_name = "PATH", default_value = host_session::DEFAULT_STATE_FILE)]
    state_file: PathBuf,
}

pub fn connect(args: &ConnectArgs) -> Result<(), Failure> {
    if args.session.state_file.exists() {
        return Err(format!(
            "already connected (state in {}); run `xdpsec disconnect` first",
            args.session.state_file.display()
        )
        .into());
    }
    ike::command(
        &args.ctl,
        CtlRequest::Initiate {
            connection: args.connection.clone(),
        },
    )?;
    let sa = assigned_sa(&args.ctl, &args.connection)?;
    let plan = Plan {
        connection: args.connection.clone(),
        tunnel: args.tunnel.clone(),
        gateway: sa.remote.ip(),
        virtual_ips: sa.virtual_ips.clone(),
        dns: sa.dns.clone(),
        subnets: args.subnets.clone(),
        firewall: !args.no_firewall,
        resolv_conf: args.resolv_conf.clone(),
    };
    match host_session::apply(&plan, &args.session.state_file) {
        Ok(_) => {
            let show = |v: &[std::net::IpAddr]| {
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "connected: {} via {} on {}, virtual IP {}{}",
                args.connection,
                plan.gateway,
                plan.tunnel,
                show(&plan.virtual_ips),
                if plan.dns.is_empty() {
                    String::new()
                } else {
                    format!(", DNS {}", show(&plan.dns))
                }
            );
            Ok(())
        }
        Err(e) => {
            terminate(&args.ctl, &args.connection);
            Err(format!("setting the host up: {e:#}").into())
        }
    }
}

pub fn disconnect(args: &DisconnectArgs) -> Result<(), Failure> {
    let path = &args.session.state_file;
    if !path.exists() {
        return Err(format!("not connected (no session state in {})", path.display()).into());
    }
    let state = SessionState::load(path).map_err(|e| format!("{e:#}"))?;
    // The host first: even if the daemon is gone, routes and resolver come back.
    let restored = host_session::restore(&state, path).map_err(|e| format!("{e:#}"));
    terminate(&args.ctl, &state.plan.connection);
    restored?;
    println!(
        "disconnected: {}; routes and resolver restored",
        state.plan.connection
    );
    Ok(())
}

fn terminate(ctl: &CtlArgs, connection: &str) {
    if let Err(e) = ike::command(
        ctl,
        CtlRequest::Terminate {
            connection: connection.to_string(),
        },
    ) {
        eprintln!("xdpsec: {}", e.message);
    }
}

/// The established IKE SA of `connection` that got virtual IPs.
fn assigned_sa(ctl: &CtlArgs, connection: &str) -> Result<IkeSaInfo, Failure> {
    let mut client = ike::connect(ctl.socket(), Duration::from_secs(10))?;
    let sas = match client.request(CtlRequest::ListSas) {
        Ok(CtlResponse::Sas { ike_sas }) => ike_sas,
        Ok(other) => return Err(format!("list_sas: unexpected answer {other:?}").into()),
        Err(e) => return Err(format!("list_sas: {e}").into()),
    };
    let sa = sas
        .into_iter()
        .filter(|s| s.connection == connection && s.state == "established")
        .min_by_key(|s| s.age_s)
        .ok_or_else(|| format!("{connection} is not established after initiate"))?;
    if sa.virtual_ips.is_empty() {
        terminate(ctl, connection);
        return Err(format!(
            "the gateway assigned {connection} no virtual IP (does the connection have vips, \
             and the gateway's a pool?)"
        )
        .into());
    }
    Ok(sa)
}
