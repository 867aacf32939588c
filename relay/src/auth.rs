//! The checks every signed request shares: the account key, the signature's shape, the
//! `ts` window and the Ed25519 verification, each failing with the status DESIGN.md's
//! error list gives it and a message naming the field.
//!
//! The signed byte strings themselves come from [`tidings_proto::sign`]; this module
//! only decides whether to accept them.

mod known_keys;

use tidings_proto::{ACCOUNT_LEN, SIGNATURE_LEN, sign};
use tonic::Status;

/// Checks `account` is a 32-byte Ed25519 public key (INVALID_ARGUMENT otherwise).
///
/// Every real account is a valid key, so bytes that are not a curve point can only be
/// a mistake: refusing them keeps messages nobody could ever retrieve out of storage.
/// Keys seen recently are answered from a memo ([`known_keys`]).
pub fn parse_account(bytes: &[u8]) -> Result<[u8; ACCOUNT_LEN], Status> {
    let account: [u8; ACCOUNT_LEN] = bytes.try_into().map_err(|_| {
        Status::invalid_argument(format!(
            "account: must be {ACCOUNT_LEN} bytes (got {})",
            bytes.len()
        ))
    })?;
    if !known_keys::is_point(&account) {
        return Err(Status::invalid_argument(
            "account: must be an Ed25519 public key (not a curve point)",
        ));
    }
    Ok(account)
}

/// Checks the signature is 64 bytes (INVALID_ARGUMENT otherwise).
pub fn check_signature_len(signature: &[u8]) -> Result<(), Status> {
    if signature.len() == SIGNATURE_LEN {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "signature: must be {SIGNATURE_LEN} bytes (got {})",
            signature.len()
        )))
    }
}

/// Checks `ts` (Unix seconds) is within `window_s` of `now_s` (UNAUTHENTICATED otherwise):
/// a captured request cannot be replayed later than that.
pub fn check_ts(ts: i64, now_s: i64, window_s: i64) -> Result<(), Status> {
    let off = i128::from(ts) - i128::from(now_s);
    if off.abs() <= i128::from(window_s) {
        Ok(())
    } else {
        let direction = if off > 0 { "ahead of" } else { "behind" };
        Err(Status::unauthenticated(format!(
            "ts: {} s {direction} the relay's clock, the window is ±{window_s} s",
            off.abs()
        )))
    }
}

/// Verifies the account's signature over `message` (UNAUTHENTICATED otherwise).
pub fn verify(account: &[u8; ACCOUNT_LEN], message: &[u8], signature: &[u8]) -> Result<(), Status> {
    sign::verify(account, message, signature)
        .map_err(|_| Status::unauthenticated("signature: does not verify for this account"))
}

/// The tail every signed request shares, in its fixed order: signature length, `ts`
/// window, then the signature over the bytes `message` builds (only built once the
/// cheap checks passed).
pub fn authenticate(
    account: &[u8; ACCOUNT_LEN],
    ts: i64,
    signature: &[u8],
    now_s: i64,
    window_s: i64,
    message: impl FnOnce() -> Vec<u8>,
) -> Result<(), Status> {
    check_signature_len(signature)?;
    check_ts(ts, now_s, window_s)?;
    verify(account, &message(), signature)
}

/// What the validators' table-driven tests share.
#[cfg(test)]
pub(crate) mod testing {
    use ed25519_dalek::VerifyingKey;
    use tidings_proto::v1::{
        DeleteRequest, RetrieveRequest, StoreRequest, SubscribeRequest, UnsubscribeRequest,
    };
    use tonic::{Code, Status};

    /// 32 bytes that do not decompress to a curve point (about half of all strings are).
    pub(crate) fn not_a_point() -> [u8; 32] {
        (0u8..=255)
            .map(|i| {
                let mut b = [i; 32];
                b[31] &= 0x7f;
                b
            })
            .find(|b| VerifyingKey::from_bytes(b).is_err())
            .expect("about half of all byte strings are not curve points")
    }

    /// A row of a validator's table: what it breaks, how it changes the valid request, and
    /// the status that must come back (`Code::Ok` and an empty fragment for rows that pass).
    pub(crate) type Row<R> = (&'static str, fn(&mut R), Code, &'static str);

    /// What every signed request says when its signature is not the account's over its fields.
    pub(crate) const SIG_MISMATCH: &str = "signature: does not verify for this account";

    /// A signed request: its account is checked first, its signature covers its `ts`.
    pub(crate) trait Signed {
        fn account_mut(&mut self) -> &mut Vec<u8>;
        fn signature_mut(&mut self) -> &mut Vec<u8>;
        fn ts_mut(&mut self) -> &mut i64;
    }

