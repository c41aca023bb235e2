//! Targets on the IKE state machine: two real [`Endpoint`]s (A initiates,
//! B responds) on a virtual clock, brought to a chosen phase of a real
//! exchange, then fed datagrams of the fuzzer's making.
//!
//! Encrypted paths need the keys. Both endpoints run with
//! `Settings::log_keys` (the test-only hook that logs each IKE SA's SK_e/SK_a
//! for Wireshark), and a tracing subscriber of our own catches those
//! events, so the harness can seal any inner payload chain as either peer,
//! in SK or SKF payloads, and decrypt, mutate and re-seal the real
//! messages in flight. The state machine itself is untouched.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::field::{Field, Visit};
use tracing::span;
use tracing::{Dispatch, Metadata, Subscriber};
use xdpsec_api::{Direction, SaSpec};
use xdpsec_control::config::IkeConfig;
use xdpsec_control::crypto::{EncrAlg, IntegAlg, SeededRandom, SkCipher};
use xdpsec_control::ike::{Connection, Endpoint, Event, LifetimeSeverity, Settings, Target};
use xdpsec_control::wire::consts::{exchange, payload as pt};
use xdpsec_control::wire::{Flags, IkeHeader, PayloadIter, HEADER_LEN};

use crate::input::Input;

/// A's and B's addresses (RFC 2544 range, as in the control tests).
const A: &str = "198.18.0.1";
const B: &str = "198.18.0.2";

// ---------------------------------------------------------------------------
// Catching the keys that `log_keys` logs.

/// One IKE SA's keys as `Channel::log_keys` logs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggedKeys {
    pub spi_i: u64,
    pub spi_r: u64,
    pub sk_ei: Vec<u8>,
    pub sk_er: Vec<u8>,
    pub sk_ai: Vec<u8>,
    pub sk_ar: Vec<u8>,
}

#[derive(Default)]
struct KeyVisitor {
    keys: LoggedKeys,
    fields: u32,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

impl Visit for KeyVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let k = &mut self.keys;
        match field.name() {
            "spi_i" => k.spi_i = u64::from_str_radix(&text, 16).unwrap_or(0),
            "spi_r" => k.spi_r = u64::from_str_radix(&text, 16).unwrap_or(0),
            "sk_ei" => k.sk_ei = unhex(&text),
            "sk_er" => k.sk_er = unhex(&text),
            "sk_ai" => k.sk_ai = unhex(&text),
            "sk_ar" => k.sk_ar = unhex(&text),
            _ => return,
        }
        self.fields += 1;
    }
}

/// A subscriber that keeps only the `log_keys` events.
struct KeyCatcher {
    caught: Arc<Mutex<Vec<LoggedKeys>>>,
}

impl Subscriber for KeyCatcher {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event()
            && metadata.level() == &tracing::Level::DEBUG
            && metadata.target().starts_with("xdpsec_control::ike")
            && metadata.fields().field("sk_ei").is_some()
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut v = KeyVisitor::default();
        event.record(&mut v);
        if v.fields == 6 {
            let mut caught = self.caught.lock().unwrap_or_else(|e| e.into_inner());
            if !caught.contains(&v.keys) {
                caught.push(v.keys);
            }
        }
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

thread_local! {
    /// One dispatcher per thread, reused: making a new one per run would
    /// rebuild every callsite's interest each time.
    static CATCHER: (Dispatch, Arc<Mutex<Vec<LoggedKeys>>>) = {
        let caught = Arc::new(Mutex::new(Vec::new()));
        (Dispatch::new(KeyCatcher { caught: caught.clone() }), caught)
    };
}

// ---------------------------------------------------------------------------
// The two endpoints.

/// Configuration variants, chosen by the input's first byte.
#[derive(Debug, Clone, Copy)]
struct Variant {
    /// AES-CBC + HMAC-SHA256 and ECP-256 instead of AES-GCM and X25519.
    cbc: bool,
    /// 200-byte IKE fragments (RFC 7383), so real messages come in SKF.
    small_fragments: bool,
    /// Remote access: A asks for virtual IPs, B leases from pools (CP).
    remote_access: bool,
    /// Short rekey and DPD timers, so the clock starts exchanges.
    short_timers: bool,
}

impl Variant {
    fn from_byte(b: u8) -> Self {
        Variant {
            cbc: b & 1 != 0,
            small_fragments: b & 2 != 0,
            remote_access: b & 4 != 0,
            short_timers: b & 8 != 0,
        }
    }

