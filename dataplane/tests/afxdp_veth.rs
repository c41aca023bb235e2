//! AF_XDP sockets on veth pairs between network namespaces (needs root).
//!
//! TX: frames crafted in a UMEM and sent from an XSK bound in one namespace
//! arrive, byte for byte, at a UDP socket in the peer namespace, and every
//! frame comes back through the completion ring. Also: one UMEM shared by
//! sockets on two interfaces, the errors for a missing interface, a busy
//! queue, zero-copy on veth and a foreign UMEM, frame headroom arithmetic,
//! and an idle wait in poll(); the automatic bind falling back to copy mode
//! on veth and saying why, busy-polling socket options, and a UMEM placed
//! on the NUMA node of a CPU.
//!
//! RX: the `steer` XDP program, attached natively to one end with role
//! outside and a local address, redirects ESP-in-UDP datagrams that a plain
//! UDP socket in the peer namespace sends into an XSK bound on queue 0,
//! where they are read off the RX ring byte for byte; IKE datagrams (the
//! zero non-ESP marker on 4500, and port 500) still reach ordinary UDP
//! sockets in the XDP namespace (XDP_PASS).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xdpsec_dataplane::afxdp::{
    cpu_numa_node, ifindex, BindMode, BusyPoll, FrameBatch, NoRoom, PollSet, SocketConfig, Umem,
    UmemConfig, XskError, XskSocket, MIN_HEADROOM, XDP_PACKET_HEADROOM,
};
use xdpsec_dataplane::steer::{AttachMode, Role, Steer, Verdict};
use xdpsec_dataplane::wire::checksum;
use xdpsec_testbed::{LinkInfo, Netns, Testbed};

const SRC_PORT: u16 = 40_000;

fn testbed() -> Testbed {
    Testbed::new().unwrap_or_else(|e| panic!("{e}"))
}

/// Two namespaces `a` and `b` joined by veth `a0`-`b0`, on 198.18.2.0/30.
struct Pair {
    tb: Testbed,
    a: Netns,
    b: Netns,
    a0: LinkInfo,
    b0: LinkInfo,
}

fn pair() -> Pair {
    let tb = testbed();
    let a = tb.add_netns("a").unwrap();
    let b = tb.add_netns("b").unwrap();
    let (a0, b0) = tb.add_veth(&a, "a0", &b, "b0").unwrap();
    a.add_addr("a0", "198.18.2.1".parse().unwrap(), 30).unwrap();
    b.add_addr("b0", "198.18.2.2".parse().unwrap(), 30).unwrap();
    Pair { tb, a, b, a0, b0 }
}

/// Ethernet + IPv4 + UDP (checksum 0: none) around `payload`.
fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let c = checksum::finish(checksum::add(0, &ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn payload(seq: usize) -> Vec<u8> {
    // A recognisable prefix and a sequence-dependent body of varying length.
    let mut p = format!("xdpsec-afxdp {seq:05} ").into_bytes();
    p.extend((0..(seq % 200)).map(|i| (i as u8).wrapping_mul(31) ^ seq as u8));
    p
}

/// A UDP socket bound inside `ns`, and a thread collecting up to `n`
/// datagrams from it for at most `limit`, into the returned list.
fn udp_sink(ns: &Netns, addr: &str, n: usize, limit: Duration) -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let sock = ns
        .run_in(|| UdpSocket::bind(addr))
        .unwrap()
        .expect("bind the UDP sink");
    let port = sock.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let out = got.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 2048];
        while out.lock().unwrap().len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).unwrap();
            match sock.recv_from(&mut buf) {
                Ok((len, from)) => {
                    assert_eq!(from.to_string(), format!("198.18.2.1:{SRC_PORT}"));
                    out.lock().unwrap().push(buf[..len].to_vec());
                }
                Err(_) => break,
            }
        }
    });
    (port, got)
}

