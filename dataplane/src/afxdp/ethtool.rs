//! The one ethtool setting AF_XDP needs on interfaces the data plane
//! creates: TX checksum offload off. A veth whose sender offloads
//! checksums hands the peer frames whose TCP/UDP checksum is only a partial
//! sum; the kernel would finish it on its way out, but frames redirected to
//! an AF_XDP socket never get there.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `ETHTOOL_STXCSUM` from linux/ethtool.h.
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union.
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IF_NAMESIZE],
    data: *mut libc::c_void,
    /// The union is 24 bytes on 64-bit Linux; the kernel copies all of it.
    _pad: [u8; 16],
}

/// Turns TX checksum offload (and so TSO, which depends on it) off on
/// interface `name`, as `ethtool -K name tx off` does.
pub fn disable_tx_checksum_offload(name: &str) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IF_NAMESIZE || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    // SAFETY: socket() has no memory preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut req = IfreqData {
        name: [0; libc::IF_NAMESIZE],
        data: (&mut value as *mut EthtoolValue).cast(),
        _pad: [0; 16],
    };
    for (dst, src) in req.name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // `req` is a complete, NUL-terminated ifreq whose data pointer points
    // at `value`, and both outlive the call.
    // SAFETY: SIOCETHTOOL reads that ifreq and reads/writes only the ethtool_value it points at.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
