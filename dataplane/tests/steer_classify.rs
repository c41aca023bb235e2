//! The XDP program `steer`, loaded into the kernel and run on crafted frames
//! through BPF_PROG_TEST_RUN (aya's `TestRun`), then attached to a veth in a
//! network namespace of its own and fed real UDP datagrams.
//!
//! # What BPF_PROG_TEST_RUN does with a redirect into the XSKMAP
//!
//! Without `BPF_F_TEST_XDP_LIVE_FRAMES` (not used here) the kernel runs the
//! program once and reports its return value; it never performs the
//! redirect. So:
//! - with an AF_XDP socket registered at the index, `bpf_redirect_map`
//!   succeeds and the program returns `XDP_REDIRECT` (4): the frame is not
//!   delivered anywhere, and `data_out` is the unchanged frame;
//! - with none, the helper returns the low bits of its flags, `XDP_DROP`,
//!   which the program returns too, counting `redirect_failed` (fail
//!   closed: the kernel would forward a protected packet in cleartext).
//!
//! The tests below bind real AF_XDP sockets (on veth interfaces in a
//! namespace the test creates) and register them, so both outcomes are
//! seen. The ingress interface and queue are chosen per frame through the
//! `xdp_md` context (`ctx_in`: `ingress_ifindex`, `rx_queue_index`), which
//! the kernel resolves in the calling thread's namespace; without a
//! context the ingress is that namespace's loopback (ifindex 1), which the
//! tests leave out of `IFACES` as the "unknown interface".
//!
//! Needs CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW and CAP_SYS_ADMIN (root):
//! `cargo xtask test` runs it so. Without them the tests fail, saying so;
//! they never skip.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use aya::programs::ProgramError;
use aya::{TestRun, TestRunOptions};
use xdpsec_dataplane::afxdp::{SocketConfig, Umem, UmemConfig, XskSocket};
use xdpsec_dataplane::steer::{AttachMode, Role, Steer, SteerError, Verdict, VerdictCounters};
use xdpsec_ebpf_common::MAX_QUEUES;
use xdpsec_testbed::{Netns, Testbed};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

fn load() -> Steer {
    Steer::load().unwrap_or_else(|err| {
        panic!(
            "cannot load the XDP program: {err}\n(these tests need root, or CAP_BPF + \
             CAP_NET_ADMIN; run them through `cargo xtask test`)"
        )
    })
}

// ---- addresses ---------------------------------------------------------------

/// The gateway's tunnel addresses (LOCAL_V4 / LOCAL_V6).
const LOCAL4: [u8; 4] = [198, 18, 0, 1];
const LOCAL6: [u8; 16] = v6([0xfd00, 0x18, 0, 0, 0, 0, 0, 1]);
/// Underlay addresses that are not the gateway's.
const OTHER4: [u8; 4] = [198, 18, 0, 99];
const OTHER6: [u8; 16] = v6([0xfd00, 0x18, 0, 0, 0, 0, 0, 0x99]);
/// Protected (remote) prefixes, and a destination in each.
const PROT4_NET: [u8; 4] = [10, 2, 0, 0];
const PROT4: [u8; 4] = [10, 2, 3, 4];
const PROT6_NET: [u8; 16] = v6([0xfd00, 2, 0, 0, 0, 0, 0, 0]);
const PROT6: [u8; 16] = v6([0xfd00, 2, 0, 0, 0, 0, 0, 4]);
/// Inner destinations outside every protected prefix.
const OPEN4: [u8; 4] = [10, 3, 0, 1];
const OPEN6: [u8; 16] = v6([0xfd00, 3, 0, 0, 0, 0, 0, 1]);
/// Link-scope destinations.
const MDNS4: [u8; 4] = [224, 0, 0, 251];
const SOLICITED6: [u8; 16] = v6([0xff02, 0, 0, 0, 0, 1, 0xff00, 1]);