/// Waits (bounded) until `list` has `n` entries; its length then.
fn wait_for_len(list: &Mutex<Vec<Vec<u8>>>, n: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let len = list.lock().unwrap().len();
        if len >= n || Instant::now() >= deadline {
            return len;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends every frame in `frames` through `sock`, a batch at a time, then
/// waits (bounded) until all are transmitted and reclaimed.
fn transmit_all(sock: &mut XskSocket, umem: &mut Umem, frames: &[Vec<u8>]) {
    let mut batch = FrameBatch::new();
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while next < frames.len() || !batch.is_empty() {
        assert!(Instant::now() < deadline, "TX stalled: {sock:?}");
        while next < frames.len() && batch.remaining() > 0 {
            let Some(mut frame) = umem.alloc() else {
                break;
            };
            assert!(frame.is_empty());
            umem.set_len(&mut frame, frames[next].len()).unwrap();
            umem.data_mut(&mut frame).copy_from_slice(&frames[next]);
            batch.push(frame).unwrap();
            next += 1;
        }
        sock.send(umem, &mut batch).unwrap();
        if umem.free_frames() == 0 {
            sock.reclaim(umem);
        }
    }
    while sock.tx_pending() > 0 || sock.tx_in_flight() > 0 {
        assert!(Instant::now() < deadline, "TX did not drain: {sock:?}");
        sock.flush().unwrap();
        sock.reclaim(umem);
        if sock.tx_in_flight() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn xsk_transmits_frames_that_arrive_in_the_peer_namespace() {
    let p = pair();
    const N: usize = 300;
    let frames: Vec<Vec<u8>> = (0..N).map(payload).collect();
    let (port, sink) = udp_sink(&p.b, "198.18.2.2:0", N, Duration::from_secs(10));
    let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 1), SRC_PORT);
    let dst = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 2), port);
    let wire: Vec<Vec<u8>> = frames
        .iter()
        .map(|pl| udp_frame(p.a0.mac, p.b0.mac, src, dst, pl))
        .collect();

    let config = UmemConfig {
        frame_count: 256,
        fill_size: 128,
        comp_size: 128,
        ..UmemConfig::default()
    };
    // The sockets are made inside `a`; they stay there whichever thread uses them.
    let (mut umem, mut sock) =
        p.a.run_in(|| {
            let mut umem = Umem::new(config).expect("UMEM");
            let index = ifindex("a0").expect("a0 exists in a");
            let sock = XskSocket::bind(
                &mut umem,
                index,
                0,
                &SocketConfig {
                    rx_size: 128,
                    tx_size: 128,
                    fill_target: 32,
                    ..SocketConfig::default()
                },
            )
            .expect("bind to a0 queue 0");
            (umem, sock)
        })
        .unwrap();
    assert_eq!(sock.ifindex(), p.a0.ifindex);
    assert_eq!(sock.ifname(), "a0");
    assert!(!sock.is_zero_copy(), "veth has copy mode only");
    assert!(sock.uses_need_wakeup());
    assert_eq!(sock.frames_in_fill(), 32);
    let free_before = umem.free_frames();
    assert_eq!(free_before, 256 - 32);

    let a_before = p.a.link_stats("a0").unwrap();
    let b_before = p.b.link_stats("b0").unwrap();
    // 300 frames through a 256-frame UMEM: frames must be reclaimed and
    // reused. In bursts of 60 that the receiving UDP socket's buffer holds
    // even when its reader thread lags on a busy machine.
    let mut sent = 0;
    for burst in wire.chunks(60) {
        transmit_all(&mut sock, &mut umem, burst);
        sent += burst.len();
        let got = wait_for_len(&sink, sent, Duration::from_secs(5));
        assert_eq!(got, sent, "datagrams received after {sent} sent");
    }

    let stats = sock.stats();
    assert_eq!(stats.tx_frames, N as u64);
    assert_eq!(stats.tx_completed, N as u64);
    assert_eq!(stats.empty_tx_frames, 0);
    // Copy mode: TX runs only when woken, and the ring says so.
    assert!(stats.tx_wakeups > 0);
    assert!(
        stats.tx_wakeups <= 4 * (N as u64).div_ceil(32) + 10,
        "a wake-up per batch, not per frame: {stats:?}"
    );
    assert_eq!(sock.kernel_stats().unwrap().tx_invalid_descs, 0);
    // Every frame is back: nothing leaked.
    assert_eq!(umem.free_frames(), free_before);

    // Every datagram arrived, byte for byte, in order (one veth, one queue).
    let got = sink.lock().unwrap();
    assert_eq!(got.len(), N, "datagrams received");
    for (seq, (g, want)) in got.iter().zip(&frames).enumerate() {
        assert_eq!(g, want, "datagram {seq}");
    }
    // The interface counters agree (a few extra packets, e.g. IPv6 MLD, are fine).
    let a_after = p.a.link_stats("a0").unwrap();
    let b_after = p.b.link_stats("b0").unwrap();
    let tx = a_after.tx_packets - a_before.tx_packets;
    let rx = b_after.rx_packets - b_before.rx_packets;
    assert!((N as u64..N as u64 + 10).contains(&tx), "a0 sent {tx}");
    assert!((N as u64..N as u64 + 10).contains(&rx), "b0 received {rx}");
    let wire_bytes: u64 = wire.iter().map(|f| f.len() as u64).sum();
    assert!(b_after.rx_bytes - b_before.rx_bytes >= wire_bytes);
    drop(p.tb);
}

