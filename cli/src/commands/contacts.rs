//! `tidings contacts …`: each command syncs first, so a change made on another device of
//! the account shows; an edit is uploaded before the command returns.

use serde_json::{Value, json};
use tidings_device_link::{
    account::{Account, AccountError},
    config::{Change, Contact, ContactUpdate},
    identity::{account_id, parse_account_id},
};

use super::wait::{self, LONG_POLL_MS, Retry};
use crate::{args::ContactsAction, error::CliError, output::printable, session::Session};

/// Runs `tidings contacts …`.
pub async fn run(s: &Session, action: ContactsAction) -> Result<(), CliError> {
    match action {
        ContactsAction::List { watch } => list(s, watch).await,
        ContactsAction::Add { account_id, name } => {
            let id = canonical(&account_id)?;
            let update = ContactUpdate {
                name: Some(name),
                approved: Some(true),
                ..ContactUpdate::default()
            };
            edit(s, &id, false, "Saved", async |a: &Account| {
                a.change(Change::UpdateContact {
                    account_id: id.to_owned(),
                    update: update.clone(),
                })
                .await
            })
            .await
        }
        ContactsAction::Remove { account_id } => {
            let id = canonical(&account_id)?;
            let opened = s.open_synced().await?;
            let account = &opened.account;
            if account.contact(&id).is_none() {
                return Err(CliError::UnknownContact);
            }
            account
                .change(Change::RemoveContact {
                    account_id: id.to_owned(),
                })
                .await
                .map_err(|e| s.at.account(e))?;
            s.upload(account).await?;
            s.out.result(&format!("Removed {id}."), json!({"removed": id}))
        }
        ContactsAction::Block { account_id } => {
            let id = canonical(&account_id)?;
            edit(s, &id, false, "Blocked", async |a: &Account| {
                a.change(Change::Block {
                    account_id: id.to_owned(),
                })
                .await
            })
            .await
        }
        ContactsAction::Unblock { account_id } => {
            let id = canonical(&account_id)?;
            edit(s, &id, true, "Unblocked", async |a: &Account| {
                a.change(Change::Unblock {
                    account_id: id.to_owned(),
                })
                .await
            })
            .await
        }
        ContactsAction::Mute { account_id, until } => {
            let id = canonical(&account_id)?;
            let until_ms = until.to_unix_ms(now_ms());
            edit(s, &id, true, "Muted", async |a: &Account| {
                a.change(Change::MutedUntil {
                    account_id: id.to_owned(),
                    until_ms: Some(until_ms),
                })
                .await
            })
            .await
        }
        ContactsAction::Unmute { account_id } => {
            let id = canonical(&account_id)?;
            edit(s, &id, true, "Unmuted", async |a: &Account| {
                a.change(Change::MutedUntil {
                    account_id: id.to_owned(),
                    until_ms: None,
                })
                .await
            })
            .await
        }
    }
}

/// The account id as device-link keys contacts: lower-case hex.
fn canonical(id: &str) -> Result<String, CliError> {
    parse_account_id(id)
        .map(|key| account_id(&key))
        .map_err(|_| CliError::AccountId)
}

/// Syncs, applies one edit to the contact `id` (which must exist when `must_exist`),
/// uploads it and prints the contact as it now is.
async fn edit(
    s: &Session,
    id: &str,
    must_exist: bool,
    done: &str,
    change: impl AsyncFnOnce(&Account) -> Result<bool, AccountError>,
) -> Result<(), CliError> {
    let opened = s.open_synced().await?;
    let account = &opened.account;
    if must_exist && account.contact(id).is_none() {
        return Err(CliError::UnknownContact);
    }
    change(account).await.map_err(|e| s.at.account(e))?;
    s.upload(account).await?;
    let contact = account.contact(id).ok_or(CliError::UnknownContact)?;
    s.out.result(
        &format!("{done}: {}", line(&contact)),
        json!({"contact": contact_json(&contact)}),
    )
}

async fn list(s: &Session, watch: bool) -> Result<(), CliError> {
    let opened = s.open_synced().await?;
    let account = &opened.account;
    let mut shown = account.contacts();
    print_list(s, &shown)?;
    if !watch {
        return Ok(());
    }
    let mut retry = Retry::default();
    let stop = wait::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            changed = account.sync_wait(LONG_POLL_MS) => match changed {
                Ok(changed) => {
                    retry.succeeded();
                    let now = account.contacts();
                    if changed && now != shown {
                        shown = now;
                        print_list(s, &shown)?;
                    }
                }
                Err(e) => {
                    tokio::select! {
                        () = &mut stop => return Ok(()),
                        again = retry.failed(&s.out, s.at.account(e)) => again?,
                    }
                }
            },
        }
    }
}

fn print_list(s: &Session, contacts: &[Contact]) -> Result<(), CliError> {
    let text = if contacts.is_empty() {
        "No contacts.".to_owned()
    } else {
        contacts.iter().map(line).collect::<Vec<_>>().join("\n")
    };
    let json: Vec<Value> = contacts.iter().map(contact_json).collect();
    s.out.result(&text, json!({ "contacts": json }))
}

/// One contact on one line: id, name, nickname and flags.
fn line(c: &Contact) -> String {
    let mut text = format!("{}  {}", c.account_id, printable(&c.name));
    if let Some(nick) = &c.nickname {
        text.push_str(&format!(" ({})", printable(nick)));
    }
    if c.blocked {
        text.push_str("  [blocked]");
    }
    if let Some(until) = c.muted_until.filter(|&u| u > now_ms()) {
        text.push_str(&format!("  [muted until {}]", describe_time(until)));
    }
    text
}

fn contact_json(c: &Contact) -> Value {
    json!({
        "account_id": c.account_id,
        "name": c.name,
        "nickname": c.nickname,
        "approved": c.approved,
        "blocked": c.blocked,
        "muted_until": c.muted_until,
    })
}

/// A mute end for people: `forever`, or how far from now.
fn describe_time(until_ms: u64) -> String {
    if until_ms >= crate::until::FOREVER_MS {
        return "forever (unmute to end)".to_owned();
    }
    let minutes = until_ms.saturating_sub(now_ms()).div_ceil(60_000);
    match minutes {
        0..=59 => format!("{minutes} min from now"),
        60..=2879 => format!("{} h from now", minutes.div_ceil(60)),
        _ => format!("{} days from now", minutes.div_ceil(1440)),
    }
}

/// Unix ms by the system clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