    fn index(self) -> usize {
        usize::from(self.cbc)
            | usize::from(self.small_fragments) << 1
            | usize::from(self.remote_access) << 2
            | usize::from(self.short_timers) << 3
    }

    fn algorithms(self) -> (EncrAlg, Option<IntegAlg>) {
        if self.cbc {
            (
                EncrAlg::AesCbc { bits: 256 },
                Some(IntegAlg::HmacSha256_128),
            )
        } else {
            (EncrAlg::AesGcm16 { bits: 128 }, None)
        }
    }

    fn config(self, me: &str) -> String {
        let a = me == A;
        let proposal = if self.cbc {
            "aes256-sha256-ecp256"
        } else {
            "aes128gcm16-prfsha256-x25519"
        };
        let timers = if self.short_timers {
            "rekey_time = \"60s\"\ndpd_delay = \"20s\"\n"
        } else {
            ""
        };
        let child_timers = if self.short_timers {
            "rekey_time = \"40s\"\n"
        } else {
            ""
        };
        let (peer, my_id, peer_id) = if a {
            (B, "a.example", "b.example")
        } else {
            (A, "b.example", "a.example")
        };
        let (remote_addrs, extra, ts) = match (self.remote_access, a) {
            (false, _) => {
                let (l, r) = if a {
                    ("10.1.0.0/16", "10.2.0.0/16")
                } else {
                    ("10.2.0.0/16", "10.1.0.0/16")
                };
                (
                    format!("remote_addrs = [\"{peer}\"]"),
                    String::new(),
                    format!("local_ts = [\"{l}\"]\nremote_ts = [\"{r}\"]"),
                )
            }
            (true, true) => (
                format!("remote_addrs = [\"{peer}\"]"),
                "vips = [\"0.0.0.0\", \"::\"]".to_owned(),
                "remote_ts = [\"0.0.0.0/0\", \"::/0\"]".to_owned(),
            ),
            (true, false) => (
                String::new(),
                "pools = [\"rw4\", \"rw6\"]".to_owned(),
                "local_ts = [\"0.0.0.0/0\", \"::/0\"]".to_owned(),
            ),
        };
        let pools = if self.remote_access && !a {
            "[pools.rw4]\naddrs = \"10.3.0.0/30\"\ndns = [\"10.2.0.53\", \"fd00:2::53\"]\n\
             [pools.rw6]\naddrs = \"fd00:3::/126\"\n"
        } else {
            ""
        };
        format!(
            r#"{pools}
[connections.gw]
local_addrs = ["{me}"]
{remote_addrs}
proposals = ["{proposal}"]
{extra}
{timers}
[connections.gw.local]
auth = "psk"
id = "{my_id}"
[connections.gw.remote]
auth = "psk"
id = "{peer_id}"
[connections.gw.children.net]
{ts}
esp_proposals = ["aes128gcm16", "aes256gcm16-esn"]
{child_timers}
[secrets.ike-gw]
id = ["a.example", "b.example"]
secret = "correct horse battery staple"
"#
        )
    }

    /// A's and B's connections, parsed once per variant.
    fn connections(self) -> &'static (Vec<Connection>, Vec<Connection>) {
        static CACHE: [OnceLock<(Vec<Connection>, Vec<Connection>)>; 16] =
            [const { OnceLock::new() }; 16];
        CACHE[self.index()].get_or_init(|| {
            let parse = |me| {
                let text = self.config(me);
                let cfg = Arc::new(IkeConfig::parse(&text, "fuzz.toml").expect("harness config"));
                Connection::all_from_config(&cfg, &BTreeMap::new()).expect("harness connections")
            };
            (parse(A), parse(B))
        })
    }

    fn settings(self) -> Settings {
        Settings {
            retransmit_timeout: Duration::from_millis(500),
            fragment_size: if self.small_fragments { 200 } else { 1208 },
            log_keys: true,
            ..Settings::default()
        }
    }
}

/// A datagram in flight.
#[derive(Debug, Clone)]
struct Datagram {
    to: usize,
    /// The receiver's address and port.
    local: SocketAddr,
    /// The sender's.
    remote: SocketAddr,
    payload: Vec<u8>,
}

