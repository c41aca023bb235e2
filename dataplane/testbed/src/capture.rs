//! A bounded tcpdump in a namespace writing a classic pcap file, and a
//! reader for that file, for tests that check what crossed a link; a pcap
//! writer and tshark for packets a test builds, and raw IPv4 packets sent
//! from inside a namespace.

use crate::{Error, Netns, NsChild, Result};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A running `tcpdump -w`, started and stopped by PID.
#[derive(Debug)]
pub struct Capture {
    child: Option<NsChild>,
    path: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i IF -c max_packets -w PATH FILTER` in `ns` and waits
    /// (up to 5 s) until it listens.
    pub fn start(
        ns: &Netns,
        iface: &str,
        filter: &str,
        path: &Path,
        max_packets: u32,
    ) -> Result<Capture> {
        let child = ns.spawn([
            "tcpdump",
            "-i",
            iface,
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            "0",
            "-Z",
            "root",
            "-c",
            &max_packets.to_string(),
            "-w",
            &path.to_string_lossy(),
            filter,
        ])?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !child.stderr_so_far().contains("listening on") {
            if let Some(status) = child.try_wait()? {
                return Err(Error::Command {
                    cmd: child.command().to_string(),
                    status,
                    stderr: child.stderr_so_far(),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "tcpdump not listening after 5 s: {}",
                    child.stderr_so_far()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Capture {
            child: Some(child),
            path: path.to_path_buf(),
        })
    }

    /// Waits up to 5 s until the file holds `frames` frames or tcpdump
    /// exits by itself (it has its `-c` frames), then stops it with SIGTERM
    /// (by PID): the frames captured. SIGTERM loses what tcpdump has not
    /// read yet, hence the wait: the caller knows how many frames must have
    /// passed by now.
    pub fn finish(mut self, frames: usize) -> Result<Vec<Vec<u8>>> {
        let Some(child) = self.child.take() else {
            return read_pcap(&self.path);
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None))
            && read_pcap(&self.path).map_or(0, |f| f.len()) < frames
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        child.terminate()?;
        child.wait_timeout(Duration::from_secs(5))?;
        read_pcap(&self.path)
    }

    /// The pcap file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The frames of a classic pcap file with Ethernet link type (as tcpdump
/// -w writes it); an absent or still empty file has none, a truncated last
/// record is left out.
pub fn read_pcap(path: &Path) -> Result<Vec<Vec<u8>>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Sys {
                op: format!("read {}", path.display()),
                source,
            })
        }
    };
    if data.len() < 24 {
        return Ok(Vec::new());
    }
    let bad = |what: String| Error::Parse {
        cmd: format!("read pcap {}", path.display()),
        what,
    };
    let word = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    let magic = u32::from_le_bytes(word(&data[0..4]));
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => return Err(bad(format!("not a pcap file (magic {magic:#x})"))),
    };
    let u32_at = |b: &[u8]| {
        if le {
            u32::from_le_bytes(word(b))
        } else {
            u32::from_be_bytes(word(b))
        }
    };
    if u32_at(&data[20..24]) != 1 {
        return Err(bad("link type is not Ethernet".into()));
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = usize::try_from(u32_at(&data[at + 8..at + 12])).unwrap_or(usize::MAX);
        let start = at + 16;
        let Some(frame) = start
            .checked_add(caplen)
            .and_then(|end| data.get(start..end))
        else {
            break;
        };
        frames.push(frame.to_vec());
        at = start + caplen;
    }
    Ok(frames)
}

/// Sends whole IPv4 packets (header included) from inside `ns` through a
/// raw socket (IPPROTO_RAW: the kernel fills in the header checksum, and
/// the ID if it is zero), each `copies` times, to the destination in its
/// header.
pub fn send_raw_ipv4(ns: &Netns, packets: &[Vec<u8>], copies: usize) -> Result<()> {
    let packets = packets.to_vec();
    ns.run_in(move || -> Result<()> {
        use nix::sys::socket::{
            sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
        };
        let sys = |op: &str| {
            let op = op.to_string();
            move |e: nix::Error| Error::Sys {
                op,
                source: e.into(),
            }
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Raw,
        )
        .map_err(sys("raw socket"))?;
        for packet in &packets {
            let header = packet.get(..20).ok_or_else(|| Error::Parse {
                cmd: "send_raw_ipv4".into(),
                what: format!("a {}-byte packet has no IPv4 header", packet.len()),
            })?;
            let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
            let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
            for _ in 0..copies {
                sendto(fd.as_raw_fd(), packet, &to, MsgFlags::empty()).map_err(sys("sendto"))?;
            }
        }
        Ok(())
    })?
}

/// Writes `frames` (Ethernet) as a classic pcap file (microsecond
/// timestamps, one microsecond apart).
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, frame) in frames.iter().enumerate() {
        let len = u32::try_from(frame.len()).map_err(|_| Error::Parse {
            cmd: "write_pcap".into(),
            what: format!("a frame of {} bytes", frame.len()),
        })?;
        out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(frame);
    }
    std::fs::write(path, out).map_err(|source| Error::Sys {
        op: format!("write {}", path.display()),
        source,
    })
}

/// Runs `tshark -n -r PCAP ARGS...`; its stdout lines.
pub fn tshark(pcap: &Path, args: &[String]) -> Result<Vec<String>> {
    let cmd = format!("tshark -n -r {} {}", pcap.display(), args.join(" "));
    let out = std::process::Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(pcap)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}
