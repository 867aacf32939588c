//! The store's write operations as data, so a batch can be written to the log and replayed.
//!
//! Every operation takes all its inputs from its arguments (clocks, node names, limits) and
//! draws what it numbers (seqs, job ids) from counters in the database, so applying the same
//! operations to the same state gives the same state and the same answers: that is what
//! makes a replay of the log rebuild exactly what the callers were told.
//!
//! Encoding: a `be32` count of operations, then each as a tag byte and its fields
//! (big-endian integers, `be32` length before variable parts). The log frames and
//! checksums it (see [`super::wal`]).

use super::ops;
use super::records::{self, Reader};
use super::tables::{OpError, Tables};
use crate::store::{
    Account, AccountIndex, DeviceId, Hash, JobOutcome, Lease, NewMessage, PushJob, PutOutcome, StoreError,
    Subscription,
};

/// One write, with everything it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    PutMessage(NewMessage),
    DeleteMessages {
        account: Account,
        namespace: u32,
        hashes: Vec<Hash>,
    },
    SweepExpired {
        now_ms: i64,
        max: u32,
    },
    UpsertSubscription(Subscription),
    /// Removes the subscription if it expires by `expiring_by` (see
    /// `Store::remove_subscription`).
    RemoveSubscription {
        account_index: AccountIndex,
        device_id: DeviceId,
        expiring_by: i64,
    },
    /// Removes a job whose sealed reference does not open (claiming found it).
    DropJob {
        id: u64,
    },
    /// `held`: the job's in-memory lease was still this claim's (see `super::leases`).
    FinishJob {
        job: PushJob,
        outcome: JobOutcome,
        held: bool,
    },
    Probe,
}

/// What a write returns; the store hands each caller the variant of its operation.
#[derive(Debug)]
pub enum Reply {
    Put(PutOutcome),
    Count(u32),
    Removed(u64),
    Flag(bool),
    Done,
}

impl WriteOp {
    /// Runs the operation in the batch's transaction.
    pub fn apply(&self, t: &mut Tables<'_>) -> Result<Reply, OpError> {
        Ok(match self {
            WriteOp::PutMessage(msg) => Reply::Put(ops::put_message(t, msg)?),
            WriteOp::DeleteMessages {
                account,
                namespace,
                hashes,
            } => Reply::Count(ops::delete_messages(t, account, *namespace, hashes)?),
            WriteOp::SweepExpired { now_ms, max } => Reply::Removed(ops::sweep_expired(t, *now_ms, *max)?),
            WriteOp::UpsertSubscription(sub) => Reply::Flag(ops::upsert_subscription(t, sub)?),
            WriteOp::RemoveSubscription {
                account_index,
                device_id,
                expiring_by,
            } => Reply::Flag(ops::remove_subscription_expiring_by(
                t,
                account_index,
                device_id,
                *expiring_by,
            )?),
            WriteOp::DropJob { id } => {
                ops::drop_job(t, *id)?;
                Reply::Done
            }
            WriteOp::FinishJob { job, outcome, held } => {
                ops::finish_job(t, job, *outcome, *held)?;
                Reply::Done
            }
            WriteOp::Probe => {
                ops::probe(t)?;
                Reply::Done
            }
        })
    }
}

const PUT: u8 = 1;
const DELETE: u8 = 2;
const SWEEP: u8 = 3;
const UPSERT: u8 = 4;
/// An unconditional removal, as logs written before removals carried `expiring_by` hold
/// it: still read (as `expiring_by = i64::MAX`), no longer written.
const REMOVE: u8 = 5;
// 6 and 7 were a durable claim and a finish without `held`, written before the embedded
// store's leases moved to memory; they are never reused.
const PROBE: u8 = 8;
const FINISH: u8 = 9;
const DROP_JOB: u8 = 10;
const REMOVE_EXPIRING_BY: u8 = 11;

