//! The TOML config ([`crate::config`]) turned into what the state machine
//! runs with: [`crate::ike::Connection`]s (addresses, proposals,
//! identities, secrets, traffic selectors, timers) and
//! [`crate::ike::Settings`]. An error names the config field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use xdpsec_api::sa::ValidationError;

use crate::config::{self, IkeConfig};
use crate::ike::{
    AuthMethod, ChildConfig, Connection, DpdAction, EspProposal, IkeProposal, LocalAuth,
    RemoteAuth, Settings, StartAction,
};

/// Why the config cannot be run (it parsed, but the state machine cannot
/// take it as written).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResolveError(ValidationError);

fn err(field: String, reason: impl Into<String>) -> ResolveError {
    ResolveError(ValidationError::new(field, reason))
}

/// The endpoint settings from `[daemon]`.
pub fn settings(daemon: &config::DaemonConfig) -> Settings {
    Settings {
        ike_port: daemon.port,
        natt_port: daemon.port_nat_t,
        retransmit_timeout: daemon.retransmit_timeout,
        retransmit_base: daemon.retransmit_base,
        retransmit_tries: daemon.retransmit_tries,
        cookie_threshold: usize::try_from(daemon.cookie_threshold).unwrap_or(usize::MAX),
        max_half_open: usize::try_from(daemon.half_open_limit).unwrap_or(usize::MAX),
        keepalive_interval: daemon.keep_alive,
        ..Settings::default()
    }
}

/// strongSwan's string of a config IKE proposal, for the state machine's
/// parser.
fn ike_proposal_string(p: &config::IkeProposal) -> String {
    let words = p
        .encryption
        .iter()
        .map(|e| e.keyword())
        .chain(p.integrity.iter().map(|i| i.keyword()))
        .chain(p.prf.iter().map(|f| f.keyword()))
        .chain(p.dh.iter().map(|d| d.keyword()));
    words.collect::<Vec<_>>().join("-")
}

fn esp_proposal_string(p: &config::EspProposal) -> String {
    let words = p
        .encryption
        .iter()
        .map(|e| e.keyword())
        .chain(p.dh.iter().map(|d| d.keyword()))
        .chain(p.esn.iter().map(|e| e.keyword()));
    words.collect::<Vec<_>>().join("-")
}

fn duration(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Every configured connection, resolved.
pub fn connections(config: &IkeConfig) -> Result<Vec<Connection>, ResolveError> {
    config
        .connections
        .iter()
        .map(|(name, c)| connection(config, name, c))
        .collect()
}

fn connection(
    config: &IkeConfig,
    name: &str,
    c: &config::Connection,
) -> Result<Connection, ResolveError> {
    let field = |f: &str| format!("connections.{name}.{f}");
    let local_addrs: Vec<IpAddr> = c.local_addrs.iter().filter_map(|a| a.addr()).collect();
    let remote_addrs: Vec<IpAddr> = c.remote_addrs.iter().filter_map(|a| a.addr()).collect();
    let ike_addr = local_addrs.first().copied();

    let local_id = match (&c.local.id, ike_addr) {
        (Some(id), _) if !id.is_any() => id
            .to_wire()
            .ok_or_else(|| err(field("local.id"), "cannot be sent as an identity"))?,
        (_, Some(IpAddr::V4(a))) => crate::wire::Identification::Ipv4(a),
        (_, Some(IpAddr::V6(a))) => crate::wire::Identification::Ipv6(a),
        (_, None) => {
            return Err(err(
                field("local.id"),
                "needed when local_addrs names no single address (the default identity is the \
                 IKE address)",
            ))
        }
    };
    let remote_id = c.remote.id.as_ref().and_then(config::Identity::to_wire);
    let auth = |side: &str, a: &config::AuthConfig| -> Result<AuthMethod, ResolveError> {
        match a.auth {
            config::AuthMethod::Psk => {
                let any = crate::wire::Identification::Fqdn(Vec::new());
                let psk = config
                    .find_psk(Some(&local_id), remote_id.as_ref().unwrap_or(&any))
                    .ok_or_else(|| {
                        err(
                            field(&format!("{side}.auth")),
                            "psk, but no [secrets.ike-*] section fits the local and remote ids",
                        )
                    })?;
                Ok(AuthMethod::psk(psk.as_bytes().to_vec()))
            }
            config::AuthMethod::Pubkey => Err(err(
                field(&format!("{side}.auth")),
                "pubkey authentication is not wired into the daemon yet; use psk",
            )),
        }
    };
    let local_auth = auth("local", &c.local)?;
    let remote_auth = auth("remote", &c.remote)?;

    let proposals = c
        .proposals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            ike_proposal_string(p)
                .parse::<IkeProposal>()
                .map_err(|e| err(field(&format!("proposals[{i}]")), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let ts_addr = ike_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let remote_ts_addr = remote_addrs
        .first()
        .copied()
        .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let mut children = Vec::new();
    for (child_name, ch) in &c.children {
        let cfield = |f: &str| format!("connections.{name}.children.{child_name}.{f}");
        let esp_proposals = ch
            .esp_proposals
            .iter()
            .enumerate()
            .map(|(i, p)| {
                esp_proposal_string(p)
                    .parse::<EspProposal>()
                    .map_err(|e| err(cfield(&format!("esp_proposals[{i}]")), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        children.push(ChildConfig {
            name: child_name.clone(),
            local_ts: ch.local_ts.iter().map(|t| t.to_wire(ts_addr)).collect(),
            remote_ts: ch
                .remote_ts
                .iter()
                .map(|t| t.to_wire(remote_ts_addr))
                .collect(),
            esp_proposals,
            rekey_time: duration(ch.rekey_time),
            life_time: ch.hard_life_time(),
            start_action: match ch.start_action {
                config::StartAction::Start => StartAction::Start,
                // Trap policies need acquires from the data plane, which it
                // does not send: such a child waits for the peer or a command.
                config::StartAction::None | config::StartAction::Trap => StartAction::None,
            },
        });
    }
    let mut conn = Connection::new(
        name,
        LocalAuth {
            id: local_id.clone(),
            auth: local_auth,
        },
        RemoteAuth {
            id: remote_id.clone(),
            auth: remote_auth,
        },
    );
    conn.local_addrs = local_addrs;
    conn.remote_addrs = remote_addrs;
    conn.remote_port = c.remote_port;
    conn.proposals = proposals;
    conn.children = children;
    conn.rekey_time = duration(c.rekey_time);
    conn.dpd_delay = duration(c.dpd_delay);
    conn.dpd_action = match c.dpd_action {
        config::DpdAction::Clear => DpdAction::Clear,
        config::DpdAction::Restart => DpdAction::Restart,
    };
    conn.encap = c.encap;
    conn.fragmentation = c.fragmentation != config::Fragmentation::No;
    conn.start_action = if conn
        .children
        .iter()
        .any(|ch| ch.start_action == StartAction::Start)
    {
        StartAction::Start
    } else {
        StartAction::None
    };
    Ok(conn)
}
