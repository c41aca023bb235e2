//! Targets on the data plane's packet code: ESP decapsulation, the wire
//! views (and the small in-place packet editors built on them), and the
//! outer fragment reassembly table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use xdpsec_dataplane::crypto::{new_aead, Backend, NONCE_LEN};
use xdpsec_dataplane::esp::{self, EspError, IV_LEN, MAX_HEADROOM, MAX_TAILROOM};
use xdpsec_dataplane::fragment;
use xdpsec_dataplane::reassembly::{Reassembly, ReassemblyLimits, MAX_FRAGMENTS};
use xdpsec_dataplane::sa::{Cipher, Direction, InboundSa, OutboundSa, SaConfig};
use xdpsec_dataplane::selector::{AddrFamily, FlowKey, IpRange, PortRange, TrafficSelector};
use xdpsec_dataplane::wire::{
    self, checksum, ethernet, ip_proto, ipv4, ipv6, udp, IpVersion, WireError,
};
use xdpsec_dataplane::{l4_checksum, mss, pmtu};
use zeroize::Zeroizing;

use crate::input::Input;

const SPI: u32 = 0x1000_0001;
const KEY: [u8; 36] = [0x5a; 36];

fn backend(pick: u8) -> Backend {
    let all = Backend::available();
    all[usize::from(pick) % all.len()]
}

/// The selectors both SAs of the pair carry (packet orientation): either
/// any IPv4 and IPv6 packet, or 10.1/16 -> 10.2/16 UDP to ports 1000-2000
/// and fd00:1::/32 -> fd00:2::/32, so that the selector check has
/// something to refuse.
fn selectors(narrow: bool) -> Vec<TrafficSelector> {
    if !narrow {
        return vec![
            TrafficSelector::any(AddrFamily::V4),
            TrafficSelector::any(AddrFamily::V6),
        ];
    }
    let v4 = |a, b| IpAddr::V4(Ipv4Addr::new(10, a, b, 0));
    let v6 = |n| IpAddr::V6(Ipv6Addr::new(0xfd00, n, 0, 0, 0, 0, 0, 0));
    let (Ok(s4), Ok(d4), Ok(s6), Ok(d6), Ok(ports)) = (
        IpRange::prefix(v4(1, 0), 16),
        IpRange::prefix(v4(2, 0), 16),
        IpRange::prefix(v6(1), 32),
        IpRange::prefix(v6(2), 32),
        PortRange::new(1000, 2000),
    ) else {
        unreachable!("constant prefixes are valid");
    };
    let mut out = Vec::new();
    if let Ok(ts) = TrafficSelector::new(s4, d4) {
        out.push(ts.with_protocol(ip_proto::UDP).with_dst_ports(ports));
    }
    if let Ok(ts) = TrafficSelector::new(s6, d6) {
        out.push(ts);
    }
    out
}

/// The parameters of the fuzzed SA pair, from the first input bytes.
struct Pair {
    outbound: OutboundSa,
    inbound: InboundSa,
    backend: Backend,
    cipher: Cipher,
    esn: bool,
    udp: bool,
}

fn sa_pair(input: &mut Input<'_>) -> Option<Pair> {
    let flags = input.u8();
    let esn = flags & 1 != 0;
    let cipher = if flags & 2 != 0 {
        Cipher::AesGcm256
    } else {
        Cipher::AesGcm128
    };
    let narrow = flags & 4 != 0;
    let udp = flags & 8 != 0;
    let v6 = flags & 16 != 0;
    let backend = backend(flags >> 5);
    let window = match input.u8() % 4 {
        0 => 32,
        1 => 64,
        2 => 1024,
        _ => 8192,
    };
    // Start near the end of the 32-bit sequence space when asked (without
    // ESN, where the outbound SA must stop). With ESN an inbound window at
    // 0 cannot place a first packet near 2^32 (RFC 4303 Appendix A infers
    // the previous epoch), so ESN wrap-around is reached through sealed
    // packets with chosen 64-bit numbers instead.
    let initial_seq = match input.u8() % 4 {
        2 if !esn => u64::from(u32::MAX) - 4,
        _ => 1,
    };
    let (local, remote) = if v6 {
        (
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        )
    };
    let config = |direction, local, remote| {
        let mut c = SaConfig::new(
            SPI,
            direction,
            cipher,
            Zeroizing::new(KEY[..cipher.keying_material_len()].to_vec()),
            local,
            remote,
            selectors(narrow),
        );
        c.backend = backend;
        c.esn = esn;
        c.replay_window = window;
        c.initial_seq = initial_seq;
        c.udp_encap = udp.then_some(xdpsec_dataplane::sa::UdpEncap {
            local_port: 4500,
            remote_port: 4500,
        });
        c
    };
    let outbound = OutboundSa::new(config(Direction::Outbound, local, remote)).ok()?;
    let inbound = InboundSa::new(config(Direction::Inbound, remote, local)).ok()?;
    Some(Pair {
        outbound,
        inbound,
        backend,
        cipher,
        esn,
        udp,
    })
}