const DELIVERED: u8 = 0;
const TOKEN_DEAD: u8 = 1;
const RETRY: u8 = 2;
const DROPPED: u8 = 3;

fn put_len(out: &mut Vec<u8>, n: usize) {
    // Inputs are bounded far below 4 GiB by the server's limits and the batch size.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

/// Encodes the operations of one batch.
pub fn encode<'a>(ops: impl ExactSizeIterator<Item = &'a WriteOp>, out: &mut Vec<u8>) {
    put_len(out, ops.len());
    for op in ops {
        encode_one(op, out);
    }
}

fn encode_one(op: &WriteOp, out: &mut Vec<u8>) {
    match op {
        WriteOp::PutMessage(m) => {
            out.push(PUT);
            out.extend_from_slice(m.account.as_slice());
            out.extend_from_slice(m.account_index.as_slice());
            out.extend_from_slice(&m.namespace.to_be_bytes());
            out.extend_from_slice(&m.hash);
            out.extend_from_slice(&m.created_ms.to_be_bytes());
            out.extend_from_slice(&m.expires_ms.to_be_bytes());
            put_bytes(out, &m.data);
        }
        WriteOp::DeleteMessages {
            account,
            namespace,
            hashes,
        } => {
            out.push(DELETE);
            out.extend_from_slice(account.as_slice());
            out.extend_from_slice(&namespace.to_be_bytes());
            put_len(out, hashes.len());
            hashes.iter().for_each(|h| out.extend_from_slice(h));
        }
        WriteOp::SweepExpired { now_ms, max } => {
            out.push(SWEEP);
            out.extend_from_slice(&now_ms.to_be_bytes());
            out.extend_from_slice(&max.to_be_bytes());
        }
        WriteOp::UpsertSubscription(sub) => {
            out.push(UPSERT);
            out.extend_from_slice(sub.account_index.as_slice());
            out.extend_from_slice(&sub.device_id);
            put_bytes(out, &records::encode_sub(sub));
        }
        WriteOp::RemoveSubscription {
            account_index,
            device_id,
            expiring_by,
        } => {
            out.push(REMOVE_EXPIRING_BY);
            out.extend_from_slice(account_index.as_slice());
            out.extend_from_slice(device_id);
            out.extend_from_slice(&expiring_by.to_be_bytes());
        }
        WriteOp::DropJob { id } => {
            out.push(DROP_JOB);
            out.extend_from_slice(&id.to_be_bytes());
        }
        WriteOp::FinishJob { job, outcome, held } => {
            out.push(FINISH);
            out.push(u8::from(*held));
            let (tag, not_before_ms) = match outcome {
                JobOutcome::Delivered => (DELIVERED, 0),
                JobOutcome::TokenDead => (TOKEN_DEAD, 0),
                JobOutcome::Retry { not_before_ms } => (RETRY, *not_before_ms),
                JobOutcome::Dropped => (DROPPED, 0),
            };
            out.push(tag);
            out.extend_from_slice(&not_before_ms.to_be_bytes());
            out.extend_from_slice(&job.id.to_be_bytes());
            // Every field of the job as claimed but its lease: `held` already says what the
            // claim decided. The account is in clear here only because the whole record is
            // sealed in the log (see `store::linkage`).
            out.extend_from_slice(job.account.as_slice());
            out.extend_from_slice(job.account_index.as_slice());
            out.extend_from_slice(&job.device_id);
            out.extend_from_slice(&job.namespace.to_be_bytes());
            out.extend_from_slice(&job.hash);
            out.extend_from_slice(&job.seq.to_be_bytes());
            out.extend_from_slice(&job.created_ms.to_be_bytes());
            out.extend_from_slice(&job.expires_ms.to_be_bytes());
            out.extend_from_slice(&job.attempts.to_be_bytes());
            out.extend_from_slice(&job.enqueued_ms.to_be_bytes());
        }
        WriteOp::Probe => out.push(PROBE),
    }
}

