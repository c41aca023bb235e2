//! The XDP program's decision logic (`ebpf/steer/src/classify.rs` and
//! `decide.rs`, compiled here for the host as the program's own unit tests
//! do) with its maps replaced by tables the input chooses.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use xdpsec_dataplane::wire::{ethernet, ip_proto, ipv4, ipv6, udp};
use xdpsec_ebpf_common::{xsk_index, FragKey, IfaceConfig, Verdict, XSKS_LEN};

use crate::classify::{parse, Addr};
use crate::decide::{decide, Tables};
use crate::input::Input;

const IFINDEX: u32 = 7;
const LOCAL_V4: [u8; 4] = [198, 18, 0, 1];
const LOCAL_V6: [u8; 16] = [0xfd, 0, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// The maps as the input sets them up, and what the program did to them.
struct FakeMaps {
    iface: Option<IfaceConfig>,
    /// Whether every destination counts as local (else only LOCAL_V4/V6).
    all_local: bool,
    /// Protected: every destination, or those whose first byte is 10/0xfd.
    all_protected: bool,
    /// Whether XSKS has a socket at every index (else at none).
    sockets: bool,
    redirected: Cell<Option<u32>>,
    redirect_calls: Cell<u32>,
    udp_frags: RefCell<HashMap<FragKey, u32>>,
}

impl Tables for FakeMaps {
    fn iface(&self, ifindex: u32) -> Option<IfaceConfig> {
        if ifindex == IFINDEX {
            self.iface
        } else {
            None
        }
    }

    fn is_local(&self, addr: &Addr) -> bool {
        self.all_local
            || match addr {
                Addr::V4(a) => *a == LOCAL_V4,
                Addr::V6(a) => *a == LOCAL_V6,
            }
    }

    fn is_protected(&self, addr: &Addr) -> bool {
        self.all_protected
            || match addr {
                Addr::V4(a) => a[0] == 10,
                Addr::V6(a) => a[0] == 0xfd && a[1] == 0x01,
            }
    }

    fn redirect(&self, index: u32) -> bool {
        assert!(index < XSKS_LEN, "XSKS index {index} beyond the map");
        self.redirect_calls.set(self.redirect_calls.get() + 1);
        if self.sockets {
            self.redirected.set(Some(index));
        }
        self.sockets
    }

    fn udp_fragments(&self, key: &FragKey) -> Option<u32> {
        self.udp_frags.borrow().get(key).copied()
    }

    fn set_udp_fragments(&self, key: &FragKey, to: u32) {
        self.udp_frags.borrow_mut().insert(*key, to);
    }
}

/// The classifier on frames of the input's choosing: a role and slot for
/// the interface, which addresses are local or protected, whether sockets
/// exist, then up to 16 frames received on chosen queues (the UDP
/// fragment map carries over from frame to frame). For every frame:
///
/// - a redirect verdict is given iff a redirect was asked for and worked,
///   at `slot * MAX_QUEUES + queue`; `redirect_failed` iff it was asked
///   for and did not;
/// - an interface without a role passes everything as unknown;
/// - the data plane's own wire views agree: an untagged, well-formed,
///   non-fragment IPv4/IPv6 packet of protocol 50 to a local address on an
///   outside interface is steered, and one whose UDP goes to port 500 is
///   passed as IKE.
pub fn steer_classify(data: &[u8]) {
    let mut input = Input::new(data);
    let role = input.u8();
    let slot = u32::from(input.u8() % 10);
    let flags = input.u8();
    let maps = FakeMaps {
        iface: (role & 4 == 0).then_some(IfaceConfig {
            role: u32::from(role & 3),
            slot,
        }),
        all_local: flags & 1 != 0,
        all_protected: flags & 2 != 0,
        sockets: flags & 4 == 0,
        redirected: Cell::new(None),
        redirect_calls: Cell::new(0),
        udp_frags: RefCell::new(HashMap::new()),
    };
    for _ in 0..16 {
        if input.is_empty() {
            break;
        }
        let queue = u32::from(input.u8() % 70);
        let frame = input.chunk();
        maps.redirected.set(None);
        maps.redirect_calls.set(0);
        let verdict = decide(frame, &maps, IFINDEX, queue);
        let called = maps.redirect_calls.get() > 0;
        let index_ok = xsk_index(slot, queue).is_some();
        if verdict.is_redirect() {
            assert_eq!(maps.redirected.get(), xsk_index(slot, queue), "{verdict:?}");
        } else if verdict == Verdict::RedirectFailed {
            assert!(maps.redirected.get().is_none());
            assert!(!maps.sockets || !index_ok);
        } else {
            assert!(!called, "{verdict:?} after a redirect");
        }
        let Some(iface) = maps.iface.filter(|c| c.is_inside() || c.is_outside()) else {
            assert_eq!(verdict, Verdict::UnknownIfacePass);
            continue;
        };
        if iface.is_outside() && !iface.is_inside() {
            agree_with_wire_views(frame, &maps, verdict);
        }
        // Parsing is deterministic and does not depend on the maps.
        assert_eq!(parse(frame), parse(frame));
    }
}

fn agree_with_wire_views(frame: &[u8], maps: &FakeMaps, verdict: Verdict) {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return;
    };
    let l3 = &frame[ethernet::HEADER_LEN..];
    let (protocol, dst_local, payload) = match eth.ethertype() {
        ethernet::ethertype::IPV4 => {
            let Ok(ip) = ipv4::Packet::new_checked(l3) else {
                return;
            };
            if ip.is_fragment() {
                return;
            }
            let local = maps.all_local || ip.dst_addr() == Ipv4Addr::from(LOCAL_V4);
            let payload = &l3[ip.header_len()..usize::from(ip.total_len())];
            (ip.protocol(), local, payload)
        }
        ethernet::ethertype::IPV6 => {
            let Ok(ip) = ipv6::Packet::new_checked(l3) else {
                return;
            };
            let local = maps.all_local || ip.dst_addr() == Ipv6Addr::from(LOCAL_V6);
            (
                ip.next_header(),
                local,
                &l3[ipv6::HEADER_LEN..ip.total_len()],
            )
        }
        _ => return,
    };
    let redirect_or_failed = |v: Verdict| v.is_redirect() || v == Verdict::RedirectFailed;
    match protocol {
        ip_proto::ESP if dst_local && payload.len() >= 8 => {
            assert!(
                redirect_or_failed(verdict),
                "ESP to a local address passed as {verdict:?}"
            );
        }
        ip_proto::UDP => {
            if let Ok(u) = udp::Packet::new_checked(payload) {
                if u.dst_port() == 500 {
                    assert_eq!(verdict, Verdict::IkePass);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_of_plain_frames() {
        // An ESP packet to the local address on an outside interface with
        // sockets: redirected.
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let mut ip = vec![0x45, 0, 0, 30, 0, 0, 0, 0, 64, 50, 0, 0];
        ip.extend_from_slice(&[198, 18, 0, 2]);
        ip.extend_from_slice(&LOCAL_V4);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&[0, 0, 0x10, 1, 0, 0, 0, 1, 0xaa, 0xbb]);
        let maps = FakeMaps {
            iface: Some(IfaceConfig { role: 2, slot: 1 }),
            all_local: false,
            all_protected: false,
            sockets: true,
            redirected: Cell::new(None),
            redirect_calls: Cell::new(0),
            udp_frags: RefCell::new(HashMap::new()),
        };
        assert_eq!(
            decide(&frame[..], &maps, IFINDEX, 3),
            Verdict::EspRedirected
        );
        assert_eq!(maps.redirected.get(), xsk_index(1, 3));
    }
}
