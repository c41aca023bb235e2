//! Targets on the SA API (newline-delimited JSON between the IKE daemon,
//! the CLI and the data plane) and the data plane's static TOML config.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use xdpsec_api::framing::{Line, LineReader, ServeOptions, MAX_REQUEST_LINE};
use xdpsec_api::{
    serve_connection_with, ClientMessage, ErrorCode, Handler, Request, Response, ServerMessage,
    StaticConfig,
};
use xdpsec_dataplane::crypto::Backend;
use xdpsec_dataplane::tables::{TableError, Tables};

/// Hands out the input in pieces of a chosen size, as a socket would.
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

fn backend() -> Backend {
    Backend::available()
        .first()
        .copied()
        .unwrap_or(Backend::AwsLc)
}

/// What the data plane's API server does with a request, on tables
/// without XDP maps or guard behind them (`api_server.rs` adds those).
struct TableHandler {
    tables: Tables,
}

impl TableHandler {
    fn edit(&self, r: Result<(), TableError>) -> Response {
        match r {
            Ok(()) => Response::Ok,
            Err(e) => Response::error(ErrorCode::InvalidArgument, e.to_string()),
        }
    }
}

impl Handler for TableHandler {
    fn handle(&mut self, request: Request) -> Response {
        let t = &self.tables;
        match request {
            Request::AddSa { sa } => {
                let valid = sa.validate().is_ok();
                let r = t.add_sa(&sa);
                // What the SA API's own validation accepts, the data plane
                // installs: the IKE daemon validates before it asks.
                if valid {
                    if let Err(TableError::InvalidSa(why)) = &r {
                        panic!("a valid SA spec was refused by the data plane: {why}");
                    }
                }
                self.edit(r)
            }
            Request::DeleteSa { spi, direction } => self.edit(t.delete_sa(spi, direction)),
            Request::AddPolicy { policy } => self.edit(t.add_policy(policy)),
            Request::ReplacePolicy { policy } => self.edit(t.replace_policy(policy)),
            Request::DeletePolicy { policy } => self.edit(t.delete_policy(&policy)),
            Request::UpdateSa { update } => self.edit(t.update_sa(&update)),
            Request::ListSas => Response::Sas {
                sas: t.load().sa_infos(),
            },
            Request::ListPolicies => Response::Policies {
                policies: t.policies(),
            },
            Request::WorkerStats => Response::WorkerStats {
                workers: Vec::new(),
            },
            Request::Hello { .. } | Request::SubscribeEvents => {
                panic!("{} reached the request handler", request.op())
            }
        }
    }
}

/// The SA API's framing and messages. The first byte chooses the piece
/// size the bytes arrive in and the line limit, and whether the whole
/// server loop (`serve_connection_with` on a socket pair, requests applied
/// to real SA and policy tables) runs as well as the line reader.
///
/// - Lines are never longer than the limit, and memory stays bounded.
/// - A line that parses as a `ClientMessage` serialises and parses back
///   to itself; one that parses as a `ServerMessage` serialises.
/// - Requests edit the tables; a valid SA spec is never refused by them.
/// - Every line the server writes back is a `ServerMessage`.
pub fn sa_api_framing(data: &[u8]) {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    let piece = usize::from(knobs & 0x1f) * 97 + 1;
    let max = if knobs & 0x20 != 0 {
        64
    } else {
        MAX_REQUEST_LINE
    };
    let mut handler = TableHandler {
        tables: Tables::new(backend()),
    };
    let mut reader = LineReader::new(Pieces { data: bytes, piece }, max);
    loop {
        match reader.next_line() {
            Ok(Line::Complete(range)) => {
                assert!(range.len() <= max, "a line over the limit");
                let line = xdpsec_api::framing::trim(reader.line(range));
                if let Ok(msg) = serde_json::from_slice::<ClientMessage>(line) {
                    let again = serde_json::to_vec(&msg).expect("a request serialises");
                    let back: ClientMessage =
                        serde_json::from_slice(&again).expect("a serialised request parses");
                    assert_eq!(back, msg, "request round trip");
                    match msg.request {
                        Request::Hello { .. } | Request::SubscribeEvents => {}
                        request => {
                            let _ = handler.handle(request);
                        }
                    }
                }
                if let Ok(msg) = serde_json::from_slice::<ServerMessage>(line) {
                    let _ = serde_json::to_vec(&msg).expect("a reply serialises");
                }
            }
            Ok(Line::TooLong) => {}
            Ok(Line::Eof) => break,
            Err(e) => panic!("reading from a slice failed: {e}"),
        }
    }
    // The tables stay readable whatever was applied.
    let _ = handler.tables.load().sa_infos();
    let _ = handler.tables.policies();
    if knobs & 0x40 != 0 {
        serve(bytes, max);
    }
}

/// The server loop on a socket pair: the input is what the client sends.
fn serve(bytes: &[u8], max: usize) {
    let Ok((server, mut client)) = UnixStream::pair() else {
        return;
    };
    let request = bytes.to_vec();
    // The client writes and reads on its own thread, as a real one would:
    // replies may fill the socket buffer before the requests are all in.
    let reader = std::thread::spawn(move || {
        let mut out = client.try_clone().expect("clone a socket");
        let writer = std::thread::spawn(move || {
            let _ = out.write_all(&request);
            let _ = out.shutdown(std::net::Shutdown::Write);
        });
        let mut replies = Vec::new();
        let _ = client.read_to_end(&mut replies);
        let _ = writer.join();
        replies
    });
    let mut handler = TableHandler {
        tables: Tables::new(backend()),
    };
    let options = ServeOptions {
        max_line: max,
        ..ServeOptions::default()
    };
    let result = serve_connection_with(server, &mut handler, &options);
    assert!(result.is_ok(), "serving a well-behaved client: {result:?}");
    let replies = reader.join().expect("the client thread");
    for line in replies.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let parsed = serde_json::from_slice::<ServerMessage>(line);
        assert!(
            parsed.is_ok(),
            "the server wrote a line that is no ServerMessage: {}",
            String::from_utf8_lossy(line)
        );
    }
}

/// The data plane's static TOML (`xdpsec dataplane --config`): what
/// parses and validates serialises back to TOML that parses to the same
/// config, and its SAs and policies install into the tables as the
/// daemon installs them at start (a validated config must not be refused
/// there).
pub fn config_dataplane(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = StaticConfig::parse(text, "fuzz.toml") else {
        return;
    };
    let again = toml::to_string(&cfg).expect("a config serialises to TOML");
    let back = StaticConfig::parse(&again, "again.toml").expect("a serialised config parses");
    assert_eq!(back, cfg, "config round trip");
    let _ = cfg.dataplane.worker_count();
    let tables = Tables::new(backend());
    for sa in &cfg.sas {
        if let Err(e) = tables.add_sa(sa) {
            panic!("a validated config's SA {:08x} is refused: {e}", sa.spi);
        }
    }
    for p in &cfg.policies {
        if let Err(e) = tables.add_policy(p.clone()) {
            panic!("a validated config's policy is refused: {e}");
        }
    }
}