fn get_len(r: &mut Reader<'_>) -> Result<usize, StoreError> {
    Ok(r.u32()? as usize)
}

/// Decodes the operations of one batch.
pub fn decode(bytes: &[u8]) -> Result<Vec<WriteOp>, StoreError> {
    let mut r = Reader::new(bytes, "write-ahead log");
    let n = get_len(&mut r)?;
    // Each operation takes at least one byte: a bogus count cannot make us allocate much.
    let mut out = Vec::with_capacity(n.min(bytes.len()));
    for _ in 0..n {
        out.push(decode_one(&mut r)?);
    }
    r.finish()?;
    Ok(out)
}

fn bad(what: &str) -> StoreError {
    StoreError::corrupt(format!("bad {what} in the write-ahead log"))
}

fn decode_one(r: &mut Reader<'_>) -> Result<WriteOp, StoreError> {
    Ok(match r.u8()? {
        PUT => {
            let account = Account(r.array()?);
            let account_index = AccountIndex(r.array()?);
            let namespace = r.u32()?;
            let hash = r.array()?;
            let created_ms = r.i64()?;
            let expires_ms = r.i64()?;
            let n = get_len(r)?;
            let data = r.bytes(n)?.to_vec();
            WriteOp::PutMessage(NewMessage {
                account,
                account_index,
                namespace,
                hash,
                data,
                created_ms,
                expires_ms,
            })
        }
        DELETE => {
            let account = Account(r.array()?);
            let namespace = r.u32()?;
            let n = get_len(r)?;
            let mut hashes = Vec::new();
            for _ in 0..n {
                hashes.push(r.array()?);
            }
            WriteOp::DeleteMessages {
                account,
                namespace,
                hashes,
            }
        }
        SWEEP => WriteOp::SweepExpired {
            now_ms: r.i64()?,
            max: r.u32()?,
        },
        UPSERT => {
            let account_index = AccountIndex(r.array()?);
            let device_id = r.array()?;
            let n = get_len(r)?;
            let sub = records::decode_sub(account_index, device_id, r.bytes(n)?)?;
            WriteOp::UpsertSubscription(sub)
        }
        REMOVE => WriteOp::RemoveSubscription {
            account_index: AccountIndex(r.array()?),
            device_id: r.array()?,
            expiring_by: i64::MAX,
        },
        REMOVE_EXPIRING_BY => WriteOp::RemoveSubscription {
            account_index: AccountIndex(r.array()?),
            device_id: r.array()?,
            expiring_by: r.i64()?,
        },
        DROP_JOB => WriteOp::DropJob { id: r.u64()? },
        FINISH => {
            let held = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(bad("held flag")),
            };
            let tag = r.u8()?;
            let not_before_ms = r.i64()?;
            let outcome = match tag {
                DELIVERED => JobOutcome::Delivered,
                TOKEN_DEAD => JobOutcome::TokenDead,
                RETRY => JobOutcome::Retry { not_before_ms },
                DROPPED => JobOutcome::Dropped,
                _ => return Err(bad("job outcome")),
            };
            let job = PushJob {
                id: r.u64()?,
                account: Account(r.array()?),
                account_index: AccountIndex(r.array()?),
                device_id: r.array()?,
                namespace: r.u32()?,
                hash: r.array()?,
                seq: r.u64()?,
                created_ms: r.i64()?,
                expires_ms: r.i64()?,
                attempts: r.u32()?,
                enqueued_ms: r.i64()?,
                lease: Lease::default(),
            };
            WriteOp::FinishJob { job, outcome, held }
        }
        PROBE => WriteOp::Probe,
        _ => return Err(bad("operation tag")),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn arb_op() -> impl Strategy<Value = WriteOp> {
        let b32 = any::<[u8; 32]>();
        prop_oneof![
            (
                b32,
                b32,
                any::<u32>(),
                b32,
                prop::collection::vec(any::<u8>(), 0..64),
                any::<i64>(),
                any::<i64>()
            )
                .prop_map(
                    |(account, account_index, namespace, hash, data, created_ms, expires_ms)| {
                        WriteOp::PutMessage(NewMessage {
                            account: crate::store::Account(account),
                            account_index: crate::store::AccountIndex(account_index),
                            namespace,
                            hash,
                            data,
                            created_ms,
                            expires_ms,
                        })
                    }
                ),
            (b32, any::<u32>(), prop::collection::vec(b32, 0..4)).prop_map(|(account, namespace, hashes)| {
                WriteOp::DeleteMessages {
                    account: crate::store::Account(account),
                    namespace,
                    hashes,
                }
            }),
            (any::<i64>(), any::<u32>()).prop_map(|(now_ms, max)| WriteOp::SweepExpired { now_ms, max }),
            (
                b32,
                any::<[u8; 16]>(),
                prop::collection::btree_set(any::<u32>(), 0..4),
                any::<bool>(),
                prop::collection::vec(any::<u8>(), 0..64),
                any::<i64>()
            )
                .prop_map(|(account_index, device_id, ns, want_data, sealed, expires_ms)| {
                    WriteOp::UpsertSubscription(Subscription {
                        account_index: crate::store::AccountIndex(account_index),
                        device_id,
                        namespaces: ns.into_iter().collect(),
                        want_data,
                        sealed,
                        expires_ms,
                    })
                }),
            (b32, any::<[u8; 16]>(), any::<i64>()).prop_map(|(account_index, device_id, expiring_by)| {
                WriteOp::RemoveSubscription {
                    account_index: crate::store::AccountIndex(account_index),
                    device_id,
                    expiring_by,
                }
            }),
            any::<u64>().prop_map(|id| WriteOp::DropJob { id }),
            (
                any::<u64>(),
                b32,
                any::<u32>(),
                any::<i64>(),
                0u8..4,
                "[a-z0-9-]{0,40}",
                any::<bool>()
            )
                .prop_map(|(id, b, n, t, o, owner, held)| {
                    let outcome = match o {
                        0 => JobOutcome::Delivered,
                        1 => JobOutcome::TokenDead,
                        2 => JobOutcome::Retry { not_before_ms: t },
                        _ => JobOutcome::Dropped,
                    };
                    WriteOp::FinishJob {
                        job: PushJob {
                            id,
                            account: crate::store::Account(b),
                            account_index: crate::store::AccountIndex(b),
                            device_id: [n as u8; 16],
                            namespace: n,
                            hash: b,
                            seq: id,
                            created_ms: t,
                            expires_ms: t,
                            attempts: n,
                            enqueued_ms: t,
                            lease: Lease { owner, until_ms: t },
                        },
                        outcome,
                        held,
                    }
                }),
            Just(WriteOp::Probe),
        ]
    }

    proptest! {
        #[test]
        fn batches_round_trip(ops in prop::collection::vec(arb_op(), 0..8)) {
            let mut bytes = Vec::new();
            encode(ops.iter(), &mut bytes);
            // A finish logs `held`, not the claim's lease.
            let logged: Vec<WriteOp> = ops
                .into_iter()
                .map(|mut op| {
                    if let WriteOp::FinishJob { job, .. } = &mut op {
                        job.lease = Lease::default();
                    }
                    op
                })
                .collect();
            prop_assert_eq!(decode(&bytes).unwrap(), logged);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn an_unconditional_removal_of_an_older_log_still_replays() {
        let mut bytes = 1u32.to_be_bytes().to_vec();
        bytes.push(REMOVE);
        bytes.extend_from_slice(&[3; 32]);
        bytes.extend_from_slice(&[4; 16]);
        assert_eq!(
            decode(&bytes).unwrap(),
            [WriteOp::RemoveSubscription {
                account_index: crate::store::AccountIndex([3; 32]),
                device_id: [4; 16],
                expiring_by: i64::MAX,
            }]
        );
    }
}
