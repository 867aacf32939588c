//! QR linking without a relay: the handshake's pure functions as the new device and the
//! linked device run them (hello, root, decline), and a man in the middle.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tidings_device_link::{
    identity::Identity,
    link::{
        Answer, Handshake, LinkError, LinkOffer, LinkResponder, MAX_DEVICE_NAME_LEN, MAX_RELAY_ADDR_LEN,
        OfferPayload, PayloadError, PendingLink, QR_PREFIX,
    },
};
use x25519_dalek::{PublicKey, StaticSecret};

fn offer() -> LinkOffer {
    LinkOffer::new("127.0.0.1:7400", "Ada's iPad").unwrap()
}

fn scanned(offer: &LinkOffer) -> OfferPayload {
    LinkOffer::parse(&offer.qr_payload()).unwrap()
}

/// The linked device scans `offer`; the new device reads its hello.
fn handshake(offer: &LinkOffer) -> (LinkResponder, PendingLink) {
    let responder = LinkResponder::new(scanned(offer)).unwrap();
    let pending = offer.open_hello(&responder.handshake().hello()).unwrap();
    (responder, pending)
}

fn adopted(answer: Result<Option<Answer>, LinkError>) -> Identity {
    match answer {
        Ok(Some(Answer::Root(identity))) => *identity,
        other => panic!("expected a root, got {other:?}"),
    }
}

fn mitm_key() -> (StaticSecret, [u8; 32]) {
    let secret = StaticSecret::from(tidings_proto::random_bytes::<32>());
    let public = PublicKey::from(&secret).to_bytes();
    (secret, public)
}