/// Two endpoints, the network between them and what they reported.
struct Pair {
    eps: [Endpoint; 2],
    ips: [std::net::IpAddr; 2],
    now: Instant,
    flight: VecDeque<Datagram>,
    events: [Vec<Event>; 2],
    caught: Arc<Mutex<Vec<LoggedKeys>>>,
    algs: (EncrAlg, Option<IntegAlg>),
    rng: SeededRandom,
    /// Which node initiated the IKE SA of each SPI pair (from the I flag
    /// of the first message seen with them).
    initiators: Vec<((u64, u64), usize)>,
    /// The next request message ID each node sends, as seen on the wire.
    next_request: [u32; 2],
    /// The message ID of the last request each node sent.
    last_request: [Option<u32>; 2],
}

impl Pair {
    fn new(variant: Variant, caught: Arc<Mutex<Vec<LoggedKeys>>>) -> Pair {
        let (a, b) = variant.connections();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let now = Instant::now();
        let make = |conns: &Vec<Connection>, seed| {
            let mut ep = Endpoint::new(
                variant.settings(),
                conns.clone(),
                Box::new(SeededRandom::new(seed)),
            );
            ep.set_wall_clock(now, wall);
            ep
        };
        let eps = [make(a, 1), make(b, 2)];
        Pair {
            eps,
            ips: [A.parse().expect("A"), B.parse().expect("B")],
            now,
            flight: VecDeque::new(),
            events: [Vec::new(), Vec::new()],
            caught,
            algs: variant.algorithms(),
            rng: SeededRandom::new(3),
            initiators: Vec::new(),
            next_request: [0, 0],
            last_request: [None, None],
        }
    }

    /// Moves what the endpoints emitted into the network and event logs.
    fn collect(&mut self) {
        for i in 0..2 {
            while let Some(ev) = self.eps[i].poll_event() {
                self.events[i].push(ev);
            }
            while let Some(t) = self.eps[i].poll_transmit() {
                self.observe(i, &t.payload);
                let Some(to) = self.ips.iter().position(|ip| *ip == t.remote.ip()) else {
                    continue;
                };
                self.flight.push_back(Datagram {
                    to,
                    local: t.remote,
                    remote: t.local,
                    payload: t.payload,
                });
            }
        }
    }

    /// Tracks SPIs, roles and message IDs from a datagram node `from` sent.
    fn observe(&mut self, from: usize, payload: &[u8]) {
        let Ok(h) = IkeHeader::peek(payload) else {
            return;
        };
        let spis = (h.spi_i, h.spi_r);
        if h.spi_r != 0 && !self.initiators.iter().any(|(s, _)| *s == spis) {
            let initiator = if h.flags.initiator { from } else { 1 - from };
            self.initiators.push((spis, initiator));
        }
        if !h.flags.response {
            self.next_request[from] = self.next_request[from].max(h.message_id.wrapping_add(1));
            self.last_request[from] = Some(h.message_id);
        }
    }

    fn deliver(&mut self, d: Datagram) {
        self.eps[d.to].handle_datagram(self.now, d.local, d.remote, &d.payload);
        self.collect();
    }

