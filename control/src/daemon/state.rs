//! The state file (default `/run/xdpsec/ike.state`, mode 0600 in a 0700
//! directory, on tmpfs so it never outlives the boot): what the daemon
//! must know after its own restart to go on without touching established
//! tunnels. It holds the ledger of the Child SAs this daemon installed in
//! the data plane (SPIs and policy selectors, no keys), so that after a
//! restart the daemon tells its own SAs from the data plane's static ones,
//! keeps them until their connections are up again and then removes them
//! (see [`super`]). The IKE SAs themselves are not saved: a restarted daemon
//! negotiates new ones.
//!
//! Written to a temporary file and renamed, so a kill at any moment leaves
//! either the old or the new state, never half of one.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

/// Where the state lives unless told otherwise.
pub const DEFAULT_STATE_FILE: &str = "/run/xdpsec/ike.state";

/// Reads and writes one state file.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file at `path` (its directory is created 0700 on first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state; `Ok(None)` if there is none. A file that does not
    /// parse is an error (the caller decides to start afresh and says so).
    pub fn load<T: DeserializeOwned>(&self) -> io::Result<Option<T>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => zeroize::Zeroizing::new(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(with_path(&self.path, e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", self.path.display()),
            )
        })
    }

    /// Replaces the saved state with `state`, atomically.
    pub fn save<T: Serialize>(&self, state: &T) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| with_path(dir, e))?;
            }
        }
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(state).map_err(io::Error::other)?);
        let tmp = self.path.with_extension("tmp");
        fs::remove_file(&tmp).ok();
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| with_path(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| with_path(&tmp, e))?;
        // No fsync: the file lives on tmpfs and guards against a process
        // restart, not a power cut.
        drop(f);
        fs::rename(&tmp, &self.path).map_err(|e| with_path(&self.path, e))
    }

    /// Removes the file (a clean shutdown that took its SAs down).
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(&self.path, e)),
            _ => Ok(()),
        }
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_is_private_and_atomic() {
        let dir = std::env::temp_dir().join(format!("xdpsec-state-test-{}", std::process::id()));
        fs::remove_dir_all(&dir).ok();
        let file = StateFile::new(dir.join("sub/ike.state"));
        assert_eq!(file.load::<Vec<u32>>().unwrap(), None);
        file.save(&vec![1u32, 2, 3]).unwrap();
        assert_eq!(file.load::<Vec<u32>>().unwrap(), Some(vec![1, 2, 3]));
        let mode = fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(dir.join("sub")).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        file.save(&vec![4u32]).unwrap();
        assert_eq!(file.load::<Vec<u32>>().unwrap(), Some(vec![4]));
        fs::write(file.path(), b"{not json").unwrap();
        assert!(file.load::<Vec<u32>>().is_err());
        file.remove().unwrap();
        file.remove().unwrap();
        fs::remove_dir_all(&dir).ok();
    }
}
