//! The daemons' logs (issue 14.2): `--log-format json` makes every line
//! of stderr one JSON object, to the last one, the error that stops the
//! daemon included; text stays the default.

use std::process::Command;

use serde_json::Value;
use xdpsec_testbed::tunnel::{Side, TunnelBed, TunnelOptions};

const XDPSEC: &str = env!("CARGO_BIN_EXE_xdpsec");

/// Each non-empty line of `log` as JSON; panics on one that is not.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn message(event: &Value) -> &str {
    event["fields"]["message"].as_str().unwrap_or_default()
}

#[test]
fn a_config_error_is_the_last_json_line_and_exits_3() {
    for daemon in ["dataplane", "ike"] {
        let out = Command::new(XDPSEC)
            .args([
                daemon,
                "--config",
                "/nonexistent/xdpsec.toml",
                "--log-format",
                "json",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{daemon}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let events = json_lines(&stderr);
        let last = events.last().unwrap_or_else(|| panic!("{daemon}: no log"));
        assert_eq!(last["level"], "ERROR", "{daemon}: {stderr}");
        assert!(
            message(last).contains("/nonexistent/xdpsec.toml"),
            "{daemon}: {stderr}"
        );
    }
}

#[test]
fn text_is_the_default() {
    let out = Command::new(XDPSEC)
        .args(["dataplane", "--config", "/nonexistent/xdpsec.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" ERROR "), "{stderr}");
    assert!(
        serde_json::from_str::<Value>(stderr.trim()).is_err(),
        "{stderr}"
    );
}

/// Needs root (namespaces, XDP): `cargo xtask test`.
#[test]
fn a_running_data_plane_logs_json_from_start_to_stop() {
    let mut bed = TunnelBed::new(
        XDPSEC,
        TunnelOptions {
            dataplane_args: vec!["--log-format".into(), "json".into()],
            ..TunnelOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stats = bed.ping(Side::A, Side::B, false, 2).unwrap();
    assert!(stats.received >= 1, "{}", stats.output);
    bed.stop(Side::A).unwrap();
    let log = bed.log(Side::A);
    let events = json_lines(&log);
    let started = events
        .iter()
        .find(|e| message(e).contains("started in"))
        .unwrap_or_else(|| panic!("no start line: {log}"));
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["target"], "xdpsec_dataplane::daemon");
    assert!(
        events.iter().any(|e| message(e).contains("stopped")),
        "no stop line: {log}"
    );
}
