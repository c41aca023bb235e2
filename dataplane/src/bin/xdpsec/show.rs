//! Plain-text tables of what the SA API returns.

use std::fmt::Write as _;
use xdpsec_api::{Policy, SaInfo, WorkerStats};
use xdpsec_control::ctl::IkeSaInfo;

/// How a column is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A table: a header row and data rows, columns padded to the widest cell.
#[derive(Debug)]
struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                match self.columns[i].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

use Align::{Left, Right};

/// `1234567` -> `1.2M`; below 10 000 the number itself.
pub fn count(n: u64) -> String {
    human(n, 1000, &["", "k", "M", "G", "T", "P", "E"])
}

/// Bytes with binary units: `1536` -> `1.5KiB`.
pub fn bytes(n: u64) -> String {
    human(n, 1024, &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"])
}

fn human(n: u64, base: u64, units: &[&str]) -> String {
    if n < 10_000 || units.len() < 2 {
        return format!("{n}{}", units.first().copied().unwrap_or(""));
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= base as f64 && unit + 1 < units.len() {
        value /= base as f64;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1}{}", units[unit])
    } else {
        format!("{value:.0}{}", units[unit])
    }
}

/// Milliseconds as `850ms`, `12.3s`, `5m07s`, `3h02m`, `4d05h`.
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Drops as `reason=n,reason=n`, `-` for none.
pub fn drops(sa: &SaInfo) -> String {
    let parts: Vec<String> = sa
        .counters
        .drops
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(",")
    }
}

/// An outbound SA's MTUs: `inner 1443` (`/link 1500`), with a learned path
/// MTU `inner 1223/pmtu 1280 (9m58s)`; `-` before the first packet and for
/// inbound SAs.
pub fn mtu(sa: &SaInfo) -> String {
    match sa.mtu {
        None => "-".to_owned(),
        Some(m) => match (m.path_mtu, m.path_mtu_expires_ms) {
            (Some(p), Some(ms)) => format!("inner {}/pmtu {p} ({})", m.inner_mtu, duration_ms(ms)),
            (Some(p), None) => format!("inner {}/pmtu {p}", m.inner_mtu),
            _ => format!("inner {}/link {}", m.inner_mtu, m.link_mtu),
        },
    }
}

/// The `sa list` table.
pub fn sa_table(sas: &[SaInfo]) -> String {
    if sas.is_empty() {
        return "no SAs installed\n".to_owned();
    }
    let mut t = Table::new(&[
        ("DIR", Left),
        ("SPI", Left),
        ("CIPHER", Left),
        ("ESN", Left),
        ("TUNNEL", Left),
        ("ENCAP", Left),
        ("PACKETS", Right),
        ("BYTES", Right),
        ("MTU", Left),
        ("DROPS", Left),
        ("AGE", Right),
        ("IDLE", Right),
    ]);
    for sa in sas {
        t.row(vec![
            sa.direction.to_string(),
            format!("{:#010x}", sa.spi),
            sa.cipher.clone(),
            if sa.esn { "yes" } else { "no" }.to_owned(),
            format!("{} -> {}", sa.tunnel_local, sa.tunnel_remote),
            sa.encap.map_or_else(
                || "-".to_owned(),
                |e| format!("udp {}->{}", e.sport, e.dport),
            ),
            count(sa.counters.packets),
            bytes(sa.counters.bytes),
            mtu(sa),
            drops(sa),
            duration_ms(sa.age_ms),
            match sa.last_used_ms {
                Some(ms) => duration_ms(ms),
                None => "never used".to_owned(),
            },
        ]);
    }
    t.render()
}

fn seconds(s: Option<u64>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| duration_ms(s.saturating_mul(1000)))
}

