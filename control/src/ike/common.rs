//! Small helpers every exchange uses: finding payloads in a message,
//! fresh SPIs and nonces from the injected generator, identities as text.

use std::time::Duration;

use super::connection::Identity;
use super::endpoint::Endpoint;
use super::event::Reason;
use crate::wire::consts::notify;
use crate::wire::{Identification, Notify, Payload, SecurityAssociation, TrafficSelectors};

/// Nonce length we send (RFC 7296 asks for at least half the PRF's key size).
pub(crate) const NONCE_LEN: usize = 32;

/// Text for logs and `sa list`.
pub(crate) fn id_display(id: &Identity) -> String {
    match id {
        Identification::Ipv4(a) => a.to_string(),
        Identification::Ipv6(a) => a.to_string(),
        Identification::Fqdn(d) => String::from_utf8_lossy(d).into_owned(),
        Identification::Rfc822(d) => String::from_utf8_lossy(d).into_owned(),
        Identification::DerDn(d) => {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            format!("DN:{hex}")
        }
        Identification::Other { kind, data } => format!("ID type {kind} ({} bytes)", data.len()),
    }
}

pub(crate) fn notify_of(payloads: &[Payload], kind: u16) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == kind => Some(n),
        _ => None,
    })
}

/// The first error notify of a message, if any.
pub(crate) fn error_notify(payloads: &[Payload]) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if notify::is_error(n.kind) => Some(n),
        _ => None,
    })
}

pub(crate) fn random_vec(ep: &mut Endpoint, len: usize) -> Result<Vec<u8>, Reason> {
    let mut v = vec![0u8; len];
    ep.rng
        .fill(&mut v)
        .map_err(|e| Reason::Internal(e.to_string()))?;
    Ok(v)
}

pub(crate) fn random_ike_spi(ep: &mut Endpoint) -> Result<u64, Reason> {
    loop {
        let mut b = [0u8; 8];
        ep.rng
            .fill(&mut b)
            .map_err(|e| Reason::Internal(e.to_string()))?;
        let spi = u64::from_be_bytes(b);
        if spi != 0 && !ep.by_spi.contains_key(&spi) {
            return Ok(spi);
        }
    }
}

/// `time` minus a random part of `jitter` (never below half of `time`):
/// two ends with the same config do not rekey in the same instant.
pub(crate) fn jittered(time: Duration, jitter: Duration, ep: &mut Endpoint) -> Duration {
    let jitter = jitter.min(time / 2);
    let mut b = [0u8; 4];
    if jitter.is_zero() || ep.rng.fill(&mut b).is_err() {
        return time;
    }
    let frac = f64::from(u32::from_be_bytes(b)) / f64::from(u32::MAX);
    time - jitter.mul_f64(frac)
}

/// A fresh inbound ESP SPI, never in use or reserved, >= 256 (RFC 4303).
pub(crate) fn random_child_spi(ep: &mut Endpoint) -> Result<u32, Reason> {
    loop {
        let mut b = [0u8; 4];
        ep.rng
            .fill(&mut b)
            .map_err(|e| Reason::Internal(e.to_string()))?;
        let spi = u32::from_be_bytes(b);
        if spi >= 256 && ep.child_spis.insert(spi) {
            return Ok(spi);
        }
    }
}

pub(crate) fn find<T>(p: &[Payload], f: impl Fn(&Payload) -> Option<&T>) -> Option<&T> {
    p.iter().find_map(f)
}

pub(crate) fn sa_payload(p: &[Payload]) -> Option<&SecurityAssociation> {
    find(p, |x| match x {
        Payload::Sa(s) => Some(s),
        _ => None,
    })
}

pub(crate) fn tsi(p: &[Payload]) -> Option<&TrafficSelectors> {
    find(p, |x| match x {
        Payload::TsI(t) => Some(t),
        _ => None,
    })
}

pub(crate) fn tsr(p: &[Payload]) -> Option<&TrafficSelectors> {
    find(p, |x| match x {
        Payload::TsR(t) => Some(t),
        _ => None,
    })
}