/// The ESP packet inside an outer IP packet that `encapsulate` built,
/// found with the wire views (which must accept what we emit).
fn esp_of(outer: &[u8], udp_encap: bool) -> &[u8] {
    let payload = match IpVersion::of_packet(outer) {
        Some(IpVersion::V4) => {
            let ip = ipv4::Packet::new_checked(outer).expect("our outer IPv4 header parses");
            assert!(ip.verify_checksum(), "our outer IPv4 checksum verifies");
            let range = outer.len() - ip.payload().len()..outer.len();
            &outer[range]
        }
        Some(IpVersion::V6) => {
            ipv6::Packet::new_checked(outer).expect("our outer IPv6 header parses");
            &outer[ipv6::HEADER_LEN..]
        }
        None => panic!("encapsulate wrote no IP header"),
    };
    if udp_encap {
        let u = udp::Packet::new_checked(payload).expect("our UDP header parses");
        assert_eq!(
            usize::from(u.len()),
            payload.len(),
            "UDP length covers the ESP packet"
        );
        &payload[udp::HEADER_LEN..]
    } else {
        payload
    }
}

/// ESP decapsulation (and encapsulation) with one inbound SA. The input is
/// the SA's parameters, then up to 16 packets, each one of:
///
/// - raw bytes handed to `decapsulate` as they are (optionally with the
///   SA's SPI written over the first four), for the checks before
///   authentication;
/// - a plaintext of the fuzzer's choice (inner packet, padding, pad length,
///   next header: all of it) sealed with the SA's key under a chosen
///   sequence number and IV, so the checks after authentication see
///   arbitrary decrypted bytes;
/// - an inner packet encapsulated by the outbound SA of the same key, which
///   must decapsulate back to the same inner packet.
///
/// Whatever decapsulation returns must lie inside the buffer and be an IP
/// packet of the version the trailer named.
pub fn esp_decap(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(pair) = sa_pair(&mut input) else {
        return;
    };
    let aead = new_aead(pair.backend, &KEY[..pair.cipher.keying_material_len() - 4])
        .expect("a 16- or 32-byte key");
    let salt = &KEY[pair.cipher.keying_material_len() - 4..pair.cipher.keying_material_len()];
    // Whether a packet not from the outbound SA passed authentication: it
    // moved the replay window, after which the outbound SA's numbers may
    // be old.
    let mut foreign = false;
    for _ in 0..16 {
        if input.is_empty() {
            break;
        }
        match input.u8() % 3 {
            0 => {
                let spi = input.bool();
                let mut packet = input.chunk().to_vec();
                if spi && packet.len() >= 4 {
                    packet[..4].copy_from_slice(&SPI.to_be_bytes());
                }
                foreign |= check_decap(&pair.inbound, &mut packet);
            }
            1 => {
                let seq = input.u64();
                let own_iv = input.bool();
                let iv = if own_iv { input.u64() } else { seq };
                let plain = input.chunk();
                let mut packet = Vec::with_capacity(16 + plain.len() + 16);
                packet.extend_from_slice(&SPI.to_be_bytes());
                packet.extend_from_slice(&(seq as u32).to_be_bytes());
                packet.extend_from_slice(&iv.to_be_bytes());
                packet.extend_from_slice(plain);
                let mut aad = Vec::with_capacity(12);
                aad.extend_from_slice(&SPI.to_be_bytes());
                if pair.esn {
                    aad.extend_from_slice(&seq.to_be_bytes());
                } else {
                    aad.extend_from_slice(&(seq as u32).to_be_bytes());
                }
                let mut nonce = [0u8; NONCE_LEN];
                nonce[..4].copy_from_slice(salt);
                nonce[4..].copy_from_slice(&iv.to_be_bytes());
                let tag = aead
                    .seal_in_place(&nonce, &aad, &mut packet[16..])
                    .expect("sealing works");
                packet.extend_from_slice(&tag);
                foreign |= check_decap(&pair.inbound, &mut packet);
            }
            _ => {
                let inner = input.chunk();
                let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
                buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(inner);
                let Ok(done) =
                    esp::encapsulate(&pair.outbound, &mut buf, MAX_HEADROOM, inner.len())
                else {
                    continue;
                };
                assert!(done.range.end <= buf.len() && done.range.start <= MAX_HEADROOM);
                let mut packet = esp_of(&buf[done.range.clone()], pair.udp).to_vec();
                let result = esp::decapsulate(&pair.inbound, &mut packet);
                // What encapsulation took, decapsulation gives back: the
                // same key, selectors and sequence numbers in order. The
                // one difference: decapsulation checks an IPv4 inner
                // header's checksum, encapsulation does not look.
                let v4_bad_sum = IpVersion::of_packet(inner) == Some(IpVersion::V4)
                    && !ipv4::Packet::new_checked(inner).is_ok_and(|p| p.verify_checksum());
                match result {
                    Ok(d) => {
                        assert_eq!(d.seq, done.seq, "sequence number round trip");
                        assert_eq!(
                            &packet[d.range.clone()],
                            &inner[..d.range.len()],
                            "inner packet round trip"
                        );
                    }
                    Err(EspError::MalformedInner) if v4_bad_sum => {}
                    // Past a foreign packet's number the window has moved
                    // on (with ESN the low 32 bits may then be taken for
                    // a later epoch, which fails authentication).
                    Err(EspError::Replayed | EspError::TooOld | EspError::AuthenticationFailed)
                        if foreign => {}
                    Err(e) => panic!("encapsulated packet {} refused: {e:?}", done.seq),
                }
            }
        }
    }
}

