//! Newline-delimited JSON framing and the server side of one connection.
//!
//! The data plane owns the listener, the accept loop and the state; for
//! each accepted connection it calls [`serve_connection`] (typically on a
//! thread of its own) with a [`Handler`] that applies requests to its state.

use std::fs;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::messages::PROTOCOL_VERSION;
use crate::messages::{ClientMessage, ErrorCode, Event, Request, Response, ServerMessage};

/// Longest request line the server accepts (bytes, without the newline).
pub const MAX_REQUEST_LINE: usize = 1 << 20;
/// Longest reply line a client accepts (a long `list_sas`).
pub const MAX_REPLY_LINE: usize = 64 << 20;

const CHUNK: usize = 16 * 1024;

/// What [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line (without its newline), valid until the next call.
    Complete(Range<usize>),
    /// A line longer than the limit; it is being skipped up to its newline.
    TooLong,
    /// The peer closed the stream (an unterminated last line is dropped).
    Eof,
}

/// Splits a byte stream into lines of bounded length. Memory stays below
/// about `max + 16 KiB` whatever the peer sends; consumed bytes are zeroed
/// (lines may carry keys). Read timeouts leave the state intact, so a call
/// after `WouldBlock`/`TimedOut` continues where it stopped.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes.
    start: usize,
    /// Bytes before this offset hold no newline.
    scanned: usize,
    /// Skipping the rest of an over-long line.
    discarding: bool,
    max: usize,
}

impl<R: Read> LineReader<R> {
    /// A reader of lines of at most `max` bytes from `inner`.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            discarding: false,
            max,
        }
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The bytes of a line returned by the last `next_line`.
    pub fn line(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    fn drop_pending(&mut self) {
        self.buf[self.start..].zeroize();
        self.buf.truncate(self.start);
        self.scanned = self.start;
    }

    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        let len = self.buf.len() - self.start;
        self.buf.copy_within(self.start.., 0);
        self.buf[len..].zeroize();
        self.buf.truncate(len);
        self.scanned -= self.start;
        self.start = 0;
    }

    /// The next line. An error from the reader (`WouldBlock` on a
    /// non-blocking socket, a timeout) leaves the state intact.
    pub fn next_line(&mut self) -> io::Result<Line> {
        loop {
            if let Some(off) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + off;
                let begin = self.start;
                self.start = end + 1;
                self.scanned = self.start;
                if self.discarding {
                    self.discarding = false;
                    continue;
                }
                if end - begin > self.max {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(begin..end));
            }
            self.scanned = self.buf.len();
            if self.discarding {
                self.drop_pending();
            } else if self.buf.len() - self.start > self.max {
                self.drop_pending();
                self.discarding = true;
                return Ok(Line::TooLong);
            }
            self.compact();
            let mut chunk = [0u8; CHUNK];
            let n = self.inner.read(&mut chunk)?;
            self.buf.extend_from_slice(&chunk[..n]);
            chunk[..n].zeroize();
            if n == 0 {
                self.drop_pending();
                return Ok(Line::Eof);
            }
        }
    }
}

