//! Traffic selectors: narrowing (RFC 7296 section 2.9) and the conversion
//! of IKE's address ranges to the data plane's prefixes.

use std::net::IpAddr;

use xdpsec_api::{Prefix, TrafficSelector as ApiSelector};

use crate::wire::{AddressRange, TrafficSelector};

fn bounds(r: &AddressRange) -> (u128, u128, bool) {
    match r {
        AddressRange::V4(a, b) => (u32::from(*a).into(), u32::from(*b).into(), true),
        AddressRange::V6(a, b) => (u128::from(*a), u128::from(*b), false),
    }
}

fn range(lo: u128, hi: u128, v4: bool) -> AddressRange {
    if v4 {
        // lo and hi come from IPv4 bounds, so they fit 32 bits.
        AddressRange::V4(
            u32::try_from(lo).unwrap_or(u32::MAX).into(),
            u32::try_from(hi).unwrap_or(u32::MAX).into(),
        )
    } else {
        AddressRange::V6(lo.into(), hi.into())
    }
}

/// The intersection of two selectors, if not empty: same family,
/// overlapping addresses and ports, compatible protocols (0 is any).
pub(crate) fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    let (alo, ahi, a4) = bounds(&a.range);
    let (blo, bhi, b4) = bounds(&b.range);
    if a4 != b4 || alo > ahi || blo > bhi {
        return None;
    }
    let (lo, hi) = (alo.max(blo), ahi.min(bhi));
    if lo > hi {
        return None;
    }
    let ip_protocol = match (a.ip_protocol, b.ip_protocol) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let (start_port, end_port) = (a.start_port.max(b.start_port), a.end_port.min(b.end_port));
    if start_port > end_port {
        return None;
    }
    Some(TrafficSelector {
        ip_protocol,
        start_port,
        end_port,
        range: range(lo, hi, a4),
    })
}