/// The IKE half of `sa list`: one table of IKE SAs, one of Child SAs
/// (with the data plane's counters).
pub fn ike_sa_table(ike_sas: &[IkeSaInfo]) -> String {
    if ike_sas.is_empty() {
        return "no IKE SAs\n".to_owned();
    }
    let mut ike = Table::new(&[
        ("CONNECTION", Left),
        ("STATE", Left),
        ("ROLE", Left),
        ("PEER", Left),
        ("SPI_I", Left),
        ("SPI_R", Left),
        ("ALGORITHMS", Left),
        ("NAT", Left),
        ("AGE", Right),
        ("REKEY IN", Right),
    ]);
    let mut child = Table::new(&[
        ("CHILD", Left),
        ("CONNECTION", Left),
        ("STATE", Left),
        ("SPI IN", Left),
        ("SPI OUT", Left),
        ("ALGORITHMS", Left),
        ("TS", Left),
        ("AGE", Right),
        ("REKEY IN", Right),
        ("PKTS IN", Right),
        ("BYTES IN", Right),
        ("PKTS OUT", Right),
        ("BYTES OUT", Right),
    ]);
    for sa in ike_sas {
        ike.row(vec![
            sa.connection.clone(),
            sa.state.clone(),
            sa.role.clone(),
            match &sa.remote_id {
                Some(id) => format!("{} {id}", sa.remote),
                None => sa.remote.to_string(),
            },
            sa.spi_i.clone(),
            sa.spi_r.clone(),
            sa.algorithms.clone(),
            if sa.nat { "yes" } else { "no" }.to_owned(),
            seconds(Some(sa.age_s)),
            seconds(sa.rekey_in_s),
        ]);
        for c in &sa.children {
            child.row(vec![
                c.name.clone(),
                sa.connection.clone(),
                c.state.clone(),
                c.spi_in.clone(),
                c.spi_out.clone(),
                c.algorithms.clone(),
                format!("{} === {}", c.local_ts.join(","), c.remote_ts.join(",")),
                seconds(Some(c.age_s)),
                seconds(c.rekey_in_s),
                count(c.packets_in),
                bytes(c.bytes_in),
                count(c.packets_out),
                bytes(c.bytes_out),
            ]);
        }
    }
    let mut out = ike.render();
    out.push('\n');
    if child.rows.is_empty() {
        out.push_str("no Child SAs\n");
    } else {
        out.push_str(&child.render());
    }
    let list = |v: &[std::net::IpAddr]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for sa in ike_sas.iter().filter(|sa| !sa.virtual_ips.is_empty()) {
        out.push_str(&format!(
            "\n{} ({}): virtual IP {}; DNS {}\n",
            sa.connection,
            sa.remote,
            list(&sa.virtual_ips),
            if sa.dns.is_empty() {
                "none".to_owned()
            } else {
                list(&sa.dns)
            }
        ));
    }
    out
}

/// The `policy list` table.
pub fn policy_table(policies: &[Policy]) -> String {
    if policies.is_empty() {
        return "no policies installed\n".to_owned();
    }
    let mut t = Table::new(&[
        ("DIR", Left),
        ("LOCAL", Left),
        ("REMOTE", Left),
        ("ACTION", Left),
        ("SPI", Left),
    ]);
    for p in policies {
        t.row(vec![
            p.direction.to_string(),
            p.local.to_string(),
            p.remote.to_string(),
            p.action.as_str().to_owned(),
            p.spi
                .map_or_else(|| "-".to_owned(), |spi| format!("{spi:#010x}")),
        ]);
    }
    t.render()
}

fn mean_batch(packets: u64, batches: u64) -> String {
    if batches == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}", packets as f64 / batches as f64)
    }
}

/// The `status` table: one row per worker, then the totals.
pub fn worker_table(workers: &[WorkerStats]) -> String {
    if workers.is_empty() {
        return "no workers\n".to_owned();
    }
    let mut t = Table::new(&[
        ("WORKER", Right),
        ("CPU", Right),
        ("RX", Right),
        ("TX", Right),
        ("BATCHES", Right),
        ("MEAN BATCH", Right),
        ("P50 NS", Right),
        ("P99 NS", Right),
        ("P99.9 NS", Right),
        ("WAKEUPS", Right),
    ]);
    let ns = |w: &WorkerStats, v: u64| {
        if w.packet_ns.samples == 0 {
            "-".to_owned()
        } else {
            v.to_string()
        }
    };
    let (mut rx, mut tx, mut batches, mut wakeups) = (0u64, 0u64, 0u64, 0u64);
    for w in workers {
        rx = rx.saturating_add(w.rx_packets);
        tx = tx.saturating_add(w.tx_packets);
        batches = batches.saturating_add(w.batches);
        wakeups = wakeups.saturating_add(w.wakeups);
        t.row(vec![
            w.worker.to_string(),
            w.cpu.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            w.rx_packets.to_string(),
            w.tx_packets.to_string(),
            w.batches.to_string(),
            mean_batch(w.rx_packets, w.batches),
            ns(w, w.packet_ns.p50),
            ns(w, w.packet_ns.p99),
            ns(w, w.packet_ns.p999),
            w.wakeups.to_string(),
        ]);
    }
    t.row(vec![
        "total".to_owned(),
        "-".to_owned(),
        rx.to_string(),
        tx.to_string(),
        batches.to_string(),
        mean_batch(rx, batches),
        "-".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
        wakeups.to_string(),
    ]);
    let mut out = t.render();
    // Percentiles do not add up across workers; say so once.
    let _ = writeln!(out, "(percentiles are per packet, per worker)");
    for w in workers.iter().filter(|w| !w.drops.is_empty()) {
        let reasons: Vec<String> = w.drops.iter().map(|(r, n)| format!("{r}={n}")).collect();
        let _ = writeln!(out, "worker {} drops: {}", w.worker, reasons.join(","));
    }
    for w in workers.iter().filter(|w| !w.events.is_empty()) {
        let events: Vec<String> = w.events.iter().map(|(e, n)| format!("{e}={n}")).collect();
        let _ = writeln!(out, "worker {} events: {}", w.worker, events.join(","));
    }
    for w in workers {
        let state = if w.running { "running" } else { "DEAD" };
        let _ = write!(
            out,
            "worker {} {state}, queues: {}",
            w.worker,
            if w.queues.is_empty() {
                "none".to_owned()
            } else {
                w.queues.join(",")
            }
        );
        if let Some(why) = &w.last_failure {
            let _ = write!(out, ", last failure: {why}");
        }
        if let Some(node) = w.numa_node {
            let _ = write!(out, ", NUMA node {node}");
        }
        out.push('\n');
        for sock in &w.sockets {
            let _ = writeln!(out, "  {}", socket_line(sock));
        }
    }
    out
}