const fn v6(segments: [u16; 8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 8 {
        out[2 * i] = (segments[i] >> 8) as u8;
        out[2 * i + 1] = segments[i] as u8;
        i += 1;
    }
    out
}

// ---- frame builders -------------------------------------------------------

const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;

/// An ESP header and a little ciphertext: SPI 0x00001001, sequence 1.
const ESP: &[u8] = &[
    0, 0, 0x10, 0x01, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0,
];

fn eth(ether_type: u16) -> Vec<u8> {
    let mut f = Vec::from(MAC_DST);
    f.extend_from_slice(&MAC_SRC);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

fn vlan(vid: u16, ether_type: u16) -> Vec<u8> {
    let mut f = eth(ETH_P_8021Q);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// An IPv4 header to `dst` with `options` bytes of options (a multiple of
/// 4) for a payload of `payload_len` bytes.
fn ipv4(proto: u8, options: usize, payload_len: usize, dst: [u8; 4]) -> Vec<u8> {
    assert_eq!(options % 4, 0);
    let hlen = 20 + options;
    let total = u16::try_from(hlen + payload_len).unwrap();
    let mut h = vec![0x40 | u8::try_from(hlen / 4).unwrap(), 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]); // id, DF, ttl, proto, csum
    h.extend_from_slice(&[198, 18, 0, 2]);
    h.extend_from_slice(&dst);
    // Options: NOPs then End of Option List, as a sender would pad them.
    h.extend(std::iter::repeat_n(1u8, options.saturating_sub(1)));
    if options > 0 {
        h.push(0);
    }
    h
}

fn ipv6(next_header: u8, payload_len: usize, dst: [u8; 16]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&u16::try_from(payload_len).unwrap().to_be_bytes());
    h.extend_from_slice(&[next_header, 64]);
    h.extend_from_slice(&v6([0xfd00, 0x18, 0, 0, 0, 0, 0, 2]));
    h.extend_from_slice(&dst);
    h
}

fn udp(src: u16, dst: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::from(src.to_be_bytes());
    h.extend_from_slice(&dst.to_be_bytes());
    h.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

fn v4_frame(l2: Vec<u8>, proto: u8, options: usize, l4: &[u8], dst: [u8; 4]) -> Vec<u8> {
    [l2, ipv4(proto, options, l4.len(), dst), l4.to_vec()].concat()
}

fn v6_frame(l2: Vec<u8>, next_header: u8, l4: &[u8], dst: [u8; 16]) -> Vec<u8> {
    [l2, ipv6(next_header, l4.len(), dst), l4.to_vec()].concat()
}

fn esp4(dst: [u8; 4]) -> Vec<u8> {
    v4_frame(eth(ETH_P_IP), 50, 0, ESP, dst)
}

fn esp6(dst: [u8; 16]) -> Vec<u8> {
    v6_frame(eth(ETH_P_IPV6), 50, ESP, dst)
}

fn esp_in_udp4(dst: [u8; 4]) -> Vec<u8> {
    v4_frame(eth(ETH_P_IP), 17, 0, &udp(4500, 4500, ESP), dst)
}

fn tcp4(dst: [u8; 4]) -> Vec<u8> {
    v4_frame(eth(ETH_P_IP), 6, 0, &TCP_SYN, dst)
}

fn tcp6(dst: [u8; 16]) -> Vec<u8> {
    v6_frame(eth(ETH_P_IPV6), 6, &TCP_SYN, dst)
}

/// Sets the More Fragments flag (and offset `offset8` x 8 bytes) of the
/// untagged IPv4 frame `f`.
fn fragment(mut f: Vec<u8>, more: bool, offset8: u16) -> Vec<u8> {
    let field = (u16::from(more) << 13) | offset8;
    f[14 + 6..14 + 8].copy_from_slice(&field.to_be_bytes());
    f
}

/// Sets the IPv4 identification of the untagged IPv4 frame `f`.
fn with_ident(mut f: Vec<u8>, ident: u16) -> Vec<u8> {
    f[14 + 4..14 + 6].copy_from_slice(&ident.to_be_bytes());
    f
}

/// An ICMP "fragmentation needed" (or ICMPv6 "packet too big") to `dst`
/// quoting `quoted` (an IP packet without Ethernet header).
fn too_big4(dst: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let icmp = [&[3u8, 4, 0, 0, 0, 0, 0x05, 0x00][..], quoted].concat();
    v4_frame(eth(ETH_P_IP), 1, 0, &icmp, dst)
}

fn too_big6(dst: [u8; 16], quoted: &[u8]) -> Vec<u8> {
    let icmp = [&[2u8, 0, 0, 0, 0, 0, 0x05, 0x00][..], quoted].concat();
    v6_frame(eth(ETH_P_IPV6), 58, &icmp, dst)
}

const TCP_SYN: [u8; 20] = [
    0xc0, 0x00, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
];

const ARP: [u8; 28] = [
    0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 198, 18, 0, 1,
];

/// An IKE_SA_INIT-sized header: initiator SPI, zero responder SPI, ...
fn ike_header() -> Vec<u8> {
    let mut m = vec![0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&[33, 0x20, 34, 0x08, 0, 0, 0, 0, 0, 0, 0, 28]);
    m
}

/// ICMPv6 Neighbor Solicitation for LOCAL6, to its solicited-node group.
fn neighbor_solicitation() -> Vec<u8> {
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&LOCAL6);
    v6_frame(eth(ETH_P_IPV6), 58, &icmp, SOLICITED6)
}

// ---- the bed: interfaces, sockets, maps ----------------------------------------

/// Ingress interface of a test-run frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ingress {
    /// `out0`: role outside, slot 0, four receive queues.
    Out,
    /// `in0`: role inside, slot 1.
    In,
    /// `arm0`: role both (one-armed), slot 2.
    Arm,
    /// The namespace's loopback: not in IFACES.
    Lo,
}

const OUT_SLOT: u32 = 0;
const IN_SLOT: u32 = 1;
const ARM_SLOT: u32 = 2;

/// A namespace with veth interfaces `out0` (4 queues), `in0` and `arm0`,
/// AF_XDP sockets bound on out0 queues 0 and 3, in0 queue 0 and arm0 queue
/// 0, and the program configured for them: out0 outside, in0 inside, arm0
/// both; LOCAL4/LOCAL6 local; PROT4_NET/16 and PROT6_NET/32 protected. Out0
/// queues 1 and 2 have no socket.
struct Bed {
    steer: Steer,
    ns: Netns,
    out0: u32,
    in0: u32,
    arm0: u32,
    sockets: Vec<XskSocket>,
    _umem: Umem,
    // Last: removing the namespace removes the interfaces.
    _tb: Testbed,
}