#[test]
fn the_qr_code_says_who_asks_and_stays_compact() {
    let new_device = offer();
    let qr = new_device.qr_payload();
    assert!(qr.starts_with(QR_PREFIX));
    assert!(qr.len() < 180, "{}", qr.len());
    assert!(
        qr[QR_PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    let scanned = LinkOffer::parse(&qr).unwrap();
    assert_eq!(scanned, *new_device.payload());
    assert_eq!(scanned.device_name, "Ada's iPad");
    assert_eq!(scanned.relay_addr, "127.0.0.1:7400");

    // The largest payload still fits a QR code comfortably (version 20 holds ~850 bytes).
    let largest = LinkOffer::new(&"r".repeat(MAX_RELAY_ADDR_LEN), &"n".repeat(MAX_DEVICE_NAME_LEN)).unwrap();
    assert!(largest.qr_payload().len() < 600);
}

#[test]
fn an_honest_exchange_shows_equal_codes_and_transfers_the_account_only_on_approval() {
    let account = Identity::create();
    let new_device = offer();
    let responder = LinkResponder::new(scanned(&new_device)).unwrap();

    // The hello is the ephemeral public key and nothing else.
    let hello = responder.handshake().hello();
    assert_eq!(hello.len(), 33);
    assert_eq!(hello[0], 0x01);
    assert_eq!(&hello[1..], responder.handshake().eph_pub());

    let pending = new_device.open_hello(&hello).unwrap();
    assert_eq!(pending.sas(), responder.sas(), "both screens show the same code");
    assert_eq!(pending.sas().len(), 6);
    assert!(pending.sas().chars().all(|c| c.is_ascii_digit()));
    assert!(
        matches!(pending.read_answer(&hello), Ok(None)),
        "a hello is no answer"
    );

    let root = responder.handshake().seal_root(account.entropy());
    let linked = adopted(pending.read_answer(&root));
    assert_eq!(linked.account(), account.account());
    assert_eq!(linked.phrase(), account.phrase());
}

/// A 24-word account travels the same way.
#[test]
fn a_24_word_root_transfers() {
    let account = Identity::from_entropy(&[0x42; 32]).unwrap();
    let (responder, pending) = handshake(&offer());
    let root = responder.handshake().seal_root(account.entropy());
    assert_eq!(adopted(pending.read_answer(&root)).phrase(), account.phrase());
}

#[test]
fn a_decline_is_a_typed_answer() {
    let (responder, pending) = handshake(&offer());
    let decline = responder.handshake().decline();
    assert_eq!(decline.len(), 73);
    assert_eq!(decline[0], 0x03);
    assert!(matches!(
        pending.read_answer(&decline),
        Ok(Some(Answer::Declined))
    ));
}

/// Two linked devices scanned the same code; the new device showed the first one's code.
#[test]
fn only_the_hellos_handshake_is_adopted() {
    let account = Identity::create();
    let new_device = offer();
    let (first, pending) = handshake(&new_device);
    let second = LinkResponder::new(scanned(&new_device)).unwrap();
    assert_ne!(first.handshake().eph_pub(), second.handshake().eph_pub());

    assert!(matches!(
        pending.read_answer(&second.handshake().hello()),
        Ok(None)
    ));
    assert!(matches!(
        pending.read_answer(&second.handshake().decline()),
        Ok(None)
    ));
    assert!(matches!(
        pending.read_answer(&second.handshake().seal_root(account.entropy())),
        Err(LinkError::Mismatch)
    ));
    // The first device's own root still opens.
    let root = first.handshake().seal_root(account.entropy());
    assert_eq!(adopted(pending.read_answer(&root)).account(), account.account());
}

#[test]
fn a_hello_is_read_only_from_a_hello() {
    let new_device = offer();
    let responder = LinkResponder::new(scanned(&new_device)).unwrap();
    for not_hello in [
        responder.handshake().seal_root(Identity::create().entropy()),
        responder.handshake().decline(),
        vec![0x01; 32],
        Vec::new(),
    ] {
        assert!(matches!(
            new_device.open_hello(&not_hello),
            Err(LinkError::Malformed)
        ));
    }
}

/// The attacker replaces the X25519 key in the QR code the linked device scans: it learns
/// the code the linked device shows, but its own handshake with the new device shows
/// another (unless it searches ~10^6 keys: the QR code must be scanned off the screen).
#[test]
fn swapping_the_offer_key_changes_the_codes() {
    let new_device = offer();
    let real = scanned(&new_device);
    let (m_secret, m_public) = mitm_key();
    let forged = OfferPayload {
        x25519: m_public,
        ..real.clone()
    };

    let linked = LinkResponder::new(forged.clone()).unwrap();
    let attacker_view = Handshake::accept(&m_secret, &forged, linked.handshake().eph_pub()).unwrap();
    assert_eq!(attacker_view.sas(), linked.sas());

    let relayed = Handshake::start(&real).unwrap();
    let pending = new_device.open_hello(&relayed.hello()).unwrap();
    assert_ne!(
        pending.sas(),
        linked.sas(),
        "linked device and new device must disagree"
    );
    // Nothing was sealed on the linked device, so the attacker holds no root yet.
}

/// The attacker (someone who photographed the QR code) deposits its own hello before the
/// linked device's. The new device shows the attacker's code, so the user declines; the
/// linked device's root, were it approved anyway, is never adopted.
#[test]
fn an_earlier_hello_from_someone_else_changes_the_codes() {
    let account = Identity::create();
    let new_device = offer();
    let real = scanned(&new_device);
    let attacker = Handshake::start(&real).unwrap();
    let honest = LinkResponder::new(real).unwrap();

    let pending = new_device.open_hello(&attacker.hello()).unwrap();
    assert_ne!(pending.sas(), honest.sas());
    assert!(matches!(
        pending.read_answer(&honest.handshake().seal_root(account.entropy())),
        Err(LinkError::Mismatch)
    ));

    // Splicing the hello's ephemeral key onto the honest root does not authenticate.
    let mut spliced = honest.handshake().seal_root(account.entropy());
    spliced[1..33].copy_from_slice(attacker.eph_pub());
    assert!(matches!(pending.read_answer(&spliced), Ok(None)));
}

#[test]
fn answers_for_another_offer_are_ignored() {
    let account = Identity::create();
    let (_, pending) = handshake(&offer());
    let elsewhere = LinkResponder::new(scanned(&offer())).unwrap();
    assert!(matches!(
        pending.read_answer(&elsewhere.handshake().seal_root(account.entropy())),
        Ok(None)
    ));
    assert!(matches!(
        pending.read_answer(&elsewhere.handshake().decline()),
        Ok(None)
    ));
}

#[test]
fn a_forged_or_relabelled_decline_does_not_count() {
    let (responder, pending) = handshake(&offer());
    let mut forged = responder.handshake().decline();
    forged[57..].copy_from_slice(&[0xAB; 16]);
    assert!(matches!(pending.read_answer(&forged), Ok(None)));

    // The kind is authenticated: a decline relabelled as a (73-byte) root does not open.
    let mut relabelled = responder.handshake().decline();
    relabelled[0] = 0x02;
    assert!(matches!(pending.read_answer(&relabelled), Ok(None)));
}

#[test]
fn a_sealed_plaintext_that_is_no_root_is_rejected() {
    let (responder, pending) = handshake(&offer());
    assert!(matches!(
        pending.read_answer(&responder.handshake().seal_root(&[1; 20])),
        Err(LinkError::Root(_))
    ));
}

#[test]
fn low_order_keys_are_refused() {
    let new_device = offer();
    let mut payload = scanned(&new_device);
    payload.x25519 = [0; 32];
    assert!(matches!(LinkResponder::new(payload), Err(LinkError::WeakKey)));
    let mut hello = vec![0x01];
    hello.extend_from_slice(&[0; 32]);
    assert!(matches!(new_device.open_hello(&hello), Err(LinkError::WeakKey)));
}

#[test]
fn bad_offers_are_refused() {
    assert!(LinkOffer::new("", "x").is_err());
    assert!(LinkOffer::new("relay example", "x").is_err());
    assert!(LinkOffer::new(&"a".repeat(MAX_RELAY_ADDR_LEN + 1), "x").is_err());
    assert!(matches!(
        LinkOffer::new("relay.example", "bad\nname"),
        Err(LinkError::Payload(PayloadError::DeviceName))
    ));
    assert!(matches!(
        LinkOffer::new("relay.example", ""),
        Err(LinkError::Payload(PayloadError::DeviceName))
    ));
}

#[test]
fn payload_errors_are_specific() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    assert_eq!(LinkOffer::parse("hello"), Err(PayloadError::NotALinkCode));
    assert_eq!(
        LinkOffer::parse("tidings-link:v1:AAAA"),
        Err(PayloadError::Outdated),
        "a v1 code asks to update the other device"
    );
    assert_eq!(
        LinkOffer::parse("tidings-link:v9:AAAA"),
        Err(PayloadError::UnsupportedVersion("v9".into()))
    );
    assert_eq!(
        LinkOffer::parse("tidings-link:v2:@@@"),
        Err(PayloadError::Encoding)
    );
    assert_eq!(
        LinkOffer::parse("tidings-link:v2:AAAA"),
        Err(PayloadError::TooShort)
    );
    let good = scanned(&offer());
    let body = |name: &[u8], relay: &[u8]| {
        let mut b = good.mailbox.to_vec();
        b.extend_from_slice(&good.x25519);
        b.push(u8::try_from(name.len()).unwrap());
        b.extend_from_slice(name);
        b.extend_from_slice(relay);
        format!("{QR_PREFIX}{}", b64(&b))
    };
    assert!(LinkOffer::parse(&body(b"iPad", b"relay.example")).is_ok());
    assert_eq!(LinkOffer::parse(&body(b"iPad", b"")), Err(PayloadError::TooShort));
    assert_eq!(
        LinkOffer::parse(&body(b"\xff\xfe", b"relay.example")),
        Err(PayloadError::DeviceName)
    );
    assert_eq!(
        LinkOffer::parse(&body(b"a\x1bb", b"relay.example")),
        Err(PayloadError::DeviceName)
    );
    assert_eq!(
        LinkOffer::parse(&body(b"iPad", b"relay example")),
        Err(PayloadError::RelayAddress)
    );
    let qr = offer().qr_payload();
    assert!(LinkOffer::parse(&format!("  {qr}\n")).is_ok());
}

fn arb_payload() -> impl Strategy<Value = OfferPayload> {
    let addr = "[a-zA-Z0-9.:/\\[\\]_-]{1,80}";
    // Printable text of any script, at most 64 bytes, not blank.
    let name = "[\\PC]{1,16}".prop_filter("fits and is not blank", |n: &String| {
        n.len() <= MAX_DEVICE_NAME_LEN && tidings_device_link::link::check_device_name(n).is_ok()
    });
    (addr, name, any::<[u8; 32]>()).prop_map(|(relay_addr, device_name, x25519)| OfferPayload {
        relay_addr,
        device_name,
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
    fn garbage_after_the_prefix_never_panics(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        use base64::Engine;
        let s = format!("{QR_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body));
        let _ = OfferPayload::parse(&s);
    }

    #[test]
    fn garbage_messages_are_never_answers(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let new_device = offer();
        let (_, pending) = handshake(&new_device);
        let _ = new_device.open_hello(&bytes);
        prop_assert!(matches!(pending.read_answer(&bytes), Ok(None)));
    }

    #[test]
    fn tampered_roots_are_never_adopted(bit in 0usize..(8 * (1 + 32 + 24 + 16 + 16))) {
        let (responder, pending) = handshake(&offer());
        let mut message = responder.handshake().seal_root(&[9; 16]);
        message[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(matches!(pending.read_answer(&message), Ok(None)));
    }

    #[test]
    fn tampered_declines_never_count(bit in 0usize..(8 * 73)) {
        let (responder, pending) = handshake(&offer());
        let mut message = responder.handshake().decline();
        message[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(matches!(pending.read_answer(&message), Ok(None)));
    }
}
