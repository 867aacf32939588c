//! QR linking without a relay: the handshake's pure functions, as the new device and the
//! linked device run them, and a man in the middle.

use proptest::prelude::*;
use tidings_device_link::{
    client::{ClientOptions, RelayClient},
    identity::Identity,
    link::{LinkError, LinkOffer, OfferPayload, PayloadError, QR_PREFIX, open_root, seal_root},
};
use x25519_dalek::{PublicKey, StaticSecret};

fn offer() -> LinkOffer {
    LinkOffer::new("127.0.0.1:7400").unwrap()
}

fn scanned(offer: &LinkOffer) -> OfferPayload {
    LinkOffer::parse(&offer.qr_payload()).unwrap()
}

fn mitm_key() -> (StaticSecret, [u8; 32]) {
    let secret = StaticSecret::from(tidings_proto::random_bytes::<32>());
    let public = PublicKey::from(&secret).to_bytes();
    (secret, public)
}

#[tokio::test]
async fn an_honest_exchange_shows_equal_codes_and_transfers_the_account() {
    let account = Identity::create();
    let new_device = offer();
    let sealed = seal_root(&scanned(&new_device), account.entropy()).unwrap();
    let pending = new_device.open(&sealed.message).unwrap();
    assert_eq!(pending.sas(), sealed.sas);
    assert_eq!(sealed.sas.len(), 6);
    // Nothing came through a relay, so confirming deletes nothing: this client is never dialled.
    let client = RelayClient::connect_lazy("127.0.0.1:9", ClientOptions::default()).unwrap();
    let linked = pending.confirm(&client).await.unwrap();
    assert_eq!(linked.account(), account.account());
    assert_eq!(linked.phrase(), account.phrase());
}

/// A 24-word account travels the same way.
#[test]
fn a_24_word_root_transfers() {
    let account = Identity::from_entropy(&[0x42; 32]).unwrap();
    let new_device = offer();
    let sealed = seal_root(&scanned(&new_device), account.entropy()).unwrap();
    let pending = new_device.open(&sealed.message).unwrap();
    assert_eq!(pending.sas(), sealed.sas);
}

/// The attacker replaces the X25519 key in the QR code the linked device scans, opens the
/// root sealed to it, and re-seals it to the new device's real key.
#[test]
fn swapping_the_offer_key_changes_the_codes() {
    let account = Identity::create();
    let new_device = offer();
    let real = scanned(&new_device);
    let (m_secret, m_public) = mitm_key();
    let forged = OfferPayload {
        x25519: m_public,
        ..real.clone()
    };

    let to_attacker = seal_root(&forged, account.entropy()).unwrap();
    let (stolen, attacker_side_code) = open_root(&m_secret, &forged, &to_attacker.message).unwrap();
    assert_eq!(attacker_side_code, to_attacker.sas);
    assert_eq!(stolen.as_slice(), account.entropy());

    let to_new_device = seal_root(&real, &stolen).unwrap();
    let pending = new_device.open(&to_new_device.message).unwrap();
    assert_ne!(
        pending.sas(),
        to_attacker.sas,
        "linked device and new device must disagree"
    );
}

/// The attacker (say, someone who photographed the QR code, or the relay) drops the
/// linked device's message and deposits its own root under its own ephemeral key.
#[test]
fn swapping_the_ephemeral_key_changes_the_codes() {
    let account = Identity::create();
    let attacker_account = Identity::create();
    let new_device = offer();
    let real = scanned(&new_device);

    let honest = seal_root(&real, account.entropy()).unwrap();
    let forged = seal_root(&real, attacker_account.entropy()).unwrap();
    let pending = new_device.open(&forged.message).unwrap();
    assert_ne!(pending.sas(), honest.sas);

    // Splicing the attacker's ephemeral key onto the honest ciphertext does not decrypt.
    let mut spliced = honest.message.clone();
    spliced[..32].copy_from_slice(&forged.message[..32]);
    assert!(matches!(new_device.open(&spliced), Err(LinkError::Decrypt)));
}

#[test]
fn a_root_for_another_offer_is_rejected() {
    let account = Identity::create();
    let sealed = seal_root(&scanned(&offer()), account.entropy()).unwrap();
    assert!(matches!(offer().open(&sealed.message), Err(LinkError::Decrypt)));
}

#[test]
fn truncated_messages_are_malformed() {
    let new_device = offer();
    assert!(matches!(new_device.open(&[]), Err(LinkError::Malformed)));
    assert!(matches!(new_device.open(&[1; 71]), Err(LinkError::Malformed)));
}

#[test]
fn a_sealed_plaintext_that_is_no_root_is_rejected() {
    let new_device = offer();
    let sealed = seal_root(&scanned(&new_device), &[1; 20]).unwrap();
    assert!(matches!(
        new_device.open(&sealed.message),
        Err(LinkError::Root(_))
    ));
}

#[test]
fn payload_errors_are_specific() {
    assert_eq!(LinkOffer::parse("hello"), Err(PayloadError::NotALinkCode));
    assert_eq!(
        LinkOffer::parse("tidings-link:v9:AAAA"),
        Err(PayloadError::UnsupportedVersion("v9".into()))
    );
    assert_eq!(
        LinkOffer::parse("tidings-link:v1:@@@"),
        Err(PayloadError::Encoding)
    );
    assert_eq!(
        LinkOffer::parse("tidings-link:v1:AAAA"),
        Err(PayloadError::TooShort)
    );
    let qr = offer().qr_payload();
    assert!(LinkOffer::parse(&format!("  {qr}\n")).is_ok());
}

fn arb_payload() -> impl Strategy<Value = OfferPayload> {
    let addr = "[a-zA-Z0-9.:/\\[\\]_-]{1,80}";
    (addr, any::<[u8; 32]>()).prop_map(|(relay_addr, x25519)| OfferPayload {
        relay_addr,
        // Any valid Ed25519 public key will do; derive one from random bytes.
        mailbox: ed25519_dalek::SigningKey::from_bytes(&x25519)
            .verifying_key()
            .to_bytes(),
        x25519,
    })
}

proptest! {
    #[test]
    fn payload_round_trips(p in arb_payload()) {
        let encoded = p.encode();
        prop_assert!(encoded.starts_with(QR_PREFIX));
        prop_assert_eq!(OfferPayload::parse(&encoded), Ok(p));
    }

    #[test]
    fn garbage_payloads_never_panic(s in ".{0,300}") {
        let _ = OfferPayload::parse(&s);
    }

    #[test]
    fn garbage_after_the_prefix_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        use base64::Engine;
        let s = format!("{QR_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body));
        let _ = OfferPayload::parse(&s);
    }

    #[test]
    fn tampered_messages_are_rejected(bit in 0usize..(8 * (32 + 24 + 16 + 16))) {
        let new_device = offer();
        let sealed = seal_root(&scanned(&new_device), &[9; 16]).unwrap();
        let mut message = sealed.message.clone();
        message[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(new_device.open(&message).is_err());
    }
}