    /// Delivers up to `n` datagrams in flight, in order.
    fn deliver_n(&mut self, n: usize) {
        for _ in 0..n {
            let Some(d) = self.flight.pop_front() else {
                break;
            };
            self.deliver(d);
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        for ep in &mut self.eps {
            ep.handle_timeout(self.now);
        }
        self.collect();
    }

    /// Runs the network and the clock until it is quiet, for at most
    /// `limit` of virtual time and a bounded number of steps.
    fn settle(&mut self, limit: Duration) {
        let end = self.now + limit;
        for _ in 0..400 {
            if let Some(d) = self.flight.pop_front() {
                self.deliver(d);
                continue;
            }
            let next = self.eps.iter().filter_map(Endpoint::poll_timeout).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for ep in &mut self.eps {
                        ep.handle_timeout(now);
                    }
                    self.collect();
                }
                _ => break,
            }
        }
    }

    /// The newest keys, the SPIs they belong to and the node that is their
    /// IKE initiator.
    fn keys(&self) -> Option<(LoggedKeys, usize)> {
        let caught = self.caught.lock().unwrap_or_else(|e| e.into_inner());
        let k = caught.last()?.clone();
        let initiator = self
            .initiators
            .iter()
            .find(|(s, _)| *s == (k.spi_i, k.spi_r))
            .map_or(0, |(_, n)| *n);
        Some((k, initiator))
    }

    /// The cipher node `from` protects its messages with.
    fn cipher(&self, from: usize) -> Option<(SkCipher, LoggedKeys, bool)> {
        let (k, initiator) = self.keys()?;
        let is_init = from == initiator;
        let (e, a) = if is_init {
            (&k.sk_ei, &k.sk_ai)
        } else {
            (&k.sk_er, &k.sk_ar)
        };
        let c = SkCipher::new(self.algs.0, self.algs.1, e, a).ok()?;
        Some((c, k, is_init))
    }

    /// Seals `inner` (first payload `first`) as node `from` would, in one
    /// SK payload or, with `fragments`, in SKF payloads: each element is
    /// (number, total, range of `inner`).
    #[allow(clippy::too_many_arguments)]
    fn seal(
        &mut self,
        from: usize,
        exchange: u8,
        response: bool,
        message_id: u32,
        first: u8,
        inner: &[u8],
        fragments: Option<&[(u16, u16, std::ops::Range<usize>)]>,
    ) -> Vec<Vec<u8>> {
        let Some((mut cipher, k, is_init)) = self.cipher(from) else {
            return Vec::new();
        };
        let header = |next: u8, len: usize| IkeHeader {
            spi_i: k.spi_i,
            spi_r: k.spi_r,
            next_payload: next,
            minor_version: 0,
            exchange,
            flags: Flags {
                initiator: is_init,
                version: false,
                response,
            },
            message_id,
            length: len as u32,
        };
        let mut out = Vec::new();
        match fragments {
            None => {
                let len = HEADER_LEN + 4 + cipher.sealed_len(inner.len());
                let mut msg = Vec::with_capacity(len);
                header(pt::SK, len).emit(&mut msg);
                msg.extend_from_slice(&[first, 0]);
                msg.extend_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
                if cipher.seal(&mut msg, inner, &mut self.rng).is_ok() {
                    out.push(msg);
                }
            }
            Some(parts) => {
                for (number, total, range) in parts {
                    let part = inner.get(range.clone()).unwrap_or_default();
                    let len = HEADER_LEN + 8 + cipher.sealed_len(part.len());
                    let mut msg = Vec::with_capacity(len);
                    header(pt::SKF, len).emit(&mut msg);
                    msg.extend_from_slice(&[if *number == 1 { first } else { 0 }, 0]);
                    msg.extend_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
                    msg.extend_from_slice(&number.to_be_bytes());
                    msg.extend_from_slice(&total.to_be_bytes());
                    if cipher.seal(&mut msg, part, &mut self.rng).is_ok() {
                        out.push(msg);
                    }
                }
            }
        }
        out
    }

    /// Decrypts a datagram node `from` sent: (header, SK/SKF next payload,
    /// SKF number and total, inner bytes).
    fn open(&self, from: usize, datagram: &[u8]) -> Option<Opened> {
        let header = IkeHeader::peek(datagram).ok()?;
        let body = datagram.get(HEADER_LEN..)?;
        let raw = PayloadIter::new(header.next_payload, body)
            .filter_map(Result::ok)
            .find(|r| r.kind == pt::SK || r.kind == pt::SKF)?;
        let body_at = datagram.len() - raw.body.len();
        let (iv_at, frag) = if raw.kind == pt::SKF {
            let n = u16::from_be_bytes([*raw.body.first()?, *raw.body.get(1)?]);
            let t = u16::from_be_bytes([*raw.body.get(2)?, *raw.body.get(3)?]);
            (body_at + 4, Some((n, t)))
        } else {
            (body_at, None)
        };
        let (cipher, ..) = self.cipher(from)?;
        let inner = cipher.open(datagram, iv_at).ok()?;
        Some(Opened {
            header,
            first: raw.next_payload,
            frag,
            inner,
        })
    }

    /// The node a datagram in flight came from.
    fn sender(&self, d: &Datagram) -> usize {
        1 - d.to
    }

    /// Our SPI pair of the newest IKE SA, for raw datagrams to reach it.
    fn spis(&self) -> Option<(u64, u64)> {
        self.keys().map(|(k, _)| (k.spi_i, k.spi_r)).or_else(|| {
            self.flight
                .iter()
                .find_map(|d| IkeHeader::peek(&d.payload).ok())
                .map(|h| (h.spi_i, h.spi_r))
        })
    }

    /// The endpoint invariants after whatever happened: the data-plane
    /// actions each node asked for are consistent (no SA installed twice,
    /// none deleted that is not installed), every SA it installs passes
    /// the SA API's validation, and the snapshots can be taken.
    fn check(&self) {
        for (n, events) in self.events.iter().enumerate() {
            let mut installed: BTreeMap<(u32, Direction), ()> = BTreeMap::new();
            for e in events {
                match e {
                    Event::InstallSa { spec, .. } => {
                        check_spec(spec);
                        assert!(
                            installed.insert((spec.spi, spec.direction), ()).is_none(),
                            "node {n}: SA {:08x} {} installed twice",
                            spec.spi,
                            spec.direction
                        );
                    }
                    Event::DeleteSa { spi, direction, .. } => {
                        assert!(
                            installed.remove(&(*spi, *direction)).is_some(),
                            "node {n}: deleting SA {spi:08x} {direction} that is not installed"
                        );
                    }
                    _ => {}
                }
            }
            let _ = self.eps[n].list_sas(self.now);
            let _ = self.eps[n].drops();
        }
    }

    /// Brings the pair to `stage` of a real exchange: 0 nothing, 1 A sent
    /// IKE_SA_INIT, 2 B answered it (half-open, keys known), 3 A sent
    /// IKE_AUTH, 4 established on both sides.
    fn reach(&mut self, stage: u8) {
        if stage == 0 {
            return;
        }
        let _ = self.eps[0].initiate(self.now, "gw");
        self.collect();
        match stage {
            1 => {}
            2 => self.deliver_n(1),
            3 => self.deliver_n(2),
            _ => self.settle(Duration::from_secs(2)),
        }
    }
}

