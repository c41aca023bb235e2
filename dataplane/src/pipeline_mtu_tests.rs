//! The pipeline's MTU decisions on plain buffers: a tunnel 10.1.0.0/24 <->
//! 10.2.0.0/24 (and fd00:1::/64 <-> fd00:2::/64) over 198.18.0.1 ->
//! 198.18.0.2, LAN on interface 2 and WAN on interface 3, both MTU 1500.

use super::*;
use crate::crypto::Backend;
use crate::nexthop::{Interface, NeighbourKey, NeighbourState, Route, RouteTarget, TableBuilder};
use crate::tables::Tables;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::mpsc::sync_channel;
use xdpsec_api::{Direction, GcmKey, Policy, PolicyAction, SaSpec, TrafficSelector};

const LAN: u32 = 2;
const WAN: u32 = 3;
const SPI: u32 = 0x1234;
const HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const GW_LAN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// Worst-case overhead of plain ESP over IPv4: 20 + 8 + 8 + 3 + 2 + 16.
const OVERHEAD: u32 = 57;

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

struct Bed {
    tables: Tables,
    next_hops: NextHopTable,
    resolver: Resolver,
    sources: SourceAddrs,
    events: WorkerStatsCell,
    local: Local,
}

fn selector(local: &str, remote: &str) -> TrafficSelector {
    TrafficSelector {
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        protocol: None,
        local_ports: None,
        remote_ports: None,
    }
}

fn bed(icmp_rate: u32) -> Bed {
    let backend = *Backend::available().first().expect("a crypto backend");
    let tables = Tables::new(backend);
    tables
        .add_sa(&SaSpec {
            spi: SPI,
            direction: Direction::Out,
            key: GcmKey::new(&[7; 16], [1, 2, 3, 4]).unwrap(),
            esn: false,
            replay_window: 1024,
            tunnel_local: Ipv4Addr::new(198, 18, 0, 1).into(),
            tunnel_remote: Ipv4Addr::new(198, 18, 0, 2).into(),
            encap: None,
            selectors: vec![
                selector("10.1.0.0/24", "10.2.0.0/24"),
                selector("fd00:1::/64", "fd00:2::/64"),
            ],
            lifetime: Default::default(),
            initial_seq: None,
            resource: None,
        })
        .unwrap();
    for (local, remote) in [
        ("10.1.0.0/24", "10.2.0.0/24"),
        ("fd00:1::/64", "fd00:2::/64"),
    ] {
        tables
            .add_policy(Policy {
                local: local.parse().unwrap(),
                remote: remote.parse().unwrap(),
                direction: Direction::Out,
                action: PolicyAction::Protect,
                spi: Some(SPI),
            })
            .unwrap();
    }
    let mut b = TableBuilder::new();
    for (ifindex, name) in [(LAN, "lan0"), (WAN, "wan0")] {
        b.interface(Interface {
            ifindex,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, ifindex as u8]),
            mtu: 1500,
            up: true,
        });
    }
    for (dst, len, ifindex) in [
        ("10.1.0.0", 24, LAN),
        ("fd00:1::", 64, LAN),
        ("198.18.0.0", 30, WAN),
    ] {
        b.route(Route {
            dst: dst.parse().unwrap(),
            prefix_len: len,
            metric: 0,
            mtu: None,
            target: RouteTarget::Hops(vec![crate::nexthop::Hop {
                ifindex,
                gateway: None,
            }]),
        });
    }
    for (ifindex, addr) in [(LAN, "10.1.0.2"), (LAN, "fd00:1::2"), (WAN, "198.18.0.2")] {
        b.neighbour(
            NeighbourKey {
                ifindex,
                addr: addr.parse().unwrap(),
            },
            NeighbourState::Usable([2, 0, 0, 0, 9, 9]),
        );
    }
    // Every neighbour is resolved: nothing is ever asked, and a request
    // to a closed channel would only be refused.
    let (tx, _) = sync_channel(16);
    Bed {
        tables,
        next_hops: b.build(1),
        resolver: Resolver { tx },
        sources: SourceAddrs::new([(LAN, GW_LAN.into()), (LAN, v6("fd00:1::1").into())]),
        events: WorkerStatsCell::new(0, None),
        local: Local {
            worker: 0,
            icmp_limit: RateLimit::new(icmp_rate, Instant::now()),
            reassembly: Reassembly::new(crate::reassembly::ReassemblyLimits {
                slots: 4,
                max_datagram: 1900,
                timeout: Duration::from_secs(1),
            }),
        },
    }
}

