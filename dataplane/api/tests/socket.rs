//! The SA API over a real Unix socket: a server thread with a handler that
//! holds SAs in a Vec, clients that add, list and delete them, and a
//! subscribed client that receives events.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use xdpsec_api::{
    bind_api_socket, serve_connection, ApiClient, ApiError, Direction, ErrorCode, Event, Handler,
    LifetimeKind, Lifetimes, Policy, PolicyAction, Request, Response, SaInfo, SaSpec, SaUpdate,
    WorkerStats,
};

/// A directory removed on drop, also after a failed assertion.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xdpsec-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct State {
    sas: Vec<SaSpec>,
    policies: Vec<Policy>,
    subscribers: Vec<Sender<Event>>,
}

impl State {
    fn publish(&mut self, event: Event) {
        self.subscribers.retain(|tx| tx.send(event.clone()).is_ok());
    }
}

/// The per-connection handler: what the data plane's will look like.
struct Conn(Arc<Mutex<State>>);

impl Handler for Conn {
    fn handle(&mut self, request: Request) -> Response {
        let mut st = self.0.lock().unwrap();
        match request {
            Request::AddSa { sa } => {
                if let Err(e) = sa.validate() {
                    return Response::error(ErrorCode::InvalidArgument, e.to_string());
                }
                if st
                    .sas
                    .iter()
                    .any(|s| s.spi == sa.spi && s.direction == sa.direction)
                {
                    return Response::error(
                        ErrorCode::AlreadyExists,
                        format!("SA {:#x} {} exists", sa.spi, sa.direction),
                    );
                }
                st.sas.push(sa);
                Response::Ok
            }
            Request::UpdateSa { update } => {
                if let Err(e) = update.validate() {
                    return Response::error(ErrorCode::InvalidArgument, e.to_string());
                }
                match st
                    .sas
                    .iter_mut()
                    .find(|s| s.spi == update.spi && s.direction == update.direction)
                {
                    Some(sa) => {
                        if let Some(l) = update.lifetime {
                            sa.lifetime = l;
                        }
                        Response::Ok
                    }
                    None => Response::error(ErrorCode::NotFound, "no such SA"),
                }
            }
            Request::DeleteSa { spi, direction } => {
                let before = st.sas.len();
                st.sas
                    .retain(|s| !(s.spi == spi && s.direction == direction));
                if st.sas.len() == before {
                    Response::error(ErrorCode::NotFound, format!("no SA {spi:#x} {direction}"))
                } else {
                    Response::Ok
                }
            }
            Request::AddPolicy { policy } => {
                st.policies.push(policy);
                Response::Ok
            }
            Request::DeletePolicy { policy } => {
                st.policies.retain(|p| p.key() != policy);
                Response::Ok
            }
            Request::ListSas => Response::Sas {
                sas: st.sas.iter().map(SaInfo::from_spec).collect(),
            },
            Request::ListPolicies => Response::Policies {
                policies: st.policies.clone(),
            },
            Request::WorkerStats => Response::WorkerStats {
                workers: vec![WorkerStats {
                    worker: 0,
                    cpu: Some(1),
                    ..WorkerStats::default()
                }],
            },
            other => Response::error(ErrorCode::Unsupported, other.op()),
        }
    }

    fn subscribe(&mut self) -> Option<Receiver<Event>> {
        let (tx, rx) = channel();
        self.0.lock().unwrap().subscribers.push(tx);
        Some(rx)
    }
}