fn check_spec(spec: &SaSpec) {
    assert!(
        spec.validate().is_ok(),
        "an installed SA fails validation: {:?}",
        spec.validate()
    );
}

/// A decrypted message.
struct Opened {
    header: IkeHeader,
    first: u8,
    frag: Option<(u16, u16)>,
    inner: Vec<u8>,
}

/// Runs `f` with a fresh pair whose keys the catcher collects.
fn with_pair<R>(variant: Variant, f: impl FnOnce(&mut Pair) -> R) -> R {
    CATCHER.with(|(dispatch, caught)| {
        caught.lock().unwrap_or_else(|e| e.into_inner()).clear();
        tracing::dispatcher::with_default(dispatch, || {
            let mut pair = Pair::new(variant, caught.clone());
            f(&mut pair)
        })
    })
}

fn exchange_of(b: u8) -> u8 {
    match b % 5 {
        0 => exchange::IKE_AUTH,
        1 => exchange::CREATE_CHILD_SA,
        2 => exchange::INFORMATIONAL,
        3 => exchange::IKE_SA_INIT,
        _ => b,
    }
}

/// The endpoint target. Input: a variant byte (CBC or GCM, small IKE
/// fragments, remote access with CP, short rekey/DPD timers), a stage
/// byte (see [`Pair::reach`]), then up to 32 operations:
///
/// 0. deliver the next 1-8 datagrams in flight;
/// 1. drop the next one;
/// 2. advance the clock (up to 11 minutes) and run both timers;
/// 3. a raw datagram to A or B, optionally with the current SPIs written
///    over its first 16 bytes so it reaches the IKE SA;
/// 4. a message sealed with the known keys as the other node would send
///    it: exchange, request or response, the message ID that is due (or
///    any), first payload type and inner payload bytes of the input's
///    choice;
/// 5. the same cut into 1-5 SKF fragments, numbering optionally skewed;
/// 6. the next datagram in flight decrypted, its inner bytes edited, and
///    re-sealed under its own header (unencrypted ones are edited as
///    they are);
/// 7. a command: initiate, rekey a Child or the IKE SA, terminate, a
///    soft or hard lifetime event from the data plane.
///
/// Afterwards the pair settles and the invariants of [`Pair::check`] hold.
pub fn ike_endpoint(data: &[u8]) {
    let mut input = Input::new(data);
    let variant = Variant::from_byte(input.u8());
    let stage = input.u8() % 5;
    with_pair(variant, |pair| {
        pair.reach(stage);
        for _ in 0..32 {
            if input.is_empty() {
                break;
            }
            run_op(pair, &mut input);
        }
        pair.settle(Duration::from_secs(300));
        pair.check();
    });
}

