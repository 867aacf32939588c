//! What one install keeps on disk: the account's root secret, its own device id and push
//! key, retrieve cursors, opaque blobs for other modules (config documents), and a
//! durable queue of uploads not yet acknowledged by the relay.
//!
//! Every file is sealed with XChaCha20-Poly1305 under a 32-byte key the app keeps in the
//! platform's Keychain / Keystore, with the file's role as associated data so files
//! cannot be swapped for one another. Every write goes to a temporary file that is
//! synced, renamed over the old one, and followed by a sync of the directory: a crash
//! leaves either the old or the new content, and at most a stray temporary file that
//! the next [`DeviceState::open`] removes.
//!
//! Layout of the directory:
//!
//! ```text
//! device.sealed            device_id(16) ‖ push_key(32); written first, checks the key
//! identity.sealed          the phrase's entropy (absent while signed out)
//! cursors.sealed           (be32 namespace ‖ be64 seq)*
//! blobs/NAME.sealed        a blob
//! uploads/ID.sealed        be32 namespace ‖ data, ID = 20 decimal digits, queue order
//! ```
//!
//! One process writes at a time (the app); others (a notification extension) may read.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use tidings_proto::{aead, random_bytes};
use zeroize::Zeroizing;

use crate::identity::{Identity, PhraseError};

/// First bytes of every sealed state file (format version 1).
const MAGIC: &[u8; 4] = b"TDS1";
/// Associated data prefix of every sealed state file.
const AAD_PREFIX: &str = "tidings/state/v1:";
const SEALED_EXT: &str = ".sealed";
const TMP_MARK: &str = ".tmp-";
const DEVICE_FILE: &str = "device";
const IDENTITY_FILE: &str = "identity";
const CURSORS_FILE: &str = "cursors";
const BLOBS_DIR: &str = "blobs";
const UPLOADS_DIR: &str = "uploads";
/// Longest blob name.
pub const MAX_BLOB_NAME: usize = 64;

/// Why device state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file system refused.
    #[error("device state I/O failed at {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The key does not open the device record.
    #[error("the state key does not open this device's state (wrong key, or the files were altered)")]
    WrongKey,
    /// A file opened with the right key is damaged or was tampered with.
    #[error("device state file {0} is damaged")]
    Corrupt(String),
    /// The device record is missing although other state exists.
    #[error("device state in {0} has no device record; refusing to start over on top of it")]
    MissingDeviceRecord(PathBuf),
    /// [`StateReader::open`] on a directory the app has not created state in (yet).
    #[error("there is no device state in {0}: the app has not opened it yet")]
    NoState(PathBuf),
    /// A blob name outside `[a-z0-9._-]{1,64}` (not starting with '.').
    #[error("invalid blob name {0:?}: use 1 to 64 characters of a-z, 0-9, '.', '_', '-'")]
    BlobName(String),
    /// The stored root secret is not a valid one.
    #[error("the stored root secret is invalid: {0}")]
    Identity(#[from] PhraseError),
}

/// An upload waiting for the relay's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// Queue position; [`DeviceState::ack_upload`] takes it.
    pub id: u64,
    /// The namespace to store into.
    pub namespace: i32,
    /// The bytes to store.
    pub data: Vec<u8>,
}

/// The persisted state of one install. See the module documentation for the layout.
pub struct DeviceState {
    dir: PathBuf,
    key: Zeroizing<[u8; 32]>,
    device_id: [u8; 16],
    push_key: Zeroizing<[u8; 32]>,
    cursors: BTreeMap<i32, u64>,
    next_upload: u64,
}

