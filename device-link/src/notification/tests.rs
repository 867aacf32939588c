//! Processing pushes against state written the way the account engine writes it. The
//! relay is never reachable here (tests/tests/notification.rs fetches from a real one).

use std::{fs, net::TcpListener, path::PathBuf};

use tidings_proto::push::encrypt_push;

use super::*;
use crate::{
    client::RetryPolicy,
    config::{Contact, DeviceId},
    journal,
    sealed::seal_message,
    state::DeviceState,
};

const KEY: [u8; 32] = [21; 32];
const SHORT: Duration = Duration::from_millis(600);

/// A signed-in install with contacts, as the app leaves it.
struct Install {
    dir: tempfile::TempDir,
    me: Identity,
    push_key: [u8; 32],
}

impl Install {
    fn new(contacts: &[Contact], previews: Previews) -> Install {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = DeviceState::open(dir.path(), &KEY).unwrap();
        let me = Identity::create();
        disk.set_identity(&me).unwrap();
        let mut config = ConfigState::new(DeviceId(disk.device_id()));
        for c in contacts {
            config.add_contact(c).unwrap();
        }
        config.set_previews(previews);
        disk.put_blob(CONFIG_BLOB, &config.save()).unwrap();
        save_preview_index(&mut disk, &config).unwrap();
        Install {
            push_key: *disk.push_key(),
            dir,
            me,
        }
    }

    fn processor(&self, relay: &str) -> NotificationProcessor {
        let settings = RelaySettings {
            client: ClientOptions {
                retry: RetryPolicy {
                    max_attempts: 20,
                    initial_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(200),
                },
                ..ClientOptions::default()
            },
            ..RelaySettings::new(relay)
        };
        NotificationProcessor::open(self.dir.path(), &KEY, settings).unwrap()
    }

    /// The push of message `seq` holding `data`, carried or (`carried = false`) omitted.
    fn push(&self, seq: u64, data: &[u8], carried: bool) -> String {
        self.push_in(0, seq, data, carried)
    }

    fn push_in(&self, namespace: i32, seq: u64, data: &[u8], carried: bool) -> String {
        let account = self.me.account();
        let note = PushNotification {
            account: account.to_vec(),
            namespace,
            hash: message_hash(&account, namespace as u32, data).to_vec(),
            seq,
            created_ms: 1_000,
            expires_ms: 2_000,
            data_len: data.len() as u32,
            data: if carried { data.to_vec() } else { Vec::new() },
            data_omitted: !carried,
        };
        encrypt_push(&self.push_key, &note)
    }

    fn journal(&self) -> Vec<JournalEntry> {
        journal::read(self.dir.path(), &KEY).unwrap().0
    }
}

fn contact(id: &Identity, name: &str) -> Contact {
    Contact {
        account_id: id.account_id(),
        name: name.into(),
        approved: true,
        ..Contact::default()
    }
}

const ALL: Previews = Previews {
    show_sender: true,
    show_content: true,
};

/// A relay address nothing listens on.
fn closed_port() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_sealed_message_from_a_contact_shows_its_name_and_text() {
    let ada = Identity::create();
    let install = Install::new(
        &[Contact {
            nickname: Some("Ada".into()),
            ..contact(&ada, "Ada Lovelace")
        }],
        ALL,
    );
    let sealed = seal_message(&ada, &install.me.account(), b"tea at five?").unwrap();
    let p = install.processor(&closed_port());
    let n = p.process(&install.push(3, &sealed, true), SHORT).await.unwrap();
    assert_eq!(n.kind, NotificationKind::Message);
    assert_eq!((n.seq, n.fetch, n.suppress), (3, Fetch::NotNeeded, None));
    assert_eq!(n.sender, Some(ada.account()));
    assert_eq!(n.sender_name.as_deref(), Some("Ada"));
    assert_eq!(n.conversation, Some(ada.account_id()));
    assert_eq!(
        n.content.as_deref().map(Vec::as_slice),
        Some(&b"tea at five?"[..])
    );
    assert_eq!(n.preview.title, "Ada");
    assert_eq!(n.preview.body.as_deref(), Some("tea at five?"));
    assert!(n.preview.limits.is_empty());
    // The journal got it, data included, for the app's inbox.
    assert!(n.journaled);
    let journal = install.journal();
    assert_eq!(journal.len(), 1);
    assert_eq!((journal[0].hash, journal[0].seq), (n.hash, 3));
    assert_eq!(journal[0].data.as_deref(), Some(sealed.as_slice()));
    // Debug shows neither the name nor the text.
    let debug = format!("{n:?} {p:?}");
    assert!(!debug.contains("Ada") && !debug.contains("tea"), "{debug}");
}