/// Narrows the peer's proposed selectors to what `ours` allows: every
/// non-empty pairwise intersection, without duplicates. Empty means
/// TS_UNACCEPTABLE.
pub(crate) fn narrow(theirs: &[TrafficSelector], ours: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for t in theirs {
        for o in ours {
            if let Some(i) = intersect(t, o) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// Whether every selector of `got` lies inside one of `offered` (what an
/// initiator checks in the responder's narrowed answer).
pub(crate) fn within(got: &[TrafficSelector], offered: &[TrafficSelector]) -> bool {
    !got.is_empty()
        && got
            .iter()
            .all(|g| offered.iter().any(|o| intersect(g, o).as_ref() == Some(g)))
}

/// The smallest set of prefixes covering `lo..=hi` exactly.
fn prefixes(lo: u128, hi: u128, v4: bool) -> Vec<Prefix> {
    let bits: u32 = if v4 { 32 } else { 128 };
    let mut out = Vec::new();
    let mut cur = lo;
    loop {
        // The largest aligned block starting at cur that stays within hi.
        let mut size_log = if cur == 0 {
            bits
        } else {
            cur.trailing_zeros().min(bits)
        };
        while size_log > 0 {
            let last = if size_log >= 128 {
                u128::MAX
            } else {
                cur.saturating_add((1u128 << size_log) - 1)
            };
            if last <= hi {
                break;
            }
            size_log -= 1;
        }
        let addr: IpAddr = if v4 {
            IpAddr::V4(u32::try_from(cur).unwrap_or(0).into())
        } else {
            IpAddr::V6(cur.into())
        };
        let len = u8::try_from(bits - size_log).unwrap_or(0);
        if let Ok(p) = Prefix::new(addr, len) {
            out.push(p);
        }
        let last = if size_log >= 128 {
            u128::MAX
        } else {
            cur + ((1u128 << size_log) - 1)
        };
        if last >= hi {
            return out;
        }
        cur = last + 1;
    }
}

/// The data plane's selectors for a Child SA: every (local, remote) pair,
/// each range split into prefixes. Port ranges that are not "any" are kept
/// when a protocol is given; the data plane matches them.
pub(crate) fn to_api(local: &[TrafficSelector], remote: &[TrafficSelector]) -> Vec<ApiSelector> {
    let mut out = Vec::new();
    for l in local {
        for r in remote {
            let (llo, lhi, l4) = bounds(&l.range);
            let (rlo, rhi, r4) = bounds(&r.range);
            if l4 != r4 {
                continue;
            }
            let protocol = match (l.ip_protocol, r.ip_protocol) {
                (0, p) | (p, 0) => p,
                (p, q) if p == q => p,
                _ => continue,
            };
            let ports = |s: &TrafficSelector| {
                if (s.start_port, s.end_port) == (0, u16::MAX)
                    || !xdpsec_api::sa::IpProtocol(protocol).has_ports()
                {
                    None
                } else {
                    xdpsec_api::sa::PortRange::new(s.start_port, s.end_port).ok()
                }
            };
            for lp in prefixes(llo, lhi, l4) {
                for rp in prefixes(rlo, rhi, r4) {
                    let sel = ApiSelector {
                        local: lp,
                        remote: rp,
                        protocol: (protocol != 0).then_some(xdpsec_api::sa::IpProtocol(protocol)),
                        local_ports: ports(l),
                        remote_ports: ports(r),
                    };
                    if !out.contains(&sel) {
                        out.push(sel);
                    }
                }
            }
        }
    }
    out
}

/// `10.0.0.0-10.0.0.255` style text, with protocol and ports when set.
pub(crate) fn display(ts: &TrafficSelector) -> String {
    let addrs = match ts.range {
        AddressRange::V4(a, b) => {
            let (lo, hi, v4) = bounds(&ts.range);
            match prefixes(lo, hi, v4).as_slice() {
                [p] => p.to_string(),
                _ => format!("{a}-{b}"),
            }
        }
        AddressRange::V6(a, b) => {
            let (lo, hi, v4) = bounds(&ts.range);
            match prefixes(lo, hi, v4).as_slice() {
                [p] => p.to_string(),
                _ => format!("{a}-{b}"),
            }
        }
    };
    if ts.ip_protocol == 0 && (ts.start_port, ts.end_port) == (0, u16::MAX) {
        addrs
    } else if ts.start_port == ts.end_port {
        format!("{addrs}[{}/{}]", ts.ip_protocol, ts.start_port)
    } else {
        format!(
            "{addrs}[{}/{}-{}]",
            ts.ip_protocol, ts.start_port, ts.end_port
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span(p: &Prefix) -> (u128, u128) {
        let (lo, bits) = match p.addr() {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
            IpAddr::V6(a) => (u128::from(a), 128u32),
        };
        let host = bits - u32::from(p.prefix_len());
        let size = if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        (lo, lo + size)
    }

    proptest! {
        #[test]
        fn prefixes_cover_a_range_exactly(a in any::<u32>(), b in any::<u32>()) {
            let (lo, hi) = (u128::from(a.min(b)), u128::from(a.max(b)));
            let ps = prefixes(lo, hi, true);
            prop_assert!(!ps.is_empty() && ps.len() <= 62);
            let mut next = lo;
            for p in &ps {
                let (s, e) = span(p);
                prop_assert_eq!(s, next, "gap or overlap at {}", p);
                next = e + 1;
            }
            prop_assert_eq!(next, hi + 1);
        }
    }

    #[test]
    fn narrowing_and_within() {
        let r = |a: &str, b: &str| AddressRange::V4(a.parse().unwrap(), b.parse().unwrap());
        let wide = TrafficSelector::any(r("10.0.0.0", "10.255.255.255"));
        let mut narrow_tcp = TrafficSelector::any(r("10.1.0.0", "10.1.255.255"));
        narrow_tcp.ip_protocol = 6;
        narrow_tcp.start_port = 443;
        narrow_tcp.end_port = 443;
        assert_eq!(intersect(&wide, &narrow_tcp), Some(narrow_tcp));
        assert!(within(&[narrow_tcp], &[wide]));
        assert!(!within(&[wide], &[narrow_tcp]));
        let other = TrafficSelector::any(r("192.168.0.0", "192.168.0.255"));
        assert_eq!(narrow(&[other], &[wide]), vec![]);
        let v6 = TrafficSelector::any(AddressRange::V6(
            "fd00::".parse().unwrap(),
            "fd00::ff".parse().unwrap(),
        ));
        assert_eq!(intersect(&wide, &v6), None);
        let mut udp = wide;
        udp.ip_protocol = 17;
        assert_eq!(intersect(&udp, &narrow_tcp), None);
        assert_eq!(display(&narrow_tcp), "10.1.0.0/16[6/443]");
        assert_eq!(
            display(&TrafficSelector::any(r("10.0.0.5", "10.0.0.20"))),
            "10.0.0.5-10.0.0.20"
        );
    }
}
