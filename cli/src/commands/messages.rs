//! `tidings send` and `tidings listen`.

use std::io::Read;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use tidings_device_link::{
    account::{Account, MESSAGE_NAMESPACE, ReceivedMessage},
    config::Contact,
    identity::{account_id, parse_account_id},
    sealed::{SealedMessageError, seal_message},
};

use super::wait::{self, LONG_POLL_MS, Retry};
use crate::{
    args::{ListenArgs, SendArgs},
    error::{self, CliError},
    output::printable,
    session::Session,
};

/// Runs `tidings send`.
///
/// This is `Account::send_sealed` (and `Account::send` with `--raw`) spelled out on a
/// read-only view of the state: opening the `Account` would take the state dir's lock,
/// and a `tidings listen` on the same state dir holds it, yet sending writes nothing.
pub async fn send(s: &Session, args: SendArgs) -> Result<(), CliError> {
    let to = parse_account_id(&args.account_id).map_err(|_| CliError::AccountId)?;
    let text = if args.text == "-" {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .map_err(CliError::io("cannot read the message from stdin"))?;
        data
    } else {
        args.text.into_bytes()
    };
    let (_, identity) = s.signed_in()?;
    let data = if args.raw {
        text
    } else {
        seal_message(&identity, &to, &text).map_err(error::sealed)?
    };
    let client = s.client().await?;
    let stored = client
        .store(&to, MESSAGE_NAMESPACE, &data, 0)
        .await
        .map_err(|e| s.at.relay(e))?;
    let how = if args.raw { "raw" } else { "sealed" };
    let recipient = account_id(&to);
    s.out.result(
        &format!("Sent a {how} message ({} bytes) to {recipient}.", data.len()),
        json!({
            "sent": true,
            "sealed": !args.raw,
            "to": recipient,
            "bytes": data.len(),
            "hash": hex::encode(&stored.hash),
            "seq": stored.seq,
            "expires_ms": stored.expires_ms,
            "duplicate": stored.duplicate,
        }),
    )
}

/// Runs `tidings listen`: prints what is pending, then what arrives; acknowledges each
/// message once it is printed (so a crash before printing offers it again).
pub async fn listen(s: &Session, args: ListenArgs) -> Result<(), CliError> {
    let opened = s.open_synced().await?;
    let account = &opened.account;
    deliver(s, account, account.pending_messages())?;
    if args.once {
        loop {
            let batch = account.receive(0).await.map_err(|e| s.at.account(e))?;
            if batch.is_empty() {
                return Ok(());
            }
            deliver(s, account, batch)?;
        }
    }
    s.out.note(&format!(
        "Listening for messages to {} (Ctrl-C stops).",
        account.account_id()
    ));
    let mut retry = Retry::default();
    let stop = wait::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            batch = account.receive(LONG_POLL_MS) => match batch {
                Ok(batch) => {
                    retry.succeeded();
                    deliver(s, account, batch)?;
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

/// Prints each message, then acknowledges it.
fn deliver(s: &Session, account: &Account, batch: Vec<ReceivedMessage>) -> Result<(), CliError> {
    for message in batch {
        if let Some((text, json)) = describe(account, &message) {
            s.out.result(&text, json)?;
        }
        account.ack(&[message.hash]).map_err(|e| s.at.account(e))?;
    }
    Ok(())
}

/// A message as text and as JSON; `None` for one from a blocked contact (dropped unread).
fn describe(account: &Account, message: &ReceivedMessage) -> Option<(String, Value)> {
    let mut json = json!({
        "hash": hex::encode(message.hash),
        "seq": message.seq,
        "created_ms": message.created_ms,
    });
    let text = match account.open_sealed(&message.data) {
        Ok(opened) => {
            let sender = account_id(&opened.sender);
            let contact = account.contact(&sender);
            if contact.as_ref().is_some_and(|c| c.blocked) {
                return None;
            }
            let name = contact.as_ref().and_then(shown_name);
            let body = std::str::from_utf8(&opened.plaintext).ok();
            json["kind"] = "sealed".into();
            json["sender"] = sender.clone().into();
            json["contact"] = name.clone().into();
            json["text"] = body.into();
            if body.is_none() {
                json["data_base64"] = STANDARD.encode(&*opened.plaintext).into();
            }
            let from = match &name {
                Some(name) => format!("{} ({sender})", printable(name)),
                None => sender,
            };
            match body {
                Some(body) => format!("{from}: {}", printable(body)),
                None => format!("{from}: <{} bytes that are not text>", opened.plaintext.len()),
            }
        }
        Err(SealedMessageError::NotSealed) => {
            let body = std::str::from_utf8(&message.data).ok();
            json["kind"] = "raw".into();
            json["text"] = body.into();
            json["data_base64"] = STANDARD.encode(&message.data).into();
            match body {
                Some(body) => format!("raw message: {}", printable(body)),
                None => format!("raw message of {} bytes", message.data.len()),
            }
        }
        Err(e) => {
            json["kind"] = "unreadable".into();
            json["error"] = e.to_string().into();
            format!("a message that does not open ({e})")
        }
    };
    Some((text, json))
}

/// What a contact is called here: the nickname given, else the name it chose.
fn shown_name(contact: &Contact) -> Option<String> {
    [&contact.nickname, &Some(contact.name.clone())]
        .into_iter()
        .flatten()
        .find(|n| !n.is_empty())
        .cloned()
}