/// The accept loop of the test server; stops when dropped.
struct Server {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(listener: UnixListener, path: &Path) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let mut conn = Conn(state.clone());
                    thread::spawn(move || {
                        let _ = serve_connection(stream.unwrap(), &mut conn);
                    });
                }
            })
        };
        Server {
            path: path.to_owned(),
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn publish(&self, event: Event) {
        self.state.lock().unwrap().publish(event);
    }

    fn subscribers(&self) -> usize {
        self.state.lock().unwrap().subscribers.len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn add_list_delete_over_a_unix_socket() {
    let dir = TempDir::new("crud");
    let path = dir.0.join("run/api.sock");
    let listener = bind_api_socket(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(
        parent.permissions().mode() & 0o777,
        0o700,
        "created directory mode"
    );

    // A second data plane must not steal a live socket.
    let err = bind_api_socket(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("api.sock"), "{err}");

    let server = Server::start(listener, &path);
    let mut client = ApiClient::connect(&path).unwrap();
    assert!(client.server_name().starts_with("xdpsec-dataplane/"));

    client.add_sa(common::sa(0x1001, Direction::Out)).unwrap();
    client.add_sa(common::sa(0x2001, Direction::In)).unwrap();
    client.add_sa(common::full_sa()).unwrap();
    // Same SPI, other direction: allowed.
    client.add_sa(common::sa(0x1001, Direction::In)).unwrap();

    let err = client
        .add_sa(common::sa(0x1001, Direction::Out))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Server {
                code: ErrorCode::AlreadyExists,
                ..
            }
        ),
        "{err}"
    );
    let mut bad = common::sa(0x3001, Direction::In);
    bad.replay_window = 16;
    let err = client.add_sa(bad).unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Server {
                code: ErrorCode::InvalidArgument,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("replay_window"), "{err}");

    let sas = client.list_sas().unwrap();
    let ids: Vec<_> = sas.iter().map(|s| (s.spi, s.direction)).collect();
    assert_eq!(
        ids,
        vec![
            (0x1001, Direction::Out),
            (0x2001, Direction::In),
            (0xdead_beef, Direction::Out),
            (0x1001, Direction::In),
        ]
    );
    assert_eq!(sas[2].cipher, "aes-gcm-256");
    assert_eq!(sas[2].encap, common::full_sa().encap);

    let mut update = SaUpdate::new(0x2001, Direction::In);
    update.lifetime = Some(Lifetimes {
        hard_packets: Some(100),
        ..Lifetimes::default()
    });
    client.update_sa(update).unwrap();
    let sas = client.list_sas().unwrap();
    assert_eq!(sas[1].lifetime.hard_packets, Some(100));

    client.delete_sa(0x1001, Direction::Out).unwrap();
    let err = client.delete_sa(0x1001, Direction::Out).unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Server {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{err}"
    );
    let sas = client.list_sas().unwrap();
    assert_eq!(sas.len(), 3);
    assert!(!sas
        .iter()
        .any(|s| s.spi == 0x1001 && s.direction == Direction::Out));

    let policy = Policy {
        local: "10.1.0.0/24".parse().unwrap(),
        remote: "10.2.0.0/24".parse().unwrap(),
        direction: Direction::Out,
        action: PolicyAction::Protect,
        spi: Some(0xdead_beef),
    };
    client.add_policy(policy.clone()).unwrap();
    assert_eq!(client.list_policies().unwrap(), vec![policy.clone()]);
    client.delete_policy(policy.key()).unwrap();
    assert!(client.list_policies().unwrap().is_empty());

    let workers = client.worker_stats().unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].cpu, Some(1));

    // A second client sees the same state.
    let mut other = ApiClient::connect(&path).unwrap();
    assert_eq!(other.list_sas().unwrap().len(), 3);

    drop(client);
    drop(other);
    drop(server);
    drop(dir);
}

