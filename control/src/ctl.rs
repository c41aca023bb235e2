//! The IKE daemon's control socket: what `xdpsec initiate|terminate|rekey`
//! and `xdpsec sa list` say to `xdpsec ike`.
//!
//! A Unix stream socket (mode 0600, default [`DEFAULT_CTL_SOCKET`]) with the
//! SA API's framing (`xdpsec_api::framing`): one JSON object per line. The
//! client sends [`CtlMessage`]s (`{"id":1,"request":{"op":"initiate",
//! "connection":"gw"}}`), the first one `hello` with
//! [`CTL_PROTOCOL_VERSION`]; the daemon answers each with a [`CtlReply`]
//! carrying the same id. `initiate` and `rekey` are answered when the
//! exchange has finished (or failed), `terminate` when the delete is done.

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xdpsec_api::framing::MAX_REPLY_LINE;
use xdpsec_api::{write_message, Line, LineReader};

/// The version of this protocol; a `hello` with another is refused.
pub const CTL_PROTOCOL_VERSION: u32 = 1;
/// Where `xdpsec ike` listens unless told otherwise.
pub const DEFAULT_CTL_SOCKET: &str = "/run/xdpsec/ike.sock";
/// Longest request line the daemon accepts.
pub const MAX_CTL_LINE: usize = 64 * 1024;

/// One line from the CLI to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtlMessage {
    /// Echoed in the reply.
    pub id: u64,
    /// What to do.
    pub request: CtlRequest,
}

/// Which SA `rekey` renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RekeyTarget {
    /// The connection's Child SAs.
    Child,
    /// The connection's IKE SA.
    Ike,
}

/// A request to the IKE daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum CtlRequest {
    /// Handshake; must come first.
    Hello {
        /// [`CTL_PROTOCOL_VERSION`].
        version: u32,
    },
    /// Bring a configured connection up (IKE SA and its children).
    Initiate {
        /// The connection's name in the config.
        connection: String,
    },
    /// Delete the connection's IKE SA (and so its children).
    Terminate {
        /// The connection's name.
        connection: String,
    },
    /// Rekey the connection's Child SAs or its IKE SA.
    Rekey {
        /// The connection's name.
        connection: String,
        /// What to rekey.
        target: RekeyTarget,
    },
    /// IKE and Child SAs with their counters.
    ListSas,
    /// Daemon counters (sockets, exchanges).
    Stats,
}

impl CtlRequest {
    /// The `op` name, for logs and messages.
    pub fn op(&self) -> &'static str {
        match self {
            CtlRequest::Hello { .. } => "hello",
            CtlRequest::Initiate { .. } => "initiate",
            CtlRequest::Terminate { .. } => "terminate",
            CtlRequest::Rekey { .. } => "rekey",
            CtlRequest::ListSas => "list_sas",
            CtlRequest::Stats => "stats",
        }
    }
}

/// Error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CtlErrorCode {
    /// Not a request this daemon understands.
    BadRequest,
    /// `hello` missing or with another version.
    VersionMismatch,
    /// No connection (or no SA) by that name.
    NotFound,
    /// The exchange failed (the message says why: a notify, a timeout).
    Failed,
    /// No answer from the peer in time.
    Timeout,
    /// The daemon failed.
    Internal,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum CtlResponse {
    /// Answer to `hello`.
    Hello {
        /// [`CTL_PROTOCOL_VERSION`].
        version: u32,
        /// The daemon's name and version.
        server: String,
    },
    /// Done; `message` says what happened.
    Ok {
        /// For the operator.
        message: String,
    },
    /// Answer to `list_sas`.
    Sas {
        /// The IKE SAs, each with its children.
        ike_sas: Vec<IkeSaInfo>,
    },
    /// Answer to `stats`.
    Stats {
        /// Counters by name.
        counters: std::collections::BTreeMap<String, u64>,
    },
    /// The request failed.
    Error {
        /// Class.
        code: CtlErrorCode,
        /// Why.
        message: String,
    },
}

impl CtlResponse {
    /// An error answer.
    pub fn error(code: CtlErrorCode, message: impl Into<String>) -> Self {
        CtlResponse::Error {
            code,
            message: message.into(),
        }
    }
}

/// One line from the daemon to the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtlReply {
    /// The request's id (`None` if the line could not be read).
    pub id: Option<u64>,
    /// The answer.
    pub response: CtlResponse,
}