#[tokio::test]
async fn blocked_and_muted_senders_are_suppressed() {
    let (eve, bob, old) = (Identity::create(), Identity::create(), Identity::create());
    let later = now_ms() + 3_600_000;
    let install = Install::new(
        &[
            Contact {
                blocked: true,
                ..contact(&eve, "Eve")
            },
            Contact {
                muted_until: Some(later),
                ..contact(&bob, "Bob")
            },
            Contact {
                muted_until: Some(1_000),
                ..contact(&old, "Old")
            },
        ],
        ALL,
    );
    let p = install.processor(&closed_port());
    let from = |who: &Identity, seq| {
        install.push(
            seq,
            &seal_message(who, &install.me.account(), b"hi").unwrap(),
            true,
        )
    };

    let blocked = p.process(&from(&eve, 1), SHORT).await.unwrap();
    assert_eq!(blocked.suppress, Some(SuppressReason::Blocked));
    assert_eq!(
        (blocked.preview.title.as_str(), blocked.preview.body.as_deref()),
        (GENERIC_TITLE, None)
    );
    assert!(blocked.journaled, "the app still learns it arrived");

    let muted = p.process(&from(&bob, 2), SHORT).await.unwrap();
    assert_eq!(muted.suppress, Some(SuppressReason::Muted { until_ms: later }));
    assert_eq!(muted.preview.title, "Bob");

    let expired_mute = p.process(&from(&old, 3), SHORT).await.unwrap();
    assert_eq!(expired_mute.suppress, None);
    assert_eq!(install.journal().len(), 3);
}

#[tokio::test]
async fn preview_settings_decide_what_shows() {
    let ada = Identity::create();
    let stranger = Identity::create();
    let contacts = [contact(&ada, "Ada")];
    let text = |install: &Install, who: &Identity| {
        install.push(
            1,
            &seal_message(who, &install.me.account(), b"secret plans").unwrap(),
            true,
        )
    };

    let off = Install::new(
        &contacts,
        Previews {
            show_sender: false,
            show_content: false,
        },
    );
    let n = off
        .processor(&closed_port())
        .process(&text(&off, &ada), SHORT)
        .await
        .unwrap();
    assert_eq!(
        (n.preview.title.as_str(), n.preview.body.as_deref()),
        (GENERIC_TITLE, None)
    );
    assert_eq!(n.preview.limits, [PreviewLimit::PreviewsOff]);
    assert_eq!(n.suppress, None);

    // The default: the sender's name, not what was written.
    let default = Install::new(&contacts, Previews::default());
    let n = default
        .processor(&closed_port())
        .process(&text(&default, &ada), SHORT)
        .await
        .unwrap();
    assert_eq!((n.preview.title.as_str(), n.preview.body), ("Ada", None));
    assert_eq!(n.preview.limits, [PreviewLimit::ContentHidden]);

    let content_only = Install::new(
        &contacts,
        Previews {
            show_sender: false,
            show_content: true,
        },
    );
    let n = content_only
        .processor(&closed_port())
        .process(&text(&content_only, &ada), SHORT)
        .await
        .unwrap();
    assert_eq!(n.preview.title, GENERIC_TITLE);
    assert_eq!(n.preview.body.as_deref(), Some("secret plans"));
    assert_eq!(n.preview.limits, [PreviewLimit::SenderHidden]);

    // Not a contact: no name, but the conversation is known.
    let all = Install::new(&contacts, ALL);
    let n = all
        .processor(&closed_port())
        .process(&text(&all, &stranger), SHORT)
        .await
        .unwrap();
    assert_eq!(
        (n.sender_name, n.conversation),
        (None, Some(stranger.account_id()))
    );
    assert_eq!(n.preview.title, GENERIC_TITLE);
    assert_eq!(n.preview.limits, [PreviewLimit::SenderUnknown]);
}