#[test]
fn one_umem_serves_sockets_on_two_interfaces() {
    let tb = testbed();
    let a = tb.add_netns("a").unwrap();
    let b = tb.add_netns("b").unwrap();
    let (a0, b0) = tb.add_veth(&a, "a0", &b, "b0").unwrap();
    let (a1, b1) = tb.add_veth(&a, "a1", &b, "b1").unwrap();
    a.add_addr("a0", "198.18.2.1".parse().unwrap(), 30).unwrap();
    b.add_addr("b0", "198.18.2.2".parse().unwrap(), 30).unwrap();
    a.add_addr("a1", "198.18.2.5".parse().unwrap(), 30).unwrap();
    b.add_addr("b1", "198.18.2.6".parse().unwrap(), 30).unwrap();

    let sink0 = b
        .run_in(|| UdpSocket::bind("198.18.2.2:0"))
        .unwrap()
        .unwrap();
    let sink1 = b
        .run_in(|| UdpSocket::bind("198.18.2.6:0"))
        .unwrap()
        .unwrap();
    for s in [&sink0, &sink1] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }

    let cfg = SocketConfig {
        rx_size: 64,
        tx_size: 64,
        fill_target: 16,
        ..SocketConfig::default()
    };
    let (mut umem, mut s0, mut s1) = a
        .run_in(|| {
            let mut umem = Umem::new(UmemConfig {
                frame_count: 128,
                fill_size: 64,
                comp_size: 64,
                ..UmemConfig::default()
            })
            .unwrap();
            let s0 = XskSocket::bind(&mut umem, ifindex("a0").unwrap(), 0, &cfg).unwrap();
            let s1 = XskSocket::bind(&mut umem, ifindex("a1").unwrap(), 0, &cfg).unwrap();
            // The queue is taken now.
            let busy = XskSocket::bind(&mut umem, ifindex("a0").unwrap(), 0, &cfg);
            assert!(matches!(busy, Err(XskError::Busy { .. })), "{busy:?}");
            (umem, s0, s1)
        })
        .unwrap();
    assert_ne!(s0.as_raw_fd_for_test(), s1.as_raw_fd_for_test());
    assert_eq!((s0.ifindex(), s1.ifindex()), (a0.ifindex, a1.ifindex));
    assert!(
        !s1.is_zero_copy() && s1.uses_need_wakeup(),
        "inherited from s0"
    );
    assert_eq!(umem.free_frames(), 128 - 16 - 16);

    // One frame goes out on a0, is reclaimed, and the same UMEM frame then
    // goes out on a1: the frames are shared, not per socket.
    let mut batch = FrameBatch::with_capacity(1);
    let src0 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 1), SRC_PORT);
    let src1 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 5), SRC_PORT);
    let dst0 = match sink0.local_addr().unwrap() {
        std::net::SocketAddr::V4(v) => v,
        _ => unreachable!(),
    };
    let dst1 = match sink1.local_addr().unwrap() {
        std::net::SocketAddr::V4(v) => v,
        _ => unreachable!(),
    };
    let f0 = udp_frame(a0.mac, b0.mac, src0, dst0, b"via a0");
    let f1 = udp_frame(a1.mac, b1.mac, src1, dst1, b"via a1");

    let mut frame = umem.alloc().unwrap();
    let addr = frame.addr();
    umem.set_len(&mut frame, f0.len()).unwrap();
    umem.data_mut(&mut frame).copy_from_slice(&f0);
    batch.push(frame).unwrap();
    transmit_batch(&mut s0, &mut umem, &mut batch);
    // LIFO free list: the frame just completed on a0 is the next one out.
    let mut frame = umem.alloc().unwrap();
    assert_eq!(frame.addr(), addr);
    umem.set_len(&mut frame, f1.len()).unwrap();
    umem.data_mut(&mut frame).copy_from_slice(&f1);
    batch.push(frame).unwrap();
    transmit_batch(&mut s1, &mut umem, &mut batch);

    let mut buf = [0u8; 64];
    let n = sink0.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"via a0");
    let n = sink1.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"via a1");
    assert_eq!(umem.free_frames(), 128 - 16 - 16);

    // A socket only works with the UMEM it was bound with.
    let mut other = a
        .run_in(|| Umem::new(UmemConfig::default()))
        .unwrap()
        .unwrap();
    assert!(matches!(
        s0.send(&mut other, &mut batch),
        Err(XskError::ForeignUmem)
    ));
    assert!(matches!(
        s0.recv(&mut other, &mut batch),
        Err(XskError::ForeignUmem)
    ));
}