impl std::fmt::Debug for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceState")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl DeviceState {
    /// Opens the state in `dir` under `key`, creating the directory, a random device id
    /// and push key on first use. A different key than the one it was created with
    /// fails with [`StateError::WrongKey`].
    pub fn open(dir: impl AsRef<Path>, key: &[u8; 32]) -> Result<Self, StateError> {
        let dir = dir.as_ref().to_path_buf();
        for d in [dir.clone(), dir.join(BLOBS_DIR), dir.join(UPLOADS_DIR)] {
            create_dir(&d)?;
            remove_stray_temporaries(&d)?;
        }
        let mut state = Self {
            dir,
            key: Zeroizing::new(*key),
            device_id: [0; 16],
            push_key: Zeroizing::new([0; 32]),
            cursors: BTreeMap::new(),
            next_upload: 1,
        };
        state.load_or_create_device()?;
        state.cursors = state.load_cursors()?;
        // Time-based as well, so an id is not reused after a restart with an empty queue.
        state.next_upload = state
            .upload_ids()?
            .last()
            .map_or(1, |id| id + 1)
            .max(unix_micros());
        Ok(state)
    }

    /// The directory this state lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This install's device id (random, created once).
    pub fn device_id(&self) -> [u8; 16] {
        self.device_id
    }

    /// This install's push key (random, created once).
    pub fn push_key(&self) -> &[u8; 32] {
        &self.push_key
    }

    /// The account this install is signed in to, if any.
    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        match self.read(IDENTITY_FILE)? {
            None => Ok(None),
            Some(entropy) => Ok(Some(Identity::from_entropy(&Zeroizing::new(entropy))?)),
        }
    }

    /// Remembers the account (its root secret).
    pub fn set_identity(&mut self, identity: &Identity) -> Result<(), StateError> {
        self.write(IDENTITY_FILE, identity.entropy())
    }

    /// Forgets the account (signing out); device id, push key and blobs stay.
    pub fn clear_identity(&mut self) -> Result<(), StateError> {
        self.remove(IDENTITY_FILE)
    }

    /// Gives this install a new random device id and push key (at sign-out): nothing the
    /// relay or a push provider still holds for the old ones can reach or be read by the
    /// next account signed in here.
    pub fn rotate_device(&mut self) -> Result<(), StateError> {
        let device_id = random_bytes::<16>();
        let push_key = Zeroizing::new(random_bytes::<32>());
        let mut record = Zeroizing::new(Vec::with_capacity(48));
        record.extend_from_slice(&device_id);
        record.extend_from_slice(push_key.as_slice());
        self.write(DEVICE_FILE, &record)?;
        self.device_id = device_id;
        self.push_key = push_key;
        Ok(())
    }

    /// The retrieve cursor of `namespace` (0 when none was saved).
    pub fn cursor(&self, namespace: i32) -> u64 {
        self.cursors.get(&namespace).copied().unwrap_or(0)
    }

    /// All saved cursors, by namespace.
    pub fn cursors(&self) -> &BTreeMap<i32, u64> {
        &self.cursors
    }

    /// Saves the retrieve cursor of `namespace`.
    pub fn set_cursor(&mut self, namespace: i32, seq: u64) -> Result<(), StateError> {
        let mut next = self.cursors.clone();
        next.insert(namespace, seq);
        let mut bytes = Vec::with_capacity(next.len() * 12);
        for (ns, seq) in &next {
            bytes.extend_from_slice(&ns.to_be_bytes());
            bytes.extend_from_slice(&seq.to_be_bytes());
        }
        self.write(CURSORS_FILE, &bytes)?;
        self.cursors = next;
        Ok(())
    }

    /// Stores an opaque blob under `name` (`[a-z0-9._-]{1,64}`), replacing any old one.
    pub fn put_blob(&mut self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        check_blob_name(name)?;
        self.write(&format!("{BLOBS_DIR}/{name}"), bytes)
    }

    /// The blob stored under `name`, if any.
    pub fn get_blob(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_blob_name(name)?;
        self.read(&format!("{BLOBS_DIR}/{name}"))
    }

    /// Removes the blob stored under `name` (no error when there is none).
    pub fn delete_blob(&mut self, name: &str) -> Result<(), StateError> {
        check_blob_name(name)?;
        self.remove(&format!("{BLOBS_DIR}/{name}"))
    }

    /// The names of the blobs that start with `prefix`, sorted: how a module keeps a
    /// durable list of records as one blob each (the inbox's pending batches).
    pub fn blob_names(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        let dir = self.dir.join(BLOBS_DIR);
        let entries = fs::read_dir(&dir).map_err(io_at(&dir))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_at(&dir))?;
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|n| n.strip_suffix(SEALED_EXT)) else {
                continue;
            };
            if name.starts_with(prefix) && check_blob_name(name).is_ok() {
                names.push(name.to_owned());
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    /// Appends an upload to the durable queue and returns its id. It stays in
    /// [`DeviceState::pending_uploads`], across restarts, until acknowledged.
    pub fn enqueue_upload(&mut self, namespace: i32, data: &[u8]) -> Result<u64, StateError> {
        let id = self.next_upload;
        let mut bytes = Vec::with_capacity(4 + data.len());
        bytes.extend_from_slice(&namespace.to_be_bytes());
        bytes.extend_from_slice(data);
        self.write(&upload_name(id), &bytes)?;
        self.next_upload = (id + 1).max(unix_micros());
        Ok(id)
    }

    /// Every unacknowledged upload, oldest first.
    pub fn pending_uploads(&self) -> Result<Vec<PendingUpload>, StateError> {
        let mut out = Vec::new();
        for id in self.upload_ids()? {
            let name = upload_name(id);
            // A concurrent ack between listing and reading just drops the entry.
            let Some(bytes) = self.read(&name)? else { continue };
            if bytes.len() < 4 {
                return Err(StateError::Corrupt(name));
            }
            let (ns, data) = bytes.split_at(4);
            out.push(PendingUpload {
                id,
                namespace: i32::from_be_bytes([ns[0], ns[1], ns[2], ns[3]]),
                data: data.to_vec(),
            });
        }
        Ok(out)
    }

    /// Removes an acknowledged upload from the queue (no error when it is gone already).
    pub fn ack_upload(&mut self, id: u64) -> Result<(), StateError> {
        self.remove(&upload_name(id))
    }

    fn load_or_create_device(&mut self) -> Result<(), StateError> {
        let record = match self.read(DEVICE_FILE) {
            Ok(Some(record)) => Zeroizing::new(record),
            Ok(None) => return self.create_device(),
            // The device record is the first file opened: failing here means the key.
            Err(StateError::Corrupt(_)) => return Err(StateError::WrongKey),
            Err(e) => return Err(e),
        };
        if record.len() != 48 {
            return Err(StateError::Corrupt(DEVICE_FILE.into()));
        }
        self.device_id.copy_from_slice(&record[..16]);
        self.push_key.copy_from_slice(&record[16..]);
        Ok(())
    }

    fn create_device(&mut self) -> Result<(), StateError> {
        let existing = [IDENTITY_FILE, CURSORS_FILE]
            .iter()
            .any(|f| self.path(f).exists())
            || !self.upload_ids()?.is_empty()
            || dir_has_entries(&self.dir.join(BLOBS_DIR))?;
        if existing {
            return Err(StateError::MissingDeviceRecord(self.dir.clone()));
        }
        self.device_id = random_bytes::<16>();
        *self.push_key = random_bytes::<32>();
        let mut record = Zeroizing::new(Vec::with_capacity(48));
        record.extend_from_slice(&self.device_id);
        record.extend_from_slice(self.push_key.as_slice());
        self.write(DEVICE_FILE, &record)
    }

    fn load_cursors(&self) -> Result<BTreeMap<i32, u64>, StateError> {
        let Some(bytes) = self.read(CURSORS_FILE)? else {
            return Ok(BTreeMap::new());
        };
        if bytes.len() % 12 != 0 {
            return Err(StateError::Corrupt(CURSORS_FILE.into()));
        }
        Ok(bytes
            .chunks_exact(12)
            .map(|c| {
                let (ns, seq) = c.split_at(4);
                let ns = i32::from_be_bytes([ns[0], ns[1], ns[2], ns[3]]);
                let mut s = [0u8; 8];
                s.copy_from_slice(seq);
                (ns, u64::from_be_bytes(s))
            })
            .collect())
    }

    fn upload_ids(&self) -> Result<Vec<u64>, StateError> {
        let dir = self.dir.join(UPLOADS_DIR);
        let entries = fs::read_dir(&dir).map_err(io_at(&dir))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_at(&dir))?;
            let name = entry.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_suffix(SEALED_EXT))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{SEALED_EXT}"))
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.path(name);
        let sealed = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::Io { path, source: e }),
        };
        open_sealed(&self.key, name, &sealed)
            .map(Some)
            .ok_or_else(|| StateError::Corrupt(name.to_owned()))
    }

    fn write(&self, name: &str, plaintext: &[u8]) -> Result<(), StateError> {
        let sealed = seal(&self.key, name, plaintext);
        write_atomic(&self.path(name), &sealed)
    }

    fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StateError::Io { path, source: e }),
        }
        sync_parent(&path)
    }
}

