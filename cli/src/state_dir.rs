//! What a state dir holds, found without writing anything (device-link's read-only
//! `StateReader`), and making a new one that disappears again when the command fails.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use tidings_device_link::{
    identity::Identity,
    state::{StateError, StateReader},
};

use crate::{
    error::{CliError, Where},
    state_key::{self, StateKey, StateLock},
};

/// What a state dir holds.
pub enum Found {
    /// Nothing yet (no directory, or an empty one): a new account may go there. The key,
    /// when a key file exists already (kept outside the state dir).
    Empty {
        /// The existing key, if any.
        key: Option<StateKey>,
    },
    /// The state of a device signed out of its account.
    SignedOut {
        /// Its key.
        key: StateKey,
    },
    /// A device signed in to an account.
    SignedIn {
        /// Its key.
        key: StateKey,
        /// The account (boxed: the other variants are small).
        identity: Box<Identity>,
    },
}

/// Looks at the state dir of `at` and its key file without writing anything.
pub fn inspect(at: &Where, key_path: &Path) -> Result<Found, CliError> {
    let has_files = has_files_besides(&at.dir, key_path).map_err(|e| CliError::State {
        dir: at.dir.clone(),
        detail: format!("it cannot be read ({e})"),
    })?;
    let Some(key) = state_key::load(key_path)? else {
        if !has_files {
            return Ok(Found::Empty { key: None });
        }
        // Any key tells "state without its key" (the device record does not open) from
        // "someone else's files" (no device record).
        return match StateReader::open(&at.dir, &[0; 32]) {
            Err(StateError::NoState(_)) => Err(CliError::ForeignDir { dir: at.dir.clone() }),
            _ => Err(CliError::KeyFile {
                path: key_path.to_path_buf(),
                problem: format!(
                    "is missing, and the state in {} cannot be opened without it: pass --key-file, or \
                     move the state dir away and `tidings account restore` from the recovery phrase",
                    at.dir.display()
                ),
            }),
        };
    };
    let reader = match StateReader::open(&at.dir, key.bytes()) {
        Ok(reader) => reader,
        Err(StateError::NoState(_)) if !has_files => return Ok(Found::Empty { key: Some(key) }),
        Err(StateError::NoState(_)) => return Err(CliError::ForeignDir { dir: at.dir.clone() }),
        Err(e) => return Err(at.state(e)),
    };
    match reader.identity() {
        Ok(Some(identity)) => Ok(Found::SignedIn {
            key,
            identity: Box::new(identity),
        }),
        Ok(None) => Ok(Found::SignedOut { key }),
        Err(e) => Err(at.state(e)),
    }
}

/// Whether `dir` holds anything but the key file (and the pinned OHTTP key
/// configuration, public data kept beside the state).
fn has_files_besides(dir: &Path, key_path: &Path) -> io::Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.path() != key_path && entry.file_name() != crate::ohttp::PIN_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A state dir being set up for a new account: the key (created if there was none) and
/// the lock. Unless [`Creating::finish`] is given a success, everything this command
/// created is removed again, so bad input or an unreachable relay leave nothing behind.
pub struct Creating {
    dir: PathBuf,
    key_path: PathBuf,
    key: StateKey,
    lock: StateLock,
    /// What to remove on failure; `None` for a signed-out state dir that was there before.
    undo: Option<Undo>,
}

struct Undo {
    dir_existed: bool,
    key_created: bool,
}

impl Creating {
    /// Takes the state dir of `found` (which must be [`Found::Empty`] or
    /// [`Found::SignedOut`]) for a new account.
    pub fn begin(at: &Where, key_path: &Path, found: Found) -> Result<Creating, CliError> {
        let (key, fresh) = match found {
            Found::Empty { key } => (key, true),
            Found::SignedOut { key } => (Some(key), false),
            Found::SignedIn { .. } => return Err(CliError::HasAccount { dir: at.dir.clone() }),
        };
        let dir_existed = at.dir.exists();
        let key_created = key.is_none();
        let key = match key {
            Some(key) => key,
            None => state_key::create(key_path)?,
        };
        let undo = fresh.then_some(Undo {
            dir_existed,
            key_created,
        });
        let lock = match state_key::lock(key_path, &at.dir) {
            Ok(lock) => lock,
            Err(e) => {
                remove(&at.dir, key_path, undo.as_ref());
                return Err(e);
            }
        };
        Ok(Creating {
            dir: at.dir.clone(),
            key_path: key_path.to_path_buf(),
            key,
            lock,
            undo,
        })
    }

    /// The state key.
    pub fn key(&self) -> &[u8; 32] {
        self.key.bytes()
    }

    /// Keeps the new state when `result` is a success (and returns the lock to hold while
    /// using it); removes what this command created otherwise.
    pub fn finish<T>(self, result: Result<T, CliError>) -> Result<(T, StateLock), CliError> {
        match result {
            Ok(value) => Ok((value, self.lock)),
            Err(e) => {
                remove(&self.dir, &self.key_path, self.undo.as_ref());
                Err(e)
            }
        }
    }
}

/// Removes what a failed command created. Best effort: the command's own error is what
/// the user needs to see.
fn remove(dir: &Path, key_path: &Path, undo: Option<&Undo>) {
    let Some(undo) = undo else { return };
    if !undo.dir_existed {
        let _ = fs::remove_dir_all(dir);
    } else if let Ok(entries) = fs::read_dir(dir) {
        // The directory was empty before (or held only the key file): empty it again.
        for entry in entries.flatten() {
            let path = entry.path();
            if path == key_path && !undo.key_created {
                continue;
            }
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
    if undo.key_created {
        let _ = fs::remove_file(key_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(dir: &Path) -> Where {
        Where {
            relay: "http://127.0.0.1:7400".into(),
            dir: dir.to_path_buf(),
            ohttp_relay: None,
        }
    }

    #[test]
    fn a_missing_or_empty_dir_is_empty_and_stays_unwritten() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let key = dir.join("key");
        assert!(matches!(inspect(&at(&dir), &key), Ok(Found::Empty { key: None })));
        assert!(!dir.exists());
        fs::create_dir(&dir).unwrap();
        assert!(matches!(inspect(&at(&dir), &key), Ok(Found::Empty { key: None })));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn other_files_are_not_taken_over() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("notes.txt"), "mine").unwrap();
        let key = root.path().join("key");
        assert!(matches!(
            inspect(&at(root.path()), &key),
            Err(CliError::ForeignDir { .. })
        ));
    }

    #[test]
    fn a_failed_creation_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let key = dir.join("key");
        let creating = Creating::begin(&at(&dir), &key, Found::Empty { key: None }).unwrap();
        fs::write(dir.join("device.sealed"), "x").unwrap();
        let failed: Result<((), StateLock), _> = creating.finish(Err(CliError::AccountId));
        assert!(failed.is_err());
        assert!(!dir.exists());

        fs::create_dir(&dir).unwrap();
        let creating = Creating::begin(&at(&dir), &key, Found::Empty { key: None }).unwrap();
        fs::create_dir(dir.join("blobs")).unwrap();
        assert!(creating.finish::<()>(Err(CliError::AccountId)).is_err());
        assert!(dir.exists());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }
}
