//! Two (or more) IKE endpoints on a virtual clock, joined by a simulated
//! network that can lose, duplicate, reorder and (NAT) rewrite datagrams.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xdpsec_api::{Direction, SaSpec};
use xdpsec_control::config::IkeConfig;
use xdpsec_control::crypto::SeededRandom;
use xdpsec_control::ike::{Connection, Endpoint, Event, Settings, Transmit};

pub const A: &str = "198.18.0.1";
pub const B: &str = "198.18.0.2";

/// Connections from TOML through the real config parser.
pub fn connections(toml: &str) -> Vec<Connection> {
    let cfg = Arc::new(IkeConfig::parse(toml, "test.toml").expect("test config parses"));
    Connection::all_from_config(&cfg, &BTreeMap::new()).expect("connections resolve")
}

/// A PSK site-to-site config from `me` to `peer`: LAN 10.1/16 <-> 10.2/16
/// seen from A (swapped for B).
pub fn psk_config(
    me: &str,
    peer: &str,
    proposal: &str,
    extra_conn: &str,
    extra_child: &str,
) -> String {
    let (lan_l, lan_r) = if me == A {
        ("10.1.0.0/16", "10.2.0.0/16")
    } else {
        ("10.2.0.0/16", "10.1.0.0/16")
    };
    format!(
        r#"
[connections.gw]
local_addrs = ["{me}"]
remote_addrs = ["{peer}"]
proposals = ["{proposal}"]
{extra_conn}
[connections.gw.local]
auth = "psk"
id = "{me_id}"
[connections.gw.remote]
auth = "psk"
id = "{peer_id}"
[connections.gw.children.net]
local_ts = ["{lan_l}"]
remote_ts = ["{lan_r}"]
esp_proposals = ["aes128gcm16", "aes256gcm16"]
{extra_child}
[secrets.ike-gw]
id = ["a.example", "b.example"]
secret = "correct horse battery staple"
"#,
        me_id = if me == A { "a.example" } else { "b.example" },
        peer_id = if me == A { "b.example" } else { "a.example" },
    )
}

pub struct Node {
    pub ep: Endpoint,
    pub ip: IpAddr,
    pub events: Vec<Event>,
    /// Whether its traffic goes through a NAT (source rewritten).
    pub behind_nat: bool,
}

struct InFlight {
    at: Instant,
    to: usize,
    from: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
    marker: bool,
}

/// A deterministic lossy network.
pub struct Sim {
    pub nodes: Vec<Node>,
    pub now: Instant,
    flight: Vec<InFlight>,
    rng: u64,
    /// Probability (per mille) of losing a datagram.
    pub loss: u32,
    /// Probability (per mille) of duplicating one.
    pub dup: u32,
    /// Extra random delay up to this, which reorders.
    pub jitter: Duration,
    pub latency: Duration,
    /// Datagrams each node sent (for assertions).
    pub sent: Vec<Vec<Transmit>>,
    /// Set: drop everything (a dead link).
    pub cut: bool,
}

pub fn node(toml: &str, ip: &str, seed: u64, settings: Settings) -> Node {
    node_with(connections(toml), ip, seed, settings)
}

pub fn node_with(conns: Vec<Connection>, ip: &str, seed: u64, settings: Settings) -> Node {
    let mut ep = Endpoint::new(settings, conns, Box::new(SeededRandom::new(seed)));
    ep.set_wall_clock(Instant::now(), std::time::SystemTime::now());
    Node {
        ep,
        ip: ip.parse().unwrap(),
        events: Vec::new(),
        behind_nat: false,
    }
}

pub fn fast_settings() -> Settings {
    Settings {
        retransmit_timeout: Duration::from_millis(500),
        ..Settings::default()
    }
}

/// Node 0 (A) a PSK initiator of connection "gw"; node 1 (B) a responder
/// that takes IKE_SA_INIT from any address (`remote_addrs = %any`), as a
/// gateway facing the internet does. Both with `settings`.
pub fn initiator_and_open_responder(settings: Settings) -> Sim {
    let b = node(
        &psk_config(B, A, "aes128gcm16-prfsha256-x25519", "", "").replace(
            "remote_addrs = [\"198.18.0.1\"]",
            "remote_addrs = [\"%any\"]",
        ),
        B,
        2,
        settings.clone(),
    );
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "", ""),
        A,
        3,
        settings,
    );
    Sim::new(vec![a, b], 4)
}

/// The NAT's public address for a node behind it.
const NAT_PUBLIC: &str = "198.18.0.100";