fn upload_name(id: u64) -> String {
    format!("{UPLOADS_DIR}/{id:020}")
}

fn check_blob_name(name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_BLOB_NAME
        && !name.starts_with('.')
        && !name.contains(TMP_MARK)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StateError::BlobName(name.to_owned()))
    }
}

/// `MAGIC ‖ nonce(24) ‖ XChaCha20-Poly1305(key, nonce, plaintext, aad = prefix ‖ name)`.
fn seal(key: &[u8; 32], name: &str, plaintext: &[u8]) -> Vec<u8> {
    let nonce = random_bytes::<24>();
    let aad = format!("{AAD_PREFIX}{name}");
    let mut out = Vec::with_capacity(4 + 24 + plaintext.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&aead::encrypt(key, &nonce, plaintext, aad.as_bytes()));
    out
}

fn open_sealed(key: &[u8; 32], name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    let rest = sealed.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 24 + 16 {
        return None;
    }
    let (nonce, ciphertext) = rest.split_at(24);
    let nonce: [u8; 24] = nonce.try_into().ok()?;
    aead::decrypt(key, &nonce, ciphertext, format!("{AAD_PREFIX}{name}").as_bytes())
}

/// Temp file, fsync, rename over the target, fsync the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(
        ".{file_name}{TMP_MARK}{}",
        hex::encode(random_bytes::<8>())
    ));
    let result = (|| {
        let mut f = new_private_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: a leftover is removed at the next open anyway.
        let _ = fs::remove_file(&tmp);
        return Err(StateError::Io {
            path: path.to_path_buf(),
            source: e,
        });
    }
    sync_parent(path)
}

