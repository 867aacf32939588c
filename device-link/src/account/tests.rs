//! Unit tests of the account engine that need no relay: persistence, the durable queue,
//! refusals, push decoding. The end-to-end tests against a real relay are in
//! `tests/tests/device_link.rs`.

use std::time::Duration;

use tidings_proto::{push::encrypt_push, v1::PushNotification};

use super::*;
use crate::{
    client::RetryPolicy,
    config::{Change, ContactUpdate, NotificationMode},
};

const KEY: [u8; 32] = [9; 32];

/// Settings for a relay that is not there: every call fails fast with UNAVAILABLE.
fn offline() -> RelaySettings {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let mut s = RelaySettings::new(format!("http://127.0.0.1:{port}"));
    s.client.retry = RetryPolicy::no_retry();
    s.client.connect_timeout = Duration::from_secs(2);
    s
}

fn contact(i: usize) -> Contact {
    Contact {
        account_id: format!("01{i:064x}"),
        name: format!("Contact {i}"),
        ..Contact::default()
    }
}

async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("finishes in time")
}

fn assert_send_sync<T: Send + Sync>(_: &T) {}
fn assert_send<T: Send>(_: &T) {}

#[tokio::test]
async fn the_account_and_its_futures_can_cross_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (account, _) = Account::create(dir.path(), &KEY, offline()).await.unwrap();
    assert_send_sync(&account);
    assert_send(&account.sync());
    assert_send(&account.sync_wait(0));
    assert_send(&account.change(Change::DisplayName("x".into())));
    assert_send(&account.edit(|e| {
        e.apply(&Change::MarkRead {
            conversation: "c".into(),
            up_to_ms: 1,
        })
    }));
    assert_send(&account.receive(0));
    assert_send(&account.handle_push(""));
    assert_send(&account.inspect_link(""));
    assert_send(&Account::restore(dir.path(), &KEY, offline(), "", |_| {}));
    let link = Account::link_offer(offline(), "test device").unwrap();
    assert_send(&link.wait(Duration::ZERO));
}

#[tokio::test]
async fn offline_edits_are_kept_and_stay_queued_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (account, phrase) = bounded(Account::create(dir.path(), &KEY, offline()))
        .await
        .unwrap();
    assert_eq!(phrase.split(' ').count(), 12);
    assert_eq!(account.recovery_phrase(), phrase);
    assert!(
        bounded(account.change(Change::DisplayName("Ada".into())))
            .await
            .unwrap()
    );
    assert!(
        !bounded(account.change(Change::DisplayName("Ada".into())))
            .await
            .unwrap(),
        "no change, nothing queued"
    );
    bounded(account.change(Change::AddContact(contact(1))))
        .await
        .unwrap();
    bounded(account.change(Change::UpdateContact {
        account_id: contact(1).account_id.to_owned(),
        update: ContactUpdate {
            nickname: Some(Some("A".into())),
            ..ContactUpdate::default()
        },
    }))
    .await
    .unwrap();
    bounded(account.change(Change::NotificationMode(NotificationMode::Fast)))
        .await
        .unwrap();
    assert_eq!(account.pending_uploads().unwrap(), 4);
    let documents = account.documents();
    let id = account.account_id();
    assert!(bounded(account.sync()).await.is_err(), "no relay");
    drop(account);

    let again = bounded(Account::open(dir.path(), &KEY, offline())).await.unwrap();
    assert_eq!(again.account_id(), id);
    assert_eq!(again.documents(), documents);
    assert_eq!(
        again.contact(&contact(1).account_id).unwrap().nickname.as_deref(),
        Some("A")
    );
    assert_eq!(again.pending_uploads().unwrap(), 4);
}

#[tokio::test]
async fn a_batch_of_edits_is_one_change() {
    let dir = tempfile::tempdir().unwrap();
    let (account, _) = Account::create(dir.path(), &KEY, offline()).await.unwrap();
    let n = bounded(account.edit(|e| {
        for i in 0..200 {
            e.apply(&Change::AddContact(contact(i)))?;
            e.apply(&Change::MarkRead {
                conversation: format!("c{i}"),
                up_to_ms: 1_000 + i as u64,
            })?;
        }
        Ok(e.contact(&contact(7).account_id).is_some())
    }))
    .await
    .unwrap();
    assert!(n);
    assert_eq!(account.contacts().len(), 200);
    assert_eq!(account.conversations().len(), 200);
    let queued = account.pending_uploads().unwrap();
    assert!((1..=2).contains(&queued), "{queued} messages for one change");
}

