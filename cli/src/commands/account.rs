//! `tidings account create | restore | show | sign-out`.

use std::{sync::Mutex, time::Duration};

use serde_json::json;
use tidings_device_link::{
    account::{Account, sign_out},
    identity::Identity,
    state::DeviceState,
};

use crate::{
    args::AccountAction,
    error::CliError,
    output::show_progress,
    phrase,
    prompt::confirm,
    session::Session,
    state_dir::{Creating, Found},
    state_key::StateKey,
};

/// How long sign-out waits for the relay to take the push registration's removal.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// Runs `tidings account …`.
pub async fn run(s: &Session, action: AccountAction) -> Result<(), CliError> {
    match action {
        AccountAction::Create => create(s).await,
        AccountAction::Restore => restore(s).await,
        AccountAction::Show { phrase } => show(s, phrase),
        AccountAction::SignOut => sign_out(s).await,
    }
}

async fn create(s: &Session) -> Result<(), CliError> {
    let creating = Creating::begin(&s.at, &s.key_path, s.inspect()?)?;
    let created = Account::create(&s.at.dir, creating.key(), s.settings())
        .await
        .map_err(|e| s.at.account(e));
    let ((account, phrase), _lock) = creating.finish(created)?;
    let id = account.account_id();
    let text = format!(
        "Created account {id}\n\n\
         Recovery phrase (shown this once: write it down and keep it safe; it is the only way to restore \
         the account):\n\n    {}\n\n\
         Others send messages to the account id. State: {}",
        phrase.as_str(),
        s.at.dir.display()
    );
    s.out.result(
        &text,
        json!({"account_id": id, "phrase": phrase.as_str(), "state_dir": s.at.dir}),
    )
}

async fn restore(s: &Session) -> Result<(), CliError> {
    // Every check that needs no writing comes first: the state dir, the phrase, the relay.
    let found = s.inspect()?;
    if matches!(found, Found::SignedIn { .. }) {
        return Err(CliError::HasAccount {
            dir: s.at.dir.clone(),
        });
    }
    let phrase = tokio::task::spawn_blocking(phrase::read)
        .await
        .map_err(|e| CliError::Internal(format!("the phrase prompt failed: {e}")))??;
    s.probe().await?;
    let creating = Creating::begin(&s.at, &s.key_path, found)?;
    let bar = s.out.restore_bar();
    let feed = bar.clone();
    let restored = Account::restore(&s.at.dir, creating.key(), s.settings(), &phrase, move |p| {
        show_progress(&feed, p);
    })
    .await
    .map_err(|e| s.at.account(e));
    bar.finish_and_clear();
    let (account, _lock) = creating.finish(restored)?;
    s.track(&account);
    let id = account.account_id();
    let contacts = account.contacts().len();
    s.out.result(
        &format!(
            "Restored account {id} ({contacts} contact{}). State: {}",
            plural(contacts),
            s.at.dir.display()
        ),
        json!({"account_id": id, "restored": true, "contacts": contacts, "state_dir": s.at.dir}),
    )
}

fn show(s: &Session, with_phrase: bool) -> Result<(), CliError> {
    let (_, identity) = s.signed_in()?;
    let id = identity.account_id();
    if !with_phrase {
        // The id alone, so that `ID=$(tidings account show)` works.
        return s
            .out
            .result(&id, json!({"account_id": id, "state_dir": s.at.dir}));
    }
    let question = "The recovery phrase gives full control of the account to anyone who sees it. Show it?";
    if !confirm(question, s.yes)? {
        return Err(CliError::Aborted("not shown"));
    }
    let phrase = identity.phrase();
    s.out.result(
        &format!("Account id: {id}\nRecovery phrase: {phrase}"),
        json!({"account_id": id, "phrase": phrase, "state_dir": s.at.dir}),
    )
}

async fn sign_out(s: &Session) -> Result<(), CliError> {
    let (key, identity) = match s.inspect()? {
        Found::SignedIn { key, identity } => (key, identity),
        // A sign-out whose push registration removal did not reach the relay: send it now.
        Found::SignedOut { key } => return resend_unsubscribes(s, &key).await,
        Found::Empty { .. } => {
            return Err(CliError::NoAccount {
                dir: s.at.dir.clone(),
            });
        }
    };
    let opened = s.open().await?;
    let account = &opened.account;
    if !s.offline
        && let Err(e) = s.sync(account).await
    {
        s.out.note(&format!("Could not sync before signing out: {e}"));
    }
    let unsent = account.pending_uploads().map_err(|e| s.at.account(e))?;
    if unsent > 0 {
        s.out.note(&format!(
            "{unsent} change{} made on this device did not reach the relay and will be lost.",
            plural(unsent)
        ));
    }
    let question = format!(
        "Sign this device out of account {}? Only the recovery phrase brings it back.",
        identity.account_id()
    );
    if !confirm(&question, s.yes)? {
        return Err(CliError::Aborted("still signed in"));
    }
    account.sign_out().map_err(|e| s.at.account(e))?;
    // The handle must not be used past sign-out; the lock stays held until the flush is done.
    let _lock = opened.into_lock();
    let left = flush(s, &key).await?;
    report_sign_out(s, &identity, left)
}

async fn resend_unsubscribes(s: &Session, key: &StateKey) -> Result<(), CliError> {
    let _lock = crate::state_key::lock(&s.key_path, &s.at.dir)?;
    let queued = {
        let disk = DeviceState::open(&s.at.dir, key.bytes()).map_err(|e| s.at.state(e))?;
        sign_out::queued_unsubscribes(&disk).map_err(|e| s.at.state(e))?
    };
    if queued == 0 {
        return Err(CliError::NoAccount {
            dir: s.at.dir.clone(),
        });
    }
    let left = flush(s, key).await?;
    s.out.result(
        &if left == 0 {
            "The relay took the queued push registration removal.".to_owned()
        } else {
            unreachable_note(s, left)
        },
        json!({"signed_out": true, "unsubscribes_queued": left}),
    )
}

fn report_sign_out(s: &Session, identity: &Identity, left: usize) -> Result<(), CliError> {
    let mut text = format!(
        "Signed out of account {}: this device forgot it.",
        identity.account_id()
    );
    if left > 0 {
        text.push(' ');
        text.push_str(&unreachable_note(s, left));
    }
    s.out.result(
        &text,
        json!({"signed_out": true, "account_id": identity.account_id(), "unsubscribes_queued": left}),
    )
}

fn unreachable_note(s: &Session, left: usize) -> String {
    format!(
        "The relay at {} could not be reached to remove this device's push registration ({left} queued): \
         run `tidings account sign-out` again when it is up.",
        s.at.relay
    )
}

/// Sends the queued Unsubscribes (at most [`FLUSH_WAIT`]); returns how many are left.
async fn flush(s: &Session, key: &StateKey) -> Result<usize, CliError> {
    let disk = DeviceState::open(&s.at.dir, key.bytes()).map_err(|e| s.at.state(e))?;
    let disk = Mutex::new(disk);
    let client = s.client().await?;
    match tokio::time::timeout(FLUSH_WAIT, sign_out::flush_unsubscribes(&client, &disk)).await {
        Ok(Ok(report)) => Ok(report.left),
        Ok(Err(sign_out::FlushError::State(e))) => Err(s.at.state(e)),
        Err(_) => {
            let disk = disk.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            sign_out::queued_unsubscribes(&disk).map_err(|e| s.at.state(e))
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
