//! The SA API server on a temporary socket, driven through `ApiClient`:
//! edits reach the tables and `on_change`, errors carry the right codes,
//! events reach subscribers, and dropping the server cleans up.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xdpsec_api::{
    sample_config, ApiClient, ApiError, Direction, ErrorCode, Event, LifetimeKind, SaSpec,
    SaUpdate, StaticConfig,
};
use xdpsec_dataplane::api_server::{self, ApiServer, ApiServerOptions, ApiShared};
use xdpsec_dataplane::crypto::Backend;
use xdpsec_dataplane::esp::EspError;
use xdpsec_dataplane::pipeline::SoftExpiry;
use xdpsec_dataplane::sa::LifetimeEvent;
use xdpsec_dataplane::stats::WorkerStatsCell;
use xdpsec_dataplane::tables::Tables;

/// A private directory for one test's socket, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xdpsec-api-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("api.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

struct Server {
    server: ApiServer,
    tables: Arc<Tables>,
    changes: Arc<AtomicUsize>,
    expiries: SyncSender<SoftExpiry>,
}

fn start(path: &Path, options: ApiServerOptions) -> Server {
    let tables = Arc::new(Tables::new(Backend::available()[0]));
    let workers: Arc<[WorkerStatsCell]> = vec![
        WorkerStatsCell::new(0, Some(0)),
        WorkerStatsCell::new(1, None),
    ]
    .into();
    let (expiries, rx) = sync_channel(16);
    let changes = Arc::new(AtomicUsize::new(0));
    let counter = changes.clone();
    let server = api_server::spawn_with(
        path,
        ApiShared {
            tables: tables.clone(),
            workers,
            expiries: rx,
            on_change: Box::new(move |_: &Tables| {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
        },
        options,
    )
    .expect("spawn the API server");
    Server {
        server,
        tables,
        changes,
        expiries,
    }
}

fn config() -> StaticConfig {
    StaticConfig::parse(sample_config(), "static-tunnel.toml").unwrap()
}

fn server_code(r: Result<(), ApiError>) -> ErrorCode {
    match r {
        Err(ApiError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[test]
fn sas_and_policies_round_trip() {
    let dir = TempDir::new("sas");
    let s = start(&dir.socket(), ApiServerOptions::default());
    let cfg = config();
    assert_eq!(cfg.sas.len(), 2);
    let mut c = ApiClient::connect(dir.socket()).unwrap();
    assert!(c.list_sas().unwrap().is_empty());

    for sa in &cfg.sas {
        c.add_sa(sa.clone()).unwrap();
    }
    assert_eq!(s.changes.load(Ordering::SeqCst), 2);
    let listed: Vec<(u32, Direction)> = c
        .list_sas()
        .unwrap()
        .iter()
        .map(|i| (i.spi, i.direction))
        .collect();
    assert_eq!(
        listed,
        vec![(0x2001, Direction::In), (0x1001, Direction::Out)]
    );
    assert_eq!(s.tables.load().sa_infos().len(), 2);

    // Duplicates and nonsense are refused, and do not count as changes.
    assert_eq!(
        server_code(c.add_sa(cfg.sas[0].clone())),
        ErrorCode::AlreadyExists
    );
    let mut reserved: SaSpec = cfg.sas[0].clone();
    reserved.spi = 7;
    let err = c.add_sa(reserved).unwrap_err();
    match &err {
        ApiError::Server { code, message } => {
            assert_eq!(*code, ErrorCode::InvalidArgument);
            assert!(message.contains("spi"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server_code(c.delete_sa(0x9999, Direction::In)),
        ErrorCode::NotFound
    );
    // The in SA 0x2001 exists, but no out SA with that SPI.
    assert_eq!(
        server_code(c.delete_sa(0x2001, Direction::Out)),
        ErrorCode::NotFound
    );
    assert_eq!(s.changes.load(Ordering::SeqCst), 2);

    for p in &cfg.policies {
        c.add_policy(p.clone()).unwrap();
    }
    assert_eq!(s.changes.load(Ordering::SeqCst), 2 + cfg.policies.len());
    assert_eq!(c.list_policies().unwrap(), cfg.policies);
    assert_eq!(
        server_code(c.add_policy(cfg.policies[0].clone())),
        ErrorCode::AlreadyExists
    );
    c.delete_policy(cfg.policies[0].key()).unwrap();
    assert_eq!(
        server_code(c.delete_policy(cfg.policies[0].key())),
        ErrorCode::NotFound
    );
    assert_eq!(c.list_policies().unwrap(), cfg.policies[1..]);

    // update_sa: validated, looked up, applied.
    assert_eq!(
        server_code(c.update_sa(SaUpdate::new(0x1001, Direction::Out))),
        ErrorCode::InvalidArgument,
        "an update of nothing"
    );
    let moved = |spi, direction| SaUpdate {
        tunnel_remote: Some("198.18.0.3".parse().unwrap()),
        ..SaUpdate::new(spi, direction)
    };
    assert_eq!(
        server_code(c.update_sa(moved(0x4242, Direction::Out))),
        ErrorCode::NotFound
    );
    c.update_sa(moved(0x1001, Direction::Out)).unwrap();
    c.update_sa(moved(0x2001, Direction::In)).unwrap();
    let remotes: Vec<String> = c
        .list_sas()
        .unwrap()
        .iter()
        .map(|i| i.tunnel_remote.to_string())
        .collect();
    assert_eq!(remotes, ["198.18.0.3", "198.18.0.3"]);
    // A new inbound SA would forget its replay window: refused.
    let relimited = SaUpdate {
        lifetime: Some(xdpsec_api::Lifetimes {
            hard_packets: Some(10),
            ..Default::default()
        }),
        ..SaUpdate::new(0x2001, Direction::In)
    };
    assert_eq!(server_code(c.update_sa(relimited)), ErrorCode::Unsupported);
    assert_eq!(s.changes.load(Ordering::SeqCst), 2 + cfg.policies.len() + 3);

    c.delete_sa(0x1001, Direction::Out).unwrap();
    assert_eq!(
        server_code(c.delete_sa(0x1001, Direction::Out)),
        ErrorCode::NotFound
    );
    let left: Vec<u32> = c.list_sas().unwrap().iter().map(|i| i.spi).collect();
    assert_eq!(left, vec![0x2001]);
    assert_eq!(s.changes.load(Ordering::SeqCst), 2 + cfg.policies.len() + 4);
    drop(s);
}

#[test]
fn replace_policy_swaps_the_sa_in_one_step() {
    let dir = TempDir::new("replace");
    let s = start(&dir.socket(), ApiServerOptions::default());
    let cfg = config();
    let mut c = ApiClient::connect(dir.socket()).unwrap();
    for sa in &cfg.sas {
        c.add_sa(sa.clone()).unwrap();
    }
    let mut second = cfg
        .sas
        .iter()
        .find(|sa| sa.direction == Direction::Out)
        .expect("an outbound SA in the sample")
        .clone();
    second.spi = 0x1002;
    c.add_sa(second).unwrap();
    let policy = cfg
        .policies
        .iter()
        .find(|p| p.direction == Direction::Out && p.spi == Some(0x1001))
        .expect("an out policy protecting with 0x1001")
        .clone();
    // Replace works whether the key is present or not.
    c.replace_policy(policy.clone()).unwrap();
    let moved = xdpsec_api::Policy {
        spi: Some(0x1002),
        ..policy.clone()
    };
    let before = s.changes.load(Ordering::SeqCst);
    c.replace_policy(moved.clone()).unwrap();
    assert_eq!(s.changes.load(Ordering::SeqCst), before + 1, "one publish");
    assert_eq!(c.list_policies().unwrap(), vec![moved]);
    // Validated like add_policy.
    let no_spi = xdpsec_api::Policy {
        spi: None,
        ..policy
    };
    assert_eq!(
        server_code(c.replace_policy(no_spi)),
        ErrorCode::InvalidArgument
    );
}

#[test]
fn on_change_sees_the_new_tables() {
    let dir = TempDir::new("change");
    let tables = Arc::new(Tables::new(Backend::available()[0]));
    let (_tx, rx) = sync_channel(1);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let _server = api_server::spawn(
        &dir.socket(),
        ApiShared {
            tables: tables.clone(),
            workers: Vec::new().into(),
            expiries: rx,
            on_change: Box::new(move |t: &Tables| {
                log.lock().unwrap().push(t.load().sa_infos().len());
                Ok(())
            }),
        },
    )
    .unwrap();
    let cfg = config();
    let mut c = ApiClient::connect(dir.socket()).unwrap();
    c.add_sa(cfg.sas[0].clone()).unwrap();
    c.add_sa(cfg.sas[1].clone()).unwrap();
    c.delete_sa(cfg.sas[0].spi, cfg.sas[0].direction).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 1]);
    assert!(c.worker_stats().unwrap().is_empty());
}

#[test]
fn worker_stats_has_every_worker() {
    let dir = TempDir::new("stats");
    let _s = start(&dir.socket(), ApiServerOptions::default());
    let mut c = ApiClient::connect(dir.socket()).unwrap();
    let workers = c.worker_stats().unwrap();
    let ids: Vec<(u32, Option<u32>)> = workers.iter().map(|w| (w.worker, w.cpu)).collect();
    assert_eq!(ids, vec![(0, Some(0)), (1, None)]);
}

#[test]
fn socket_is_private_and_removed_on_drop() {
    let dir = TempDir::new("mode");
    let path = dir.socket();
    let s = start(&path, ApiServerOptions::default());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    // A second server on the same live socket is refused.
    let (_tx, rx) = sync_channel(1);
    let second = api_server::spawn(
        &path,
        ApiShared {
            tables: Arc::new(Tables::new(Backend::available()[0])),
            workers: Vec::new().into(),
            expiries: rx,
            on_change: Box::new(|_: &Tables| Ok(())),
        },
    );
    let err = second.expect_err("a live socket must not be taken over");
    assert!(err.to_string().contains("api.sock"), "{err}");

    // An idle client connection must not keep the drop waiting.
    let mut idle = ApiClient::connect(&path).unwrap();
    let started = Instant::now();
    drop(s);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!path.exists(), "socket file left behind");
    assert!(idle.list_sas().is_err());
    assert!(UnixStream::connect(&path).is_err());
}

#[test]
fn soft_expiry_reaches_every_subscriber() {
    let dir = TempDir::new("events");
    let s = start(&dir.socket(), ApiServerOptions::default());
    let mut a = ApiClient::connect(dir.socket()).unwrap();
    let mut b = ApiClient::connect(dir.socket()).unwrap();
    a.subscribe_events().unwrap();
    b.subscribe_events().unwrap();
    // A subscriber that goes away is pruned without disturbing the others.
    let mut gone = ApiClient::connect(dir.socket()).unwrap();
    gone.subscribe_events().unwrap();
    drop(gone);

    s.expiries
        .send(SoftExpiry {
            spi: 0x1001,
            outbound: true,
            event: LifetimeEvent {
                soft_bytes: true,
                ..LifetimeEvent::default()
            },
        })
        .unwrap();
    s.expiries
        .send(SoftExpiry {
            spi: 0x2001,
            outbound: false,
            event: LifetimeEvent {
                seq_nearly_exhausted: true,
                ..LifetimeEvent::default()
            },
        })
        .unwrap();
    let want = [
        Event::SoftLifetimeExpired {
            spi: 0x1001,
            direction: Direction::Out,
            reason: LifetimeKind::Bytes,
        },
        Event::SoftLifetimeExpired {
            spi: 0x2001,
            direction: Direction::In,
            reason: LifetimeKind::Packets,
        },
    ];
    for client in [&mut a, &mut b] {
        for w in &want {
            let got = client.next_event(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(got.as_ref(), Some(w));
        }
        // Requests still work on a subscribed connection.
        assert!(client.list_sas().unwrap().is_empty());
    }
    // No event for a subscriber that joins later.
    let mut late = ApiClient::connect(dir.socket()).unwrap();
    late.subscribe_events().unwrap();
    assert_eq!(
        late.next_event(Some(Duration::from_millis(200))).unwrap(),
        None
    );
}

#[test]
fn hard_expiry_and_idle_are_reported_once() {
    let dir = TempDir::new("scan");
    let s = start(
        &dir.socket(),
        ApiServerOptions {
            idle_after: Duration::from_millis(300),
            scan_interval: Duration::from_millis(50),
            ..ApiServerOptions::default()
        },
    );
    let cfg = config();
    let mut c = ApiClient::connect(dir.socket()).unwrap();
    c.subscribe_events().unwrap();
    c.add_sa(cfg.sas[1].clone()).unwrap(); // in 0x2001, hard_packets set

    // The SA refuses a packet for its hard lifetime.
    let snapshot = s.tables.load();
    let entry = snapshot.inbound(0x2001).expect("installed");
    entry.stats.add_esp_drop(EspError::LifetimeExpired);
    entry.stats.add_esp_drop(EspError::LifetimeExpired);

    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && events.len() < 2 {
        if let Some(e) = c.next_event(Some(Duration::from_millis(100))).unwrap() {
            events.push(e);
        }
    }
    assert_eq!(
        events[0],
        Event::HardLifetimeExpired {
            spi: 0x2001,
            direction: Direction::In,
            reason: LifetimeKind::Packets,
        }
    );
    match &events[1] {
        Event::IdleSa {
            spi: 0x2001,
            direction: Direction::In,
            idle_ms,
        } => assert!(*idle_ms >= 300, "{idle_ms}"),
        other => panic!("{other:?}"),
    }
    // Several scans later: nothing more.
    entry.stats.add_esp_drop(EspError::LifetimeExpired);
    assert_eq!(
        c.next_event(Some(Duration::from_millis(400))).unwrap(),
        None
    );
}

#[test]
fn connections_are_bounded() {
    let dir = TempDir::new("bound");
    let s = start(
        &dir.socket(),
        ApiServerOptions {
            max_connections: 2,
            ..ApiServerOptions::default()
        },
    );
    let mut a = ApiClient::connect(dir.socket()).unwrap();
    let _b = ApiClient::connect(dir.socket()).unwrap();
    match ApiClient::connect(dir.socket()) {
        Err(ApiError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::Internal);
            assert!(message.contains("too many"), "{message}");
        }
        other => panic!("a third connection must be refused: {other:?}"),
    }
    assert_eq!(s.server.connections(), 2);
    // The admitted ones keep working; a closed one frees its slot.
    assert!(a.list_sas().unwrap().is_empty());
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.server.connections() > 1 {
        assert!(Instant::now() < deadline, "slot not freed");
        std::thread::sleep(Duration::from_millis(10));
    }
    ApiClient::connect(dir.socket()).expect("a slot is free again");
}

#[test]
fn bad_requests_get_errors_not_hangs() {
    use std::io::{BufRead, BufReader, Write};
    let dir = TempDir::new("bad");
    let _s = start(&dir.socket(), ApiServerOptions::default());
    let mut stream = UnixStream::connect(dir.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut roundtrip = |line: &str| {
        stream.write_all(line.as_bytes()).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        serde_json::from_str::<serde_json::Value>(&reply).unwrap()
    };
    let r = roundtrip("{\"id\":1,\"request\":{\"op\":\"list_sas\"}}\n");
    assert_eq!(r["response"]["code"], "handshake_required");
    let r = roundtrip("{\"id\":2,\"request\":{\"op\":\"hello\",\"version\":1}}\n");
    assert_eq!(r["response"]["status"], "hello");
    let r = roundtrip("{\"id\":3,\"request\":{\"op\":\"add_sa\",\"sa\":{\"spi\":5}}}\n");
    assert_eq!(r["response"]["code"], "bad_request");
    let r = roundtrip("not json\n");
    assert_eq!(r["response"]["code"], "bad_request");
    let r = roundtrip("{\"id\":4,\"request\":{\"op\":\"list_policies\"}}\n");
    assert_eq!(r["id"], 4);
    assert_eq!(r["response"]["status"], "policies");
}

#[test]
fn a_change_the_rest_of_the_data_plane_refuses_is_undone_and_fails_the_request() {
    let dir = TempDir::new("refused");
    let tables = Arc::new(Tables::new(Backend::available()[0]));
    let (_tx, rx) = sync_channel(1);
    let _server = api_server::spawn(
        &dir.socket(),
        ApiShared {
            tables: tables.clone(),
            workers: Vec::new().into(),
            expiries: rx,
            // As an XDP map that is full: at most one policy fits.
            on_change: Box::new(|t: &Tables| {
                if t.policies().len() > 1 {
                    Err("PROTECT_V4 is full".to_owned())
                } else {
                    Ok(())
                }
            }),
        },
    )
    .unwrap();
    let cfg = config();
    let mut c = ApiClient::connect(dir.socket()).unwrap();
    for sa in &cfg.sas {
        c.add_sa(sa.clone()).unwrap();
    }
    let mut policies = cfg.policies.iter().cloned();
    c.add_policy(policies.next().unwrap()).unwrap();
    let refused = c.add_policy(policies.next().unwrap()).unwrap_err();
    let text = refused.to_string();
    assert!(text.contains("PROTECT_V4 is full"), "{text}");
    assert_eq!(server_code(Err(refused)), ErrorCode::Internal);
    assert_eq!(tables.policies().len(), 1, "the refused policy was left in");
    assert_eq!(c.list_policies().unwrap().len(), 1);
}

/// 5000 SAs cross their soft lifetime within a second: the workers'
/// reports overflow their bounded queue (1024 in the data plane), and the
/// scan reports what was lost. Every SA is reported exactly once, so the
/// IKE daemon rekeys each before its hard limit.
#[test]
fn five_thousand_soft_expiries_at_once_are_each_reported_once() {
    const SAS: u32 = 5000;
    let dir = TempDir::new("soft5000");
    let s = start(
        &dir.socket(),
        ApiServerOptions {
            scan_interval: Duration::from_millis(200),
            ..ApiServerOptions::default()
        },
    );
    let template = config().sas[0].clone();
    let mut c = ApiClient::connect(dir.socket()).unwrap();
    for i in 0..SAS {
        let mut sa = template.clone();
        sa.spi = 0x10_0000 + i;
        sa.lifetime.soft_packets = Some(1);
        sa.lifetime.hard_packets = Some(1000);
        c.add_sa(sa).unwrap();
    }
    let mut events = ApiClient::connect(dir.socket()).unwrap();
    events.subscribe_events().unwrap();
    let snapshot = s.tables.load();
    let now = Instant::now();
    for i in 0..SAS {
        let spi = 0x10_0000 + i;
        snapshot
            .outbound_sa(spi)
            .expect("installed")
            .stats
            .add_carried(1, 100, now);
        // The worker's report; one in ten gets through a full queue (the
        // scan must not report those again).
        if i % 10 == 0 {
            s.expiries
                .send(SoftExpiry {
                    spi,
                    outbound: true,
                    event: LifetimeEvent {
                        soft_packets: true,
                        ..LifetimeEvent::default()
                    },
                })
                .unwrap();
        }
    }

    let mut seen = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match events.next_event(Some(Duration::from_millis(500))).unwrap() {
            Some(Event::SoftLifetimeExpired {
                spi,
                direction: Direction::Out,
                reason: LifetimeKind::Packets,
            }) => *seen.entry(spi).or_insert(0) += 1,
            Some(other) => panic!("{other:?}"),
            // Quiet for half a second after all arrived: no duplicates.
            None if seen.len() == SAS as usize => break,
            None => {}
        }
    }
    assert_eq!(seen.len(), SAS as usize, "SAs reported");
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "reported more than once: {}", twice.len());
}