#[tokio::test]
async fn a_failing_batch_keeps_what_it_did_before_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (account, _) = Account::create(dir.path(), &KEY, offline()).await.unwrap();
    let err = bounded(account.edit(|e| {
        e.apply(&Change::AddContact(contact(1)))?;
        e.apply(&Change::DisplayName("x".repeat(10_000)))
    }))
    .await
    .unwrap_err();
    assert!(
        matches!(err, AccountError::Config(ConfigError::TooLong { .. })),
        "{err}"
    );
    assert!(account.contact(&contact(1).account_id).is_some());
    assert_eq!(account.pending_uploads().unwrap(), 1);
    let err = bounded(account.change(Change::DisplayName("x".repeat(10_000))))
        .await
        .unwrap_err();
    assert!(matches!(err, AccountError::Config(_)));
    assert_eq!(
        account.pending_uploads().unwrap(),
        1,
        "a refused edit queues nothing"
    );
}

#[tokio::test]
async fn a_state_directory_holds_one_account() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Account::open(dir.path(), &KEY, offline()).await.unwrap_err();
    assert!(matches!(missing, AccountError::NotSignedIn(_)), "{missing}");
    let (account, _) = Account::create(dir.path(), &KEY, offline()).await.unwrap();
    drop(account);
    let twice = Account::create(dir.path(), &KEY, offline()).await.unwrap_err();
    assert!(matches!(twice, AccountError::AlreadySignedIn(_)), "{twice}");
    let other = Identity::create();
    let err = bounded(Account::restore(
        dir.path(),
        &KEY,
        offline(),
        other.phrase(),
        |_| {},
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, AccountError::OtherAccount(_)), "{err}");
    let wrong_key = Account::open(dir.path(), &[1; 32], offline()).await.unwrap_err();
    assert!(
        matches!(wrong_key, AccountError::State(StateError::WrongKey)),
        "{wrong_key}"
    );
}

#[tokio::test]
async fn a_restore_that_cannot_read_the_relay_leaves_no_account() {
    let dir = tempfile::tempdir().unwrap();
    let phrase = Identity::create().phrase().to_owned();
    let err = bounded(Account::restore(dir.path(), &KEY, offline(), &phrase, |_| {}))
        .await
        .unwrap_err();
    assert!(matches!(err, AccountError::Relay(_)), "{err}");
    let err = Account::open(dir.path(), &KEY, offline()).await.unwrap_err();
    assert!(matches!(err, AccountError::NotSignedIn(_)), "{err}");
    let typo = phrase.replacen(' ', "x ", 1);
    let err = Account::restore(dir.path(), &KEY, offline(), &typo, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, AccountError::Phrase(_)), "{err}");
}

#[tokio::test]
async fn a_pushed_message_is_handed_over_once() {
    let dir = tempfile::tempdir().unwrap();
    let (account, _) = Account::create(dir.path(), &KEY, offline()).await.unwrap();
    let note = PushNotification {
        account: account.account_key().to_vec(),
        namespace: MESSAGE_NAMESPACE,
        hash: vec![5; 32],
        seq: 3,
        data_len: 5,
        data: b"hello".to_vec(),
        ..PushNotification::default()
    };
    let enc = encrypt_push(&account.push_key(), &note);
    let first = account.handle_push(&enc).await.unwrap();
    assert_eq!(first.messages.len(), 1);
    assert_eq!(first.messages[0].data, b"hello");
    assert!(!first.config_changed);
    assert!(account.handle_push(&enc).await.unwrap().messages.is_empty());

    // The seen set is saved: a restart does not hand it over again.
    drop(account);
    let account = Account::open(dir.path(), &KEY, offline()).await.unwrap();
    assert!(account.handle_push(&enc).await.unwrap().messages.is_empty());

    let stranger = PushNotification {
        account: vec![1; 32],
        ..note
    };
    let enc = encrypt_push(&account.push_key(), &stranger);
    assert!(matches!(
        account.handle_push(&enc).await,
        Err(AccountError::PushForOtherAccount)
    ));
    let other_key = encrypt_push(&[3; 32], &stranger);
    assert!(matches!(
        account.handle_push(&other_key).await,
        Err(AccountError::Push(PushDecryptError::NotForThisDevice))
    ));
}

#[tokio::test]
async fn messages_go_only_to_valid_account_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (account, _) = Account::create(dir.path(), &KEY, offline()).await.unwrap();
    let err = account.send("05abc", b"x").await.unwrap_err();
    assert!(matches!(err, AccountError::AccountId(_)), "{err}");
}
