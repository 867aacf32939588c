//! The delivery journal (DESIGN.md "Delivery journal"): the messages a notification
//! extension processed while the app was not running, handed to the app through a file in
//! the state directory (the App Group container on iOS).
//!
//! The extension [`append`]s one record per processed push; the app [`read`]s the journal
//! at open and on resume, keeps the entries in its inbox, and only then [`consume`]s what
//! it read, so a crash in between loses nothing (the next read offers the same entries
//! again; the inbox drops duplicates by hash).
//!
//! Writers take an exclusive lock on a separate lock file, with a bounded `try_lock`
//! retry loop and never a blocking wait: iOS kills a suspended process that holds a file
//! lock in a shared container, so the lock is held only for one append (or one consume)
//! and nobody ever waits on it for long. An append is one whole record in one `write`
//! (`O_APPEND`), then a sync. Reading takes no lock: the length prefix of each record
//! tells a whole record from one being written, which is left for the next read.
//!
//! One consumer at a time (the app's client): [`read`] and [`consume`] are not meant to
//! run concurrently with each other, only with any number of appenders.

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    io::{self, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use tidings_proto::{aead, random_bytes};

/// The journal's file in the state directory.
pub const JOURNAL_FILE: &str = "delivery.journal";
/// The file whose lock serialises writers (never renamed, so every process locks the same).
pub const LOCK_FILE: &str = "delivery.journal.lock";
/// Associated data of every record.
const AAD: &[u8] = b"tidings/state/v1:journal";
/// Marks a temporary file, as the state's own (`DeviceState::open` removes leftovers).
const TMP_MARK: &str = ".tmp-";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// hash(32) ‖ be32 namespace ‖ be64 seq ‖ be64 created_ms ‖ be64 expires_ms ‖ u8 has_data.
const RECORD_HEADER: usize = 32 + 4 + 8 + 8 + 8 + 1;
/// Largest `data` a record holds: a relay's largest message (64 KiB by default) with room
/// for relays configured higher.
pub const MAX_DATA: usize = 1 << 20;
/// A journal larger than this takes no more records: the app has not read it for very
/// long, and the messages are still on the relay for it to fetch.
pub const MAX_JOURNAL_BYTES: u64 = 32 << 20;
/// The longest a writer tries to get the lock. Holders keep it for one small write and a
/// sync, so reaching this means something is wrong, not busy.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);
/// Longest pause between two lock attempts.
const LOCK_PAUSE_MAX: Duration = Duration::from_millis(20);

/// One processed message (or config push), as the journal keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The relay's hash of the message.
    pub hash: [u8; 32],
    /// The namespace it was stored in.
    pub namespace: i32,
    /// Its position in the mailbox.
    pub seq: u64,
    /// When the relay stored it (Unix ms).
    pub created_ms: i64,
    /// When the relay drops it (Unix ms).
    pub expires_ms: i64,
    /// The message data, when the push carried it or it was fetched.
    pub data: Option<Vec<u8>>,
}

impl std::fmt::Debug for JournalEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The data is a message's content: its length tells entries apart well enough.
        f.debug_struct("JournalEntry")
            .field("hash", &hex::encode(&self.hash[..4]))
            .field("namespace", &self.namespace)
            .field("seq", &self.seq)
            .field("data_len", &self.data.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file system refused.
    #[error("delivery journal I/O failed at {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Whole records are there but none opens under this key.
    #[error("the state key does not open the delivery journal")]
    WrongKey,
    /// Another process held the lock for longer than any writer should.
    #[error("the delivery journal stayed locked for {0:?}")]
    Busy(Duration),
    /// The entry's data is larger than [`MAX_DATA`].
    #[error("a journal entry holds at most {MAX_DATA} bytes of data, this one {0}")]
    TooLarge(usize),
    /// The journal reached [`MAX_JOURNAL_BYTES`] without the app reading it.
    #[error("the delivery journal is full ({0} bytes)")]
    Full(u64),
    /// [`consume`] was given an offset that [`read`] did not return.
    #[error("offset {0} is not the end of a record of the delivery journal")]
    BadOffset(u64),
}