fn run_op(pair: &mut Pair, input: &mut Input<'_>) {
    match input.u8() % 8 {
        0 => {
            let n = usize::from(input.u8() % 8) + 1;
            pair.deliver_n(n);
        }
        1 => {
            pair.flight.pop_front();
        }
        2 => {
            let ms = u64::from(input.u16()) * 10;
            pair.advance(Duration::from_millis(ms));
        }
        3 => {
            let to = usize::from(input.bool());
            let patch = input.bool();
            let port = if input.bool() { 4500 } else { 500 };
            let mut payload = input.chunk().to_vec();
            if patch && payload.len() >= 16 {
                if let Some((i, r)) = pair.spis() {
                    payload[..8].copy_from_slice(&i.to_be_bytes());
                    payload[8..16].copy_from_slice(&r.to_be_bytes());
                }
            }
            let d = Datagram {
                to,
                local: SocketAddr::new(pair.ips[to], port),
                remote: SocketAddr::new(pair.ips[1 - to], port),
                payload,
            };
            pair.deliver(d);
        }
        op @ (4 | 5) => {
            let fragmented = op == 5;
            let to = usize::from(input.bool());
            let from = 1 - to;
            let exchange = exchange_of(input.u8());
            let response = input.bool();
            let mid = match input.u8() % 4 {
                0 | 1 if response => pair.last_request[to].unwrap_or(0),
                0 | 1 => pair.next_request[from],
                2 => pair.next_request[from].wrapping_sub(1),
                _ => input.u32(),
            };
            let first = input.u8();
            let skew = input.u8();
            let inner = input.chunk().to_vec();
            let parts = fragmented.then(|| {
                let n = usize::from(skew % 5) + 1;
                let size = inner.len().div_ceil(n).max(1);
                (0..n)
                    .map(|i| {
                        let number = (i + 1) as u16;
                        let total = n as u16;
                        let (number, total) = match skew >> 5 {
                            1 => (number, total + 1),
                            2 => (number.wrapping_sub(1), total),
                            3 => (total + 1 - number, total),
                            _ => (number, total),
                        };
                        (number, total, i * size..((i + 1) * size).min(inner.len()))
                    })
                    .collect::<Vec<_>>()
            });
            if !response {
                pair.next_request[from] = pair.next_request[from].max(mid.wrapping_add(1));
            }
            let sealed = pair.seal(
                from,
                exchange,
                response,
                mid,
                first,
                &inner,
                parts.as_deref(),
            );
            let port = pair.port();
            for payload in sealed {
                pair.deliver(Datagram {
                    to,
                    local: SocketAddr::new(pair.ips[to], port),
                    remote: SocketAddr::new(pair.ips[from], port),
                    payload,
                });
            }
        }
        6 => {
            let edits: Vec<(u16, u8)> = (0..input.u8() % 4 + 1)
                .map(|_| (input.u16(), input.u8()))
                .collect();
            let cut = input.u8();
            let Some(mut d) = pair.flight.pop_front() else {
                return;
            };
            let from = pair.sender(&d);
            match pair.open(from, &d.payload) {
                Some(o) => {
                    let mut inner = o.inner;
                    edit(&mut inner, &edits, cut);
                    let h = o.header;
                    let frags = o.frag.map(|(n, t)| [(n, t, 0..inner.len())]);
                    let sealed = pair.seal(
                        from,
                        h.exchange,
                        h.flags.response,
                        h.message_id,
                        o.first,
                        &inner,
                        frags.as_ref().map(|f| &f[..]),
                    );
                    for payload in sealed {
                        pair.deliver(Datagram {
                            payload,
                            ..d.clone()
                        });
                    }
                }
                None => {
                    edit(&mut d.payload, &edits, cut);
                    pair.deliver(d);
                }
            }
        }
        _ => command(pair, input),
    }
}

impl Pair {
    /// The port the IKE SA runs on now (4500 once a NAT was seen).
    fn port(&self) -> u16 {
        self.eps[0]
            .list_sas(self.now)
            .first()
            .map_or(500, |s| s.local.port())
    }
}

/// Overwrites bytes at chosen positions, and cuts or extends the end.
fn edit(bytes: &mut Vec<u8>, edits: &[(u16, u8)], cut: u8) {
    if !bytes.is_empty() {
        for (at, value) in edits {
            let i = usize::from(*at) % bytes.len();
            bytes[i] = *value;
        }
    }
    match cut >> 6 {
        1 => bytes.truncate(bytes.len().saturating_sub(usize::from(cut & 0x3f))),
        2 => bytes.extend(std::iter::repeat_n(cut, usize::from(cut & 0x3f))),
        _ => {}
    }
}

