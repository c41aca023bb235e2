//! Sleeping in poll(2) until a socket has frames: how an idle worker waits.

use super::XskError;
use std::io;
use std::os::fd::AsRawFd;

/// The fds of a worker's sockets, for [`PollSet::wait`]. Built once; waiting
/// does not allocate.
pub struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl std::fmt::Debug for PollSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.fds.iter().map(|p| (p.fd, p.revents)))
            .finish()
    }
}

impl Default for PollSet {
    fn default() -> Self {
        Self::new()
    }
}

impl PollSet {
    /// An empty set.
    pub fn new() -> Self {
        PollSet { fds: Vec::new() }
    }

    /// Adds a socket (any fd); its index for [`PollSet::is_readable`].
    pub fn add(&mut self, sock: &impl AsRawFd) -> usize {
        self.fds.push(libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        self.fds.len() - 1
    }

    /// Number of fds in the set.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Sleeps until a socket has frames to receive or `timeout_ms` passes
    /// (-1: no limit); the number of sockets ready (0 on timeout or when a
    /// signal interrupted the wait). In copy mode the kernel also transmits
    /// pending TX frames of the sockets here while handling the poll.
    pub fn wait(&mut self, timeout_ms: i32) -> Result<usize, XskError> {
        for p in &mut self.fds {
            p.revents = 0;
        }
        // SAFETY: `fds` points to `len` initialised pollfd structs that the kernel may write (revents) for the duration of the call.
        let r = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(0);
            }
            return Err(XskError::io("poll on AF_XDP sockets", e));
        }
        Ok(r as usize)
    }

    /// Whether socket `index` had frames to receive at the last wait.
    pub fn is_readable(&self, index: usize) -> bool {
        self.fds
            .get(index)
            .is_some_and(|p| p.revents & libc::POLLIN != 0)
    }
}