/// Decapsulates and checks what comes out; whether the packet passed
/// authentication, which moves the replay window (RFC 4303 section 3.4.3)
/// even when a later check (padding, inner header, selectors) refuses it.
fn check_decap(sa: &InboundSa, packet: &mut [u8]) -> bool {
    let len = packet.len();
    let d = match esp::decapsulate(sa, packet) {
        Ok(d) => d,
        Err(
            EspError::BadPadding
            | EspError::BadNextHeader
            | EspError::DummyPacket
            | EspError::MalformedInner
            | EspError::PolicyMismatch
            | EspError::LifetimeExpired,
        ) => return true,
        Err(_) => return false,
    };
    assert!(d.range.start >= 8 + IV_LEN && d.range.end <= len, "{d:?}");
    let inner = &packet[d.range.clone()];
    assert_eq!(IpVersion::of_packet(inner), Some(d.version));
    match d.version {
        IpVersion::V4 => {
            let ip = ipv4::Packet::new_checked(inner).expect("decapsulated IPv4 parses");
            assert_eq!(usize::from(ip.total_len()), inner.len());
        }
        IpVersion::V6 => {
            let ip = ipv6::Packet::new_checked(inner).expect("decapsulated IPv6 parses");
            assert_eq!(ip.total_len(), inner.len());
        }
    }
    assert!(FlowKey::parse(inner).is_ok() || d.version == IpVersion::V6);
    true
}