fn transmit_batch(sock: &mut XskSocket, umem: &mut Umem, batch: &mut FrameBatch) {
    assert_eq!(sock.send(umem, batch).unwrap(), 1);
    assert!(batch.is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    while sock.tx_in_flight() > 0 {
        assert!(Instant::now() < deadline, "no completion: {sock:?}");
        sock.flush().unwrap();
        sock.reclaim(umem);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Raw fd, through the `AsRawFd` impl the caller uses for an XSKMAP entry.
trait RawFdForTest {
    fn as_raw_fd_for_test(&self) -> i32;
}

impl RawFdForTest for XskSocket {
    fn as_raw_fd_for_test(&self) -> i32 {
        use std::os::fd::{AsFd, AsRawFd};
        assert_eq!(self.as_fd().as_raw_fd(), self.as_raw_fd());
        self.as_raw_fd()
    }
}

#[test]
fn bind_errors_are_clear() {
    let p = pair();
    p.a.run_in(|| {
        let mut umem = Umem::new(UmemConfig::default()).unwrap();
        let err = XskSocket::bind(&mut umem, 999_999, 0, &SocketConfig::default()).unwrap_err();
        assert!(matches!(err, XskError::InterfaceNotFound(_)), "{err:?}");
        assert!(err.to_string().contains("does not exist"), "{err}");

        // veth has no zero-copy: a hard request fails, and says so.
        let index = ifindex("a0").unwrap();
        let zc = SocketConfig {
            mode: BindMode::ZeroCopy,
            ..SocketConfig::default()
        };
        let err = XskSocket::bind(&mut umem, index, 0, &zc).unwrap_err();
        assert!(
            matches!(err, XskError::ZeroCopyUnsupported { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("a0"), "{err}");
        assert!(err.to_string().contains("copy mode"), "{err}");

        // The same UMEM, registered again after that failure, binds in
        // forced copy mode.
        let copy = SocketConfig {
            mode: BindMode::Copy,
            ..SocketConfig::default()
        };
        let sock = XskSocket::bind(&mut umem, index, 0, &copy).unwrap();
        assert!(!sock.is_zero_copy());
        assert_eq!(sock.zero_copy_refused(), None, "copy was asked for");
        // A queue veth does not have.
        let err = XskSocket::bind(&mut umem, index, 7, &copy);
        assert!(err.is_err(), "{err:?}");

        assert!(matches!(
            ifindex("nonesuch0"),
            Err(XskError::InterfaceNotFound(_))
        ));
        // Bad configurations are refused before anything is allocated.
        for bad in [
            UmemConfig {
                frame_size: 3000,
                ..UmemConfig::default()
            },
            UmemConfig {
                headroom: MIN_HEADROOM - 1,
                ..UmemConfig::default()
            },
            UmemConfig {
                fill_size: 1000,
                ..UmemConfig::default()
            },
        ] {
            assert!(matches!(Umem::new(bad), Err(XskError::Config(_))));
        }
    })
    .unwrap();
}

#[test]
fn auto_bind_falls_back_to_copy_on_veth_and_keeps_the_reason() {
    let p = pair();
    p.a.run_in(|| {
        let index = ifindex("a0").unwrap();
        let mut umem = Umem::new(UmemConfig::default()).unwrap();
        let auto = SocketConfig::default();
        assert_eq!(auto.mode, BindMode::Auto);
        let first = XskSocket::bind(&mut umem, index, 0, &auto).unwrap();
        assert!(!first.is_zero_copy());
        let why = first.zero_copy_refused().expect("the refusal is kept");
        assert!(why.contains("os error"), "{why}");
        assert!(first.uses_need_wakeup());
        // The refused attempt left the UMEM registered again and whole:
        // the copy-mode socket's fill ring is stocked from it.
        assert_eq!(first.frames_in_fill(), auto.fill_target);
        assert_eq!(first.ring_sizes(), (auto.rx_size, auto.tx_size));
    })
    .unwrap();
}

#[test]
fn busy_polling_sets_the_socket_options_and_polls_the_driver() {
    let p = pair();
    p.b.run_in(|| {
        let mut umem = Umem::new(UmemConfig::default()).unwrap();
        let index = ifindex("b0").unwrap();
        let plain = XskSocket::bind(&mut umem, index, 0, &SocketConfig::default()).unwrap();
        assert_eq!(plain.busy_poll(), None);
        assert!(!plain.busy_poll_options().unwrap().1, "off unless asked");
    })
    .unwrap();
    p.a.run_in(|| {
        let index = ifindex("a0").unwrap();
        let mut umem = Umem::new(UmemConfig::default()).unwrap();
        let busy = BusyPoll {
            usecs: 20,
            budget: 16,
        };
        let config = SocketConfig {
            mode: BindMode::Copy,
            busy_poll: Some(busy),
            ..SocketConfig::default()
        };
        let mut sock = XskSocket::bind(&mut umem, index, 0, &config).unwrap();
        assert_eq!(sock.busy_poll(), Some(busy));
        assert_eq!(sock.busy_poll_options().unwrap(), (20, true));
        // Nothing to receive: the empty recv goes into the kernel
        // (recvfrom) whatever the need-wakeup flag says.
        let mut batch = FrameBatch::new();
        for _ in 0..3 {
            assert_eq!(sock.recv(&mut umem, &mut batch).unwrap(), 0);
        }
        assert_eq!(sock.stats().busy_polls, 3);
        sock.flush().unwrap();
    })
    .unwrap();
}

#[test]
fn a_umem_goes_on_the_numa_node_asked_for() {
    // This machine's CPU 0 has a node (node 0 on a single-node machine).
    let node = cpu_numa_node(0);
    let umem = Umem::new(UmemConfig {
        numa_node: node,
        ..UmemConfig::default()
    })
    .unwrap();
    if node.is_some() {
        assert_eq!(umem.numa_node(), node, "{:?}", umem.numa_note());
        assert_eq!(umem.numa_note(), None);
    }
    assert_eq!(
        umem.free_frames(),
        UmemConfig::default().frame_count as usize
    );
    assert_eq!(cpu_numa_node(1 << 20), None, "no such CPU");
    // A node the mask cannot name is a configuration error.
    assert!(matches!(
        Umem::new(UmemConfig {
            numa_node: Some(5000),
            ..UmemConfig::default()
        }),
        Err(XskError::Config(_))
    ));
    // A node that does not exist: the UMEM still comes, and says why it
    // is not there.
    let elsewhere = Umem::new(UmemConfig {
        numa_node: Some(1000),
        ..UmemConfig::default()
    })
    .unwrap();
    if node.is_some() {
        let note = elsewhere.numa_note().expect("mbind refuses node 1000");
        assert!(note.contains("node 1000"), "{note}");
    }
}

#[test]
fn frames_have_headroom_for_outer_headers() {
    let p = pair();
    let mut umem =
        p.a.run_in(|| {
            Umem::new(UmemConfig {
                frame_count: 8,
                headroom: 192,
                ..UmemConfig::default()
            })
        })
        .unwrap()
        .unwrap();
    assert_eq!(umem.data_offset(), XDP_PACKET_HEADROOM + 192);
    let mut frames: Vec<_> = std::iter::from_fn(|| umem.alloc()).collect();
    assert_eq!(frames.len(), 8);
    assert_eq!(umem.free_frames(), 0);
    assert!(umem.alloc().is_none());
    let mut f = frames.pop().unwrap();
    assert_eq!(umem.headroom(&f), (XDP_PACKET_HEADROOM + 192) as usize);
    assert_eq!(
        umem.tailroom(&f),
        2048 - (XDP_PACKET_HEADROOM + 192) as usize
    );

    // An inner packet, then an outer header prepended in place.
    umem.set_len(&mut f, 100).unwrap();
    umem.data_mut(&mut f).fill(0xab);
    let whole = umem.push_head(&mut f, 56).unwrap();
    assert_eq!(whole.len(), 156);
    whole[..56].fill(0x11);
    assert_eq!(umem.data(&f)[56..], [0xab; 100]);
    assert_eq!(umem.headroom(&f), (XDP_PACKET_HEADROOM + 192 - 56) as usize);
    // Trailer into the tailroom, then decapsulation.
    let len = f.len();
    umem.set_len(&mut f, len + 18).unwrap();
    umem.pull_head(&mut f, 56).unwrap();
    assert_eq!(umem.data(&f)[..100], [0xab; 100]);
    assert_eq!(f.len(), 118);
    // Limits are kept.
    let head = umem.headroom(&f);
    assert_eq!(umem.push_head(&mut f, head + 1).err(), Some(NoRoom));
    let max = f.len() + umem.tailroom(&f);
    assert_eq!(umem.set_len(&mut f, max + 1), Err(NoRoom));
    umem.set_len(&mut f, max).unwrap();
    assert_eq!(umem.pull_head(&mut f, max + 1), Err(NoRoom));
    umem.push_head(&mut f, head).unwrap();
    assert_eq!(umem.headroom(&f), 0);
    assert_eq!(f.len(), 2048);

    frames.push(f);
    for f in frames {
        umem.free(f);
    }
    assert_eq!(umem.free_frames(), 8);
}

#[test]
#[should_panic(expected = "another UMEM")]
fn a_frame_of_another_umem_is_refused() {
    let p = pair();
    let (mut u1, u2) =
        p.a.run_in(|| {
            (
                Umem::new(UmemConfig::default()).unwrap(),
                Umem::new(UmemConfig::default()).unwrap(),
            )
        })
        .unwrap();
    let f = u1.alloc().unwrap();
    let _ = u2.data(&f);
}

#[test]
fn an_idle_worker_sleeps_in_poll() {
    let p = pair();
    let (mut umem, mut sock) =
        p.a.run_in(|| {
            let mut umem = Umem::new(UmemConfig::default()).unwrap();
            let sock = XskSocket::bind(
                &mut umem,
                ifindex("a0").unwrap(),
                0,
                &SocketConfig::default(),
            )
            .unwrap();
            (umem, sock)
        })
        .unwrap();
    let mut set = PollSet::new();
    let i = set.add(&sock);
    // No XDP program redirects here: nothing arrives, the wait times out.
    let start = Instant::now();
    assert_eq!(set.wait(100).unwrap(), 0);
    let slept = start.elapsed();
    assert!(slept >= Duration::from_millis(95), "{slept:?}");
    assert!(!set.is_readable(i));
    let mut batch = FrameBatch::new();
    assert_eq!(sock.recv(&mut umem, &mut batch).unwrap(), 0);
    assert!(batch.is_empty());
    // Also with traffic on the wire, which the kernel keeps (XDP_PASS path).
    p.b.ping("198.18.2.1".parse().unwrap(), 1).unwrap();
    assert_eq!(sock.recv(&mut umem, &mut batch).unwrap(), 0);
}

/// ESP-in-UDP payload number `seq`: a non-zero SPI, the sequence number and
/// some ciphertext-like bytes of a length that varies with `seq`.
fn esp_payload(seq: u32) -> Vec<u8> {
    let mut p = Vec::from((0x1000 + seq).to_be_bytes());
    p.extend_from_slice(&(seq + 1).to_be_bytes());
    p.extend((0..(16 + (seq as usize * 37) % 300)).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// Checks the Ethernet, IP and UDP headers of a frame received on the XSK
/// and returns its UDP payload. The IPv4 header checksum is verified; the
/// UDP checksum is not (veth may hand over checksum-offloaded frames).
fn udp_payload_of(frame: &[u8], p: &Pair, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    assert_eq!(frame[0..6], p.a0.mac, "destination MAC");
    assert_eq!(frame[6..12], p.b0.mac, "source MAC");
    let l4 = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            assert_eq!(frame[12..14], [0x08, 0x00], "ethertype");
            let ip = &frame[14..34];
            assert_eq!(ip[0], 0x45, "IPv4 without options");
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[2], ip[3]])),
                frame.len() - 14
            );
            assert_eq!(ip[9], 17, "UDP");
            assert_eq!(ip[12..16], s.octets());
            assert_eq!(ip[16..20], d.octets());
            assert_eq!(checksum::data(ip), 0xffff, "IPv4 header checksum");
            34
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            assert_eq!(frame[12..14], [0x86, 0xdd], "ethertype");
            let ip = &frame[14..54];
            assert_eq!(ip[0] >> 4, 6);
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[4], ip[5]])),
                frame.len() - 54
            );
            assert_eq!(ip[6], 17, "UDP");
            assert_eq!(ip[8..24], s.octets());
            assert_eq!(ip[24..40], d.octets());
            54
        }
        _ => unreachable!("one family"),
    };
    let udp = &frame[l4..];
    assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), src.port());
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), dst.port());
    assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len());
    udp[8..].to_vec()
}