fn bed() -> Bed {
    let tb = Testbed::new().unwrap_or_else(|e| panic!("{e}"));
    let ns = tb.add_netns("steer").unwrap();
    // veth pairs inside the one namespace (the kernel here has no dummy
    // driver); only the first end of each is used.
    for (name, queues) in [("out0", "4"), ("in0", "1"), ("arm0", "1")] {
        let peer = format!("{name}p");
        ns.ip([
            "link",
            "add",
            name,
            "numtxqueues",
            queues,
            "numrxqueues",
            queues,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "numtxqueues",
            queues,
            "numrxqueues",
            queues,
        ])
        .unwrap();
        for dev in [name, &peer] {
            ns.ip(["link", "set", dev, "up"]).unwrap();
        }
    }
    let out0 = ns.link("out0").unwrap().ifindex;
    let in0 = ns.link("in0").unwrap().ifindex;
    let arm0 = ns.link("arm0").unwrap().ifindex;
    assert!(![out0, in0, arm0].contains(&1), "ifindex 1 is lo");

    let (umem, sockets) = ns
        .run_in(|| {
            let mut umem = Umem::new(UmemConfig {
                frame_count: 64,
                fill_size: 16,
                comp_size: 16,
                ..UmemConfig::default()
            })
            .expect("UMEM");
            let cfg = SocketConfig {
                rx_size: 16,
                tx_size: 16,
                fill_target: 4,
                ..SocketConfig::default()
            };
            let sockets: Vec<XskSocket> = [(out0, 0), (out0, 3), (in0, 0), (arm0, 0)]
                .into_iter()
                .map(|(ifindex, queue)| {
                    XskSocket::bind(&mut umem, ifindex, queue, &cfg)
                        .unwrap_or_else(|e| panic!("bind ifindex {ifindex} queue {queue}: {e}"))
                })
                .collect();
            (umem, sockets)
        })
        .unwrap();

    let mut steer = load();
    steer.set_interface(out0, Role::Outside, OUT_SLOT).unwrap();
    steer.set_interface(in0, Role::Inside, IN_SLOT).unwrap();
    steer.set_interface(arm0, Role::Both, ARM_SLOT).unwrap();
    for (slot, queue, sock) in [
        (OUT_SLOT, 0, &sockets[0]),
        (OUT_SLOT, 3, &sockets[1]),
        (IN_SLOT, 0, &sockets[2]),
        (ARM_SLOT, 0, &sockets[3]),
    ] {
        assert_eq!(sock.queue_id(), queue);
        steer
            .register_xsk(slot, queue, sock)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    steer.add_local_address(LOCAL4.into()).unwrap();
    steer.add_local_address(LOCAL6.into()).unwrap();
    steer.add_protected_prefix(PROT4_NET.into(), 16).unwrap();
    steer.add_protected_prefix(PROT6_NET.into(), 32).unwrap();
    Bed {
        steer,
        ns,
        out0,
        in0,
        arm0,
        sockets,
        _umem: umem,
        _tb: tb,
    }
}

impl Bed {
    fn ifindex(&self, ingress: Ingress) -> u32 {
        match ingress {
            Ingress::Out => self.out0,
            Ingress::In => self.in0,
            Ingress::Arm => self.arm0,
            Ingress::Lo => 1,
        }
    }

    /// Runs the program on `frame` as if received on queue `queue` of
    /// `ingress`; asserts the verdict `want` (return value and counters) and
    /// that the frame is unchanged.
    fn expect(&self, name: &str, ingress: Ingress, queue: u32, frame: &[u8], want: Verdict) {
        let ifindex = self.ifindex(ingress);
        let before = self.steer.counters().expect("read counters");
        let mut out = vec![0u8; frame.len() + 256];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex. data_end must be the frame length.
        let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex, queue, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        // The kernel looks the ingress interface up in the caller's
        // namespace: this thread enters the bed's for the run.
        let run = {
            let _in_ns = self.ns.enter().expect("enter the namespace");
            self.steer.program().test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: (ingress != Ingress::Lo).then_some(&ctx[..]),
                repeat: 1,
                ..Default::default()
            })
        }
        .unwrap_or_else(|err| panic!("BPF_PROG_TEST_RUN on {name}: {err}"));
        let action = if want.is_redirect() {
            XDP_REDIRECT
        } else if want.is_drop() {
            XDP_DROP
        } else {
            XDP_PASS
        };
        assert_eq!(
            run.return_value,
            action,
            "{name} ({ingress:?} queue {queue}): XDP action, want {} ({})",
            action,
            want.name()
        );
        assert_eq!(
            &out[..run.data_size_out as usize],
            frame,
            "{name}: the program must not modify the frame"
        );
        let delta = self.steer.counters().expect("read counters").since(&before);
        for (verdict, n) in delta.iter() {
            let expected = u64::from(verdict == want);
            assert_eq!(
                n,
                expected,
                "{name} ({ingress:?} queue {queue}): counter {} advanced by {n}, expected \
                 {expected} (want {}); all: {delta}",
                verdict.name(),
                want.name()
            );
        }
    }
}