/// Equal as one's-complement numbers: 0x0000 and 0xffff are both zero,
/// and a sum may come out as either.
fn same_sum(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

/// The Internet checksum the slow, obvious way (RFC 1071 section 4.1).
fn reference_sum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u64::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The wire views over arbitrary bytes: every accessor after `new_checked`,
/// `Repr::parse` then `emit` then `parse` again, the checksum against a
/// reference implementation, the NAT-T classifier, the ESP trailer, the
/// selector's flow key, the ICMP "too big" parser, and the in-place editors
/// (finishing partial L4 checksums, MSS clamping), whose results must
/// still verify. The first byte says at which layer the bytes start.
pub fn wire_views(data: &[u8]) {
    let Some((&layer, bytes)) = data.split_first() else {
        return;
    };
    // Checksum: the fast sum equals the reference one, also when split
    // at an even offset.
    let fast = checksum::data(bytes);
    let slow = reference_sum(bytes);
    assert!(
        same_sum(fast, slow),
        "checksum {fast:#06x} vs reference {slow:#06x}"
    );
    let split = (usize::from(layer) * 2).min(bytes.len()) & !1;
    let parts = checksum::fold(checksum::add(
        checksum::add(0, &bytes[..split]),
        &bytes[split..],
    ));
    assert!(same_sum(parts, fast), "checksum over two pieces");

    let ip = match layer % 4 {
        0 => ethernet_frame(bytes),
        1 => Some(bytes),
        2 => {
            udp_datagram(bytes);
            None
        }
        _ => {
            esp_packet(bytes);
            None
        }
    };
    if let Some(ip) = ip {
        ip_packet(ip);
    }
}

fn ethernet_frame(bytes: &[u8]) -> Option<&[u8]> {
    let frame = ethernet::Frame::new_checked(bytes).ok()?;
    let repr = ethernet::Repr::parse(&frame);
    let mut out = [0u8; ethernet::HEADER_LEN];
    repr.emit(&mut out).expect("14 bytes hold a header");
    assert_eq!(out[..], bytes[..ethernet::HEADER_LEN]);
    assert_eq!(frame.payload().len(), bytes.len() - ethernet::HEADER_LEN);
    Some(&bytes[ethernet::HEADER_LEN..])
}

fn ip_packet(bytes: &[u8]) {
    let _ = pmtu::parse_too_big(bytes);
    let flow = FlowKey::parse(bytes);
    match IpVersion::of_packet(bytes) {
        Some(IpVersion::V4) => match ipv4::Packet::new_checked(bytes) {
            Ok(p) => {
                assert!(flow.is_ok(), "a checked IPv4 packet has a flow key");
                let hl = p.header_len();
                let total = usize::from(p.total_len());
                assert!(hl >= ipv4::MIN_HEADER_LEN && hl <= total && total <= bytes.len());
                assert_eq!(p.payload().len(), total - hl);
                assert_eq!(p.options().len(), hl - ipv4::MIN_HEADER_LEN);
                let _ = (p.frag_offset(), p.more_frags(), p.dont_frag(), p.ttl());
                if let Ok(repr) = ipv4::Repr::parse(&p) {
                    assert!(p.verify_checksum() && !p.is_fragment());
                    let mut out = vec![0u8; ipv4::MIN_HEADER_LEN + repr.payload_len];
                    repr.emit(&mut out).expect("room for the header");
                    let again = ipv4::Packet::new_checked(&out[..]).expect("emitted IPv4 parses");
                    assert_eq!(ipv4::Repr::parse(&again), Ok(repr));
                }
                editors(&bytes[..total]);
            }
            Err(WireError::Truncated | WireError::BadHeaderLength | WireError::BadLength) => {}
            Err(e) => panic!("unexpected IPv4 error {e:?}"),
        },
        Some(IpVersion::V6) => match ipv6::Packet::new_checked(bytes) {
            Ok(p) => {
                let total = p.total_len();
                assert!(total <= bytes.len() && total >= ipv6::HEADER_LEN);
                assert_eq!(p.payload().len(), total - ipv6::HEADER_LEN);
                let repr = ipv6::Repr::parse(&p).expect("a checked IPv6 header parses");
                let mut out = vec![0u8; total];
                repr.emit(&mut out).expect("room for the header");
                assert_eq!(out[..ipv6::HEADER_LEN], bytes[..ipv6::HEADER_LEN]);
                editors(&bytes[..total]);
            }
            Err(WireError::Truncated | WireError::BadLength) => {}
            Err(e) => panic!("unexpected IPv6 error {e:?}"),
        },
        None => assert!(flow.is_err()),
    }
}

/// The in-place editors on a copy: a finished partial checksum verifies;
/// an MSS clamp keeps a valid checksum valid (RFC 1624 update).
fn editors(packet: &[u8]) {
    let mut copy = packet.to_vec();
    let before = l4_checksum::verifies(&copy);
    match l4_checksum::finish(&mut copy) {
        l4_checksum::Outcome::Finished => {
            assert_eq!(
                l4_checksum::verifies(&copy),
                Some(true),
                "a finished checksum verifies"
            );
        }
        _ => assert_eq!(copy, packet, "only a finished checksum changes the packet"),
    }
    let mut copy = packet.to_vec();
    let inner_mtu = u32::from(packet.get(2).copied().unwrap_or(0)) * 8;
    if mss::clamp(&mut copy, inner_mtu) && before == Some(true) {
        assert_eq!(
            l4_checksum::verifies(&copy),
            Some(true),
            "clamping the MSS keeps the checksum valid"
        );
    }
}

fn udp_datagram(bytes: &[u8]) {
    let _ = udp::classify_nat_t(bytes);
    let Ok(p) = udp::Packet::new_checked(bytes) else {
        return;
    };
    let len = usize::from(p.len());
    assert!(len >= udp::HEADER_LEN && len <= bytes.len());
    assert_eq!(p.payload().len(), len - udp::HEADER_LEN);
    let _ = udp::classify_nat_t(p.payload());
    let src = Ipv4Addr::new(198, 18, 0, 1);
    let dst = Ipv4Addr::new(198, 18, 0, 2);
    let mut copy = bytes[..len].to_vec();
    let mut m = udp::Packet::new_unchecked(&mut copy[..]);
    m.fill_checksum_v4(src, dst);
    assert!(udp::Packet::new_checked(&copy[..])
        .expect("still valid")
        .verify_checksum_v4(src, dst));
    let (s6, d6) = (
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    );
    let mut m = udp::Packet::new_unchecked(&mut copy[..]);
    m.fill_checksum_v6(&s6, &d6);
    assert!(udp::Packet::new_checked(&copy[..])
        .expect("still valid")
        .verify_checksum_v6(&s6, &d6));
    if let Ok(repr) = udp::Repr::parse(&p) {
        let mut out = vec![0u8; udp::HEADER_LEN + repr.payload_len];
        repr.emit(&mut out).expect("room for the header");
        let again = udp::Packet::new_checked(&out[..]).expect("emitted UDP parses");
        assert_eq!(udp::Repr::parse(&again), Ok(repr));
    }
}

fn esp_packet(bytes: &[u8]) {
    if let Ok(p) = wire::esp::Packet::new_checked(bytes) {
        let repr = wire::esp::Repr::parse(&p).expect("a checked ESP header parses");
        let mut out = [0u8; wire::esp::HEADER_LEN];
        repr.emit(&mut out).expect("room for the header");
        assert_eq!(out[..], bytes[..wire::esp::HEADER_LEN]);
        assert_eq!(p.payload().len(), bytes.len() - wire::esp::HEADER_LEN);
    }
    if let Ok(t) = wire::esp::parse_trailer(bytes) {
        assert_eq!(
            t.payload_len + usize::from(t.pad_len) + wire::esp::TRAILER_LEN,
            bytes.len()
        );
    }
}

/// The outer reassembly table under a program of fragment arrivals and
/// clock steps, and the gateway's own fragmenter against it. Operations:
///
/// - raw bytes inserted as a packet;
/// - an IPv4 or IPv6 fragment built from chosen fields (ident, offset,
///   more-fragments, length, one of two sources) with a valid checksum, so
///   the table logic (overlaps, ends, limits) is reached rather than the
///   header checks;
/// - the clock moves on (and `expire` runs);
/// - an outer packet of chosen length cut by `fragment::first_in_place`
///   and `Plan::write` to a chosen MTU, its pieces inserted in a chosen
///   order into a fresh table: the last must give back the original.
///
/// The table never holds more datagrams than slots, and what it returns is
/// a whole, non-fragment IP packet no larger than its limit.
pub fn outer_reassembly(data: &[u8]) {
    let mut input = Input::new(data);
    let limits = ReassemblyLimits {
        slots: usize::from(input.u8() % 8) + 1,
        max_datagram: 1500 + usize::from(input.u16() % 4096),
        timeout: Duration::from_millis(500),
    };
    let mut table = Reassembly::new(limits);
    let start = Instant::now();
    let mut now = start;
    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        match input.u8() % 5 {
            0 => {
                let packet = input.chunk();
                check_reassembled(table.insert(now, packet), &limits);
            }
            1 => {
                let packet = crafted_v4_fragment(&mut input);
                check_reassembled(table.insert(now, &packet), &limits);
            }
            2 => {
                let packet = crafted_v6_fragment(&mut input);
                check_reassembled(table.insert(now, &packet), &limits);
            }
            3 => {
                now += Duration::from_millis(u64::from(input.u16()));
                table.expire(now);
                let _ = table.take_timeouts();
            }
            _ => fragmenter_round_trip(&mut input, now),
        }
        assert!(table.in_use() <= limits.slots);
    }
}