/// Reads frames off `sock` until `n` have arrived or `limit` has passed;
/// their bytes, in arrival order. Every frame goes back to the UMEM.
fn receive_frames(
    sock: &mut XskSocket,
    umem: &mut Umem,
    n: usize,
    limit: Duration,
) -> Vec<Vec<u8>> {
    let mut set = PollSet::new();
    set.add(sock);
    let mut batch = FrameBatch::new();
    let mut got = Vec::new();
    let deadline = Instant::now() + limit;
    while got.len() < n && Instant::now() < deadline {
        if sock.recv(umem, &mut batch).unwrap() == 0 {
            set.wait(50).unwrap();
            continue;
        }
        for frame in batch.drain() {
            got.push(umem.data(&frame).to_vec());
            umem.free(frame);
        }
    }
    got
}

#[test]
fn steer_redirects_esp_in_udp_to_the_xsk_and_passes_ike() {
    let p = pair();
    let a_v6: Ipv6Addr = "fd00:18:2::1".parse().unwrap();
    let b_v6: Ipv6Addr = "fd00:18:2::2".parse().unwrap();
    p.a.add_addr("a0", a_v6.into(), 64).unwrap();
    p.b.add_addr("b0", b_v6.into(), 64).unwrap();
    let a_v4 = Ipv4Addr::new(198, 18, 2, 1);
    let b_v4 = Ipv4Addr::new(198, 18, 2, 2);

    // In `a`: the IKE daemon's sockets, and the data plane's XSK on a0/0.
    let bind_in_a = |addr: SocketAddr| {
        let s = p.a.run_in(|| UdpSocket::bind(addr)).unwrap().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let ike4500 = bind_in_a(SocketAddr::new(a_v4.into(), 4500));
    let ike500 = bind_in_a(SocketAddr::new(a_v4.into(), 500));
    let (mut umem, mut xsk) =
        p.a.run_in(|| {
            let mut umem = Umem::new(UmemConfig {
                frame_count: 256,
                fill_size: 128,
                comp_size: 64,
                ..UmemConfig::default()
            })
            .expect("UMEM");
            let sock = XskSocket::bind(
                &mut umem,
                ifindex("a0").expect("a0 exists in a"),
                0,
                &SocketConfig {
                    rx_size: 128,
                    tx_size: 64,
                    fill_target: 128,
                    ..SocketConfig::default()
                },
            )
            .expect("bind to a0 queue 0");
            (umem, sock)
        })
        .unwrap();

    // The steering program on a0: outside, slot 0, a0's addresses local.
    let mut steer = Steer::load().unwrap_or_else(|e| panic!("{e} (needs root)"));
    steer.set_interface(p.a0.ifindex, Role::Outside, 0).unwrap();
    steer.add_local_address(a_v4.into()).unwrap();
    steer.add_local_address(a_v6.into()).unwrap();
    steer.register_xsk(0, 0, &xsk).unwrap();
    {
        let _in_a = p.a.enter().unwrap();
        steer
            .attach("a0", AttachMode::Native)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    // From `b`: ESP-in-UDP over IPv4 and IPv6, then IKE, from ordinary UDP
    // sockets (neighbour resolution of a0 passes through the program too).
    let tx4 =
        p.b.run_in(|| UdpSocket::bind(SocketAddr::new(b_v4.into(), SRC_PORT)))
            .unwrap()
            .unwrap();
    let tx6 =
        p.b.run_in(|| UdpSocket::bind(SocketAddr::new(b_v6.into(), SRC_PORT)))
            .unwrap()
            .unwrap();
    let to4 = SocketAddr::new(a_v4.into(), 4500);
    let to6 = SocketAddr::new(a_v6.into(), 4500);
    const N4: u32 = 40;
    const N6: u32 = 8;
    let before = steer.counters().unwrap();
    let mut sent = Vec::new();
    for seq in 0..N4 + N6 {
        let payload = esp_payload(seq);
        let (sock, to) = if seq < N4 { (&tx4, to4) } else { (&tx6, to6) };
        sock.send_to(&payload, to).unwrap();
        sent.push((sock.local_addr().unwrap(), to, payload));
    }
    let ike = [&[0u8; 4][..], b"IKE_SA_INIT on 4500"].concat();
    tx4.send_to(&ike, to4).unwrap();
    tx4.send_to(b"IKE_SA_INIT on 500", SocketAddr::new(a_v4.into(), 500))
        .unwrap();

    // Every ESP datagram is on the XSK, in order, byte for byte.
    let frames = receive_frames(&mut xsk, &mut umem, sent.len(), Duration::from_secs(10));
    let counters = steer.counters().unwrap().since(&before);
    assert_eq!(
        frames.len(),
        sent.len(),
        "frames on the XSK; counters: {counters}; socket: {:?}",
        xsk.kernel_stats()
    );
    for (i, (frame, (src, dst, payload))) in frames.iter().zip(&sent).enumerate() {
        let got = udp_payload_of(frame, &p, *src, *dst);
        assert_eq!(&got, payload, "ESP datagram {i}");
    }

    // The IKE datagrams went to the kernel and its sockets; none of the ESP
    // datagrams did (they were sent first: any would be read first).
    let mut buf = [0u8; 2048];
    let (n, from) = ike4500.recv_from(&mut buf).expect("IKE on 4500 passed");
    assert_eq!(&buf[..n], &ike[..]);
    assert_eq!(from, SocketAddr::new(b_v4.into(), SRC_PORT));
    let (n, _) = ike500.recv_from(&mut buf).expect("IKE on 500 passed");
    assert_eq!(&buf[..n], b"IKE_SA_INIT on 500");
    ike4500.set_nonblocking(true).unwrap();
    assert!(
        ike4500.recv_from(&mut buf).is_err(),
        "an ESP datagram reached the IKE socket"
    );

    let counters = steer.counters().unwrap().since(&before);
    assert_eq!(
        counters.get(Verdict::EspInUdpRedirected),
        u64::from(N4 + N6),
        "{counters}"
    );
    assert_eq!(counters.get(Verdict::IkePass), 2, "{counters}");
    assert_eq!(counters.get(Verdict::RedirectFailed), 0, "{counters}");
    assert_eq!(counters.get(Verdict::NotLocalPass), 0, "{counters}");
    let stats = xsk.stats();
    assert_eq!(stats.rx_frames, u64::from(N4 + N6));
    assert_eq!(stats.invalid_rx_descs, 0);
    let kernel = xsk.kernel_stats().unwrap();
    assert_eq!(kernel.rx_dropped, 0, "{kernel:?}");
    assert_eq!(kernel.rx_ring_full, 0, "{kernel:?}");

    // Without the socket the same datagram is dropped (fail closed): it
    // reaches neither the IKE socket on 4500 nor the unregistered XSK, and
    // the program counts a failed redirect.
    steer.unregister_xsk(0, 0).unwrap();
    let before = steer.counters().unwrap();
    tx4.send_to(&sent[0].2, to4).unwrap();
    assert!(
        receive_frames(&mut xsk, &mut umem, 1, Duration::from_millis(200)).is_empty(),
        "a frame reached the unregistered XSK"
    );
    assert!(
        ike4500.recv_from(&mut buf).is_err(),
        "ESP reached the kernel's IKE socket once no XSK is registered"
    );
    let counters = steer.counters().unwrap().since(&before);
    assert_eq!(counters.get(Verdict::RedirectFailed), 1, "{counters}");

    drop(steer);
    drop(p.tb);
}