/// How one AF_XDP socket was bound: the mode obtained (and why not
/// zero-copy, when asked), rings, UMEM and its node, busy polling.
fn socket_line(s: &xdpsec_api::messages::SocketInfo) -> String {
    let mut line = format!("{} {}", s.queue, s.bind);
    if let Some(why) = &s.zero_copy_refused {
        let _ = write!(line, " (zero-copy refused: {why})");
    }
    if s.need_wakeup {
        line.push_str(", need-wakeup");
    }
    let _ = write!(
        line,
        ", rings rx {} tx {} fill {} comp {}, UMEM {}: {} x {} B",
        s.rx_ring, s.tx_ring, s.fill_ring, s.completion_ring, s.umem, s.umem_frames, s.frame_size
    );
    match s.numa_node {
        Some(node) => {
            let _ = write!(line, " on node {node}");
        }
        None => line.push_str(" on node ?"),
    }
    if let Some(dev) = s.device_numa_node.filter(|d| Some(*d) != s.numa_node) {
        let _ = write!(line, " (device on node {dev}: remote)");
    }
    if let Some(note) = &s.numa_note {
        let _ = write!(line, " ({note})");
    }
    match (s.busy_poll_usecs, s.busy_poll_budget) {
        (Some(us), Some(budget)) => {
            let _ = write!(line, ", busy poll {us} us budget {budget}");
        }
        _ => line.push_str(", busy poll off"),
    }
    line
}