#[tokio::test]
async fn opaque_app_bytes_get_a_generic_preview() {
    let install = Install::new(&[], ALL);
    let n = install
        .processor(&closed_port())
        .process(&install.push(9, b"the app's own protocol", true), SHORT)
        .await
        .unwrap();
    assert_eq!((n.sender, n.content.is_none()), (None, true));
    assert_eq!(n.data.as_deref(), Some(&b"the app's own protocol"[..]));
    assert_eq!(n.preview.title, GENERIC_TITLE);
    assert_eq!(
        n.preview.limits,
        [PreviewLimit::SenderUnknown, PreviewLimit::ContentUnknown]
    );
    assert_eq!(
        install.journal()[0].data.as_deref(),
        Some(&b"the app's own protocol"[..])
    );
}

#[tokio::test]
async fn an_omitted_message_with_the_relay_unreachable_gets_a_generic_preview() {
    let ada = Identity::create();
    let install = Install::new(&[contact(&ada, "Ada")], ALL);
    let sealed = seal_message(&ada, &install.me.account(), b"x").unwrap();
    let p = install.processor(&closed_port());
    let started = Instant::now();
    let n = within_budget(p.process(&install.push(4, &sealed, false), SHORT)).await;
    // Connection refused, retried until the budget ran out.
    assert!(
        matches!(n.fetch, Fetch::Failed | Fetch::TimedOut),
        "{:?}",
        n.fetch
    );
    assert!(started.elapsed() < SHORT + Duration::from_secs(5));
    assert_eq!((n.data, n.sender, n.suppress), (None, None, None));
    assert_eq!((n.preview.title.as_str(), n.preview.body), (GENERIC_TITLE, None));
    let journal = install.journal();
    assert_eq!((journal[0].hash, journal[0].data.clone()), (n.hash, None));
}

#[tokio::test]
async fn a_relay_that_never_answers_is_given_up_on_at_the_budget() {
    // Accepts connections and never speaks: without the budget, the connect and call
    // timeouts (10 s, 30 s) would hold the extension far past its time.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let install = Install::new(&[], ALL);
    let p = install.processor(&format!("http://{}", silent.local_addr().unwrap()));
    let started = Instant::now();
    let n = within_budget(p.process(&install.push(4, b"x", false), SHORT)).await;
    assert!(
        matches!(n.fetch, Fetch::TimedOut | Fetch::Failed),
        "{:?}",
        n.fetch
    );
    assert!(started.elapsed() < Duration::from_secs(9));
    assert!(n.journaled);
}

#[tokio::test]
async fn a_config_push_is_suppressed_and_journaled_without_data() {
    let install = Install::new(&[], ALL);
    let n = install
        .processor(&closed_port())
        .process(
            &install.push_in(CONFIG_NAMESPACE, 8, b"sealed config delta", true),
            SHORT,
        )
        .await
        .unwrap();
    assert_eq!(n.kind, NotificationKind::Config);
    assert_eq!(
        (n.suppress, n.data.is_none()),
        (Some(SuppressReason::Config), true)
    );
    let journal = install.journal();
    assert_eq!(
        (journal[0].namespace, journal[0].seq, journal[0].data.clone()),
        (CONFIG_NAMESPACE, 8, None)
    );
}

#[tokio::test]
async fn pushes_for_another_install_or_account_are_refused() {
    let install = Install::new(&[], ALL);
    let p = install.processor(&closed_port());
    let other = Install::new(&[], ALL);
    assert!(matches!(
        p.process(&other.push(1, b"x", true), SHORT).await,
        Err(NotificationError::Push(PushDecryptError::NotForThisDevice))
    ));
    // Right push key, wrong account inside.
    let note = PushNotification {
        account: vec![9; 32],
        hash: vec![1; 32],
        ..Default::default()
    };
    assert!(matches!(
        p.process(&encrypt_push(&install.push_key, &note), SHORT).await,
        Err(NotificationError::OtherAccount)
    ));
    assert!(matches!(
        p.process("garbage", SHORT).await,
        Err(NotificationError::Push(PushDecryptError::Malformed))
    ));
    assert!(install.journal().is_empty());
}