#[test]
fn events_reach_a_subscribed_client() {
    let dir = TempDir::new("events");
    let path = dir.0.join("api.sock");
    let server = Server::start(bind_api_socket(&path).unwrap(), &path);

    let mut ike = ApiClient::connect(&path).unwrap();
    ike.add_sa(common::sa(0x1001, Direction::Out)).unwrap();
    let mut watcher = ApiClient::connect(&path).unwrap();
    // Nothing before subscribing.
    assert!(watcher
        .next_event(Some(Duration::from_millis(50)))
        .unwrap()
        .is_none());
    watcher.subscribe_events().unwrap();
    assert_eq!(server.subscribers(), 1);

    let events = [
        Event::SoftLifetimeExpired {
            spi: 0x1001,
            direction: Direction::Out,
            reason: LifetimeKind::Bytes,
        },
        Event::HardLifetimeExpired {
            spi: 0x1001,
            direction: Direction::Out,
            reason: LifetimeKind::Packets,
        },
        Event::IdleSa {
            spi: 0x1001,
            direction: Direction::Out,
            idle_ms: 60_000,
        },
    ];
    let started = Instant::now();
    for e in &events {
        server.publish(e.clone());
    }
    for e in &events {
        let got = watcher.next_event(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(got.as_ref(), Some(e));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "events are slow"
    );
    assert!(watcher
        .next_event(Some(Duration::from_millis(50)))
        .unwrap()
        .is_none());

    // Events that arrive while a request waits are kept for next_event,
    // and requests still work on a subscribed connection.
    server.publish(events[2].clone());
    thread::sleep(Duration::from_millis(100));
    assert_eq!(watcher.list_sas().unwrap().len(), 1);
    assert_eq!(
        watcher.next_event(Some(Duration::from_secs(5))).unwrap(),
        Some(events[2].clone())
    );

    // The non-subscribed client gets none.
    assert_eq!(ike.list_sas().unwrap().len(), 1);
    assert!(ike
        .next_event(Some(Duration::from_millis(50)))
        .unwrap()
        .is_none());

    // A subscriber that goes away is forgotten by the publisher.
    drop(watcher);
    thread::sleep(Duration::from_millis(100));
    server.publish(events[0].clone());
    assert_eq!(server.subscribers(), 0);
    drop(ike);
    drop(server);
    drop(dir);
}

#[test]
fn closure_handlers_offer_no_events() {
    let dir = TempDir::new("closure");
    let path = dir.0.join("api.sock");
    let listener = bind_api_socket(&path).unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut handler = |req: Request| match req {
            Request::ListSas => Response::Sas { sas: vec![] },
            _ => Response::error(ErrorCode::Unsupported, "read-only"),
        };
        serve_connection(stream, &mut handler).unwrap();
    });
    let mut client = ApiClient::connect(&path).unwrap();
    assert!(client.list_sas().unwrap().is_empty());
    let err = client.subscribe_events().unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Server {
                code: ErrorCode::Unsupported,
                ..
            }
        ),
        "{err}"
    );
    drop(client);
    server.join().unwrap();
}

#[test]
fn stale_socket_is_replaced_and_missing_socket_is_a_clear_error() {
    let dir = TempDir::new("stale");
    let path = dir.0.join("api.sock");
    drop(bind_api_socket(&path).unwrap()); // leaves a dead socket file
    assert!(path.exists());
    let err = ApiClient::connect(&path).unwrap_err();
    assert!(matches!(err, ApiError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("api.sock"), "{err}");
    let _listener = bind_api_socket(&path).unwrap();

    let file = dir.0.join("not-a-socket");
    std::fs::write(&file, "x").unwrap();
    let err = bind_api_socket(&file).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");

    let err = ApiClient::connect(dir.0.join("missing.sock")).unwrap_err();
    assert!(err.to_string().contains("missing.sock"), "{err}");
}

#[test]
fn a_silent_server_times_out() {
    let dir = TempDir::new("silent");
    let path = dir.0.join("api.sock");
    let listener = bind_api_socket(&path).unwrap();
    let hold = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        thread::sleep(Duration::from_millis(500));
        drop(stream);
    });
    let started = Instant::now();
    let err = ApiClient::connect_with_timeout(&path, Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, ApiError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_millis(450));
    hold.join().unwrap();
}

/// `[dataplane] api_socket_group`: the socket (and a directory made for it)
/// is the group's; a directory the group cannot enter is refused.
#[test]
fn a_socket_group_opens_the_socket_to_that_group_only() {
    use std::os::unix::fs::MetadataExt;
    const GROUP: u32 = 65534;
    let dir = TempDir::new("group");
    let path = dir.0.join("run/api.sock");
    let _listener = xdpsec_api::bind_api_socket_for_group(&path, Some(GROUP)).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, GROUP));
    let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!((parent.mode() & 0o777, parent.gid()), (0o710, GROUP));

    let closed = dir.0.join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err =
        xdpsec_api::bind_api_socket_for_group(&closed.join("api.sock"), Some(GROUP)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("cannot enter"), "{err}");
}
