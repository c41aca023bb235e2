//! `cargo xtask demo`: two xdpsec gateways in network namespaces with a
//! tunnel between them; pings and an iperf3 run go through it, a capture in
//! the middle of the underlay shows only ESP, and tshark decrypts it with the
//! keys. Everything is removed at the end (also on an error: the test bed's
//! drop stops the data planes and deletes the namespaces).

use crate::setup;
use crate::shell::{is_root, release_xdpsec};
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use xdpsec_testbed::tunnel::{Encapsulation, KeySize, Side, TunnelBed, TunnelOptions};

const PINGS: u16 = 5;
const IPERF_SECONDS: u32 = 5;

pub fn run() -> Result<()> {
    let started = Instant::now();
    setup::ensure_all()?;
    let binary = release_xdpsec()?;
    if !is_root() {
        bail!("the demo builds network namespaces and attaches XDP: run it as root");
    }

    heading(
        "1. Topology: hosts A and B, gateways A and B running `xdpsec dataplane`, a bridge between",
    );
    let bed = TunnelBed::new(
        &binary,
        TunnelOptions {
            ipv4: true,
            ipv6: true,
            encap: Encapsulation::Esp,
            key_size: KeySize::Aes256,
            workers: 1,
            ..TunnelOptions::default()
        },
    )
    .map_err(|e| anyhow!("building the tunnel: {e}"))?;
    print!("{}", bed.describe());
    for side in Side::BOTH {
        let log = bed.log(side);
        println!("  {side}: {}", log.lines().next().unwrap_or("(no log yet)"));
    }

    let result = exercise(&bed);
    if result.is_err() {
        eprintln!("\nThe data planes' logs:\n{}", bed.logs());
    }
    result?;

    heading("6. Teardown");
    let namespaces = bed.testbed().namespaces();
    drop(bed);
    println!(
        "  stopped both data planes (SIGTERM, XDP detached) and deleted {}",
        namespaces.join(" ")
    );
    println!(
        "\nxdpsec demo done in {:.0} s (including setup and the build check).",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn exercise(bed: &TunnelBed) -> Result<()> {
    heading("2. Ping host A -> host B through the tunnel");
    for ipv6 in [false, true] {
        let dst = bed.host_addr(Side::B, ipv6);
        println!(
            "  $ ip netns exec {} ping -c {PINGS} {dst}",
            bed.host(Side::A).ns.name()
        );
        let stats = bed
            .ping(Side::A, Side::B, ipv6, PINGS)
            .map_err(|e| anyhow!("ping {dst}: {e}"))?;
        for line in stats.output.lines().filter(|l| !l.trim().is_empty()) {
            println!("    {line}");
        }
        if !stats.all_answered_once() {
            bail!(
                "ping {dst}: {} of {} answered, {} duplicates",
                stats.received,
                stats.transmitted,
                stats.duplicates
            );
        }
    }

    heading("3. What the underlay carries (tcpdump on the bridge between the gateways)");
    on_the_wire(bed)?;

    heading(&format!(
        "4. iperf3: {IPERF_SECONDS} s of TCP from host A to host B through the tunnel"
    ));
    let dst = bed.host_addr(Side::B, false);
    let report = bed
        .iperf3(dst, IPERF_SECONDS, 1)
        .map_err(|e| anyhow!("iperf3: {e}"))?;
    for (i, bps) in report.intervals.iter().enumerate() {
        println!("    {:>2}-{:<2} s  {:>8.1} Mbit/s", i, i + 1, bps / 1e6);
    }
    println!(
        "  received {:.1} MB at {:.1} Mbit/s, {} TCP retransmissions",
        report.received_bytes as f64 / 1e6,
        report.received_bits_per_second / 1e6,
        report.retransmits
    );
    println!(
        "  (veth, AF_XDP in copy mode, all four ends on a shared 2-core machine: a floor, not a benchmark)"
    );

    heading("5. The gateways' view: `xdpsec sa list` and `xdpsec status`");
    for side in Side::BOTH {
        for args in [&["sa", "list"][..], &["status"][..]] {
            println!(
                "  $ xdpsec {} --api-socket {}",
                args.join(" "),
                bed.api_socket(side).display()
            );
            let out = bed
                .cli(side, args)
                .map_err(|e| anyhow!("xdpsec {} on {side}: {e}", args.join(" ")))?;
            for line in out.lines() {
                println!("    {line}");
            }
        }
    }
    Ok(())
}

/// Two pings captured in the middle of the underlay: ESP only; then tshark
/// decrypts the same capture with the SA keys.
fn on_the_wire(bed: &TunnelBed) -> Result<()> {
    let tap = bed.underlay();
    let pcap = bed.dir().join("demo.pcap");
    let frames = 4u16;
    let child = tap
        .ns
        .spawn([
            "tcpdump",
            "-i",
            &tap.port_a,
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-c",
            &frames.to_string(),
            "-w",
            pcap.to_str().context("a UTF-8 temp path")?,
            "not arp and not igmp and not (ip6 and (src net fe80::/10 or dst net ff00::/8))",
        ])
        .map_err(|e| anyhow!("tcpdump: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !child.stderr_so_far().contains("listening on") {
        if Instant::now() >= deadline {
            bail!("tcpdump is not listening: {}", child.stderr_so_far());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bed.ping(Side::A, Side::B, false, frames / 2)
        .map_err(|e| anyhow!("ping: {e}"))?;
    child
        .wait_timeout(Duration::from_secs(5))
        .map_err(|e| anyhow!("tcpdump: {e}"))?;

    println!(
        "  captured on {}'s {}, without keys:",
        tap.ns.name(),
        tap.port_a
    );
    for line in tshark(&pcap, &[])? {
        println!("    {}", line.trim());
    }
    println!("  the same frames, decrypted by tshark with the two SAs' keys:");
    let mut args = vec!["-o".to_string(), "esp.enable_encryption_decode:TRUE".into()];
    for sa in bed.sas() {
        args.push("-o".into());
        args.push(sa.tshark_uat());
    }
    for line in tshark(&pcap, &args)? {
        println!("    {}", line.trim());
    }
    Ok(())
}

fn tshark(pcap: &Path, args: &[String]) -> Result<Vec<String>> {
    let out = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(pcap)
        .args(args)
        .output()
        .context("running tshark")?;
    if !out.status.success() {
        bail!("tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

fn heading(title: &str) {
    println!("\n== {title}");
}