fn new_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Makes a rename or removal durable. Directories cannot be opened for syncing on
/// Windows, where renames are durable through the file system's journal instead.
fn sync_parent(path: &Path) -> Result<(), StateError> {
    #[cfg(unix)]
    {
        let dir = path.parent().unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), StateError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_at(dir))
}

fn remove_stray_temporaries(dir: &Path) -> Result<(), StateError> {
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let is_tmp = entry.file_name().to_str().is_some_and(|n| n.contains(TMP_MARK));
        if is_tmp {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_at(&path))?;
        }
    }
    Ok(())
}

fn dir_has_entries(dir: &Path) -> Result<bool, StateError> {
    Ok(fs::read_dir(dir).map_err(io_at(dir))?.next().is_some())
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// ------------------------------------------------------------------ read-only view

/// A read-only view of a state directory, for a process beside the app that owns it: the
/// iOS Notification Service Extension, Android's messaging service. Unlike
/// [`DeviceState::open`] it never creates, removes or writes anything (no directory, no
/// device record, no cleanup of temporaries) and takes no lock, so it can run while the
/// app writes: every write there is a rename, so each file read is a whole old or a whole
/// new version.
pub struct StateReader {
    dir: PathBuf,
    key: Zeroizing<[u8; 32]>,
    device_id: [u8; 16],
    push_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for StateReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateReader")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl StateReader {
    /// Opens the state in `dir` under `key` for reading. Fails with
    /// [`StateError::NoState`] when the app has not created it, and with
    /// [`StateError::WrongKey`] for another key than the app's.
    pub fn open(dir: impl AsRef<Path>, key: &[u8; 32]) -> Result<StateReader, StateError> {
        let dir = dir.as_ref().to_path_buf();
        let key = Zeroizing::new(*key);
        let record = match read_sealed_file(&dir, &key, DEVICE_FILE) {
            Ok(Some(record)) => Zeroizing::new(record),
            Ok(None) => return Err(StateError::NoState(dir)),
            // As in `DeviceState::open`: the first file opened failing means the key.
            Err(StateError::Corrupt(_)) => return Err(StateError::WrongKey),
            Err(e) => return Err(e),
        };
        if record.len() != 48 {
            return Err(StateError::Corrupt(DEVICE_FILE.into()));
        }
        let mut device_id = [0u8; 16];
        device_id.copy_from_slice(&record[..16]);
        let mut push_key = Zeroizing::new([0u8; 32]);
        push_key.copy_from_slice(&record[16..]);
        Ok(StateReader {
            dir,
            key,
            device_id,
            push_key,
        })
    }

    /// The directory this state lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This install's device id.
    pub fn device_id(&self) -> [u8; 16] {
        self.device_id
    }

    /// This install's push key.
    pub fn push_key(&self) -> &[u8; 32] {
        &self.push_key
    }

    /// The account this install is signed in to, if any (read afresh on every call).
    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        match read_sealed_file(&self.dir, &self.key, IDENTITY_FILE)? {
            None => Ok(None),
            Some(entropy) => Ok(Some(Identity::from_entropy(&Zeroizing::new(entropy))?)),
        }
    }

    /// The blob stored under `name`, if any (read afresh on every call).
    pub fn get_blob(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_blob_name(name)?;
        read_sealed_file(&self.dir, &self.key, &format!("{BLOBS_DIR}/{name}"))
    }
}