fn command(pair: &mut Pair, input: &mut Input<'_>) {
    let node = usize::from(input.bool());
    let what = input.u8();
    let now = pair.now;
    let sas = pair.eps[node].list_sas(now);
    let ike = sas.first().map(|s| s.id);
    let child = sas.iter().flat_map(|s| &s.children).next();
    let ep = &mut pair.eps[node];
    let _ = match what % 8 {
        0 => ep.initiate(now, "gw").map(|_| ()),
        1 => match child {
            Some(c) => ep.rekey_child(now, c.id),
            None => Ok(()),
        },
        2 => match ike {
            Some(i) => ep.rekey_ike(now, i),
            None => Ok(()),
        },
        3 => match child {
            Some(c) => ep.terminate(now, Target::ChildSa(c.id)),
            None => Ok(()),
        },
        4 => match ike {
            Some(i) => ep.terminate(now, Target::IkeSa(i)),
            None => Ok(()),
        },
        5 => ep.terminate(now, Target::Connection("gw".into())),
        6 => match child {
            Some(c) => ep.handle_lifetime_event(now, c.spi_in, LifetimeSeverity::Soft),
            None => Ok(()),
        },
        _ => match child {
            Some(c) => ep.handle_lifetime_event(now, c.spi_out, LifetimeSeverity::Hard),
            None => Ok(()),
        },
    };
    pair.collect();
}

/// RFC 7383 reassembly on the responder. A has sent its real IKE_AUTH
/// request (B half-open, keys known); the harness decrypts it and sends B
/// up to 40 SKF fragments instead, each with a number, a total, a first
/// payload type, a message ID (mostly the due one) and contents that are
/// either a slice of the real request's inner payloads or raw bytes.
///
/// When the fragments are exactly a split of the real request (one total
/// for all, every number from 1 to the total present, copies of a number
/// identical, the slices in order covering the whole, the true first
/// payload type on number 1), B must complete IKE_AUTH: reassembly may
/// neither lose nor invent a byte. Whatever they are, the invariants of
/// [`Pair::check`] hold.
pub fn ike_skf(data: &[u8]) {
    let mut input = Input::new(data);
    let variant = Variant::from_byte(input.u8() & !2);
    with_pair(variant, |pair| {
        pair.reach(3);
        // The real IKE_AUTH request, whole (fragmentation is off here).
        let Some(d) = pair.flight.pop_front() else {
            return;
        };
        let Some(real) = pair.open(0, &d.payload) else {
            return;
        };
        let mid = real.header.message_id;
        let len = real.inner.len();
        let mut sent: Vec<(u16, u16, u8, u32, Vec<u8>)> = Vec::new();
        for _ in 0..40 {
            if input.is_empty() {
                break;
            }
            let number = input.u16();
            let total = input.u16();
            let first = if input.bool() { real.first } else { input.u8() };
            let message_id = if input.u8() < 240 { mid } else { input.u32() };
            let contents = if input.bool() {
                let start = usize::from(input.u16()) % (len + 1);
                let n = usize::from(input.u16()) % (len + 1 - start);
                real.inner[start..start + n].to_vec()
            } else {
                input.chunk().to_vec()
            };
            let sealed = pair.seal_fragment(number, total, first, message_id, &contents);
            for payload in sealed {
                pair.deliver(Datagram {
                    payload,
                    ..d.clone()
                });
            }
            sent.push((number, total, first, message_id, contents));
        }
        let whole = is_split_of(&sent, mid, real.first, &real.inner);
        pair.settle(Duration::from_secs(5));
        if whole {
            assert!(
                pair.events[1]
                    .iter()
                    .any(|e| matches!(e, Event::IkeSaUp { .. })),
                "B got a correct split of the real IKE_AUTH request and did not come up: {:?}",
                pair.events[1]
            );
        }
        pair.check();
    });
}