fn cases() -> Vec<(&'static str, Ingress, u32, Vec<u8>, Verdict)> {
    use Ingress::{Arm, In, Lo, Out};
    use Verdict::*;

    let ike = ike_header();
    let ike_on_4500 = [&[0u8; 4][..], &ike].concat();

    let mut truncated_v4 = esp4(LOCAL4);
    truncated_v4.truncate(14 + 12); // IP header cut before the addresses
    let mut truncated_options = v4_frame(eth(ETH_P_IP), 50, 16, ESP, LOCAL4);
    truncated_options.truncate(14 + 28); // IHL says 36 bytes
    let mut truncated_v6 = esp6(LOCAL6);
    truncated_v6.truncate(14 + 39);
    let mut truncated_esp = esp4(LOCAL4);
    truncated_esp.truncate(14 + 20 + 7); // sequence number cut short
    let mut truncated_udp = esp_in_udp4(LOCAL4);
    truncated_udp.truncate(14 + 20 + 8 + 3); // SPI cut short
    let mut truncated_to_protected = tcp4(PROT4);
    truncated_to_protected.truncate(14 + 19);
    let mut keepalive_padded = v4_frame(eth(ETH_P_IP), 17, 0, &udp(4500, 4500, &[0xff]), LOCAL4);
    keepalive_padded.resize(60, 0x5a); // Ethernet minimum, non-zero padding

    vec![
        // --- outside (out0, slot 0) ---
        (
            "IPv4 ESP to a local address",
            Out,
            0,
            esp4(LOCAL4),
            EspRedirected,
        ),
        (
            "IPv4 ESP to another address",
            Out,
            0,
            esp4(OTHER4),
            NotLocalPass,
        ),
        (
            "IPv6 ESP to a local address",
            Out,
            0,
            esp6(LOCAL6),
            EspRedirected,
        ),
        (
            "IPv6 ESP to another address",
            Out,
            0,
            esp6(OTHER6),
            NotLocalPass,
        ),
        (
            "IPv4 with 12 bytes of options, ESP to a local address",
            Out,
            0,
            v4_frame(eth(ETH_P_IP), 50, 12, ESP, LOCAL4),
            EspRedirected,
        ),
        (
            "IPv4 with 40 bytes of options (IHL 15), ESP to a local address",
            Out,
            0,
            v4_frame(eth(ETH_P_IP), 50, 40, ESP, LOCAL4),
            EspRedirected,
        ),
        (
            "802.1Q-tagged IPv4 ESP to a local address",
            Out,
            0,
            v4_frame(vlan(7, ETH_P_IP), 50, 0, ESP, LOCAL4),
            EspRedirected,
        ),
        (
            "802.1Q-tagged IPv6 ESP to a local address",
            Out,
            0,
            v6_frame(vlan(7, ETH_P_IPV6), 50, ESP, LOCAL6),
            EspRedirected,
        ),
        (
            "UDP/4500 with a non-zero SPI to a local address",
            Out,
            0,
            esp_in_udp4(LOCAL4),
            EspInUdpRedirected,
        ),
        (
            "802.1Q-tagged IPv4 with options, UDP/4500 ESP to a local address",
            Out,
            0,
            v4_frame(vlan(7, ETH_P_IP), 17, 8, &udp(4500, 4500, ESP), LOCAL4),
            EspInUdpRedirected,
        ),
        (
            "IPv6 UDP/4500 ESP to a local address",
            Out,
            0,
            v6_frame(eth(ETH_P_IPV6), 17, &udp(4500, 4500, ESP), LOCAL6),
            EspInUdpRedirected,
        ),
        (
            "UDP/4500 ESP to another address",
            Out,
            0,
            esp_in_udp4(OTHER4),
            NotLocalPass,
        ),
        (
            "UDP/4500 with the zero non-ESP marker (IKE)",
            Out,
            0,
            v4_frame(eth(ETH_P_IP), 17, 0, &udp(4500, 4500, &ike_on_4500), LOCAL4),
            IkePass,
        ),
        (
            "IPv6 UDP/4500 with the zero non-ESP marker (IKE)",
            Out,
            0,
            v6_frame(eth(ETH_P_IPV6), 17, &udp(4500, 4500, &ike_on_4500), LOCAL6),
            IkePass,
        ),
        (
            "UDP/500 (IKE)",
            Out,
            0,
            v4_frame(eth(ETH_P_IP), 17, 0, &udp(500, 500, &ike), LOCAL4),
            IkePass,
        ),
        (
            "IPv6 UDP/500 (IKE)",
            Out,
            0,
            v6_frame(eth(ETH_P_IPV6), 17, &udp(500, 500, &ike), LOCAL6),
            IkePass,
        ),
        (
            "UDP/4500 NAT keepalive (one 0xff byte)",
            Out,
            0,
            v4_frame(eth(ETH_P_IP), 17, 0, &udp(4500, 4500, &[0xff]), LOCAL4),
            OtherPass,
        ),
        (
            "UDP/4500 NAT keepalive padded to 60 bytes",
            Out,
            0,
            keepalive_padded,
            OtherPass,
        ),
        (
            "UDP from port 500 to port 53",
            Out,
            0,
            v4_frame(eth(ETH_P_IP), 17, 0, &udp(500, 53, &[0; 12]), LOCAL4),
            OtherPass,
        ),
        ("TCP to a local address", Out, 0, tcp4(LOCAL4), OtherPass),
        (
            "TCP to a protected prefix, on the outside",
            Out,
            0,
            tcp4(PROT4),
            OtherPass,
        ),
        (
            "ICMPv6 neighbour solicitation",
            Out,
            0,
            neighbor_solicitation(),
            OtherPass,
        ),
        (
            "ARP",
            Out,
            0,
            [eth(ETH_P_ARP), ARP.to_vec()].concat(),
            NonIpPass,
        ),
        (
            "two 802.1Q tags",
            Out,
            0,
            [
                vlan(7, ETH_P_8021Q),
                vec![0, 8, 0x08, 0],
                ipv4(50, 0, 16, LOCAL4),
            ]
            .concat(),
            NonIpPass,
        ),
        ("truncated IPv4 header", Out, 0, truncated_v4, TruncatedPass),
        (
            "IPv4 options beyond the frame end",
            Out,
            0,
            truncated_options,
            TruncatedPass,
        ),
        ("truncated IPv6 header", Out, 0, truncated_v6, TruncatedPass),
        ("ESP header cut short", Out, 0, truncated_esp, TruncatedPass),
        (
            "UDP/4500 with 3 of its payload bytes",
            Out,
            0,
            truncated_udp,
            TruncatedPass,
        ),
        ("Ethernet header only", Out, 0, eth(ETH_P_IP), TruncatedPass),
        (
            "IPv4 first fragment of ESP to a local address",
            Out,
            0,
            fragment(esp4(LOCAL4), true, 0),
            FragmentRedirected,
        ),
        (
            "IPv4 later fragment of ESP to a local address",
            Out,
            0,
            fragment(esp4(LOCAL4), false, 16),
            FragmentRedirected,
        ),
        (
            "IPv4 fragment of ESP to another address",
            Out,
            0,
            fragment(esp4(OTHER4), true, 0),
            FragmentPass,
        ),
        (
            "IPv4 later fragment of UDP whose first was not seen",
            Out,
            0,
            with_ident(fragment(esp_in_udp4(LOCAL4), false, 16), 0x0700),
            FragmentPass,
        ),
        (
            "IPv4 first fragment of ESP in UDP to a local address",
            Out,
            0,
            with_ident(fragment(esp_in_udp4(LOCAL4), true, 0), 0x0701),
            FragmentRedirected,
        ),
        (
            "... and its later fragment follows it",
            Out,
            0,
            with_ident(fragment(esp_in_udp4(LOCAL4), false, 16), 0x0701),
            FragmentRedirected,
        ),
        (
            "IPv4 first fragment of IKE (UDP 500) to a local address",
            Out,
            0,
            with_ident(
                fragment(
                    v4_frame(eth(ETH_P_IP), 17, 0, &udp(500, 500, &ike), LOCAL4),
                    true,
                    0,
                ),
                0x0702,
            ),
            FragmentPass,
        ),
        (
            "... and its later fragment goes to the kernel too",
            Out,
            0,
            with_ident(fragment(esp_in_udp4(LOCAL4), false, 16), 0x0702),
            FragmentPass,
        ),
        (
            "IPv6 with a Fragment header and ESP to a local address",
            Out,
            0,
            v6_frame(
                eth(ETH_P_IPV6),
                44,
                &[&[50u8, 0, 0, 1, 0, 0, 0, 1][..], ESP].concat(),
                LOCAL6,
            ),
            FragmentRedirected,
        ),
        (
            "IPv4 ICMP frag needed quoting ESP, to a local address",
            Out,
            0,
            too_big4(LOCAL4, &esp4(OTHER4)[14..]),
            IcmpTooBigRedirected,
        ),
        (
            "IPv4 ICMP frag needed quoting ESP, to another address",
            Out,
            0,
            too_big4(OTHER4, &esp4(OTHER4)[14..]),
            OtherPass,
        ),
        (
            "IPv4 ICMP frag needed quoting IKE on 4500: the kernel's",
            Out,
            0,
            too_big4(
                LOCAL4,
                &v4_frame(eth(ETH_P_IP), 17, 0, &udp(4500, 4500, &ike_on_4500), OTHER4)[14..],
            ),
            OtherPass,
        ),
        (
            "IPv4 ICMP frag needed quoting TCP",
            Out,
            0,
            too_big4(LOCAL4, &tcp4(OTHER4)[14..]),
            OtherPass,
        ),
        (
            "ICMPv6 packet too big quoting ESP in UDP, to a local address",
            Out,
            0,
            too_big6(
                LOCAL6,
                &v6_frame(eth(ETH_P_IPV6), 17, &udp(4500, 4500, ESP), OTHER6)[14..],
            ),
            IcmpTooBigRedirected,
        ),
        (
            "IPv6 with a hop-by-hop header before ESP",
            Out,
            0,
            v6_frame(
                eth(ETH_P_IPV6),
                0,
                &[&[50u8, 0, 1, 4, 0, 0, 0, 0][..], ESP].concat(),
                LOCAL6,
            ),
            OtherPass,
        ),
        // The XSKS index is slot * MAX_QUEUES + queue: out0 queue 3 has a
        // socket, queue 1 has none.
        (
            "ESP to a local address on queue 3",
            Out,
            3,
            esp4(LOCAL4),
            EspRedirected,
        ),
        (
            "ESP to a local address on queue 1 (no socket)",
            Out,
            1,
            esp4(LOCAL4),
            RedirectFailed,
        ),
        (
            "UDP/4500 ESP on queue 2 (no socket)",
            Out,
            2,
            esp_in_udp4(LOCAL4),
            RedirectFailed,
        ),
        // --- inside (in0, slot 1) ---
        (
            "IPv4 TCP to a protected prefix",
            In,
            0,
            tcp4(PROT4),
            ProtectedRedirected,
        ),
        (
            "IPv4 TCP to an unprotected address",
            In,
            0,
            tcp4(OPEN4),
            NoPolicyPass,
        ),
        (
            "IPv6 TCP to a protected prefix",
            In,
            0,
            tcp6(PROT6),
            ProtectedRedirected,
        ),
        (
            "IPv6 TCP to an unprotected address",
            In,
            0,
            tcp6(OPEN6),
            NoPolicyPass,
        ),
        (
            "802.1Q-tagged IPv4 to a protected prefix",
            In,
            0,
            v4_frame(vlan(9, ETH_P_IP), 6, 0, &TCP_SYN, PROT4),
            ProtectedRedirected,
        ),
        (
            "IPv4 with options to a protected prefix",
            In,
            0,
            v4_frame(eth(ETH_P_IP), 17, 8, &udp(999, 53, &[1; 12]), PROT4),
            ProtectedRedirected,
        ),
        (
            "IPv4 fragment to a protected prefix",
            In,
            0,
            fragment(tcp4(PROT4), true, 0),
            ProtectedRedirected,
        ),
        (
            "ESP to a local address, on the inside",
            In,
            0,
            esp4(LOCAL4),
            NoPolicyPass,
        ),
        (
            "IPv4 multicast (mDNS)",
            In,
            0,
            v4_frame(eth(ETH_P_IP), 17, 0, &udp(5353, 5353, &[0; 12]), MDNS4),
            LinkScopePass,
        ),
        (
            "ICMPv6 neighbour solicitation, inside",
            In,
            0,
            neighbor_solicitation(),
            LinkScopePass,
        ),
        (
            "ARP, inside",
            In,
            0,
            [eth(ETH_P_ARP), ARP.to_vec()].concat(),
            NonIpPass,
        ),
        (
            "truncated IPv4 header to a protected prefix",
            In,
            0,
            truncated_to_protected,
            TruncatedPass,
        ),
        // --- both (arm0, slot 2) ---
        (
            "one-armed: ESP to a local address",
            Arm,
            0,
            esp4(LOCAL4),
            EspRedirected,
        ),
        (
            "one-armed: IPv6 UDP/4500 ESP to a local address",
            Arm,
            0,
            v6_frame(eth(ETH_P_IPV6), 17, &udp(4500, 4500, ESP), LOCAL6),
            EspInUdpRedirected,
        ),
        (
            "one-armed: IKE",
            Arm,
            0,
            v4_frame(eth(ETH_P_IP), 17, 0, &udp(500, 500, &ike), LOCAL4),
            IkePass,
        ),
        (
            "one-armed: TCP to a protected prefix",
            Arm,
            0,
            tcp4(PROT4),
            ProtectedRedirected,
        ),
        (
            "one-armed: IPv6 TCP to a protected prefix",
            Arm,
            0,
            tcp6(PROT6),
            ProtectedRedirected,
        ),
        (
            "one-armed: TCP to an unprotected address",
            Arm,
            0,
            tcp4(OPEN4),
            NoPolicyPass,
        ),
        (
            "one-armed: ESP to another, unprotected address",
            Arm,
            0,
            esp4(OTHER4),
            NotLocalPass,
        ),
        (
            "one-armed: UDP/4500 ESP to a protected remote address",
            Arm,
            0,
            esp_in_udp4(PROT4),
            ProtectedRedirected,
        ),
        (
            "one-armed: fragment of ESP to a local address",
            Arm,
            0,
            fragment(esp4(LOCAL4), true, 0),
            FragmentRedirected,
        ),
        (
            "one-armed: neighbour solicitation",
            Arm,
            0,
            neighbor_solicitation(),
            LinkScopePass,
        ),
        // --- an interface not in IFACES (lo) ---
        (
            "ESP to a local address on an unknown interface",
            Lo,
            0,
            esp4(LOCAL4),
            UnknownIfacePass,
        ),
        (
            "TCP to a protected prefix on an unknown interface",
            Lo,
            0,
            tcp4(PROT4),
            UnknownIfacePass,
        ),
        (
            "ARP on an unknown interface",
            Lo,
            0,
            [eth(ETH_P_ARP), ARP.to_vec()].concat(),
            UnknownIfacePass,
        ),
    ]
}