impl<R> std::fmt::Debug for LineReader<R> {
    /// Never shows the buffered bytes: they may hold keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("buffered", &(self.buf.len() - self.start))
            .field("discarding", &self.discarding)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<R> Drop for LineReader<R> {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// Strips ASCII whitespace (including a `\r` before the newline).
pub fn trim(line: &[u8]) -> &[u8] {
    line.trim_ascii()
}

/// Writes `msg` as one JSON line. The encoded bytes are zeroed afterwards.
pub fn write_message<W: Write, T: Serialize>(writer: &mut W, msg: &T) -> io::Result<()> {
    let mut line = Zeroizing::new(serde_json::to_vec(msg).map_err(io::Error::other)?);
    line.push(b'\n');
    writer.write_all(&line)?;
    writer.flush()
}

/// What the data plane plugs into [`serve_connection`]. A closure
/// `|req: Request| -> Response { .. }` is a handler that offers no events.
pub trait Handler {
    /// Applies one request (never `hello` or `subscribe_events`, which the
    /// framing answers itself).
    fn handle(&mut self, request: Request) -> Response;

    /// Called on `subscribe_events`: a receiver whose events are pushed to
    /// this client until either side drops. `None` answers `unsupported`.
    fn subscribe(&mut self) -> Option<Receiver<Event>> {
        None
    }
}

impl<F: FnMut(Request) -> Response> Handler for F {
    fn handle(&mut self, request: Request) -> Response {
        self(request)
    }
}

/// Knobs of [`serve_connection_with`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest request line; longer ones are answered `line_too_long` and
    /// skipped.
    pub max_line: usize,
    /// A client that does not read replies for this long is dropped.
    pub write_timeout: Option<Duration>,
    /// A connection with no request for this long is closed (`None`: kept
    /// open, as the IKE daemon's is). Not applied while subscribed.
    pub idle_timeout: Option<Duration>,
    /// How often a subscribed connection checks for events.
    pub event_poll: Duration,
    /// What `hello` answers as the server's name.
    pub server_name: String,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_line: MAX_REQUEST_LINE,
            write_timeout: Some(Duration::from_secs(5)),
            idle_timeout: None,
            event_poll: Duration::from_millis(20),
            server_name: concat!("xdpsec-dataplane/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Serves one connection with default [`ServeOptions`]. Returns `Ok(())`
/// when the client closes (or after refusing its protocol version), an
/// error when the socket fails.
pub fn serve_connection<H: Handler + ?Sized>(
    stream: UnixStream,
    handler: &mut H,
) -> io::Result<()> {
    serve_connection_with(stream, handler, &ServeOptions::default())
}

/// Recovers the id of a request line that did not parse, if it has one.
fn peek_id(line: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<u64>,
    }
    serde_json::from_slice::<IdOnly>(line)
        .ok()
        .and_then(|m| m.id)
}

/// Serves one connection: reads request lines, answers `hello` and
/// `subscribe_events` itself, hands other requests to `handler`, pushes
/// events once subscribed.
pub fn serve_connection_with<H: Handler + ?Sized>(
    stream: UnixStream,
    handler: &mut H,
    options: &ServeOptions,
) -> io::Result<()> {
    // A zero timeout is refused by the socket layer; it means "none" here.
    let idle_timeout = options.idle_timeout.filter(|t| !t.is_zero());
    let mut writer = stream.try_clone()?;
    writer.set_write_timeout(options.write_timeout.filter(|t| !t.is_zero()))?;
    stream.set_read_timeout(idle_timeout)?;
    let mut reader = LineReader::new(stream, options.max_line);
    let mut greeted = false;
    let mut events: Option<Receiver<Event>> = None;
    let reply = |w: &mut UnixStream, id: Option<u64>, response: Response| {
        write_message(w, &ServerMessage::Reply { id, response })
    };

    loop {
        if let Some(rx) = &events {
            let mut closed = false;
            loop {
                match rx.try_recv() {
                    Ok(event) => write_message(&mut writer, &ServerMessage::Event { event })?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                // The server let go of this subscriber (it fell too far
                // behind, or the server stops): end the connection, so the
                // client knows its event stream is broken.
                return Ok(());
            }
        }

        let line = match reader.next_line() {
            Ok(line) => line,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if events.is_some()
                    && matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let range = match line {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                reply(
                    &mut writer,
                    None,
                    Response::error(
                        ErrorCode::LineTooLong,
                        format!(
                            "request line longer than {} bytes; skipped",
                            options.max_line
                        ),
                    ),
                )?;
                continue;
            }
            Line::Complete(range) => range,
        };
        let bytes = trim(reader.line(range));
        if bytes.is_empty() {
            continue;
        }
        let msg: ClientMessage = match serde_json::from_slice(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                let id = peek_id(bytes);
                reply(
                    &mut writer,
                    id,
                    Response::error(ErrorCode::BadRequest, format!("malformed request: {e}")),
                )?;
                continue;
            }
        };
        let id = Some(msg.id);
        match msg.request {
            Request::Hello { version, .. } if !greeted => {
                if version != PROTOCOL_VERSION {
                    reply(
                        &mut writer,
                        id,
                        Response::error(
                            ErrorCode::VersionMismatch,
                            format!(
                                "protocol version mismatch: client speaks version {version}, \
                                 this server speaks version {PROTOCOL_VERSION}"
                            ),
                        ),
                    )?;
                    return Ok(());
                }
                greeted = true;
                reply(
                    &mut writer,
                    id,
                    Response::Hello {
                        version: PROTOCOL_VERSION,
                        server: options.server_name.clone(),
                    },
                )?;
            }
            Request::Hello { .. } => reply(
                &mut writer,
                id,
                Response::error(ErrorCode::BadRequest, "hello was already exchanged"),
            )?,
            request if !greeted => reply(
                &mut writer,
                id,
                Response::error(
                    ErrorCode::HandshakeRequired,
                    format!(
                        "send hello with version {PROTOCOL_VERSION} before {}",
                        request.op()
                    ),
                ),
            )?,
            Request::SubscribeEvents => {
                if events.is_none() {
                    match handler.subscribe() {
                        Some(rx) => {
                            let poll = options.event_poll.max(Duration::from_millis(1));
                            reader.get_ref().set_read_timeout(Some(poll))?;
                            events = Some(rx);
                        }
                        None => {
                            reply(
                                &mut writer,
                                id,
                                Response::error(
                                    ErrorCode::Unsupported,
                                    "this server publishes no events",
                                ),
                            )?;
                            continue;
                        }
                    }
                }
                reply(&mut writer, id, Response::Subscribed)?;
            }
            request => {
                let response = handler.handle(request);
                reply(&mut writer, id, response)?;
            }
        }
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Binds the SA API socket at `path` with mode 0600. A missing parent
/// directory is created with mode 0700. A stale socket file (nobody
/// listening) is replaced; a live one or a non-socket file is an error.
pub fn bind_api_socket(path: &Path) -> io::Result<UnixListener> {
    bind_api_socket_for_group(path, None)
}

/// [`bind_api_socket`], and with `group` (a gid) the socket is that
/// group's with mode 0660, so an unprivileged IKE daemon in the group can
/// connect (`[dataplane] api_socket_group`). A parent directory created
/// here is then the group's too, mode 0710 (enter, not list); an existing
/// one the group cannot enter is an error that says so, rather than a
/// socket nobody in the group can reach.
pub fn bind_api_socket_for_group(path: &Path, group: Option<u32>) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(if group.is_some() { 0o710 } else { 0o700 })
                .create(parent)
                .map_err(|e| with_path(parent, e))?;
            if group.is_some() {
                std::os::unix::fs::chown(parent, None, group).map_err(|e| with_path(parent, e))?;
            }
        }
        if let Some(gid) = group {
            use std::os::unix::fs::MetadataExt;
            let meta = fs::metadata(parent).map_err(|e| with_path(parent, e))?;
            let enter = meta.mode() & 0o001 != 0 || (meta.gid() == gid && meta.mode() & 0o010 != 0);
            if !enter {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{}: group {gid} cannot enter it (mode {:o}, group {}), so it cannot \
                         reach the socket; `chgrp {gid} {0}` and `chmod g+x {0}`, or put the \
                         socket in a directory of its own",
                        parent.display(),
                        meta.mode() & 0o7777,
                        meta.gid()
                    ),
                ));
            }
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{}: exists and is not a socket; not replacing it",
                    path.display()
                ),
            ));
        }
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{}: another process is serving the SA API there",
                        path.display()
                    ),
                ));
            }
            fs::remove_file(path).map_err(|e| with_path(path, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_path(path, e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| with_path(path, e))?;
    if group.is_some() {
        std::os::unix::fs::chown(path, None, group).map_err(|e| with_path(path, e))?;
    }
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| with_path(path, e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its input in fixed-size pieces.
    struct Pieces<'a> {
        data: &'a [u8],
        piece: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.piece.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn lines(data: &[u8], piece: usize, max: usize) -> Vec<Result<String, &'static str>> {
        let mut r = LineReader::new(Pieces { data, piece }, max);
        let mut out = Vec::new();
        loop {
            match r.next_line().unwrap() {
                Line::Complete(range) => {
                    out.push(Ok(String::from_utf8(r.line(range).to_vec()).unwrap()))
                }
                Line::TooLong => out.push(Err("too long")),
                Line::Eof => return out,
            }
        }
    }

    #[test]
    fn splits_and_bounds_lines() {
        let long = "x".repeat(50_000);
        let data = format!("a\n\nbb\n{long}\nccc\n{}\ndd\ntrailing", "y".repeat(11));
        for piece in [1, 3, 7, 4096, 100_000] {
            let got = lines(data.as_bytes(), piece, 10);
            assert_eq!(
                got,
                vec![
                    Ok("a".to_owned()),
                    Ok(String::new()),
                    Ok("bb".to_owned()),
                    Err("too long"),
                    Ok("ccc".to_owned()),
                    Err("too long"),
                    Ok("dd".to_owned()),
                ],
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn line_of_exactly_max_is_accepted() {
        let got = lines(b"0123456789\n01234567890\n", 4, 10);
        assert_eq!(got, vec![Ok("0123456789".to_owned()), Err("too long")]);
    }

    #[test]
    fn memory_stays_bounded_on_endless_line() {
        let data = vec![b'z'; 5 << 20];
        let mut r = LineReader::new(&data[..], 1000);
        assert_eq!(r.next_line().unwrap(), Line::TooLong);
        assert_eq!(r.next_line().unwrap(), Line::Eof);
        assert!(r.buf.capacity() < 1000 + 4 * CHUNK, "{}", r.buf.capacity());
    }
}
