//! Garbage and mangled messages never panic an endpoint, never create
//! state beyond the half-open bound and never break an established SA.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use xdpsec_control::ike::Event;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_datagrams_are_dropped_or_answered(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let b = node(&psk_config(B, A, "aes128gcm16-prfsha256-x25519", "", ""), B, 2, fast_settings());
        let mut sim = Sim::new(vec![b], 1);
        let local: SocketAddr = "198.18.0.2:500".parse().unwrap();
        let remote: SocketAddr = "198.18.0.1:500".parse().unwrap();
        let now = sim.now;
        sim.nodes[0].ep.handle_datagram(now, local, remote, &data);
        sim.nodes[0].ep.handle_timeout(now + Duration::from_secs(100));
        while sim.nodes[0].ep.poll_transmit().is_some() {}
        prop_assert!(sim.nodes[0].ep.list_sas(now).len() <= 1);
    }

    #[test]
    fn mangled_exchanges_never_panic(flips in proptest::collection::vec((0usize..2, 0usize..4000, any::<u8>()), 1..8), seed in 0u64..1000) {
        // Every datagram of a real exchange goes through, but some bytes
        // of some datagrams are overwritten on the way.
        let a = node(&psk_config(A, B, "aes128-sha256-modp2048", "", ""), A, seed, fast_settings());
        let b = node(&psk_config(B, A, "aes128-sha256-modp2048", "", ""), B, seed + 1, fast_settings());
        let mut sim = Sim::new(vec![a, b], seed);
        sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
        for (i, (who, at, byte)) in flips.iter().enumerate() {
            let now = sim.now + Duration::from_millis(i as u64);
            let t = sim.nodes[*who].ep.poll_transmit();
            let Some(mut t) = t else { continue };
            let len = t.payload.len();
            t.payload[at % len] = *byte;
            let to = 1 - who;
            sim.nodes[to].ep.handle_datagram(now, t.remote, t.local, &t.payload);
        }
        sim.run_for(Duration::from_secs(120));
        // Whatever happened, both ends agree on what is installed.
        let (x, y) = (installed(sim.events(0)), installed(sim.events(1)));
        assert_sas_match(&x, &y);
        for n in 0..2 {
            for e in sim.events(n) {
                if let Event::InstallSa { spec, .. } = e {
                    prop_assert!(spec.validate().is_ok());
                }
            }
        }
    }
}