impl Pair {
    /// One SKF fragment of an IKE_AUTH request from A with exactly these
    /// fields (`first` in every fragment, where a correct peer puts it in
    /// number 1 only: the receiver must not care).
    fn seal_fragment(
        &mut self,
        number: u16,
        total: u16,
        first: u8,
        message_id: u32,
        contents: &[u8],
    ) -> Vec<Vec<u8>> {
        let Some((mut cipher, k, is_init)) = self.cipher(0) else {
            return Vec::new();
        };
        let len = HEADER_LEN + 8 + cipher.sealed_len(contents.len());
        let mut msg = Vec::with_capacity(len);
        IkeHeader {
            spi_i: k.spi_i,
            spi_r: k.spi_r,
            next_payload: pt::SKF,
            minor_version: 0,
            exchange: exchange::IKE_AUTH,
            flags: Flags {
                initiator: is_init,
                version: false,
                response: false,
            },
            message_id,
            length: len as u32,
        }
        .emit(&mut msg);
        msg.extend_from_slice(&[first, 0]);
        msg.extend_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
        msg.extend_from_slice(&number.to_be_bytes());
        msg.extend_from_slice(&total.to_be_bytes());
        match cipher.seal(&mut msg, contents, &mut self.rng) {
            Ok(()) => vec![msg],
            Err(_) => Vec::new(),
        }
    }
}

/// Whether the fragments sent are exactly a split of `inner` (see
/// [`ike_skf`]).
fn is_split_of(sent: &[(u16, u16, u8, u32, Vec<u8>)], mid: u32, first: u8, inner: &[u8]) -> bool {
    let Some(&(_, total, ..)) = sent.first() else {
        return false;
    };
    if total == 0 || total > 32 {
        return false;
    }
    let mut parts: Vec<Option<&[u8]>> = vec![None; usize::from(total)];
    for (number, t, f, m, contents) in sent {
        if *t != total || *m != mid || *number == 0 || *number > total {
            return false;
        }
        if *number == 1 && *f != first {
            return false;
        }
        let slot = &mut parts[usize::from(*number - 1)];
        match slot {
            Some(previous) if *previous != contents.as_slice() => return false,
            _ => *slot = Some(contents),
        }
    }
    let mut joined = Vec::new();
    for p in &parts {
        match p {
            Some(p) => joined.extend_from_slice(p),
            None => return false,
        }
    }
    joined == inner
}

/// For seeds: the first payload type and inner payload bytes of the real
/// IKE_AUTH request and of its response in configuration `variant_byte`
/// (runs are deterministic: seeded randomness), the starting points of
/// the sealed-message and SKF seeds.
pub fn real_auth_inner(variant_byte: u8) -> Option<(u8, Vec<u8>, u8, Vec<u8>)> {
    let variant = Variant::from_byte(variant_byte);
    with_pair(variant, |pair| {
        pair.reach(3);
        let req = pair.flight.front()?.clone();
        let opened_req = pair.open(0, &req.payload)?;
        pair.deliver_n(1);
        let resp = pair.flight.front()?.clone();
        let opened_resp = pair.open(1, &resp.payload)?;
        Some((
            opened_req.first,
            opened_req.inner,
            opened_resp.first,
            opened_resp.inner,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encrypted paths depend on catching the keys: if the log_keys
    /// event changed shape, sealing would silently produce nothing.
    #[test]
    fn keys_are_caught_and_real_messages_open() {
        for variant in [0, 1, 4] {
            let opened = with_pair(Variant::from_byte(variant), |pair| {
                pair.reach(3);
                assert!(pair.keys().is_some(), "variant {variant}: no keys caught");
                let d = pair.flight.front().cloned().expect("IKE_AUTH in flight");
                pair.open(0, &d.payload).map(|o| o.header.exchange)
            });
            assert_eq!(opened, Some(exchange::IKE_AUTH), "variant {variant}");
        }
    }

    /// What the harness seals is what the endpoint accepts: the real
    /// IKE_AUTH request, re-sealed, brings B up.
    #[test]
    fn resealed_requests_are_accepted() {
        with_pair(Variant::from_byte(0), |pair| {
            pair.reach(3);
            let d = pair.flight.pop_front().expect("IKE_AUTH in flight");
            let o = pair.open(0, &d.payload).expect("opens");
            let h = o.header;
            for payload in pair.seal(0, h.exchange, false, h.message_id, o.first, &o.inner, None) {
                pair.deliver(Datagram {
                    payload,
                    ..d.clone()
                });
            }
            pair.settle(Duration::from_secs(2));
            assert!(pair.events[1]
                .iter()
                .any(|e| matches!(e, Event::IkeSaUp { .. })));
            pair.check();
        });
    }
}
