//! The write-ahead log file: one framed record per committed batch.
//!
//! A record is `le32 len ‖ le32 crc32(batch ‖ payload) ‖ le64 batch ‖ payload` (`len` is
//! the payload's length). Records are appended at the logical end and each append is
//! followed by `fdatasync`, so a record that was acknowledged is whole on disk; the last
//! record may be torn by a crash (it was never acknowledged then).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::store::StoreError;

/// Name of the log file inside the data directory.
pub const FILE_NAME: &str = "tidings.wal";

const HEADER: usize = 16;

/// Where and why reading the log stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The log ended after a whole record.
    End,
    /// The last record is incomplete or fails its checksum: a batch that was being
    /// written when the process died, never acknowledged.
    TornTail { offset: u64 },
    /// A record before the last fails its checksum: the log is damaged, and the batches
    /// from here on are lost.
    Corrupt { offset: u64 },
}

/// One record read back.
#[derive(Debug)]
pub struct Record {
    pub batch: u64,
    pub payload: Vec<u8>,
}

/// The open log.
#[derive(Debug)]
pub struct Wal {
    file: File,
    /// The logical end: the next record goes here.
    len: u64,
    /// A failed append may have left bytes past `len`; they are cut before the next one.
    dirty: bool,
}

fn io_error(what: &str, e: &std::io::Error) -> StoreError {
    StoreError::Unavailable(format!(
        "{what} the write-ahead log: {}",
        super::errors::io_cause(e)
    ))
}

impl Wal {
    /// Opens (or creates) the log in `dir`. Its records are kept until [`Wal::reset`].
    pub fn open(dir: &Path) -> Result<Wal, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(FILE_NAME))
            .map_err(|e| io_error("cannot open", &e))?;
        // A file created just now must not vanish in a crash with the records it will hold.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("cannot sync the directory of", &e))?;
        let len = file.metadata().map_err(|e| io_error("cannot stat", &e))?.len();
        Ok(Wal {
            file,
            len,
            dirty: false,
        })
    }

    /// Reads every whole record from the start, and why reading stopped.
    pub fn read_all(&self) -> Result<(Vec<Record>, Stop), StoreError> {
        let read = self.file.metadata().and_then(|m| {
            let size = usize::try_from(m.len()).map_err(std::io::Error::other)?;
            let mut bytes = vec![0; size];
            self.file.read_exact_at(&mut bytes, 0)?;
            Ok(bytes)
        });
        let bytes = read.map_err(|e| io_error("cannot read", &e))?;
        Ok(parse(&bytes))
    }

    /// Appends one record and waits until it is on disk.
    pub fn append(&mut self, batch: u64, payload: &[u8]) -> std::io::Result<()> {
        if self.dirty {
            self.file.set_len(self.len)?;
            self.dirty = false;
        }
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        let len = u32::try_from(payload.len())
            .map_err(|_| std::io::Error::other("batch too large for one log record"))?;
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&checksum(batch, payload).to_le_bytes());
        frame.extend_from_slice(&batch.to_le_bytes());
        frame.extend_from_slice(payload);
        let written = self
            .file
            .write_all_at(&frame, self.len)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                Err(e)
            }
        }
    }

    /// The offset the next record will be written at.
    pub fn end(&self) -> u64 {
        self.len
    }

    /// Cuts the log back to `offset` (undoes appends after it) and waits until that is on disk.
    pub fn truncate(&mut self, offset: u64) -> std::io::Result<()> {
        self.file.set_len(offset)?;
        self.file.sync_data()?;
        self.len = offset;
        self.dirty = false;
        Ok(())
    }

    /// Empties the log once the database holds all of it durably.
    pub fn reset(&mut self) -> std::io::Result<()> {
        self.truncate(0)
    }
}

fn checksum(batch: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&batch.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Splits log bytes into records.
pub fn parse(bytes: &[u8]) -> (Vec<Record>, Stop) {
    let mut records = Vec::new();
    let mut at = 0usize;
    loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            return (records, Stop::End);
        }
        let offset = at as u64;
        let Some((head, body)) = rest.split_first_chunk::<HEADER>() else {
            return (records, Stop::TornTail { offset });
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let mut batch = [0; 8];
        batch.copy_from_slice(&head[8..16]);
        let batch = u64::from_le_bytes(batch);
        if body.len() < len {
            return (records, Stop::TornTail { offset });
        }
        let payload = &body[..len];
        if checksum(batch, payload) != crc {
            let last = body.len() == len;
            return (
                records,
                if last {
                    Stop::TornTail { offset }
                } else {
                    Stop::Corrupt { offset }
                },
            );
        }
        records.push(Record {
            batch,
            payload: payload.to_vec(),
        });
        at += HEADER + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_classified() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        wal.append(1, b"one").unwrap();
        let second = wal.end();
        wal.append(2, b"two").unwrap();
        wal.append(3, b"").unwrap();
        let (records, stop) = wal.read_all().unwrap();
        assert_eq!(stop, Stop::End);
        assert_eq!(
            records
                .iter()
                .map(|r| (r.batch, r.payload.clone()))
                .collect::<Vec<_>>(),
            [(1, b"one".to_vec()), (2, b"two".to_vec()), (3, vec![])]
        );
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();

        let (r, stop) = parse(&bytes[..bytes.len() - 3]);
        assert_eq!((r.len(), stop), (2, Stop::TornTail { offset: 38 }));

        let mut bad = bytes.clone();
        bad[second as usize + HEADER] ^= 1;
        let (r, stop) = parse(&bad);
        assert_eq!((r.len(), stop), (1, Stop::Corrupt { offset: second }));

        wal.truncate(second).unwrap();
        wal.append(2, b"TWO").unwrap();
        let (r, stop) = parse(&std::fs::read(dir.path().join(FILE_NAME)).unwrap());
        assert_eq!(
            (r.len(), stop, r[1].payload.clone()),
            (2, Stop::End, b"TWO".to_vec())
        );
    }
}