/// Reads and opens `dir/NAME.sealed`; `None` when it does not exist.
fn read_sealed_file(dir: &Path, key: &[u8; 32], name: &str) -> Result<Option<Vec<u8>>, StateError> {
    let path = dir.join(format!("{name}{SEALED_EXT}"));
    let sealed = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Io { path, source: e }),
    };
    open_sealed(key, name, &sealed)
        .map(Some)
        .ok_or_else(|| StateError::Corrupt(name.to_owned()))
}

#[cfg(test)]
mod reader_tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.push((path.clone(), Vec::new()));
                out.extend(tree(&path));
            } else {
                let bytes = fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn reads_what_the_app_wrote_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::create();
        let mut st = DeviceState::open(dir.path(), &KEY).unwrap();
        st.set_identity(&id).unwrap();
        st.put_blob("doc", b"content").unwrap();
        // A temporary the app's next open would remove: the reader leaves it.
        fs::write(dir.path().join(format!(".doc.sealed{TMP_MARK}00")), b"x").unwrap();
        let before = tree(dir.path());
        let reader = StateReader::open(dir.path(), &KEY).unwrap();
        assert_eq!(reader.device_id(), st.device_id());
        assert_eq!(reader.push_key(), st.push_key());
        assert_eq!(reader.identity().unwrap().unwrap().account(), id.account());
        assert_eq!(reader.get_blob("doc").unwrap().as_deref(), Some(&b"content"[..]));
        assert_eq!(reader.get_blob("other").unwrap(), None);
        assert!(matches!(reader.get_blob("../x"), Err(StateError::BlobName(_))));
        assert_eq!(tree(dir.path()), before);
        // Later writes by the app are seen by the open reader.
        st.put_blob("doc", b"newer").unwrap();
        assert_eq!(reader.get_blob("doc").unwrap().as_deref(), Some(&b"newer"[..]));
        st.clear_identity().unwrap();
        assert!(reader.identity().unwrap().is_none());
    }

    #[test]
    fn no_state_and_a_wrong_key_fail_clearly_without_creating_anything() {
        let parent = tempfile::tempdir().unwrap();
        let missing = parent.path().join("app-group");
        let err = StateReader::open(&missing, &KEY).unwrap_err();
        assert!(matches!(&err, StateError::NoState(p) if p == &missing), "{err:?}");
        assert!(err.to_string().contains("no device state"));
        assert!(!missing.exists());
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            StateReader::open(empty.path(), &KEY),
            Err(StateError::NoState(_))
        ));
        assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0);

        let dir = tempfile::tempdir().unwrap();
        DeviceState::open(dir.path(), &KEY).unwrap();
        let before = tree(dir.path());
        assert!(matches!(
            StateReader::open(dir.path(), &[8; 32]),
            Err(StateError::WrongKey)
        ));
        assert_eq!(tree(dir.path()), before);
        // Signed out: the reader opens, and says so.
        assert!(
            StateReader::open(dir.path(), &KEY)
                .unwrap()
                .identity()
                .unwrap()
                .is_none()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blob_names_are_restricted() {
        for good in ["profile", "config.contacts", "a-b_c.1"] {
            assert!(check_blob_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "../x", "a/b", "Upper", "x.tmp-1", &"a".repeat(65)] {
            assert!(check_blob_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_cannot_stand_in_for_another() {
        let key = [3u8; 32];
        let sealed = seal(&key, "blobs/a", b"x");
        assert_eq!(open_sealed(&key, "blobs/a", &sealed), Some(b"x".to_vec()));
        assert_eq!(open_sealed(&key, "blobs/b", &sealed), None);
        assert_eq!(open_sealed(&[4u8; 32], "blobs/a", &sealed), None);
    }

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn everything_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::create();
        let (device_id, push_key) = {
            let mut st = DeviceState::open(dir.path(), &KEY).unwrap();
            assert!(st.identity().unwrap().is_none());
            st.set_identity(&id).unwrap();
            st.set_cursor(0, 41).unwrap();
            st.set_cursor(12, 7).unwrap();
            st.put_blob("contacts", b"doc").unwrap();
            st.enqueue_upload(12, b"delta").unwrap();
            (st.device_id(), *st.push_key())
        };
        let st = DeviceState::open(dir.path(), &KEY).unwrap();
        assert_eq!(st.device_id(), device_id);
        assert_eq!(st.push_key(), &push_key);
        assert_eq!(st.identity().unwrap().unwrap().account(), id.account());
        assert_eq!((st.cursor(0), st.cursor(12), st.cursor(13)), (41, 7, 0));
        assert_eq!(st.get_blob("contacts").unwrap().as_deref(), Some(&b"doc"[..]));
        assert_eq!(st.get_blob("profile").unwrap(), None);
        let pending = st.pending_uploads().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].namespace, pending[0].data.as_slice()),
            (12, &b"delta"[..])
        );
    }

    #[test]
    fn two_installs_get_different_device_ids_and_push_keys() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sa = DeviceState::open(a.path(), &KEY).unwrap();
        let sb = DeviceState::open(b.path(), &KEY).unwrap();
        assert_ne!(sa.device_id(), sb.device_id());
        assert_ne!(sa.push_key(), sb.push_key());
    }

    #[test]
    fn a_wrong_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        DeviceState::open(dir.path(), &KEY)
            .unwrap()
            .set_identity(&Identity::create())
            .unwrap();
        let err = DeviceState::open(dir.path(), &[8; 32]).unwrap_err();
        assert!(matches!(err, StateError::WrongKey), "{err:?}");
        assert!(err.to_string().contains("wrong key"));
        // The right key still opens it afterwards: nothing was overwritten.
        assert!(
            DeviceState::open(dir.path(), &KEY)
                .unwrap()
                .identity()
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn no_secret_is_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::create();
        let mut st = DeviceState::open(dir.path(), &KEY).unwrap();
        st.set_identity(&id).unwrap();
        st.put_blob("b", b"very secret blob").unwrap();
        let push_key = *st.push_key();
        for path in all_files(dir.path()) {
            let bytes = fs::read(&path).unwrap();
            for secret in [id.entropy(), &push_key[..], b"very secret blob"] {
                assert!(!bytes.windows(secret.len()).any(|w| w == secret), "{path:?}");
            }
        }
    }

    #[test]
    fn a_leftover_temporary_file_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut st = DeviceState::open(dir.path(), &KEY).unwrap();
            st.set_cursor(0, 5).unwrap();
            st.put_blob("doc", b"old").unwrap();
        }
        // A crash after writing part of a new version, before the rename.
        let stray = dir
            .path()
            .join(format!(".cursors.sealed{TMP_MARK}0011223344556677"));
        fs::write(&stray, b"TDS1 half written").unwrap();
        let stray_blob = dir
            .path()
            .join(BLOBS_DIR)
            .join(format!(".doc.sealed{TMP_MARK}aa"));
        fs::write(&stray_blob, b"junk").unwrap();
        let mut st = DeviceState::open(dir.path(), &KEY).unwrap();
        assert_eq!(st.cursor(0), 5);
        assert_eq!(st.get_blob("doc").unwrap().as_deref(), Some(&b"old"[..]));
        assert!(!stray.exists() && !stray_blob.exists());
        st.set_cursor(0, 6).unwrap();
        assert_eq!(DeviceState::open(dir.path(), &KEY).unwrap().cursor(0), 6);
    }

    #[test]
    fn a_damaged_file_is_reported_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        DeviceState::open(dir.path(), &KEY)
            .unwrap()
            .put_blob("doc", b"content")
            .unwrap();
        let path = dir.path().join(BLOBS_DIR).join("doc.sealed");
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        let st = DeviceState::open(dir.path(), &KEY).unwrap();
        assert!(matches!(st.get_blob("doc"), Err(StateError::Corrupt(_))));
    }

    #[test]
    fn a_missing_device_record_is_not_silently_recreated() {
        let dir = tempfile::tempdir().unwrap();
        DeviceState::open(dir.path(), &KEY)
            .unwrap()
            .set_identity(&Identity::create())
            .unwrap();
        fs::remove_file(dir.path().join("device.sealed")).unwrap();
        assert!(matches!(
            DeviceState::open(dir.path(), &KEY),
            Err(StateError::MissingDeviceRecord(_))
        ));
    }

    #[test]
    fn the_upload_queue_keeps_its_order_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        {
            let mut st = DeviceState::open(dir.path(), &KEY).unwrap();
            for i in 0..12u8 {
                ids.push(st.enqueue_upload(10 + i32::from(i), &[i; 3]).unwrap());
            }
            st.ack_upload(ids[0]).unwrap();
            st.ack_upload(ids[5]).unwrap();
            st.ack_upload(ids[5]).unwrap();
        }
        let mut st = DeviceState::open(dir.path(), &KEY).unwrap();
        let later = st.enqueue_upload(99, b"after restart").unwrap();
        assert!(later > *ids.last().unwrap());
        let pending = st.pending_uploads().unwrap();
        let got: Vec<u64> = pending.iter().map(|p| p.id).collect();
        let mut want: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| *id != ids[0] && *id != ids[5])
            .collect();
        want.push(later);
        assert_eq!(got, want);
        assert_eq!(pending[0].data, vec![1u8; 3]);
        assert_eq!(pending[0].namespace, 11);
        for p in &pending {
            st.ack_upload(p.id).unwrap();
        }
        assert!(
            DeviceState::open(dir.path(), &KEY)
                .unwrap()
                .pending_uploads()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn blobs_can_be_replaced_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = DeviceState::open(dir.path(), &KEY).unwrap();
        st.put_blob("doc", b"1").unwrap();
        st.put_blob("doc", b"2").unwrap();
        assert_eq!(st.get_blob("doc").unwrap().as_deref(), Some(&b"2"[..]));
        st.delete_blob("doc").unwrap();
        st.delete_blob("doc").unwrap();
        assert_eq!(st.get_blob("doc").unwrap(), None);
        assert!(matches!(
            st.put_blob("../escape", b"x"),
            Err(StateError::BlobName(_))
        ));
        st.clear_identity().unwrap();
        assert!(st.identity().unwrap().is_none());
    }

    fn all_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(all_files(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn sealing_round_trips(data in proptest::collection::vec(any::<u8>(), 0..1000), key in any::<[u8; 32]>()) {
            let sealed = seal(&key, "n", &data);
            prop_assert_eq!(open_sealed(&key, "n", &sealed), Some(data));
        }

        #[test]
        fn garbage_never_opens(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(open_sealed(&[0; 32], "n", &bytes), None);
        }
    }
}
