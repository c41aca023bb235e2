//! Binding one AF_XDP socket per queue on one UMEM, for the generator and
//! the sink, which run one after another on the same queues.

use crate::clock::now_ns;
use std::time::Duration;
use xdpsec_dataplane::afxdp::{SocketConfig, Umem, UmemConfig, XskError, XskSocket};

/// How long to wait for a queue that an earlier process's socket still
/// holds: the kernel releases a socket that an XSKMAP referenced only when
/// it frees the map, after that process has exited.
const BUSY_WAIT_NS: u64 = 3_000_000_000;

/// A fresh UMEM and a socket on each of queues `0..queues` of `ifindex`.
/// A busy queue is retried (with a new UMEM: one whose first bind failed
/// cannot bind again) for up to 3 s.
pub fn bind_queues(
    umem_config: &UmemConfig,
    ifindex: u32,
    queues: u32,
    config: &SocketConfig,
) -> Result<(Umem, Vec<XskSocket>), XskError> {
    let deadline = now_ns() + BUSY_WAIT_NS;
    loop {
        let mut umem = Umem::new(umem_config.clone())?;
        let bound: Result<Vec<XskSocket>, XskError> = (0..queues)
            .map(|q| XskSocket::bind(&mut umem, ifindex, q, config))
            .collect();
        match bound {
            Ok(sockets) => return Ok((umem, sockets)),
            Err(XskError::Busy { .. }) if now_ns() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}
