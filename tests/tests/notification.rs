//! The notification extension's path end to end: an account created by device-link's
//! engine (which writes the preview index), subscribed for Fast Mode, a sealed message
//! from a contact through the relay and the mock APNs, and a `NotificationProcessor` on the
//! push that arrived — fetching the message with one Retrieve when the push omitted it.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tidings_device_link::{
    account::Account,
    client::{PushService, RelayClient},
    config::{Change, Contact, Previews},
    identity::Identity,
    journal,
    notification::{
        DEFAULT_BUDGET, Fetch, GENERIC_TITLE, NotificationKind, NotificationProcessor, PREVIEW_INDEX_BLOB,
    },
    sealed::seal_message,
    state::StateReader,
};
use tidings_tests::{
    STEP,
    push::{APP_ID, PUSH_WAIT, PushRig, random_token},
    within,
};

const KEY: [u8; 32] = [42; 32];
const TTL: i64 = 600_000;

/// An install signed in to a new account with Ada as a contact and full previews,
/// subscribed through the mock APNs.
struct Phone {
    dir: tempfile::TempDir,
    account: Account,
    token: String,
}

async fn phone(rig: &PushRig, ada: &Identity) -> Phone {
    let dir = tempfile::tempdir().unwrap();
    let (account, _phrase) = Account::create(dir.path(), &KEY, rig.relay().endpoint())
        .await
        .unwrap();
    let ada_contact = Contact {
        account_id: ada.account_id(),
        name: "Ada Lovelace".into(),
        nickname: Some("Ada".into()),
        approved: true,
        ..Contact::default()
    };
    within(
        STEP,
        "config edit",
        account.edit(|e| {
            e.apply(&Change::AddContact(ada_contact.clone()))?;
            e.apply(&Change::Previews(Previews {
                show_sender: true,
                show_content: true,
            }))
        }),
    )
    .await
    .unwrap();
    let token = random_token(PushService::Apns);
    within(
        STEP,
        "subscribe",
        account.subscribe(PushService::Apns, &token, APP_ID),
    )
    .await
    .unwrap();
    Phone { dir, account, token }
}

/// Sends `plaintext` sealed from `from` to the phone's account; returns its hash.
async fn send_sealed(rig: &PushRig, from: &Identity, to: &Phone, plaintext: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let sealed = seal_message(from, &to.account.account_key(), plaintext).unwrap();
    let client = within(STEP, "connect", RelayClient::connect(&rig.relay().endpoint()))
        .await
        .unwrap();
    let stored = within(
        STEP,
        "store",
        client.store(&to.account.account_key(), 0, &sealed, TTL),
    )
    .await
    .unwrap();
    (stored.hash, sealed)
}

/// The `enc` of the alert push for message number `n` (1-based) to the phone.
async fn alert_push(rig: &PushRig, phone: &Phone, n: usize) -> String {
    within(PUSH_WAIT, "the alert push at the mock APNs", async {
        loop {
            let alerts: Vec<String> = rig
                .apns
                .attempts()
                .into_iter()
                .filter(|a| a.token == phone.token && a.status == 200)
                .filter(|a| a.header("apns-push-type") == Some("alert"))
                .filter_map(|a| a.body.get("enc")?.as_str().map(str::to_owned))
                .collect();
            if alerts.len() >= n {
                return alerts[n - 1].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_sealed_message_from_a_contact_shows_name_and_text() {
    let rig = PushRig::start().await;
    let ada = Identity::create();
    let phone = phone(&rig, &ada).await;
    // What the engine saved for the extension, at the edit.
    let reader = StateReader::open(phone.dir.path(), &KEY).unwrap();
    assert!(reader.get_blob(PREVIEW_INDEX_BLOB).unwrap().is_some());

    // A 2 KB sealed message fits in the push.
    let text = "q".repeat(1800);
    let (hash, sealed) = send_sealed(&rig, &ada, &phone, text.as_bytes()).await;
    assert_eq!(sealed.len(), 2048);
    let enc = alert_push(&rig, &phone, 1).await;

    let processor = NotificationProcessor::open(phone.dir.path(), &KEY, rig.relay().endpoint()).unwrap();
    let n = within(STEP, "process", processor.process(&enc, DEFAULT_BUDGET))
        .await
        .unwrap();
    assert_eq!(
        (n.kind, n.fetch, n.suppress),
        (NotificationKind::Message, Fetch::NotNeeded, None)
    );
    assert_eq!(n.hash.as_slice(), hash.as_slice());
    assert_eq!(n.sender_name.as_deref(), Some("Ada"));
    assert_eq!(n.conversation, Some(ada.account_id()));
    assert_eq!(n.preview.title, "Ada");
    assert_eq!(n.preview.body.as_deref().map(str::len), Some(1000));
    let (journal, _) = journal::read(phone.dir.path(), &KEY).unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].data.as_deref(), Some(sealed.as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_omitted_message_is_fetched_from_the_relay_within_the_budget() {
    let rig = PushRig::start().await;
    let ada = Identity::create();
    let phone = phone(&rig, &ada).await;
    // 6 KB do not fit into an APNs request: the relay omits the data.
    let (hash, sealed) = send_sealed(&rig, &ada, &phone, "see attached ".repeat(500).as_bytes()).await;
    let enc = alert_push(&rig, &phone, 1).await;

    let processor = NotificationProcessor::open(phone.dir.path(), &KEY, rig.relay().endpoint()).unwrap();
    let n = within(STEP, "process", processor.process(&enc, DEFAULT_BUDGET))
        .await
        .unwrap();
    assert_eq!(n.fetch, Fetch::Fetched);
    assert_eq!(n.hash.as_slice(), hash.as_slice());
    assert_eq!(n.data.as_deref(), Some(sealed.as_slice()));
    assert_eq!(n.preview.title, "Ada");
    assert!(n.preview.body.as_deref().unwrap().starts_with("see attached see"));
    let (journal, _) = journal::read(phone.dir.path(), &KEY).unwrap();
    assert_eq!(journal[0].data.as_deref(), Some(sealed.as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_relay_gone_an_omitted_message_gets_a_generic_preview_in_time() {
    let mut rig = PushRig::start().await;
    let ada = Identity::create();
    let phone = phone(&rig, &ada).await;
    send_sealed(&rig, &ada, &phone, &[b'z'; 6000]).await;
    let enc = alert_push(&rig, &phone, 1).await;
    let endpoint = rig.relay().endpoint();
    rig.shutdown_relay().await;

    let processor = NotificationProcessor::open(phone.dir.path(), &KEY, endpoint).unwrap();
    let budget = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let n = within(STEP, "process", processor.process(&enc, budget))
        .await
        .unwrap();
    assert!(
        matches!(n.fetch, Fetch::Failed | Fetch::TimedOut),
        "{:?}",
        n.fetch
    );
    // Far below the client's own connect and call timeouts (10 s, 30 s).
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!((n.preview.title.as_str(), n.preview.body), (GENERIC_TITLE, None));
    assert!(n.journaled);
    let (journal, _) = journal::read(phone.dir.path(), &KEY).unwrap();
    assert_eq!((journal[0].hash, journal[0].data.clone()), (n.hash, None));
}
