//! The daemon's side of the control socket ([`crate::ctl`]), non-blocking,
//! for the single-threaded event loop: the listener and each connection are
//! polled; complete request lines come out as [`CtlCall`]s, answers go into
//! a bounded per-connection output buffer flushed when the socket is
//! writable.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use xdpsec_api::{bind_api_socket, Line, LineReader};

use crate::ctl::{
    CtlErrorCode, CtlMessage, CtlReply, CtlRequest, CtlResponse, CTL_PROTOCOL_VERSION, MAX_CTL_LINE,
};

/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 64;
/// Unsent answer bytes a connection may hold before it is dropped (a
/// client that does not read).
const MAX_PENDING_OUTPUT: usize = 16 << 20;

/// A request the event loop must answer with [`CtlServer::reply`].
#[derive(Debug)]
pub struct CtlCall {
    /// The connection it came on.
    pub conn: u64,
    /// Its id.
    pub id: u64,
    /// The request (never `hello`, which is answered here).
    pub request: CtlRequest,
}

#[derive(Debug)]
struct Conn {
    token: u64,
    stream: UnixStream,
    reader: LineReader<UnixStream>,
    out: Vec<u8>,
    greeted: bool,
    closed: bool,
}

/// The listener and its connections.
#[derive(Debug)]
pub struct CtlServer {
    listener: UnixListener,
    path: PathBuf,
    conns: Vec<Conn>,
    next_token: u64,
}

/// Which descriptor a poll slot belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtlFd {
    /// The listening socket.
    Listener,
    /// A connection, by token.
    Conn(u64),
}

impl CtlServer {
    /// Binds `path` (mode 0600, its directory created 0700 if missing; a
    /// stale socket is replaced, a live one refused).
    pub fn bind(path: &Path) -> io::Result<Self> {
        let listener = bind_api_socket(path)?;
        listener.set_nonblocking(true)?;
        Ok(CtlServer {
            listener,
            path: path.to_owned(),
            conns: Vec::new(),
            next_token: 1,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Descriptors to poll, with whether each wants POLLOUT.
    pub fn fds(&self) -> Vec<(CtlFd, BorrowedFd<'_>, bool)> {
        let mut out = vec![(CtlFd::Listener, self.listener.as_fd(), false)];
        for c in &self.conns {
            out.push((CtlFd::Conn(c.token), c.stream.as_fd(), !c.out.is_empty()));
        }
        out
    }

    /// Accepts what is waiting on the listener.
    pub fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        tracing::warn!("control socket: too many connections; closing a new one");
                        continue;
                    }
                    if let Err(e) = self.add(stream) {
                        tracing::warn!("control socket: setting up a connection: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("control socket: accept: {e}");
                    return;
                }
            }
        }
    }

    fn add(&mut self, stream: UnixStream) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        let reader = LineReader::new(stream.try_clone()?, MAX_CTL_LINE);
        let token = self.next_token;
        self.next_token += 1;
        self.conns.push(Conn {
            token,
            stream,
            reader,
            out: Vec::new(),
            greeted: false,
            closed: false,
        });
        Ok(())
    }

    /// Reads what connection `token` sent; complete requests are appended
    /// to `calls`.
    pub fn read(&mut self, token: u64, calls: &mut Vec<CtlCall>) {
        let Some(conn) = self.conns.iter_mut().find(|c| c.token == token) else {
            return;
        };
        loop {
            let range = match conn.reader.next_line() {
                Ok(Line::Complete(range)) => range,
                Ok(Line::TooLong) => {
                    queue(
                        conn,
                        None,
                        CtlResponse::error(
                            CtlErrorCode::BadRequest,
                            format!("request line longer than {MAX_CTL_LINE} bytes; skipped"),
                        ),
                    );
                    continue;
                }
                Ok(Line::Eof) => {
                    conn.closed = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    conn.closed = true;
                    break;
                }
            };
            let line = conn.reader.line(range).trim_ascii().to_vec();
            if line.is_empty() {
                continue;
            }
            let msg: CtlMessage = match serde_json::from_slice(&line) {
                Ok(m) => m,
                Err(e) => {
                    #[derive(Deserialize)]
                    struct IdOnly {
                        id: Option<u64>,
                    }
                    let id = serde_json::from_slice::<IdOnly>(&line)
                        .ok()
                        .and_then(|m| m.id);
                    queue(
                        conn,
                        id,
                        CtlResponse::error(
                            CtlErrorCode::BadRequest,
                            format!("malformed request: {e}"),
                        ),
                    );
                    continue;
                }
            };
            match msg.request {
                CtlRequest::Hello { version } if version == CTL_PROTOCOL_VERSION => {
                    conn.greeted = true;
                    queue(
                        conn,
                        Some(msg.id),
                        CtlResponse::Hello {
                            version: CTL_PROTOCOL_VERSION,
                            server: concat!("xdpsec-ike/", env!("CARGO_PKG_VERSION")).to_owned(),
                        },
                    );
                }
                CtlRequest::Hello { version } => queue(
                    conn,
                    Some(msg.id),
                    CtlResponse::error(
                        CtlErrorCode::VersionMismatch,
                        format!(
                            "control protocol version mismatch: client speaks {version}, \
                             the daemon {CTL_PROTOCOL_VERSION}"
                        ),
                    ),
                ),
                request if !conn.greeted => queue(
                    conn,
                    Some(msg.id),
                    CtlResponse::error(
                        CtlErrorCode::VersionMismatch,
                        format!(
                            "send hello with version {CTL_PROTOCOL_VERSION} before {}",
                            request.op()
                        ),
                    ),
                ),
                request => calls.push(CtlCall {
                    conn: token,
                    id: msg.id,
                    request,
                }),
            }
        }
        flush(conn);
    }

    /// Queues the answer to a call (dropped if its connection is gone).
    pub fn reply(&mut self, conn: u64, id: u64, response: CtlResponse) {
        if let Some(c) = self.conns.iter_mut().find(|c| c.token == conn) {
            queue(c, Some(id), response);
            flush(c);
        }
    }

    /// Whether connection `conn` is still open (a pending answer for a
    /// closed one can be forgotten).
    pub fn is_open(&self, conn: u64) -> bool {
        self.conns.iter().any(|c| c.token == conn && !c.closed)
    }

    /// Writes buffered answers of connection `token`.
    pub fn writable(&mut self, token: u64) {
        if let Some(c) = self.conns.iter_mut().find(|c| c.token == token) {
            flush(c);
        }
    }

    /// Marks a connection whose socket reported an error or hang-up.
    pub fn hang_up(&mut self, token: u64) {
        if let Some(c) = self.conns.iter_mut().find(|c| c.token == token) {
            c.closed = true;
        }
    }

    /// Drops connections the client closed or that failed, and those that
    /// do not read their answers.
    pub fn reap(&mut self) {
        self.conns
            .retain(|c| !c.closed && c.out.len() <= MAX_PENDING_OUTPUT);
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
}

fn queue(conn: &mut Conn, id: Option<u64>, response: CtlResponse) {
    match serde_json::to_vec(&CtlReply { id, response }) {
        Ok(mut line) => {
            line.push(b'\n');
            conn.out.extend_from_slice(&line);
        }
        Err(e) => tracing::error!("control socket: encoding an answer: {e}"),
    }
}

fn flush(conn: &mut Conn) {
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(0) => {
                conn.closed = true;
                return;
            }
            Ok(n) => {
                conn.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                conn.closed = true;
                conn.out.clear();
                return;
            }
        }
    }
}