    macro_rules! signed {
        ($($request:ty),*) => {$(
            impl Signed for $request {
                fn account_mut(&mut self) -> &mut Vec<u8> {
                    &mut self.account
                }
                fn signature_mut(&mut self) -> &mut Vec<u8> {
                    &mut self.signature
                }
                fn ts_mut(&mut self) -> &mut i64 {
                    &mut self.ts
                }
            }
        )*};
    }
    signed!(
        StoreRequest,
        RetrieveRequest,
        DeleteRequest,
        SubscribeRequest,
        UnsubscribeRequest
    );

    /// The rows every signed request's table shares, run by [`check_table`] before its own.
    fn shared_rows<R: Signed>() -> [Row<R>; 5] {
        [
            (
                "account too short",
                |r| {
                    r.account_mut().pop();
                },
                Code::InvalidArgument,
                "account: must be 32 bytes (got 31)",
            ),
            (
                "account too long",
                |r| r.account_mut().push(0),
                Code::InvalidArgument,
                "account: must be 32 bytes (got 33)",
            ),
            (
                "account not a curve point",
                |r| *r.account_mut() = not_a_point().to_vec(),
                Code::InvalidArgument,
                "account: must be an Ed25519 public key (not a curve point)",
            ),
            (
                "signature too short",
                |r| {
                    r.signature_mut().pop();
                },
                Code::InvalidArgument,
                "signature: must be 64 bytes (got 63)",
            ),
            (
                "signature over another ts",
                |r| *r.ts_mut() -= 1,
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
        ]
    }

    /// Runs a validator's table, after the [`shared_rows`]: each row changes a fresh
    /// `valid()` request, and `validate` must answer as the row says (see [`check_row`]).
    pub(crate) fn check_table<R: Signed, T: std::fmt::Debug>(
        rows: &[Row<R>],
        valid: impl Fn() -> R,
        validate: impl Fn(R) -> Result<T, Status>,
    ) {
        for (row, change, code, fragment) in shared_rows().iter().chain(rows) {
            let mut req = valid();
            change(&mut req);
            check_row(row, validate(req), *code, fragment);
        }
    }

    /// Checks one row of a validator's table: a `Code::Ok` row must be accepted; any other
    /// must be refused with `code` and a message that contains `fragment` and starts with
    /// the field `fragment` names (the text before its first `": "`).
    fn check_row<T: std::fmt::Debug>(row: &str, got: Result<T, Status>, code: Code, fragment: &str) {
        match got {
            Ok(v) => assert_eq!(code, Code::Ok, "{row}: accepted as {v:?}"),
            Err(e) => {
                assert_eq!(e.code(), code, "{row}: {e:?}");
                let (field, _) = fragment
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("{row}: the fragment {fragment:?} names no field"));
                let message = e.message();
                assert!(
                    message.starts_with(&format!("{field}: ")),
                    "{row}: {message:?} does not name {field}"
                );
                assert!(
                    message.contains(fragment),
                    "{row}: {message:?} lacks {fragment:?}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use tonic::Code;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn account_length_and_point_are_checked() {
        let e = parse_account(&[1u8; 31]).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.message(), "account: must be 32 bytes (got 31)");
        let good = key().verifying_key().to_bytes();
        assert_eq!(parse_account(&good).unwrap(), good);
        let bad = testing::not_a_point();
        assert_eq!(parse_account(&bad).unwrap_err().code(), Code::InvalidArgument);
    }

    #[test]
    fn ts_window_is_inclusive_and_named() {
        assert!(check_ts(1300, 1000, 300).is_ok());
        assert!(check_ts(700, 1000, 300).is_ok());
        let e = check_ts(1400, 1000, 300).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(
            e.message(),
            "ts: 400 s ahead of the relay's clock, the window is ±300 s"
        );
        let e = check_ts(i64::MIN, i64::MAX, 300).unwrap_err();
        assert!(e.message().starts_with("ts: "));
    }

    #[test]
    fn authenticate_checks_in_order() {
        let k = key();
        let account = k.verifying_key().to_bytes();
        let msg = sign::retrieve_bytes(&account, 3, 1000);
        let sig = sign::sign(&k, &msg);
        assert!(authenticate(&account, 1000, &sig, 1000, 300, || msg.clone()).is_ok());
        let e = authenticate(&account, 1000, &sig[..10], 1000, 300, || msg.clone()).unwrap_err();
        assert_eq!(e.message(), "signature: must be 64 bytes (got 10)");
        let e = authenticate(&account, 1000, &sig, 5000, 300, || msg.clone()).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(e.message().starts_with("ts:"));
        let other = sign::retrieve_bytes(&account, 4, 1000);
        let e = authenticate(&account, 1000, &sig, 1000, 300, || other).unwrap_err();
        assert_eq!(e.message(), "signature: does not verify for this account");
    }
}