impl Bed {
    fn outbound(
        &mut self,
        frame: &mut [u8],
        start: usize,
        len: usize,
    ) -> Result<(Transmit, Option<SoftExpiry>), Dropped> {
        let snapshot = self.tables.load();
        let ctx = Context {
            tables: &snapshot,
            next_hops: &self.next_hops,
            resolver: &self.resolver,
            now: Instant::now(),
            mss_clamp: true,
            outer_fragmentation: true,
            pmtu_hold: Duration::from_secs(600),
            sources: &self.sources,
            events: &self.events,
            memo: Default::default(),
            tunnel: None,
        };
        outbound(&ctx, &mut self.local, frame, start, len)
    }

    fn learn(&self, mtu: u32) {
        let snapshot = self.tables.load();
        let entry = snapshot.outbound_sa(SPI).unwrap();
        entry
            .stats
            .pmtu
            .learn(mtu, false, Instant::now(), Duration::from_secs(600));
    }
}

/// An Ethernet frame at offset 256 of a 2048-byte buffer holding an IP
/// packet of `len` bytes from the LAN host to the far LAN: UDP with or
/// without DF, or (`v6`) ICMPv6 echo. Returns (buffer, start, frame length).
fn lan_frame(len: usize, df: bool, v6_packet: bool) -> (Vec<u8>, usize, usize) {
    let mut buf = vec![0u8; 2048];
    let start = 256;
    let l3 = start + ethernet::HEADER_LEN;
    if v6_packet {
        buf[start + 12..start + 14].copy_from_slice(&ethernet::ethertype::IPV6.to_be_bytes());
        ipv6::Repr {
            src: v6("fd00:1::2"),
            dst: v6("fd00:2::2"),
            next_header: ip_proto::ICMPV6,
            payload_len: len - ipv6::HEADER_LEN,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut buf[l3..])
        .unwrap();
        buf[l3 + 40] = 128;
    } else {
        buf[start + 12..start + 14].copy_from_slice(&ethernet::ethertype::IPV4.to_be_bytes());
        ipv4::Repr {
            src: HOST,
            dst: Ipv4Addr::new(10, 2, 0, 2),
            protocol: ip_proto::UDP,
            payload_len: len - 20,
            ttl: 64,
            dscp_ecn: 0,
            ident: 99,
            dont_frag: df,
        }
        .emit(&mut buf[l3..])
        .unwrap();
    }
    (buf, start, ethernet::HEADER_LEN + len)
}

/// The ICMP(v6) message of a frame the pipeline produced: (type, code,
/// MTU field, IP source).
fn icmp_of(frame: &[u8]) -> (u8, u8, u32, IpAddr) {
    let ip = &frame[ethernet::HEADER_LEN..];
    let (src, icmp): (IpAddr, &[u8]) = if ip[0] >> 4 == 4 {
        let p = ipv4::Packet::new_checked(ip).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(checksum::data(p.payload()), 0xffff, "ICMP checksum");
        (p.src_addr().into(), &ip[20..])
    } else {
        (
            ipv6::Packet::new_checked(ip).unwrap().src_addr().into(),
            &ip[40..],
        )
    };
    let mtu = if ip[0] >> 4 == 4 {
        u32::from(u16::from_be_bytes([icmp[6], icmp[7]]))
    } else {
        u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]])
    };
    (icmp[0], icmp[1], mtu, src)
}

#[test]
fn ipv4_with_df_too_big_gets_frag_needed_back_out_of_the_lan() {
    let mut bed = bed(10);
    let (mut buf, start, len) = lan_frame(1500, true, false);
    let (tx, _) = bed.outbound(&mut buf, start, len).unwrap();
    assert_eq!(tx.ifindex, LAN);
    assert!(tx.fragments.is_none());
    let frame = &buf[tx.range.clone()];
    assert_eq!(icmp_of(frame), (3, 4, 1500 - OVERHEAD, IpAddr::V4(GW_LAN)));
    assert_eq!(&frame[..6], &[2, 0, 0, 0, 9, 9], "to the host's MAC");
    let info = &bed.tables.load().sa_infos()[0];
    assert_eq!(info.counters.drops.get("inner_mtu_exceeded"), Some(&1));
    assert_eq!(info.mtu.unwrap().inner_mtu, 1500 - OVERHEAD);
    // The largest packet that fits is encrypted.
    let fits = (1500 - OVERHEAD) as usize;
    let (mut buf, start, len) = lan_frame(fits, true, false);
    let (tx, _) = bed.outbound(&mut buf, start, len).unwrap();
    assert_eq!(tx.ifindex, WAN);
    assert!(tx.range.len() <= 1514);
}