impl Sim {
    pub fn new(nodes: Vec<Node>, seed: u64) -> Sim {
        let n = nodes.len();
        Sim {
            nodes,
            now: Instant::now(),
            flight: Vec::new(),
            rng: seed.wrapping_mul(6364136223846793005).wrapping_add(1),
            loss: 0,
            dup: 0,
            jitter: Duration::ZERO,
            latency: Duration::from_millis(5),
            sent: vec![Vec::new(); n],
            cut: false,
        }
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.rng = self
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.rng >> 33) % n.max(1)
    }

    fn collect(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(ev) = self.nodes[i].ep.poll_event() {
                self.nodes[i].events.push(ev);
            }
            while let Some(t) = self.nodes[i].ep.poll_transmit() {
                assert_eq!(
                    t.local.ip(),
                    self.nodes[i].ip,
                    "sent from a foreign address"
                );
                self.sent[i].push(t.clone());
                let Some(to) = self.nodes.iter().position(|n| {
                    n.ip == t.remote.ip()
                        || (n.behind_nat && t.remote.ip().to_string() == NAT_PUBLIC)
                }) else {
                    continue;
                };
                // NAT: the source of a node behind it is rewritten; the
                // mapping is port + 10000 on the public address.
                let (from, dst) = if self.nodes[i].behind_nat {
                    (
                        SocketAddr::new(NAT_PUBLIC.parse().unwrap(), t.local.port() + 10000),
                        t.remote,
                    )
                } else if self.nodes[to].behind_nat {
                    (
                        t.local,
                        SocketAddr::new(self.nodes[to].ip, t.remote.port() - 10000),
                    )
                } else {
                    (t.local, t.remote)
                };
                if self.cut || self.rand(1000) < u64::from(self.loss) {
                    continue;
                }
                let copies = if self.rand(1000) < u64::from(self.dup) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let extra = if self.jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        Duration::from_micros(self.rand(self.jitter.as_micros() as u64))
                    };
                    self.flight.push(InFlight {
                        at: self.now + self.latency + extra,
                        to,
                        from,
                        dst,
                        payload: t.payload.clone(),
                        marker: t.non_esp_marker,
                    });
                }
            }
        }
    }

    /// Runs until nothing is in flight and no timer is due before `limit`
    /// from now; returns whether it went quiet before the limit.
    pub fn run_for(&mut self, limit: Duration) {
        let end = self.now + limit;
        let mut spins = 0u32;
        loop {
            spins += 1;
            assert!(
                spins < 1_000_000,
                "the endpoints spin: timeouts {:?} at {:?}, SAs {:#?}",
                self.nodes
                    .iter()
                    .map(|n| n.ep.poll_timeout())
                    .collect::<Vec<_>>(),
                self.now,
                self.nodes
                    .iter()
                    .map(|n| n.ep.list_sas(self.now))
                    .collect::<Vec<_>>()
            );
            self.collect();
            let next_packet = self.flight.iter().map(|f| f.at).min();
            let next_timer = self.nodes.iter().filter_map(|n| n.ep.poll_timeout()).min();
            let next = match (next_packet, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            let due: Vec<InFlight> = {
                let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flight)
                    .into_iter()
                    .partition(|f| f.at <= now);
                self.flight = rest;
                due
            };
            for f in due {
                let n = &mut self.nodes[f.to];
                // Messages to and from port 4500 carry the marker, which the
                // daemon strips; the endpoint never sees it.
                assert_eq!(
                    f.marker,
                    f.dst.port() == 4500 && f.payload != [0xff],
                    "non-ESP marker flag wrong for port {}",
                    f.dst.port()
                );
                n.ep.handle_datagram(now, f.dst, f.from, &f.payload);
            }
            for n in &mut self.nodes {
                if n.ep.poll_timeout().is_some_and(|t| t <= now) {
                    n.ep.handle_timeout(now);
                }
            }
        }
        self.now = self.now.max(end);
        for n in &mut self.nodes {
            n.ep.handle_timeout(self.now);
        }
        self.collect();
    }

    pub fn events(&self, i: usize) -> &[Event] {
        &self.nodes[i].events
    }
}

/// The SAs a node was told to install and did not delete since, by
/// (spi, direction).
pub fn installed(events: &[Event]) -> BTreeMap<(u32, Direction), SaSpec> {
    let mut m = BTreeMap::new();
    for e in events {
        match e {
            Event::InstallSa { spec, .. } => {
                assert!(
                    m.insert((spec.spi, spec.direction), spec.clone()).is_none(),
                    "SA {:08x} {} installed twice",
                    spec.spi,
                    spec.direction
                );
            }
            Event::DeleteSa { spi, direction, .. } => {
                assert!(
                    m.remove(&(*spi, *direction)).is_some(),
                    "deleting SA {spi:08x} {direction} that is not installed"
                );
            }
            _ => {}
        }
    }
    m
}

/// Checks that what one side sends the other receives with the same key:
/// every outbound SA of `a` is an inbound SA of `b` with the same key,
/// ESN and encapsulation ports mirrored, and the other way round.
pub fn assert_sas_match(
    a: &BTreeMap<(u32, Direction), SaSpec>,
    b: &BTreeMap<(u32, Direction), SaSpec>,
) {
    for ((spi, dir), sa) in a {
        let other_dir = match dir {
            Direction::In => Direction::Out,
            Direction::Out => Direction::In,
        };
        let peer = b
            .get(&(*spi, other_dir))
            .unwrap_or_else(|| panic!("SA {spi:08x} {dir} has no {other_dir} twin"));
        assert_eq!(sa.key, peer.key, "keys of SA {spi:08x} differ");
        assert_eq!(sa.esn, peer.esn);
        assert_eq!(sa.tunnel_local, peer.tunnel_remote);
        assert_eq!(
            sa.encap.map(|e| (e.sport, e.dport)),
            peer.encap.map(|e| (e.sport, e.dport))
        );
        assert!(sa.validate().is_ok(), "{:?}", sa.validate());
    }
    assert_eq!(a.len(), b.len());
}

pub fn count<F: Fn(&Event) -> bool>(events: &[Event], f: F) -> usize {
    events.iter().filter(|e| f(e)).count()
}