fn check_reassembled(
    result: Result<Option<&[u8]>, xdpsec_dataplane::reassembly::FragDrop>,
    limits: &ReassemblyLimits,
) {
    let Ok(Some(datagram)) = result else {
        return;
    };
    assert!(datagram.len() <= limits.max_datagram);
    match IpVersion::of_packet(datagram) {
        Some(IpVersion::V4) => {
            let ip = ipv4::Packet::new_checked(datagram).expect("reassembled IPv4 parses");
            assert!(!ip.is_fragment() && ip.verify_checksum());
            assert_eq!(usize::from(ip.total_len()), datagram.len());
        }
        Some(IpVersion::V6) => {
            let ip = ipv6::Packet::new_checked(datagram).expect("reassembled IPv6 parses");
            assert_eq!(ip.total_len(), datagram.len());
            // Its next header is whatever the Fragment header named (even
            // another Fragment header): the pipeline refuses what is not
            // ESP after reassembly.
        }
        None => panic!("reassembled something that is not IP"),
    }
}

fn crafted_v4_fragment(input: &mut Input<'_>) -> Vec<u8> {
    let ident = u16::from(input.u8() % 4);
    let offset_units = input.u16() % 512;
    let more = input.bool();
    let len = usize::from(input.u16() % 2048);
    let options = usize::from(input.u8() % 11) * 4;
    let src = if input.bool() { 2 } else { 3 };
    let header_len = ipv4::MIN_HEADER_LEN + options;
    let mut p = vec![0u8; header_len + len];
    let repr = ipv4::Repr {
        src: Ipv4Addr::new(198, 18, 0, src),
        dst: Ipv4Addr::new(198, 18, 0, 1),
        protocol: ip_proto::ESP,
        payload_len: len,
        ttl: 64,
        dscp_ecn: 0,
        ident,
        dont_frag: false,
    };
    if repr.emit(&mut p).is_err() {
        return p;
    }
    let total = (header_len + len) as u16;
    let mut ip = ipv4::Packet::new_unchecked(&mut p[..]);
    ip.set_version_and_header_len(header_len);
    ip.set_total_len(total);
    ip.set_flags_frag(offset_units | if more { ipv4::FLAG_MF } else { 0 });
    for (i, b) in p[header_len..].iter_mut().enumerate() {
        *b = (usize::from(offset_units) * 8 + i) as u8;
    }
    ipv4::Packet::new_unchecked(&mut p[..header_len]).fill_checksum();
    p
}