// ---- tests --------------------------------------------------------------------

#[test]
fn steers_crafted_frames_through_prog_test_run() {
    let bed = bed();
    let cases = cases();
    // Every verdict is exercised.
    for verdict in Verdict::ALL {
        assert!(
            cases.iter().any(|c| c.4 == verdict),
            "no case for {}",
            verdict.name()
        );
    }
    for (name, ingress, queue, frame, want) in &cases {
        bed.expect(name, *ingress, *queue, frame, *want);
    }
}

#[test]
fn map_updates_change_verdicts_at_once() {
    use Ingress::{In, Out};
    use Verdict::*;
    let mut bed = bed();
    let esp = esp4(LOCAL4);

    // Sockets.
    bed.expect("registered", Out, 0, &esp, EspRedirected);
    bed.steer.unregister_xsk(OUT_SLOT, 0).unwrap();
    bed.expect("unregistered", Out, 0, &esp, RedirectFailed);
    // An empty XSKMAP slot deletes without complaint (the kernel's XSKMAP
    // delete does not report ENOENT).
    bed.steer.unregister_xsk(OUT_SLOT, 0).unwrap();
    bed.steer
        .register_xsk(OUT_SLOT, 0, &bed.sockets[0])
        .unwrap();
    bed.expect("registered again", Out, 0, &esp, EspRedirected);

    // Local addresses.
    bed.steer.remove_local_address(LOCAL4.into()).unwrap();
    bed.expect("no longer local", Out, 0, &esp, NotLocalPass);
    bed.expect("v6 still local", Out, 0, &esp6(LOCAL6), EspRedirected);
    let err = bed.steer.remove_local_address(LOCAL4.into()).unwrap_err();
    assert!(matches!(err, SteerError::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains("198.18.0.1"), "{err}");
    bed.steer.remove_local_address(LOCAL6.into()).unwrap();
    bed.expect("v6 no longer local", Out, 0, &esp6(LOCAL6), NotLocalPass);
    bed.steer.add_local_address(LOCAL4.into()).unwrap();
    bed.expect("local again", Out, 0, &esp, EspRedirected);

    // Protected prefixes, and link scope under a default route.
    let any4 = [10, 9, 9, 9];
    let any6 = v6([0xfd00, 9, 0, 0, 0, 0, 0, 9]);
    bed.expect("unprotected", In, 0, &tcp4(any4), NoPolicyPass);
    bed.steer
        .add_protected_prefix(Ipv4Addr::UNSPECIFIED.into(), 0)
        .unwrap();
    bed.steer
        .add_protected_prefix(Ipv6Addr::UNSPECIFIED.into(), 0)
        .unwrap();
    bed.expect("under 0/0", In, 0, &tcp4(any4), ProtectedRedirected);
    bed.expect("under ::/0", In, 0, &tcp6(any6), ProtectedRedirected);
    for (name, dst) in [
        ("limited broadcast under 0/0", [255, 255, 255, 255]),
        ("IPv4 link-local under 0/0", [169, 254, 7, 7]),
        ("IPv4 multicast under 0/0", MDNS4),
    ] {
        let dhcp = v4_frame(eth(ETH_P_IP), 17, 0, &udp(68, 67, &[0; 12]), dst);
        bed.expect(name, In, 0, &dhcp, LinkScopePass);
    }
    bed.expect(
        "IPv6 link-local under ::/0",
        In,
        0,
        &tcp6(v6([0xfe80, 0, 0, 0, 0, 0, 0, 1])),
        LinkScopePass,
    );
    bed.expect(
        "neighbour solicitation under ::/0",
        In,
        0,
        &neighbor_solicitation(),
        LinkScopePass,
    );
    bed.steer
        .remove_protected_prefix(Ipv4Addr::UNSPECIFIED.into(), 0)
        .unwrap();
    bed.steer
        .remove_protected_prefix(Ipv6Addr::UNSPECIFIED.into(), 0)
        .unwrap();
    bed.expect("0/0 removed", In, 0, &tcp4(any4), NoPolicyPass);
    bed.expect("::/0 removed", In, 0, &tcp6(any6), NoPolicyPass);
    bed.expect("/16 kept", In, 0, &tcp4(PROT4), ProtectedRedirected);
    let err = bed
        .steer
        .remove_protected_prefix(Ipv4Addr::UNSPECIFIED.into(), 0)
        .unwrap_err();
    assert!(matches!(err, SteerError::NotFound(_)), "{err:?}");
    // Longest match: a /24 inside the /16 is still protected after the /16
    // goes.
    bed.steer
        .add_protected_prefix(IpAddr::from([10, 2, 3, 0]), 24)
        .unwrap();
    bed.steer
        .remove_protected_prefix(PROT4_NET.into(), 16)
        .unwrap();
    bed.expect("/24 left", In, 0, &tcp4(PROT4), ProtectedRedirected);
    bed.expect("outside the /24", In, 0, &tcp4([10, 2, 4, 4]), NoPolicyPass);

    // Interfaces.
    assert_eq!(
        bed.steer.interface(bed.out0).unwrap(),
        Some((Role::Outside, OUT_SLOT))
    );
    bed.steer
        .set_interface(bed.out0, Role::Inside, IN_SLOT)
        .unwrap();
    assert_eq!(
        bed.steer.interface(bed.out0).unwrap(),
        Some((Role::Inside, IN_SLOT))
    );
    bed.expect("out0 now inside", Out, 0, &tcp4(PROT4), ProtectedRedirected);
    bed.expect("out0 now inside: ESP", Out, 0, &esp, NoPolicyPass);
    bed.steer.remove_interface(bed.out0).unwrap();
    assert_eq!(bed.steer.interface(bed.out0).unwrap(), None);
    bed.expect("out0 removed", Out, 0, &esp, UnknownIfacePass);
    let err = bed.steer.remove_interface(bed.out0).unwrap_err();
    assert!(matches!(err, SteerError::NotFound(_)), "{err:?}");
}

#[test]
fn bad_settings_are_refused_clearly() {
    let mut steer = load();
    let err = steer.set_interface(5, Role::Outside, 8).unwrap_err();
    assert!(
        matches!(err, SteerError::SlotOutOfRange { slot: 8 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("0 to 7"), "{err}");

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = steer.register_xsk(0, MAX_QUEUES, &sock).unwrap_err();
    assert!(matches!(err, SteerError::QueueOutOfRange { .. }), "{err:?}");
    let err = steer.register_xsk(9, 0, &sock).unwrap_err();
    assert!(matches!(err, SteerError::SlotOutOfRange { .. }), "{err:?}");
    // A socket that is not AF_XDP: the kernel refuses it, and the error says
    // which map, slot and queue.
    let err = steer.register_xsk(0, 0, &sock).unwrap_err();
    assert!(
        matches!(err, SteerError::Map { map: "XSKS", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("slot 0 queue 0"), "{err}");

    let err = steer
        .add_protected_prefix(IpAddr::from([10, 2, 3, 4]), 16)
        .unwrap_err();
    assert!(
        err.to_string().contains("did you mean 10.2.0.0/16"),
        "{err}"
    );
    let err = steer
        .add_protected_prefix(IpAddr::from([10, 2, 0, 0]), 33)
        .unwrap_err();
    assert!(matches!(err, SteerError::PrefixLength { .. }), "{err:?}");
    let err = steer
        .remove_local_address(IpAddr::from(OTHER6))
        .unwrap_err();
    assert!(matches!(err, SteerError::NotFound(_)), "{err:?}");
    assert_eq!(steer.interface(5).unwrap(), None);
    assert_eq!(steer.counters().unwrap().total(), 0);
}

#[test]
fn attaches_natively_to_a_veth_and_counts_real_traffic() {
    let steer = load();
    let mut steer = steer;

    // A network namespace for this thread only, removed on drop.
    let _netns = aya::test_helpers::NetNsGuard::new()
        .unwrap_or_else(|err| panic!("cannot create a network namespace (needs root): {err}"));
    ip(&[
        "link",
        "add",
        "xs0",
        "address",
        "02:00:00:00:00:01",
        "type",
        "veth",
        "peer",
        "name",
        "xs1",
        "address",
        "02:00:00:00:00:02",
    ]);
    // No IPv6 on the link: no router or listener solicitations arrive
    // unannounced and skew the counts below.
    for dev in ["xs0", "xs1"] {
        sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6=1"));
    }
    ip(&["link", "set", "xs0", "up"]);
    ip(&["link", "set", "xs1", "up"]);
    ip(&["addr", "add", "198.18.0.2/30", "dev", "xs1"]);
    ip(&[
        "neigh",
        "add",
        "198.18.0.1",
        "lladdr",
        "02:00:00:00:00:01",
        "dev",
        "xs1",
        "nud",
        "permanent",
    ]);

    match steer.attach("xs-missing", AttachMode::Native) {
        Err(SteerError::Attach {
            source: ProgramError::UnknownInterface { .. },
            ..
        }) => {}
        other => panic!("attach to a missing interface: {other:?}"),
    }

    steer
        .attach("xs0", AttachMode::Native)
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(matches!(
        steer.attach("xs0", AttachMode::Native),
        Err(SteerError::AlreadyAttached(_))
    ));
    let link = ip(&["-d", "link", "show", "dev", "xs0"]);
    assert!(link.contains("prog/xdp"), "no XDP program on xs0:\n{link}");
    assert!(!link.contains("xdpgeneric"), "not in native mode:\n{link}");
    assert_eq!(steer.attached().collect::<Vec<_>>(), ["xs0"]);

    // Out of xs1, into xs0, through the program (and then dropped by the
    // kernel: xs0 has no address). Not yet in IFACES: passed as unknown.
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 0)).unwrap();
    let peer = Ipv4Addr::new(198, 18, 0, 1);
    let esp_to_peer = || sock.send_to(ESP, SocketAddrV4::new(peer, 4500)).unwrap();
    let before = steer.counters().unwrap();
    esp_to_peer();
    let delta = wait_for(&steer, &before, |d| d.total() >= 1);
    assert_eq!(delta.get(Verdict::UnknownIfacePass), 1, "{delta}");
    assert_eq!(delta.total(), 1, "{delta}");

    // Outside, 198.18.0.1 local, no socket registered: IKE passes, the
    // ESP-in-UDP datagram is due for a redirect that cannot happen.
    let xs0 = xdpsec_dataplane::afxdp::ifindex("xs0").unwrap();
    steer.set_interface(xs0, Role::Outside, 0).unwrap();
    steer.add_local_address(peer.into()).unwrap();
    let before = steer.counters().unwrap();
    sock.send_to(&ike_header(), SocketAddrV4::new(peer, 500))
        .unwrap();
    sock.send_to(
        &[&[0u8; 4][..], &ike_header()].concat(),
        SocketAddrV4::new(peer, 4500),
    )
    .unwrap();
    esp_to_peer();
    let delta = wait_for(&steer, &before, |d| {
        d.get(Verdict::IkePass) >= 2 && d.get(Verdict::RedirectFailed) >= 1
    });
    assert_eq!(delta.get(Verdict::IkePass), 2, "{delta}");
    assert_eq!(delta.get(Verdict::RedirectFailed), 1, "{delta}");
    assert_eq!(delta.redirected(), 0, "{delta}");

    steer.detach("xs0").unwrap_or_else(|err| panic!("{err}"));
    // The kernel frees a released bpf_link from a work queue: on a loaded
    // machine the program can show for a moment after detach returns.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let link = loop {
        let link = ip(&["-d", "link", "show", "dev", "xs0"]);
        if !link.contains("prog/xdp") || std::time::Instant::now() > deadline {
            break link;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        !link.contains("prog/xdp"),
        "XDP program still on xs0:\n{link}"
    );
    assert!(matches!(
        steer.detach("xs0"),
        Err(SteerError::NotAttached(_))
    ));

    // Generic mode only when asked for.
    steer
        .attach("xs0", AttachMode::Generic)
        .unwrap_or_else(|err| panic!("{err}"));
    let link = ip(&["-d", "link", "show", "dev", "xs0"]);
    assert!(link.contains("xdpgeneric"), "not in generic mode:\n{link}");

    // Dropping the loader detaches the program.
    drop(steer);
    let link = ip(&["-d", "link", "show", "dev", "xs0"]);
    assert!(
        !link.contains("prog/xdp"),
        "XDP program left on xs0:\n{link}"
    );
}

/// Runs `ip ARGS` in this thread's network namespace; its stdout.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run `ip` (iproute2): {err}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `sysctl -qw SETTING` in this thread's network namespace.
fn sysctl(setting: &str) {
    let out = Command::new("sysctl")
        .args(["-qw", setting])
        .output()
        .unwrap_or_else(|err| panic!("cannot run `sysctl`: {err}"));
    assert!(
        out.status.success(),
        "sysctl {setting}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls the counters (veth runs XDP in its NAPI poll, right after the send)
/// until `done` holds or a second has passed; the last difference.
fn wait_for(
    steer: &Steer,
    before: &VerdictCounters,
    done: impl Fn(&VerdictCounters) -> bool,
) -> VerdictCounters {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let delta = steer.counters().unwrap().since(before);
        if done(&delta) || Instant::now() > deadline {
            return delta;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