#[test]
fn open_fails_clearly_and_writes_nothing() {
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        NotificationProcessor::open(empty.path(), &KEY, "http://127.0.0.1:1"),
        Err(NotificationError::State(StateError::NoState(_)))
    ));
    let install = Install::new(&[], ALL);
    assert!(matches!(
        NotificationProcessor::open(install.dir.path(), &[1; 32], "http://127.0.0.1:1"),
        Err(NotificationError::State(StateError::WrongKey))
    ));
    let before = files(install.dir.path());
    let p = install.processor("http://127.0.0.1:1");
    assert_eq!(p.account_id(), install.me.account_id());
    assert_eq!(files(install.dir.path()), before);
    drop(p);

    let signed_out = tempfile::tempdir().unwrap();
    DeviceState::open(signed_out.path(), &KEY).unwrap();
    assert!(matches!(
        NotificationProcessor::open(signed_out.path(), &KEY, "http://127.0.0.1:1"),
        Err(NotificationError::NotSignedIn(_))
    ));
}

#[test]
fn process_blocking_writes_only_the_journal() {
    let ada = Identity::create();
    let install = Install::new(&[contact(&ada, "Ada")], ALL);
    let before = files(install.dir.path());
    let p = install.processor(&closed_port());
    let sealed = seal_message(&ada, &install.me.account(), b"hello").unwrap();
    let n = p
        .process_blocking(&install.push(1, &sealed, true), SHORT)
        .unwrap();
    assert_eq!(n.preview.body.as_deref(), Some("hello"));
    // And with a Retrieve (failing). That no thread outlives the call is checked by
    // `tidings-nse-bench`, alone in its process.
    let omitted = p
        .process_blocking(&install.push(2, &sealed, false), SHORT)
        .unwrap();
    assert_eq!(omitted.preview.body, None);
    let mut after = files(install.dir.path());
    after.retain(|f| !before.contains(f));
    let names: Vec<_> = after.iter().filter_map(|p| p.file_name()?.to_str()).collect();
    assert_eq!(names, [journal::JOURNAL_FILE, journal::LOCK_FILE]);
}

#[tokio::test]
async fn process_blocking_also_works_inside_a_runtime() {
    let install = Install::new(&[], ALL);
    let p = install.processor(&closed_port());
    let n = p.process_blocking(&install.push(1, b"x", true), SHORT).unwrap();
    assert!(n.journaled);
}

#[test]
fn without_an_index_the_full_replica_is_read() {
    let ada = Identity::create();
    let install = Install::new(&[contact(&ada, "Ada")], ALL);
    fs::remove_file(
        install
            .dir
            .path()
            .join("blobs")
            .join(format!("{PREVIEW_INDEX_BLOB}.sealed")),
    )
    .unwrap();
    let p = install.processor(&closed_port());
    let sealed = seal_message(&ada, &install.me.account(), b"hi").unwrap();
    let n = p
        .process_blocking(&install.push(1, &sealed, true), SHORT)
        .unwrap();
    assert_eq!(n.sender_name.as_deref(), Some("Ada"));
}

#[test]
fn previews_follow_the_settings() {
    let hidden_both = Previews {
        show_sender: false,
        show_content: false,
    };
    assert_eq!(
        preview(hidden_both, Some("A"), Some(b"t")).limits,
        [PreviewLimit::PreviewsOff]
    );
    let p = preview(ALL, Some("A"), Some(&[0xff, 0xfe]));
    assert_eq!((p.title.as_str(), p.body), ("A", None));
    assert_eq!(p.limits, [PreviewLimit::ContentUnknown]);
    let long = "é".repeat(MAX_BODY_CHARS + 10);
    let p = preview(ALL, Some("A"), Some(long.as_bytes()));
    assert_eq!(p.body.unwrap().chars().count(), MAX_BODY_CHARS);
}

async fn within_budget<T>(fut: impl std::future::Future<Output = Result<T, NotificationError>>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("process returns")
        .expect("process succeeds")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        }
        out.push(path);
    }
    out.sort();
    out
}