/// The fail-closed guard's line of `xdpsec status`.
pub fn guard_line(guard: &anyhow::Result<Option<xdpsec_dataplane::guard::GuardStatus>>) -> String {
    match guard {
        Ok(Some(g)) => format!(
            "guard: nftables table inet {} in place ({} rules): protected traffic the kernel \
             would carry is dropped, also while the data plane is down; blocked {} out, {} in\n",
            xdpsec_dataplane::guard::TABLE,
            g.rules,
            g.blocked_out,
            g.blocked_in
        ),
        Ok(None) => "guard: NONE: nothing keeps the kernel from sending protected traffic in \
                     cleartext while no worker takes it\n"
            .to_owned(),
        Err(e) => format!("guard: unknown ({e:#})\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdpsec_api::messages::LatencyPercentiles;

    #[test]
    fn human_units() {
        assert_eq!(count(0), "0");
        assert_eq!(count(9_999), "9999");
        assert_eq!(count(12_345), "12k");
        assert_eq!(count(1_234_567), "1.2M");
        assert_eq!(count(u64::MAX), "18E");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(15 * 1024), "15KiB");
        assert_eq!(bytes(3 << 30), "3.0GiB");
    }

    #[test]
    fn mtu_column() {
        let addr: std::net::IpAddr = "198.18.0.1".parse().unwrap();
        let mut sa = SaInfo {
            spi: 0x1000,
            direction: xdpsec_api::Direction::Out,
            cipher: "aes-gcm-128".to_owned(),
            esn: false,
            replay_window: 0,
            tunnel_local: addr,
            tunnel_remote: addr,
            encap: None,
            selectors: Vec::new(),
            lifetime: xdpsec_api::Lifetimes::default(),
            seq: 0,
            counters: xdpsec_api::messages::SaCounters::default(),
            age_ms: 0,
            last_used_ms: None,
            mtu: None,
            resource: None,
        };
        assert_eq!(mtu(&sa), "-");
        sa.mtu = Some(xdpsec_api::messages::SaMtu {
            inner_mtu: 1443,
            link_mtu: 1500,
            path_mtu: None,
            path_mtu_expires_ms: None,
            path_mtu_updates: 0,
        });
        assert_eq!(mtu(&sa), "inner 1443/link 1500");
        sa.mtu = Some(xdpsec_api::messages::SaMtu {
            inner_mtu: 1223,
            link_mtu: 1500,
            path_mtu: Some(1280),
            path_mtu_expires_ms: Some(598_000),
            path_mtu_updates: 1,
        });
        assert_eq!(mtu(&sa), "inner 1223/pmtu 1280 (9m58s)");
        assert!(sa_table(&[sa]).contains("inner 1223/pmtu 1280"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms(0), "0ms");
        assert_eq!(duration_ms(999), "999ms");
        assert_eq!(duration_ms(12_345), "12.3s");
        assert_eq!(duration_ms(307_000), "5m07s");
        assert_eq!(duration_ms(3_600_000 * 3 + 120_000), "3h02m");
        assert_eq!(duration_ms(86_400_000 * 4 + 3_600_000 * 5), "4d05h");
        assert_eq!(duration_ms(u64::MAX), "213503982334d14h");
    }

    #[test]
    fn worker_rows_and_totals() {
        let w = |worker, rx, batches| WorkerStats {
            worker,
            cpu: Some(worker + 2),
            rx_packets: rx,
            tx_packets: rx,
            batches,
            packet_ns: LatencyPercentiles {
                samples: rx,
                p50: 100,
                p99: 200,
                p999: 300,
            },
            ..WorkerStats::default()
        };
        let mut running = w(0, 640, 10);
        running.running = true;
        running.queues = vec!["lan0:0".into(), "lan0:2".into()];
        let mut dead = w(1, 0, 0);
        dead.last_failure = Some("panicked: boom".into());
        let text = worker_table(&[running, dead]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert_eq!(lines[5], "worker 0 running, queues: lan0:0,lan0:2");
        assert_eq!(
            lines[6],
            "worker 1 DEAD, queues: none, last failure: panicked: boom"
        );
        let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[1]),
            ["0", "2", "640", "640", "10", "64.0", "100", "200", "300", "0"]
        );
        assert_eq!(
            cells(lines[2]),
            ["1", "3", "0", "0", "0", "-", "-", "-", "-", "0"]
        );
        assert_eq!(
            cells(lines[3]),
            ["total", "-", "640", "640", "10", "64.0", "-", "-", "-", "0"]
        );
    }

    #[test]
    fn socket_lines_show_the_bind_obtained() {
        use xdpsec_api::messages::SocketInfo;
        let mut w = WorkerStats {
            worker: 0,
            cpu: Some(1),
            running: true,
            queues: vec!["wan0:0".into(), "tun0-dp:0".into()],
            numa_node: Some(0),
            ..WorkerStats::default()
        };
        let nic = SocketInfo {
            queue: "wan0:0".into(),
            bind: "zerocopy".into(),
            need_wakeup: true,
            rx_ring: 4096,
            tx_ring: 2048,
            fill_ring: 4096,
            completion_ring: 2048,
            umem_frames: 8192,
            frame_size: 4096,
            numa_node: Some(0),
            busy_poll_usecs: Some(50),
            busy_poll_budget: Some(64),
            device_numa_node: Some(1),
            ..SocketInfo::default()
        };
        let veth = SocketInfo {
            queue: "tun0-dp:0".into(),
            bind: "copy".into(),
            zero_copy_refused: Some("Invalid argument (os error 22)".into()),
            umem: 1,
            numa_node: None,
            device_numa_node: None,
            busy_poll_usecs: None,
            busy_poll_budget: None,
            ..nic.clone()
        };
        w.sockets = vec![nic, veth];
        let text = worker_table(&[w]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[4], "worker 0 running, queues: wan0:0,tun0-dp:0, NUMA node 0",
            "{text}"
        );
        assert_eq!(
            lines[5],
            "  wan0:0 zerocopy, need-wakeup, rings rx 4096 tx 2048 fill 4096 comp 2048, \
             UMEM 0: 8192 x 4096 B on node 0 (device on node 1: remote), busy poll 50 us \
             budget 64"
        );
        assert_eq!(
            lines[6],
            "  tun0-dp:0 copy (zero-copy refused: Invalid argument (os error 22)), need-wakeup, \
             rings rx 4096 tx 2048 fill 4096 comp 2048, UMEM 1: 8192 x 4096 B on node ?, \
             busy poll off"
        );
    }

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(&[("A", Left), ("NUMBER", Right)]);
        t.row(vec!["long cell".to_owned(), "1".to_owned()]);
        t.row(vec!["x".to_owned(), "12345678".to_owned()]);
        assert_eq!(
            t.render(),
            "A            NUMBER\nlong cell         1\nx          12345678\n"
        );
    }
}