#[test]
fn the_icmp_rate_limit_holds() {
    let mut bed = bed(2);
    let mut sent = 0;
    for _ in 0..10 {
        let (mut buf, start, len) = lan_frame(1500, true, false);
        match bed.outbound(&mut buf, start, len) {
            Ok(_) => sent += 1,
            Err(e) => assert_eq!(e, Dropped::TooBigNoIcmp),
        }
    }
    assert_eq!(sent, 2);
    let mut none = self::bed(0);
    let (mut buf, start, len) = lan_frame(1500, true, false);
    assert_eq!(
        none.outbound(&mut buf, start, len).unwrap_err(),
        Dropped::TooBigNoIcmp
    );
}

#[test]
fn ipv4_without_df_leaves_in_outer_fragments() {
    let mut bed = bed(10);
    let (mut buf, start, len) = lan_frame(1500, false, false);
    let (tx, _) = bed.outbound(&mut buf, start, len).unwrap();
    assert_eq!(tx.ifindex, WAN);
    let plan = tx.fragments.expect("fragmented");
    assert_eq!(plan.count(), 2);
    let first = &buf[tx.range.clone()];
    assert_eq!(first.len(), 1514);
    let ip = ipv4::Packet::new_checked(&first[14..]).unwrap();
    assert!(ip.more_frags() && !ip.dont_frag() && ip.verify_checksum());
    let mut second = vec![0u8; 1600];
    let n = plan.write(1, &buf, &mut second).unwrap();
    let ip = ipv4::Packet::new_checked(&second[..n]).unwrap();
    assert!(!ip.more_frags() && ip.frag_offset() == 1480);
    // ESP header, IV, the inner packet, 2 bytes of padding, trailer, ICV.
    assert_eq!(1480 + n - 20, 8 + 8 + 1500 + 2 + 2 + 16);
}

#[test]
fn a_learned_path_mtu_lowers_the_inner_mtu_and_the_mss() {
    let mut bed = bed(10);
    bed.learn(1280);
    let (mut buf, start, len) = lan_frame(1300, true, false);
    let (tx, _) = bed.outbound(&mut buf, start, len).unwrap();
    assert_eq!(icmp_of(&buf[tx.range]).2, 1280 - OVERHEAD);

    // A SYN announcing 1460 leaves with what fits 1280 after ESP.
    let (mut buf, start, _) = lan_frame(60, true, false);
    let l3 = start + 14;
    buf[l3 + 9] = ip_proto::TCP;
    buf[l3 + 10..l3 + 12].fill(0);
    let ip = &mut buf[l3..l3 + 60];
    ipv4::Packet::new_unchecked(&mut ip[..]).fill_checksum();
    let tcp = &mut ip[20..];
    // Data offset 6 words: the header and the MSS option.
    tcp[12] = 6 << 4;
    tcp[13] = 0x02;
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    assert!(crate::mss::clamp(&mut buf[l3..l3 + 60], 1280 - OVERHEAD));
    let mss = u16::from_be_bytes([buf[l3 + 42], buf[l3 + 43]]);
    assert_eq!(u32::from(mss), 1280 - OVERHEAD - 40);
}

#[test]
fn ipv6_gets_packet_too_big_and_small_ipv6_is_carried_in_fragments() {
    let mut bed = bed(10);
    let (mut buf, start, len) = lan_frame(1500, true, true);
    let (tx, _) = bed.outbound(&mut buf, start, len).unwrap();
    assert_eq!(
        icmp_of(&buf[tx.range]),
        (2, 0, 1500 - OVERHEAD, IpAddr::V6(v6("fd00:1::1")))
    );
    // Over a 1280-byte path, a 1280-byte IPv6 packet (which its host may
    // always send) is fragmented outside rather than refused.
    bed.learn(1280);
    let (mut buf, start, len) = lan_frame(1280, true, true);
    let (tx, _) = bed.outbound(&mut buf, start, len).unwrap();
    assert_eq!(tx.ifindex, WAN);
    assert_eq!(tx.fragments.map(|p| p.count()), Some(2));
    // A larger one gets "too big" with 1280, not less.
    let (mut buf, start, len) = lan_frame(1400, true, true);
    let (tx, _) = bed.outbound(&mut buf, start, len).unwrap();
    assert_eq!(icmp_of(&buf[tx.range]).2, 1280);
}

