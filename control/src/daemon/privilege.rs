//! Giving up root once everything that needs it is done: `[daemon] user`
//! and `group`.
//!
//! The daemon needs privilege only to bind UDP 500 (CAP_NET_BIND_SERVICE),
//! to open the SA API socket (root's unless the data plane's
//! `api_socket_group` opens it to a group), to create its control socket
//! and to read its keys. After that it parses what anyone on the network
//! sends it, so it should hold nothing an attacker could use: it switches
//! to the configured user and group, with no supplementary groups, and
//! sets `no_new_privs` so that nothing it could exec regains privilege.
//! Leaving root this way clears every capability (effective, permitted,
//! inheritable, ambient: the kernel's rule for setuid from 0 without
//! SECBIT_KEEP_CAPS); the result is read back from /proc/self/status and
//! the daemon refuses to run if any capability or uid 0 is left.
//!
//! Its state file is then written as that user: the file's directory must
//! be the user's ([`prepare_state_dir`]).

use std::path::Path;

use anyhow::{bail, Context as _};
use nix::unistd::{Gid, Group, Uid, User};

/// Whom to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub uid: Uid,
    pub gid: Gid,
}

/// The configured user and group, looked up (names or numbers).
pub fn resolve(user: &str, group: Option<&str>) -> anyhow::Result<Target> {
    let by_name =
        User::from_name(user).with_context(|| format!("daemon.user: looking up {user:?}"))?;
    let (uid, primary) = match (by_name, user.parse::<u32>()) {
        (Some(u), _) => (u.uid, Some(u.gid)),
        (None, Ok(n)) => (Uid::from_raw(n), None),
        (None, Err(_)) => bail!("daemon.user: no user {user:?} on this system"),
    };
    let gid = match group {
        Some(g) => match (Group::from_name(g), g.parse::<u32>()) {
            (Ok(Some(grp)), _) => grp.gid,
            (_, Ok(n)) => Gid::from_raw(n),
            _ => bail!("daemon.group: no group {g:?} on this system"),
        },
        None => primary.with_context(|| {
            format!(
                "daemon.group: user {user} has no entry to take a primary group from; set group"
            )
        })?,
    };
    if uid.is_root() {
        bail!("daemon.user: {user} is root; name an unprivileged user, or leave user out");
    }
    Ok(Target { uid, gid })
}

/// Makes sure `target` can write the state file `state_file` (which is
/// replaced by a rename, so its directory must be writable): a missing
/// directory is created for it (mode 0700); an existing one must be its
/// already, or the error says what to do.
pub fn prepare_state_dir(state_file: &Path, target: Target) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = state_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(meta) if meta.uid() == target.uid.as_raw() => Ok(()),
        Ok(meta) => bail!(
            "daemon.user: the state file's directory {} belongs to uid {}, and uid {} cannot \
             replace files in it; give it its own directory (`--state-file /run/xdpsec-ike/ike.state`) \
             or `chown {} {}`",
            dir.display(),
            meta.uid(),
            target.uid,
            target.uid,
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating the state directory {}", dir.display()))?;
            nix::unistd::chown(dir, Some(target.uid), Some(target.gid))
                .with_context(|| format!("giving {} to uid {}", dir.display(), target.uid))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("the state directory {}", dir.display())),
    }
}

/// Becomes `target` for good, and checks that nothing privileged is left.
pub fn drop_to(target: Target) -> anyhow::Result<()> {
    nix::sys::prctl::set_no_new_privs().context("setting no_new_privs")?;
    nix::unistd::setgroups(&[target.gid]).context("dropping supplementary groups")?;
    nix::unistd::setresgid(target.gid, target.gid, target.gid)
        .with_context(|| format!("switching to gid {}", target.gid))?;
    nix::unistd::setresuid(target.uid, target.uid, target.uid)
        .with_context(|| format!("switching to uid {}", target.uid))?;
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status to check the privileges left")?;
    let left = privileges_left(&status);
    if !left.is_empty() {
        bail!(
            "still privileged after switching to uid {}: {}",
            target.uid,
            left.join(", ")
        );
    }
    Ok(())
}

/// What in a /proc/PID/status still grants privilege: a uid 0 among the
/// real/effective/saved/fs uids, or a capability in any set but the
/// bounding one (which no_new_privs makes unreachable).
pub fn privileges_left(status: &str) -> Vec<String> {
    let mut left = Vec::new();
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Uid" if value.split_whitespace().any(|u| u == "0") => {
                left.push(format!("Uid {value}"));
            }
            "CapInh" | "CapPrm" | "CapEff" | "CapAmb"
                if u64::from_str_radix(value, 16) != Ok(0) =>
            {
                left.push(format!("{key} {value}"));
            }
            _ => {}
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "Name:\txdpsec\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
        CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n\
        CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
    const DROPPED: &str = "Name:\txdpsec\nUid:\t65534\t65534\t65534\t65534\n\
        CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
        CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";

    #[test]
    fn reads_what_is_left_from_proc_status() {
        assert_eq!(
            privileges_left(ROOT),
            [
                "Uid 0\t0\t0\t0",
                "CapPrm 000001ffffffffff",
                "CapEff 000001ffffffffff"
            ]
        );
        assert!(privileges_left(DROPPED).is_empty());
        // A saved uid of 0 could switch back.
        let saved_root = DROPPED.replace("65534\t65534\t65534\t65534", "65534\t65534\t0\t65534");
        assert_eq!(privileges_left(&saved_root).len(), 1);
    }

    #[test]
    fn users_and_groups_resolve_by_name_or_number() {
        let nobody = resolve("nobody", None).unwrap();
        assert_ne!(nobody.uid.as_raw(), 0);
        assert_eq!(resolve("65534", Some("65534")).unwrap().uid.as_raw(), 65534);
        assert!(resolve("root", None).is_err());
        assert!(resolve("no-such-user-xdpsec", None).is_err());
        assert!(resolve("nobody", Some("no-such-group-xdpsec")).is_err());
    }
}
