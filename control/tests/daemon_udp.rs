//! The IKE daemon's UDP sockets in a namespace of their own: the local
//! address of each datagram (IP_PKTINFO / IPV6_PKTINFO) is known and used
//! as the source of the answer; on the NAT-T port the non-ESP marker is
//! stripped on receive and added on send; keepalives, ESP in UDP and runts
//! are dropped and counted. Needs root (namespaces).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use xdpsec_control::daemon::udp::{IkeSockets, Received, NON_ESP_MARKER};
use xdpsec_testbed::Testbed;

/// Reads from any socket of `sockets` until something arrives (bounded).
fn receive(sockets: &mut IkeSockets, buf: &mut [u8]) -> (Received, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for i in 0..sockets.len() {
            match sockets.recv(i, buf).unwrap() {
                Received::WouldBlock => {}
                Received::Ike {
                    local,
                    remote,
                    payload,
                } => {
                    let bytes = buf[payload.clone()].to_vec();
                    return (
                        Received::Ike {
                            local,
                            remote,
                            payload,
                        },
                        bytes,
                    );
                }
                Received::Dropped => return (Received::Dropped, Vec::new()),
            }
        }
        assert!(Instant::now() < deadline, "nothing arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ike(received: (Received, Vec<u8>)) -> (SocketAddr, SocketAddr, Vec<u8>) {
    match received.0 {
        Received::Ike { local, remote, .. } => (local, remote, received.1),
        other => panic!("expected an IKE message, got {other:?}"),
    }
}

fn client(addr: &str) -> UdpSocket {
    let c = UdpSocket::bind(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

#[test]
fn marker_pktinfo_and_drops_on_wildcard_sockets() {
    let tb = Testbed::new().unwrap();
    let ns = tb.add_netns("udp").unwrap();
    ns.add_addr("lo", "198.18.0.1".parse().unwrap(), 32)
        .unwrap();
    ns.run_in(|| {
        let mut sockets = IkeSockets::bind(&[], 500, 4500).unwrap();
        let mut buf = vec![0u8; 65_535];
        let c4 = client("127.0.0.1:0");

        // Port 500: no marker; the local address is the one addressed.
        c4.send_to(b"\x11IKE", "198.18.0.1:500").unwrap();
        let (local, remote, bytes) = ike(receive(&mut sockets, &mut buf));
        assert_eq!(local, "198.18.0.1:500".parse().unwrap());
        assert_eq!(remote, c4.local_addr().unwrap());
        assert_eq!(bytes, b"\x11IKE");

        // Port 4500: the marker is stripped.
        c4.send_to(b"\0\0\0\0\x22IKE", "127.0.0.1:4500").unwrap();
        let (local, _, bytes) = ike(receive(&mut sockets, &mut buf));
        assert_eq!(local, "127.0.0.1:4500".parse().unwrap());
        assert_eq!(bytes, b"\x22IKE");

        // Keepalive, ESP in UDP, runt: dropped and counted.
        c4.send_to(&[0xff], "127.0.0.1:4500").unwrap();
        assert_eq!(receive(&mut sockets, &mut buf).0, Received::Dropped);
        c4.send_to(&[0, 0, 1, 0, 0, 0, 0, 1, 9, 9], "127.0.0.1:4500")
            .unwrap();
        assert_eq!(receive(&mut sockets, &mut buf).0, Received::Dropped);
        c4.send_to(&[0, 0], "127.0.0.1:4500").unwrap();
        assert_eq!(receive(&mut sockets, &mut buf).0, Received::Dropped);
        let stats = sockets.stats().clone();
        assert_eq!(
            (
                stats.received,
                stats.keepalives,
                stats.missing_marker,
                stats.runts
            ),
            (2, 1, 1, 1),
            "{stats:?}"
        );

        // Answers leave from the address the request reached, with the
        // marker on 4500 and without it for a keepalive.
        let to = c4.local_addr().unwrap();
        sockets
            .send("198.18.0.1:4500".parse().unwrap(), to, true, b"\x33ANSWER")
            .unwrap();
        let mut got = [0u8; 64];
        let (n, from) = c4.recv_from(&mut got).unwrap();
        assert_eq!(from, "198.18.0.1:4500".parse().unwrap());
        assert_eq!(&got[..4], &NON_ESP_MARKER);
        assert_eq!(&got[4..n], b"\x33ANSWER");
        sockets
            .send("127.0.0.1:4500".parse().unwrap(), to, false, &[0xff])
            .unwrap();
        let (n, from) = c4.recv_from(&mut got).unwrap();
        assert_eq!(
            (&got[..n], from),
            (&[0xffu8][..], "127.0.0.1:4500".parse().unwrap())
        );
        sockets
            .send("198.18.0.1:500".parse().unwrap(), to, false, b"\x44")
            .unwrap();
        let (n, from) = c4.recv_from(&mut got).unwrap();
        assert_eq!(
            (&got[..n], from),
            (&b"\x44"[..], "198.18.0.1:500".parse().unwrap())
        );

        // IPv6 the same way.
        let c6 = client("[::1]:0");
        c6.send_to(b"\0\0\0\0\x55", "[::1]:4500").unwrap();
        let (local, remote, bytes) = ike(receive(&mut sockets, &mut buf));
        assert_eq!(local, "[::1]:4500".parse().unwrap());
        assert_eq!(bytes, b"\x55");
        sockets.send(local, remote, true, b"\x66").unwrap();
        let (n, from) = c6.recv_from(&mut got).unwrap();
        assert_eq!(from, local);
        assert_eq!(&got[..n], b"\0\0\0\0\x66");
        assert_eq!(sockets.stats().sent, 4);
    })
    .unwrap();
}

#[test]
fn listen_addresses_bind_only_those() {
    let tb = Testbed::new().unwrap();
    let ns = tb.add_netns("udp").unwrap();
    ns.add_addr("lo", "198.18.0.1".parse().unwrap(), 32)
        .unwrap();
    ns.run_in(|| {
        let listen: [IpAddr; 1] = ["198.18.0.1".parse().unwrap()];
        let mut sockets = IkeSockets::bind(&listen, 500, 4500).unwrap();
        assert_eq!(sockets.len(), 2);
        // Another process can still use the ports on other addresses.
        let other = UdpSocket::bind("127.0.0.1:500").unwrap();
        let c = client("127.0.0.1:0");
        c.send_to(b"\x77", "198.18.0.1:500").unwrap();
        let mut buf = vec![0u8; 2048];
        let (local, _, bytes) = ike(receive(&mut sockets, &mut buf));
        assert_eq!(
            (local, bytes),
            ("198.18.0.1:500".parse().unwrap(), b"\x77".to_vec())
        );
        drop(other);
        // The same ports twice: the error says what is wrong.
        let err = IkeSockets::bind(&listen, 500, 4500).unwrap_err();
        assert!(err.to_string().contains("another IKE daemon"), "{err}");
    })
    .unwrap();
}