#[test]
fn underlay_icmp_sets_the_path_mtu_only_for_a_matching_sa() {
    let mut bed = bed(10);
    // Our own outer packet, as a router would quote it.
    let (mut buf, start, len) = lan_frame(1400, true, false);
    let (tx, _) = bed.outbound(&mut buf, start, len).unwrap();
    let outer = buf[tx.range.start + 14..tx.range.end].to_vec();
    let router = Ipv4Addr::new(198, 18, 0, 5);
    let mut icmp = vec![0u8; 64];
    icmp.extend_from_slice(&outer);
    let r = icmp::frag_needed_v4(&mut icmp, 64, outer.len(), 1280, router).unwrap();
    let mut frame = vec![0u8; 2048];
    frame[256 + 12..256 + 14].copy_from_slice(&ethernet::ethertype::IPV4.to_be_bytes());
    frame[256 + 14..256 + 14 + r.len()].copy_from_slice(&icmp[r.clone()]);
    let snapshot = bed.tables.load();
    let ctx = Context {
        tables: &snapshot,
        next_hops: &bed.next_hops,
        resolver: &bed.resolver,
        now: Instant::now(),
        mss_clamp: true,
        outer_fragmentation: true,
        pmtu_hold: Duration::from_secs(600),
        sources: &bed.sources,
        events: &bed.events,
        memo: Default::default(),
        tunnel: None,
    };
    let mut other = frame.clone();
    assert_eq!(
        inbound(&ctx, &mut bed.local, &mut frame, 256, 14 + r.len()),
        Ok(None)
    );
    let mtu = snapshot
        .outbound_sa(SPI)
        .unwrap()
        .stats
        .pmtu
        .describe(36, Instant::now());
    assert_eq!(mtu.and_then(|m| m.path_mtu), Some(1280));
    // The same ICMP quoting another SPI changes nothing.
    let spi_at = 256 + 14 + 20 + 8 + 20;
    other[spi_at..spi_at + 4].copy_from_slice(&0x9999u32.to_be_bytes());
    // Fix the ICMP checksum for the changed SPI so only the SA lookup fails.
    let icmp_at = 256 + 14 + 20;
    other[icmp_at + 2..icmp_at + 4].fill(0);
    let sum = checksum::finish(checksum::add(0, &other[icmp_at..256 + 14 + r.len()]));
    other[icmp_at + 2..icmp_at + 4].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        inbound(&ctx, &mut bed.local, &mut other, 256, 14 + r.len()),
        Err(Dropped::IcmpNotForAnSa)
    );
}

#[test]
fn one_armed_ports_take_fragments_and_icmp_to_tunnel_addresses_inbound() {
    let bed = bed(10);
    let snapshot = bed.tables.load();
    let frame_to = |dst: Ipv4Addr, protocol: u8, frag: u16| {
        let mut f = vec![0u8; 14 + 60];
        f[12..14].copy_from_slice(&ethernet::ethertype::IPV4.to_be_bytes());
        ipv4::Repr {
            src: Ipv4Addr::new(198, 18, 0, 2),
            dst,
            protocol,
            payload_len: 40,
            ttl: 64,
            dscp_ecn: 0,
            ident: 5,
            dont_frag: false,
        }
        .emit(&mut f[14..])
        .unwrap();
        f[14 + 6..14 + 8].copy_from_slice(&frag.to_be_bytes());
        f
    };
    let ours = Ipv4Addr::new(198, 18, 0, 1);
    let elsewhere = Ipv4Addr::new(10, 2, 0, 2);
    assert!(looks_like_esp(
        &snapshot,
        &frame_to(ours, ip_proto::ESP, 0x2000)
    ));
    assert!(looks_like_esp(
        &snapshot,
        &frame_to(ours, ip_proto::ICMP, 0)
    ));
    assert!(!looks_like_esp(
        &snapshot,
        &frame_to(elsewhere, ip_proto::ESP, 0x2000)
    ));
    assert!(!looks_like_esp(
        &snapshot,
        &frame_to(elsewhere, ip_proto::ICMP, 0)
    ));
    assert!(!looks_like_esp(
        &snapshot,
        &frame_to(ours, ip_proto::TCP, 0)
    ));
}
