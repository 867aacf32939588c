//! The 32-byte key the device state is sealed under. A phone keeps it in its Keychain or
//! Keystore; a terminal has neither, so it lives in a file (by default `key` in the state
//! dir): 64 hex digits, mode 0600, created on first use. Whoever can read the file and the
//! state can read the account.
//!
//! The key file doubles as the state dir's lock: a command that writes the state holds an
//! exclusive advisory lock on it ([`StateLock`]), since device state has one writer.

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use zeroize::Zeroizing;

use crate::error::CliError;

/// The key file's name in the state dir, unless `--key-file` says otherwise.
pub const KEY_FILE_NAME: &str = "key";

/// A state key. `Debug` does not show it.
pub struct StateKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(..)")
    }
}

impl StateKey {
    /// The key bytes, for device-link.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Reads the key at `path`; `None` when there is no such file.
pub fn load(path: &Path) -> Result<Option<StateKey>, CliError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(path, &e)),
    };
    let mut text = Zeroizing::new(String::new());
    // A key file is 65 bytes; reading a little more tells a longer file apart.
    file.take(256)
        .read_to_string(&mut text)
        .map_err(|e| unreadable(path, &e))?;
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), key.as_mut_slice()).map_err(|_| CliError::KeyFile {
        path: path.to_path_buf(),
        problem: "is damaged (it should hold 64 hex digits): put the right key back, or move the state \
                  dir away and `tidings account restore` from the recovery phrase"
            .into(),
    })?;
    Ok(Some(StateKey(key)))
}

/// Creates a new random key at `path`, which must not exist, readable by its owner only.
pub fn create(path: &Path) -> Result<StateKey, CliError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent).map_err(|e| unwritable(path, &e))?;
    }
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut_slice())
        .map_err(|e| CliError::Internal(format!("the system's random number generator failed: {e}")))?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => CliError::KeyFile {
            path: path.to_path_buf(),
            problem: "appeared while this command ran (another tidings command?): run the command again"
                .into(),
        },
        _ => unwritable(path, &e),
    })?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_slice())));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| unwritable(path, &e))?;
    Ok(StateKey(key))
}

/// An exclusive advisory lock on a key file, released when dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Locks the key file at `path` for the state dir `dir`: [`CliError::Busy`] when another
/// process holds it.
pub fn lock(path: &Path, dir: &Path) -> Result<StateLock, CliError> {
    let file = File::open(path).map_err(|e| unreadable(path, &e))?;
    match file.try_lock() {
        Ok(()) => Ok(StateLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(CliError::Busy {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(CliError::KeyFile {
            path: path.to_path_buf(),
            problem: format!("cannot be locked ({e})"),
        }),
    }
}

/// Where the key lives: `--key-file`, or `key` in the state dir.
pub fn default_path(state_dir: &Path, key_file: Option<&Path>) -> PathBuf {
    key_file.map_or_else(|| state_dir.join(KEY_FILE_NAME), Path::to_path_buf)
}

/// Creates `dir` and its missing parents; the ones created are private to their owner.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn unreadable(path: &Path, e: &io::Error) -> CliError {
    CliError::KeyFile {
        path: path.to_path_buf(),
        problem: format!("cannot be read ({e}): check its permissions"),
    }
}

fn unwritable(path: &Path, e: &io::Error) -> CliError {
    CliError::KeyFile {
        path: path.to_path_buf(),
        problem: format!("cannot be created ({e}): check that its directory is writable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_reads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(KEY_FILE_NAME);
        assert!(load(&path).unwrap().is_none());
        let key = create(&path).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().bytes(), key.bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(create(&path), Err(CliError::KeyFile { .. })));
        assert!(!format!("{key:?}").contains(&hex::encode(key.bytes())));
    }

    #[test]
    fn a_damaged_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        for bad in ["", "abc", &"zz".repeat(32), &"ab".repeat(33)] {
            fs::write(&path, bad).unwrap();
            assert!(matches!(load(&path), Err(CliError::KeyFile { .. })), "{bad:?}");
        }
    }

    #[test]
    fn one_lock_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        create(&path).unwrap();
        let held = lock(&path, dir.path()).unwrap();
        assert!(matches!(lock(&path, dir.path()), Err(CliError::Busy { .. })));
        drop(held);
        lock(&path, dir.path()).unwrap();
    }
}