/// An IKE SA as `xdpsec sa list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IkeSaInfo {
    /// The connection it belongs to.
    pub connection: String,
    /// `initiator` or `responder` (of the IKE SA as it stands, after rekeys).
    pub role: String,
    /// `connecting`, `established`, `rekeying`, `deleting`, ...
    pub state: String,
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// The peer's identity, once authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    /// Initiator's SPI, hex.
    pub spi_i: String,
    /// Responder's SPI, hex.
    pub spi_r: String,
    /// The negotiated proposal, strongSwan style (`aes128gcm16-prfsha256-x25519`).
    pub algorithms: String,
    /// Whether a NAT was detected (ESP goes in UDP).
    pub nat: bool,
    /// Seconds since it was established.
    pub age_s: u64,
    /// Seconds until it is rekeyed; `None` if it is not scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey_in_s: Option<u64>,
    /// Virtual IPs the peer assigned us (a remote-access client's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_ips: Vec<std::net::IpAddr>,
    /// DNS servers the peer sent with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::IpAddr>,
    /// Its Child SAs.
    pub children: Vec<ChildSaInfo>,
}

/// A Child SA as `xdpsec sa list` shows it; the counters come from the data
/// plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildSaInfo {
    /// The child's name in the config.
    pub name: String,
    /// `installed`, `rekeying`, `rekeyed`, `deleting`, ...
    pub state: String,
    /// Our inbound SPI, hex.
    pub spi_in: String,
    /// The peer's inbound SPI (our outbound), hex.
    pub spi_out: String,
    /// ESP algorithms (`aes128gcm16`, plus `-esn` if ESN is on).
    pub algorithms: String,
    /// ESP in UDP.
    pub udp_encap: bool,
    /// Our traffic selectors.
    pub local_ts: Vec<String>,
    /// The peer's traffic selectors.
    pub remote_ts: Vec<String>,
    /// Seconds since it was installed.
    pub age_s: u64,
    /// Seconds until it is rekeyed; `None` if not scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey_in_s: Option<u64>,
    /// Bytes received and decrypted (data plane).
    pub bytes_in: u64,
    /// Packets received and decrypted (data plane).
    pub packets_in: u64,
    /// Bytes encrypted and sent (data plane).
    pub bytes_out: u64,
    /// Packets encrypted and sent (data plane).
    pub packets_out: u64,
    /// RFC 9611: `fallback`, or `worker N` for a per-resource Child SA;
    /// absent for an ordinary one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The socket could not be reached.
    #[error("IKE control socket {}: {source} (is `xdpsec ike` running?)", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading or writing failed, or no answer in time.
    #[error("IKE control socket: {0}")]
    Io(#[from] io::Error),
    /// The daemon closed the connection.
    #[error("IKE control socket: the daemon closed the connection")]
    Closed,
    /// The daemon sent something unreadable.
    #[error("IKE control socket protocol error: {0}")]
    Protocol(String),
}

/// A blocking client of the control socket.
#[derive(Debug)]
pub struct CtlClient {
    writer: UnixStream,
    reader: LineReader<UnixStream>,
    next_id: u64,
}

impl CtlClient {
    /// Connects and says hello; each later request waits at most `timeout`
    /// for its answer.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, CtlError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| CtlError::Connect {
            path: path.to_owned(),
            source,
        })?;
        let timeout = timeout.max(Duration::from_millis(1));
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let reader = LineReader::new(stream.try_clone()?, MAX_REPLY_LINE);
        let mut client = CtlClient {
            writer: stream,
            reader,
            next_id: 1,
        };
        match client.request(CtlRequest::Hello {
            version: CTL_PROTOCOL_VERSION,
        })? {
            CtlResponse::Hello { .. } => Ok(client),
            CtlResponse::Error { message, .. } => Err(CtlError::Protocol(message)),
            other => Err(CtlError::Protocol(format!(
                "unexpected answer to hello: {other:?}"
            ))),
        }
    }

    /// Sends `request` and waits for its answer (an error answer is
    /// `Ok(CtlResponse::Error)`).
    pub fn request(&mut self, request: CtlRequest) -> Result<CtlResponse, CtlError> {
        let id = self.next_id;
        self.next_id += 1;
        write_message(&mut self.writer, &CtlMessage { id, request })?;
        loop {
            let range = match self.reader.next_line() {
                Ok(Line::Complete(range)) => range,
                Ok(Line::Eof) => return Err(CtlError::Closed),
                Ok(Line::TooLong) => return Err(CtlError::Protocol("answer line too long".into())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let line = self.reader.line(range).trim_ascii();
            if line.is_empty() {
                continue;
            }
            let reply: CtlReply = serde_json::from_slice(line)
                .map_err(|e| CtlError::Protocol(format!("unreadable answer: {e}")))?;
            match reply.id {
                Some(r) if r < id => continue,
                Some(r) if r == id => return Ok(reply.response),
                _ => return Ok(reply.response),
            }
        }
    }
}
