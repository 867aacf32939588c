//! Push decryption without a client: what an iOS Notification Service Extension or an
//! Android `FirebaseMessagingService` calls, with no network and no running client.

use std::{fs, io, path::Path};

use zeroize::Zeroizing;

use crate::{
    error::{Result, StateFailure, TidingsError},
    types::DecryptedPush,
};

/// `device.sealed`'s layout in device-link's state directory (see
/// `tidings_device_link::state`): `"TDS1" ‖ nonce(24) ‖ XChaCha20-Poly1305(key, nonce,
/// device_id(16) ‖ push_key(32), aad = "tidings/state/v1:device")`. Read here without
/// `DeviceState::open`, which creates and cleans files: an extension runs beside the app
/// and must never write into its state. A test checks this against `DeviceState`.
const DEVICE_FILE: &str = "device.sealed";
const MAGIC: &[u8] = b"TDS1";
const DEVICE_AAD: &[u8] = b"tidings/state/v1:device";
const NONCE_LEN: usize = 24;
const DEVICE_RECORD_LEN: usize = 16 + 32;

/// Decrypts the `enc` field of a push with the install's push key (32 bytes, from
/// `push_key_from_state` or `TidingsClient.push_key`). Needs no network and no client.
#[uniffi::export]
pub fn decrypt_push(enc: String, push_key: Vec<u8>) -> Result<DecryptedPush> {
    let key = Zeroizing::new(key32(&push_key, "push_key")?);
    let note = tidings_device_link::client::decrypt_push(&enc, &key)?;
    Ok(DecryptedPush::from_wire(&note))
}

/// Reads the install's push key from its state directory, read-only (an extension may
/// call it while the app runs). Fails with `State` when the directory holds no state yet
/// and `WrongStateKey` for another key.
#[uniffi::export]
pub fn push_key_from_state(state_dir: String, state_key: Vec<u8>) -> Result<Vec<u8>> {
    let key = Zeroizing::new(key32(&state_key, "state_key")?);
    let path = Path::new(&state_dir).join(DEVICE_FILE);
    let sealed = fs::read(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => TidingsError::State {
            kind: StateFailure::NoState,
            reason: format!("no device state in {state_dir}"),
        },
        _ => TidingsError::State {
            kind: StateFailure::Io,
            reason: format!("cannot read {}: {e}", path.display()),
        },
    })?;
    let rest = sealed.strip_prefix(MAGIC).ok_or(TidingsError::WrongStateKey)?;
    if rest.len() < NONCE_LEN {
        return Err(TidingsError::WrongStateKey);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| TidingsError::WrongStateKey)?;
    let record = Zeroizing::new(
        tidings_proto::aead::decrypt(&key, &nonce, ciphertext, DEVICE_AAD)
            .ok_or(TidingsError::WrongStateKey)?,
    );
    if record.len() != DEVICE_RECORD_LEN {
        return Err(TidingsError::State {
            kind: StateFailure::Corrupt,
            reason: "the device record is damaged".into(),
        });
    }
    Ok(record[16..].to_vec())
}

/// A 32-byte key from the FFI's byte string.
pub(crate) fn key32(bytes: &[u8], what: &str) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| TidingsError::InvalidArgument {
        reason: format!("{what} must be 32 bytes, got {}", bytes.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_device_link::{client::PushNotification, state::DeviceState};
    use tidings_proto::push::encrypt_push;

    #[test]
    fn the_push_key_is_read_exactly_as_device_state_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = [5u8; 32];
        let st = DeviceState::open(dir.path(), &key).unwrap();
        let dir_s = dir.path().to_str().unwrap().to_owned();
        assert_eq!(
            push_key_from_state(dir_s.clone(), key.to_vec()).unwrap(),
            st.push_key().to_vec()
        );
        assert_eq!(
            push_key_from_state(dir_s, vec![6; 32]),
            Err(TidingsError::WrongStateKey)
        );
        let empty = tempfile::tempdir().unwrap();
        let missing = push_key_from_state(empty.path().to_str().unwrap().into(), key.to_vec());
        assert!(matches!(missing, Err(TidingsError::State { .. })), "{missing:?}");
        // Read-only: nothing was created in the empty directory.
        assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0);
    }

    #[test]
    fn decrypt_push_works_offline_and_names_failures() {
        let key = [9u8; 32];
        let note = PushNotification {
            account: vec![1; 32],
            namespace: 0,
            hash: vec![2; 32],
            seq: 7,
            data_len: 3,
            data: b"abc".to_vec(),
            ..Default::default()
        };
        let enc = encrypt_push(&key, &note);
        let push = decrypt_push(enc.clone(), key.to_vec()).unwrap();
        assert_eq!(push.seq, 7);
        assert_eq!(push.data.as_deref(), Some(&b"abc"[..]));
        assert_eq!(push.hash, hex::encode([2u8; 32]));
        assert!(push.account_id.starts_with("01"));
        assert_eq!(
            decrypt_push(enc.clone(), vec![8; 32]),
            Err(TidingsError::PushNotForThisDevice)
        );
        assert_eq!(
            decrypt_push("%%%".into(), key.to_vec()),
            Err(TidingsError::PushMalformed)
        );
        assert!(matches!(
            decrypt_push(enc, vec![1; 31]),
            Err(TidingsError::InvalidArgument { .. })
        ));
    }
}
