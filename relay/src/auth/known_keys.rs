//! A memo of account keys already found to be Ed25519 curve points.
//!
//! Deciding that 32 bytes are a point means decompressing them, a field square root of
//! about 40 000 instructions: the largest single item of a Store's validation in
//! `tidings-bench push-profile` (7 % of an end-to-end push). The answer never changes for
//! the same bytes, and the accounts a relay stores into repeat (each conversation's
//! messages go to the same few mailboxes), so a key seen recently skips it.
//!
//! Direct-mapped and bounded: slot = the key's first two bytes, which for a real key are
//! uniformly distributed (they are the low bits of the point's y coordinate). Only keys
//! that decompressed are remembered, and a hit compares all 32 bytes, so the memo can
//! never accept what decompression would refuse; keys chosen to collide only evict each
//! other, which costs what no memo costs.

use std::sync::{LazyLock, Mutex, PoisonError};

use ed25519_dalek::VerifyingKey;
use tidings_proto::ACCOUNT_LEN;

/// Slots of the memo: 32 768 keys, about 1.3 MB.
const SLOTS: usize = 1 << 15;

type Slot = Mutex<Option<[u8; ACCOUNT_LEN]>>;

static KNOWN: LazyLock<Box<[Slot]>> = LazyLock::new(|| (0..SLOTS).map(|_| Mutex::new(None)).collect());

fn slot_of(key: &[u8; ACCOUNT_LEN]) -> &'static Slot {
    let index = usize::from(u16::from_le_bytes([key[0], key[1]])) % SLOTS;
    &KNOWN[index]
}

/// Whether `key` is the encoding of an Ed25519 curve point (as
/// `VerifyingKey::from_bytes` decides), remembering keys that are.
pub fn is_point(key: &[u8; ACCOUNT_LEN]) -> bool {
    let slot = slot_of(key);
    if slot.lock().unwrap_or_else(PoisonError::into_inner).as_ref() == Some(key) {
        return true;
    }
    let point = VerifyingKey::from_bytes(key).is_ok();
    if point {
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(*key);
    }
    point
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_point_is_remembered_and_a_non_point_never_is() {
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes();
        assert!(is_point(&key));
        assert_eq!(*slot_of(&key).lock().unwrap(), Some(key));
        assert!(is_point(&key), "answered from the memo");
        let bad = crate::auth::testing::not_a_point();
        assert!(!is_point(&bad));
        assert_ne!(*slot_of(&bad).lock().unwrap(), Some(bad));
        assert!(!is_point(&bad), "still refused the second time");
    }

    #[test]
    fn keys_sharing_a_slot_evict_each_other_and_stay_correct() {
        let a = SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes();
        let b = (0u8..=255)
            .map(|i| {
                let mut b = [i; 32];
                b[..2].copy_from_slice(&a[..2]);
                b[31] &= 0x7f;
                b
            })
            .find(|b| VerifyingKey::from_bytes(b).is_err())
            .expect("about half of all byte strings are not curve points");
        assert!(is_point(&a));
        assert!(!is_point(&b), "same slot, not a point: refused");
        assert!(is_point(&a));
    }

    proptest! {
        /// The memo answers what decompression answers, for any bytes, asked twice.
        #[test]
        fn agrees_with_decompression(key in any::<[u8; 32]>()) {
            let truth = VerifyingKey::from_bytes(&key).is_ok();
            prop_assert_eq!(is_point(&key), truth);
            prop_assert_eq!(is_point(&key), truth);
        }
    }
}