/// Appends `entry` to the journal in `dir` (creating it), durably: one record, one write,
/// then a sync, under the writers' lock. A record left torn at the end by a writer that
/// died mid-way is cut off first, so it cannot swallow this one.
pub fn append(dir: &Path, key: &[u8; 32], entry: &JournalEntry) -> Result<(), JournalError> {
    let frame = seal_frame(key, entry)?;
    let _lock = lock(dir)?;
    let path = dir.join(JOURNAL_FILE);
    let created = !path.exists();
    let io = io_at(&path);
    let mut file =
        open_private(&path, OpenOptions::new().read(true).append(true).create(true)).map_err(&io)?;
    let valid = whole_frames_end(&mut file, u64::MAX).map_err(&io)?;
    let len = file.metadata().map_err(&io)?.len();
    if valid < len {
        tracing::debug!(
            torn = len - valid,
            "cutting a torn record off the delivery journal"
        );
        file.set_len(valid).map_err(&io)?;
    }
    if valid >= MAX_JOURNAL_BYTES {
        return Err(JournalError::Full(valid));
    }
    file.write_all(&frame).map_err(&io)?;
    file.sync_data().map_err(&io)?;
    if created {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Every whole record of the journal in `dir`, oldest first, and the offset just after
/// the last one, for [`consume`]. No journal reads as empty. A record torn at the end
/// (being written, or left by a writer that died) is not returned and stays; a whole
/// record that does not open (damaged) is skipped, and consumed with the rest.
pub fn read(dir: &Path, key: &[u8; 32]) -> Result<(Vec<JournalEntry>, u64), JournalError> {
    let path = dir.join(JOURNAL_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(JournalError::Io { path, source: e }),
    };
    let mut entries = Vec::new();
    let mut damaged = 0usize;
    let mut pos = 0usize;
    while let Some(len) = frame_len_at(&bytes, pos) {
        let end = pos + 4 + len;
        if end > bytes.len() {
            break;
        }
        match open_frame(key, &bytes[pos + 4..end]) {
            Some(entry) => entries.push(entry),
            None => damaged += 1,
        }
        pos = end;
    }
    if entries.is_empty() && damaged > 0 {
        return Err(JournalError::WrongKey);
    }
    if damaged > 0 {
        tracing::warn!(damaged, "skipping damaged records of the delivery journal");
    }
    Ok((entries, pos as u64))
}

/// Removes the first `end_offset` bytes of the journal in `dir` (what [`read`] returned),
/// keeping whatever was appended since. Atomic: the rest is written to a new file that
/// replaces the journal, so a crash leaves the old journal or the new one.
pub fn consume(dir: &Path, end_offset: u64) -> Result<(), JournalError> {
    if end_offset == 0 {
        return Ok(());
    }
    let _lock = lock(dir)?;
    let path = dir.join(JOURNAL_FILE);
    let io = io_at(&path);
    let mut file = File::open(&path).map_err(&io)?;
    if whole_frames_end(&mut file, end_offset).map_err(&io)? != end_offset {
        return Err(JournalError::BadOffset(end_offset));
    }
    file.seek(SeekFrom::Start(end_offset)).map_err(&io)?;
    let tmp = dir.join(format!(
        ".{JOURNAL_FILE}{TMP_MARK}{}",
        hex::encode(random_bytes::<8>())
    ));
    let result = (|| {
        let mut out = open_private(&tmp, OpenOptions::new().write(true).create_new(true))?;
        io::copy(&mut file, &mut out)?;
        out.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        // Best effort: the app's next `DeviceState::open` removes a leftover anyway.
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    sync_dir(dir)
}

/// Takes the writers' lock: `try_lock` with growing pauses, for at most [`LOCK_PATIENCE`].
/// Dropping the file releases it (and so does the death of the process).
fn lock(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join(LOCK_FILE);
    let file =
        open_private(&path, OpenOptions::new().read(true).write(true).create(true)).map_err(io_at(&path))?;
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(JournalError::Io { path, source: e }),
        }
        let waited = start.elapsed();
        if waited >= LOCK_PATIENCE {
            return Err(JournalError::Busy(waited));
        }
        thread::sleep(pause.min(LOCK_PATIENCE - waited));
        pause = (pause * 2).min(LOCK_PAUSE_MAX);
    }
}

/// `be32 len ‖ nonce ‖ XChaCha20-Poly1305(key, nonce, record, aad)`, `len` counting the
/// nonce and the ciphertext.
fn seal_frame(key: &[u8; 32], entry: &JournalEntry) -> Result<Vec<u8>, JournalError> {
    let data_len = entry.data.as_ref().map_or(0, Vec::len);
    if data_len > MAX_DATA {
        return Err(JournalError::TooLarge(data_len));
    }
    let mut record = Vec::with_capacity(RECORD_HEADER + data_len);
    record.extend_from_slice(&entry.hash);
    record.extend_from_slice(&entry.namespace.to_be_bytes());
    record.extend_from_slice(&entry.seq.to_be_bytes());
    record.extend_from_slice(&entry.created_ms.to_be_bytes());
    record.extend_from_slice(&entry.expires_ms.to_be_bytes());
    record.push(u8::from(entry.data.is_some()));
    if let Some(data) = &entry.data {
        record.extend_from_slice(data);
    }
    let nonce = random_bytes::<NONCE_LEN>();
    let ciphertext = aead::encrypt(key, &nonce, &record, AAD);
    let len = u32::try_from(NONCE_LEN + ciphertext.len()).map_err(|_| JournalError::TooLarge(data_len))?;
    let mut frame = Vec::with_capacity(4 + len as usize);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&nonce);
    frame.extend_from_slice(&ciphertext);
    Ok(frame)
}

/// The entry in `nonce ‖ ciphertext`, if it opens and decodes.
fn open_frame(key: &[u8; 32], body: &[u8]) -> Option<JournalEntry> {
    let (nonce, ciphertext) = body.split_at_checked(NONCE_LEN)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let record = aead::decrypt(key, &nonce, ciphertext, AAD)?;
    decode_record(&record)
}

fn decode_record(record: &[u8]) -> Option<JournalEntry> {
    let (header, data) = record.split_at_checked(RECORD_HEADER)?;
    let be64 = |at: usize| header.get(at..at + 8)?.try_into().ok();
    let entry = JournalEntry {
        hash: header.get(..32)?.try_into().ok()?,
        namespace: i32::from_be_bytes(header.get(32..36)?.try_into().ok()?),
        seq: u64::from_be_bytes(be64(36)?),
        created_ms: i64::from_be_bytes(be64(44)?),
        expires_ms: i64::from_be_bytes(be64(52)?),
        data: match header[60] {
            0 if data.is_empty() => None,
            1 => Some(data.to_vec()),
            _ => return None,
        },
    };
    Some(entry)
}

/// The length field of the frame at `pos`, if there is one and it is plausible. A
/// length no writer produces means what follows is not a record (a crash's leftovers).
fn frame_len_at(bytes: &[u8], pos: usize) -> Option<usize> {
    let field: [u8; 4] = bytes.get(pos..pos + 4)?.try_into().ok()?;
    plausible_len(u32::from_be_bytes(field))
}

fn plausible_len(len: u32) -> Option<usize> {
    let len = usize::try_from(len).ok()?;
    let min = NONCE_LEN + RECORD_HEADER + TAG_LEN;
    (min..=min + MAX_DATA).contains(&len).then_some(len)
}

/// The end of the last whole frame (by the length fields alone) at or before `limit`,
/// walking `file` from the start: the same framing [`read`] uses.
fn whole_frames_end(file: &mut File, limit: u64) -> io::Result<u64> {
    let file_len = file.metadata()?.len();
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(8 * 1024, file);
    let mut pos = 0u64;
    loop {
        let mut field = [0u8; 4];
        if pos + 4 > file_len || reader.read_exact(&mut field).is_err() {
            return Ok(pos);
        }
        let Some(len) = plausible_len(u32::from_be_bytes(field)) else {
            return Ok(pos);
        };
        let end = pos + 4 + len as u64;
        if end > file_len || end > limit {
            return Ok(pos);
        }
        reader.seek_relative(len as i64)?;
        pos = end;
    }
}

fn open_private(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Makes a new or renamed journal durable (Windows journals renames by itself).
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::{
        collections::HashMap,
        process::{Command, Stdio},
    };

    const KEY: [u8; 32] = [11; 32];
    /// Set in the child process of `appends_from_threads_and_another_process_are_read_once`.
    const CHILD_ENV: &str = "TIDINGS_JOURNAL_CHILD";

    fn entry(writer: u8, n: u32) -> JournalEntry {
        let mut hash = [0u8; 32];
        hash[0] = writer;
        hash[1..5].copy_from_slice(&n.to_be_bytes());
        JournalEntry {
            hash,
            namespace: 0,
            seq: u64::from(n),
            created_ms: -5,
            expires_ms: i64::MAX,
            // Sizes vary so that records straddle buffer and page boundaries.
            data: (!n.is_multiple_of(3)).then(|| vec![writer; (n as usize * 37) % 3000]),
        }
    }

    #[test]
    fn entries_round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), &KEY).unwrap(), (Vec::new(), 0));
        let written: Vec<_> = (0..5).map(|n| entry(1, n)).collect();
        for e in &written {
            append(dir.path(), &KEY, e).unwrap();
        }
        let (got, end) = read(dir.path(), &KEY).unwrap();
        assert_eq!(got, written);
        assert_eq!(end, fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len());
        consume(dir.path(), end).unwrap();
        assert_eq!(read(dir.path(), &KEY).unwrap(), (Vec::new(), 0));
    }

    #[test]
    fn consume_keeps_what_was_appended_after_the_read() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), &KEY, &entry(1, 1)).unwrap();
        let (first, end) = read(dir.path(), &KEY).unwrap();
        append(dir.path(), &KEY, &entry(1, 2)).unwrap();
        consume(dir.path(), end).unwrap();
        let (rest, _) = read(dir.path(), &KEY).unwrap();
        assert_eq!((first, rest), (vec![entry(1, 1)], vec![entry(1, 2)]));
        assert!(matches!(consume(dir.path(), 7), Err(JournalError::BadOffset(7))));
        assert!(matches!(
            consume(dir.path(), 1 << 40),
            Err(JournalError::BadOffset(_))
        ));
        // Nothing else is left in the directory: no temporaries.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [JOURNAL_FILE, LOCK_FILE]);
    }

    #[test]
    fn a_torn_last_record_is_left_then_cut_off_by_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        append(dir.path(), &KEY, &entry(1, 1)).unwrap();
        let whole = fs::metadata(&path).unwrap().len();
        // A writer died half way through its record.
        let torn = seal_frame(&KEY, &entry(1, 2)).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);
        let (got, end) = read(dir.path(), &KEY).unwrap();
        assert_eq!((got, end), (vec![entry(1, 1)], whole));
        assert!(fs::metadata(&path).unwrap().len() > whole, "left as it was");
        // Consuming keeps the tail; the next append cuts it and frames correctly.
        consume(dir.path(), end).unwrap();
        append(dir.path(), &KEY, &entry(1, 3)).unwrap();
        assert_eq!(read(dir.path(), &KEY).unwrap().0, vec![entry(1, 3)]);
        // Zeros after a power loss are not a record either.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[0; 100])
            .unwrap();
        assert_eq!(read(dir.path(), &KEY).unwrap().0, vec![entry(1, 3)]);
        append(dir.path(), &KEY, &entry(1, 4)).unwrap();
        assert_eq!(read(dir.path(), &KEY).unwrap().0, vec![entry(1, 3), entry(1, 4)]);
    }

    #[test]
    fn a_wrong_key_is_refused_and_a_damaged_record_skipped() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..3 {
            append(dir.path(), &KEY, &entry(1, n)).unwrap();
        }
        assert!(matches!(read(dir.path(), &[12; 32]), Err(JournalError::WrongKey)));
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = fs::read(&path).unwrap();
        // Flip a bit inside the first record's ciphertext.
        bytes[40] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let (got, end) = read(dir.path(), &KEY).unwrap();
        assert_eq!(got, vec![entry(1, 1), entry(1, 2)]);
        assert_eq!(end, bytes.len() as u64);
    }

    #[test]
    fn oversized_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = entry(1, 1);
        e.data = Some(vec![0; MAX_DATA + 1]);
        assert!(matches!(
            append(dir.path(), &KEY, &e),
            Err(JournalError::TooLarge(_))
        ));
        assert!(!dir.path().join(JOURNAL_FILE).exists());
    }

    #[test]
    fn a_held_lock_makes_writers_give_up_in_bounded_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let err = append(dir.path(), &KEY, &entry(1, 1)).unwrap_err();
        assert!(matches!(err, JournalError::Busy(_)), "{err:?}");
        drop(held);
        append(dir.path(), &KEY, &entry(1, 1)).unwrap();
    }

    /// The child process's part of the concurrency test; does nothing when run directly.
    #[test]
    #[ignore = "run as a child process by appends_from_threads_and_another_process_are_read_once"]
    fn child_appender() {
        let Ok(spec) = std::env::var(CHILD_ENV) else {
            return;
        };
        let (dir, count) = spec.split_once('|').unwrap();
        for n in 0..count.parse::<u32>().unwrap() {
            append(Path::new(dir), &KEY, &entry(200, n)).unwrap();
        }
    }

    #[test]
    fn appends_from_threads_and_another_process_are_read_once() {
        const PER_WRITER: u32 = 150;
        const THREADS: u8 = 3;
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "journal::tests::child_appender",
                "--ignored",
                "--quiet",
            ])
            .env(CHILD_ENV, format!("{}|{PER_WRITER}", dir.path().display()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let writers: Vec<_> = (0..THREADS)
            .map(|w| {
                let dir = dir.path().to_path_buf();
                thread::spawn(move || {
                    for n in 0..PER_WRITER {
                        append(&dir, &KEY, &entry(w, n)).unwrap();
                    }
                })
            })
            .collect();
        let mut seen: HashMap<[u8; 32], u32> = HashMap::new();
        let want = (usize::from(THREADS) + 1) * PER_WRITER as usize;
        let mut child_done = false;
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.len() < want {
            assert!(
                Instant::now() < deadline,
                "only {} of {want} records read",
                seen.len()
            );
            let (entries, end) = read(dir.path(), &KEY).unwrap();
            for e in entries {
                let expected = entry(e.hash[0], u32::from_be_bytes(e.hash[1..5].try_into().unwrap()));
                assert_eq!(e, expected);
                *seen.entry(e.hash).or_default() += 1;
            }
            consume(dir.path(), end).unwrap();
            if !child_done && let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "the child appender failed: {status}");
                child_done = true;
            }
            thread::sleep(Duration::from_millis(2));
        }
        for w in writers {
            w.join().unwrap();
        }
        assert!(child.wait().unwrap().success());
        assert_eq!(read(dir.path(), &KEY).unwrap().0, Vec::new());
        assert!(seen.values().all(|&n| n == 1), "a record was read twice");
        assert_eq!(seen.len(), want);
    }

    proptest! {
        #[test]
        fn records_round_trip(
            hash in any::<[u8; 32]>(),
            namespace in any::<i32>(),
            seq in any::<u64>(),
            created_ms in any::<i64>(),
            expires_ms in any::<i64>(),
            data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        ) {
            let e = JournalEntry { hash, namespace, seq, created_ms, expires_ms, data };
            let frame = seal_frame(&KEY, &e).unwrap();
            prop_assert_eq!(frame_len_at(&frame, 0), Some(frame.len() - 4));
            prop_assert_eq!(open_frame(&KEY, &frame[4..]), Some(e));
        }

        #[test]
        fn garbage_is_never_an_entry(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(open_frame(&KEY, &bytes), None);
            prop_assert!(decode_record(&bytes).is_none_or(|e| e.hash[..] == bytes[..32]));
        }
    }
}