fn crafted_v6_fragment(input: &mut Input<'_>) -> Vec<u8> {
    let ident = u32::from(input.u8() % 4);
    let offset_units = input.u16() % 512;
    let more = input.bool();
    let len = usize::from(input.u16() % 2048);
    let next = if input.bool() {
        ip_proto::ESP
    } else {
        input.u8()
    };
    let src = Ipv6Addr::new(
        0xfd00,
        0x18,
        0,
        0,
        0,
        0,
        0,
        if input.bool() { 2 } else { 3 },
    );
    let mut p = vec![0u8; ipv6::HEADER_LEN + 8 + len];
    let repr = ipv6::Repr {
        src,
        dst: Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1),
        next_header: ip_proto::IPV6_FRAGMENT,
        payload_len: 8 + len,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    };
    if repr.emit(&mut p).is_err() {
        return p;
    }
    let word = (offset_units << 3) | u16::from(more);
    p[40] = next;
    p[42..44].copy_from_slice(&word.to_be_bytes());
    p[44..48].copy_from_slice(&ident.to_be_bytes());
    for (i, b) in p[48..].iter_mut().enumerate() {
        *b = (usize::from(offset_units) * 8 + i) as u8;
    }
    p
}

fn fragmenter_round_trip(input: &mut Input<'_>, now: Instant) {
    let v6 = input.bool();
    let header_len = if v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::MIN_HEADER_LEN
    };
    let len = header_len + 1 + usize::from(input.u16() % 4000);
    let mtu = 68 + usize::from(input.u16() % 1500);
    let order = input.u64();
    // Room in front: an IPv6 first fragment grows 8 bytes to the front.
    let at = 8;
    let mut buf = vec![0u8; at + len];
    let ip = at..at + len;
    if v6 {
        let repr = ipv6::Repr {
            src: Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 9),
            dst: Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1),
            next_header: ip_proto::ESP,
            payload_len: len - header_len,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        repr.emit(&mut buf[ip.clone()]).expect("room");
    } else {
        let repr = ipv4::Repr {
            src: Ipv4Addr::new(198, 18, 0, 9),
            dst: Ipv4Addr::new(198, 18, 0, 1),
            protocol: ip_proto::ESP,
            payload_len: len - header_len,
            ttl: 64,
            dscp_ecn: 0,
            ident: 0x4242,
            dont_frag: false,
        };
        repr.emit(&mut buf[ip.clone()]).expect("room");
    }
    for (i, b) in buf[ip.start + header_len..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let original = buf[ip.clone()].to_vec();
    let Some((first, plan)) = fragment::first_in_place(&mut buf, ip, mtu, 7) else {
        return;
    };
    assert!(first.len() <= mtu, "first fragment fits the MTU");
    let mut pieces = vec![buf[first].to_vec()];
    for i in 1..plan.count() {
        let mut out = vec![0u8; mtu + 8];
        let n = plan.write(i, &buf, &mut out).expect("a planned fragment");
        assert!(n <= mtu, "fragment {i} fits the MTU");
        pieces.push(out[..n].to_vec());
    }
    assert!(plan.write(plan.count(), &buf, &mut [0u8; 2048]).is_none());
    // A chosen order: a rotation, possibly reversed.
    let n = pieces.len();
    pieces.rotate_left((order as usize) % n);
    if order >> 63 == 1 {
        pieces.reverse();
    }
    let limits = ReassemblyLimits {
        slots: 2,
        max_datagram: 8192,
        timeout: Duration::from_secs(1),
    };
    let mut table = Reassembly::new(limits);
    let last = n - 1;
    for (i, piece) in pieces.iter().enumerate() {
        let result = table.insert(now, piece);
        if n > MAX_FRAGMENTS {
            // Too many pieces: the datagram is dropped, never completed.
            assert!(!matches!(result, Ok(Some(_))));
            continue;
        }
        match result {
            Ok(None) if i < last => {}
            Ok(Some(done)) if i == last => {
                assert_eq!(done.len(), original.len(), "reassembled length");
                assert_eq!(done[header_len..], original[header_len..], "payload");
                assert_eq!(done[..6], original[..6], "header start");
            }
            other => panic!("piece {i} of {n}: {other:?}"),
        }
    }
}
