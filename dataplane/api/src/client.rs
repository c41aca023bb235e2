//! The blocking client of the SA API, used by the IKE daemon and the CLI.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::framing::{trim, write_message, Line, LineReader, MAX_REPLY_LINE};
use crate::messages::{
    ClientMessage, ErrorCode, Event, Request, Response, SaInfo, ServerMessage, WorkerStats,
    PROTOCOL_VERSION,
};
use crate::policy::{Policy, PolicyKey};
use crate::sa::{Direction, SaSpec, SaUpdate};

/// How long a request waits for its reply unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Events kept while waiting for a reply; older ones are dropped beyond.
const MAX_QUEUED_EVENTS: usize = 65_536;

/// What can go wrong talking to the SA API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be reached.
    #[error("SA API socket {}: {source} (is the data plane running?)", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading or writing failed.
    #[error("SA API: {0}")]
    Io(#[from] io::Error),
    /// No reply in time.
    #[error("SA API: no reply within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection.
    #[error("SA API: the server closed the connection")]
    Closed,
    /// The server speaks another protocol version.
    #[error("SA API protocol version mismatch (this client speaks version {client}): {detail}")]
    VersionMismatch {
        /// [`PROTOCOL_VERSION`].
        client: u32,
        /// What the server said.
        detail: String,
    },
    /// The server answered with an error.
    #[error("SA API: {code}: {message}")]
    Server {
        /// Error class.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// The server sent something this client does not understand.
    #[error("SA API protocol error: {0}")]
    Protocol(String),
}

/// A connection to the SA API. Methods block until the reply arrives or the
/// timeout passes. Events (after [`ApiClient::subscribe_events`]) that
/// arrive while waiting for a reply are queued for
/// [`ApiClient::next_event`].
#[derive(Debug)]
pub struct ApiClient {
    writer: UnixStream,
    reader: LineReader<UnixStream>,
    next_id: u64,
    timeout: Duration,
    server: String,
    events: VecDeque<Event>,
}

impl ApiClient {
    /// Connects to the socket at `path` and does the `hello` handshake, with
    /// [`DEFAULT_TIMEOUT`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ApiError> {
        Self::connect_with_timeout(path, DEFAULT_TIMEOUT)
    }

    /// Like [`ApiClient::connect`] with another per-request timeout.
    pub fn connect_with_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<Self, ApiError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| ApiError::Connect {
            path: path.to_owned(),
            source,
        })?;
        Self::from_stream(stream, timeout)
    }

    /// Runs the handshake on an already connected stream.
    pub fn from_stream(stream: UnixStream, timeout: Duration) -> Result<Self, ApiError> {
        let timeout = timeout.max(Duration::from_millis(1));
        stream.set_write_timeout(Some(timeout))?;
        let reader = LineReader::new(stream.try_clone()?, MAX_REPLY_LINE);
        let mut client = ApiClient {
            writer: stream,
            reader,
            next_id: 1,
            timeout,
            server: String::new(),
            events: VecDeque::new(),
        };
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            client: concat!("xdpsec-api/", env!("CARGO_PKG_VERSION")).to_owned(),
        };
        match client.request(hello) {
            Ok(Response::Hello { version, server }) if version == PROTOCOL_VERSION => {
                client.server = server;
                Ok(client)
            }
            Ok(Response::Hello { version, server }) => Err(ApiError::VersionMismatch {
                client: PROTOCOL_VERSION,
                detail: format!("server {server:?} speaks version {version}"),
            }),
            Ok(other) => Err(unexpected("hello", &other)),
            Err(ApiError::Server {
                code: ErrorCode::VersionMismatch,
                message,
            }) => Err(ApiError::VersionMismatch {
                client: PROTOCOL_VERSION,
                detail: message,
            }),
            Err(e) => Err(e),
        }
    }

    /// The server's name from the handshake.
    pub fn server_name(&self) -> &str {
        &self.server
    }

    /// Sends one request and waits for its reply. An `error` reply becomes
    /// [`ApiError::Server`].
    pub fn request(&mut self, request: Request) -> Result<Response, ApiError> {
        let id = self.next_id;
        self.next_id += 1;
        write_message(&mut self.writer, &ClientMessage { id, request })?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.read_message(Some(deadline))? {
                ServerMessage::Event { event } => self.queue(event),
                ServerMessage::Reply {
                    id: reply_id,
                    response,
                } => {
                    match reply_id {
                        // A late reply to a request that timed out.
                        Some(r) if r < id => continue,
                        Some(r) if r > id => {
                            return Err(ApiError::Protocol(format!(
                                "reply to request {r} while waiting for {id}"
                            )))
                        }
                        _ => {}
                    }
                    return match response {
                        Response::Error { code, message } => {
                            Err(ApiError::Server { code, message })
                        }
                        other if reply_id.is_none() => Err(ApiError::Protocol(format!(
                            "reply without id: {}",
                            other.status()
                        ))),
                        other => Ok(other),
                    };
                }
            }
        }
    }

    fn queue(&mut self, event: Event) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn read_message(&mut self, deadline: Option<Instant>) -> Result<ServerMessage, ApiError> {
        loop {
            let timeout = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ApiError::Timeout(self.timeout));
                    }
                    Some(left)
                }
                None => None,
            };
            self.reader.get_ref().set_read_timeout(timeout)?;
            let line = match self.reader.next_line() {
                Ok(line) => line,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ApiError::Timeout(self.timeout))
                }
                Err(e) => return Err(e.into()),
            };
            match line {
                Line::Eof => return Err(ApiError::Closed),
                Line::TooLong => {
                    return Err(ApiError::Protocol(format!(
                        "server sent a line longer than {MAX_REPLY_LINE} bytes"
                    )))
                }
                Line::Complete(range) => {
                    let bytes = trim(self.reader.line(range));
                    if bytes.is_empty() {
                        continue;
                    }
                    return serde_json::from_slice(bytes).map_err(|e| {
                        ApiError::Protocol(format!("unreadable server message: {e}"))
                    });
                }
            }
        }
    }

    fn expect_ok(&mut self, request: Request) -> Result<(), ApiError> {
        let op = request.op();
        match self.request(request)? {
            Response::Ok => Ok(()),
            other => Err(unexpected(op, &other)),
        }
    }

    /// Installs an SA.
    pub fn add_sa(&mut self, sa: SaSpec) -> Result<(), ApiError> {
        self.expect_ok(Request::AddSa { sa })
    }

    /// Changes an SA.
    pub fn update_sa(&mut self, update: SaUpdate) -> Result<(), ApiError> {
        self.expect_ok(Request::UpdateSa { update })
    }

    /// Removes an SA.
    pub fn delete_sa(&mut self, spi: u32, direction: Direction) -> Result<(), ApiError> {
        self.expect_ok(Request::DeleteSa { spi, direction })
    }

    /// Installs a policy.
    pub fn add_policy(&mut self, policy: Policy) -> Result<(), ApiError> {
        self.expect_ok(Request::AddPolicy { policy })
    }

    /// Installs a policy, replacing the one with the same key if any, in
    /// one step.
    pub fn replace_policy(&mut self, policy: Policy) -> Result<(), ApiError> {
        self.expect_ok(Request::ReplacePolicy { policy })
    }

    /// Removes a policy.
    pub fn delete_policy(&mut self, policy: PolicyKey) -> Result<(), ApiError> {
        self.expect_ok(Request::DeletePolicy { policy })
    }

    /// SAs with their counters.
    pub fn list_sas(&mut self) -> Result<Vec<SaInfo>, ApiError> {
        match self.request(Request::ListSas)? {
            Response::Sas { sas } => Ok(sas),
            other => Err(unexpected("list_sas", &other)),
        }
    }

    /// Installed policies.
    pub fn list_policies(&mut self) -> Result<Vec<Policy>, ApiError> {
        match self.request(Request::ListPolicies)? {
            Response::Policies { policies } => Ok(policies),
            other => Err(unexpected("list_policies", &other)),
        }
    }

    /// Per-worker statistics.
    pub fn worker_stats(&mut self) -> Result<Vec<WorkerStats>, ApiError> {
        match self.request(Request::WorkerStats)? {
            Response::WorkerStats { workers } => Ok(workers),
            other => Err(unexpected("worker_stats", &other)),
        }
    }

    /// Puts the connection in non-blocking mode (for an event loop that
    /// polls [`AsFd::as_fd`]): then [`ApiClient::next_event`] returns
    /// `Ok(None)` at once when nothing is buffered or readable. Requests on
    /// a non-blocking connection fail with a timeout, so use a second
    /// connection for them.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), ApiError> {
        Ok(self.writer.set_nonblocking(nonblocking)?)
    }

    /// Asks the server to push events on this connection.
    pub fn subscribe_events(&mut self) -> Result<(), ApiError> {
        match self.request(Request::SubscribeEvents)? {
            Response::Subscribed => Ok(()),
            other => Err(unexpected("subscribe_events", &other)),
        }
    }

    /// The next pushed event; waits at most `timeout` (`None`: forever) and
    /// returns `Ok(None)` when none came.
    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<Event>, ApiError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(Some(event));
        }
        let deadline = timeout.map(|t| Instant::now() + t.max(Duration::from_millis(1)));
        loop {
            match self.read_message(deadline) {
                Ok(ServerMessage::Event { event }) => return Ok(Some(event)),
                // A late reply to a request that timed out.
                Ok(ServerMessage::Reply { id: Some(r), .. }) if r < self.next_id => continue,
                Ok(ServerMessage::Reply { response, .. }) => {
                    return Err(ApiError::Protocol(format!(
                        "unsolicited reply: {}",
                        response.status()
                    )))
                }
                Err(ApiError::Timeout(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for ApiClient {
    /// The connection's socket, to poll for pushed events.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.writer.as_fd()
    }
}

fn unexpected(op: &str, response: &Response) -> ApiError {
    ApiError::Protocol(format!("unexpected reply {:?} to {op}", response.status()))
}
