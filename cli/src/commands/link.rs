//! `tidings link show` (the new device) and `tidings link scan` (a device signed in).
//!
//! The new device shows a QR code; the signed-in device reads it and deposits a hello
//! (nothing secret); both show the same six-digit code; the user compares them and
//! approves on the signed-in device, confirms on the new one, and only then does the
//! account's root secret travel, sealed to this one attempt (device-link's `link`).

use std::{future::Future, io::Read, time::Duration};

use serde_json::json;
use tidings_device_link::account::Account;

use super::wait;
use crate::{
    args::LinkAction,
    error::CliError,
    output::{printable, show_progress},
    prompt::confirm_async,
    qr,
    session::Session,
    state_dir::{Creating, Found},
};

/// Runs `tidings link …`.
pub async fn run(s: &Session, action: LinkAction) -> Result<(), CliError> {
    match action {
        LinkAction::Show { name, timeout } => show(s, name, Duration::from_secs(timeout.max(1))).await,
        LinkAction::Scan { payload, decline } => scan(s, &payload, decline).await,
    }
}

async fn show(s: &Session, name: Option<String>, timeout: Duration) -> Result<(), CliError> {
    let found = s.inspect()?;
    if matches!(found, Found::SignedIn { .. }) {
        return Err(CliError::HasAccount {
            dir: s.at.dir.clone(),
        });
    }
    let name = name.unwrap_or_else(default_device_name);
    s.probe().await?;
    let request = Account::link_offer(s.settings(), &name).map_err(|e| s.at.account(e))?;
    let payload = request.qr_payload();
    if !s.out.is_json() {
        s.out.text(&qr::render(&payload)?)?;
    }
    s.out.result(
        &format!(
            "On a device signed in to the account, scan this code, or run:\n\n    tidings link scan {payload}\n"
        ),
        json!({"event": "offer", "payload": payload, "device_name": name, "relay": s.at.relay}),
    )?;
    s.out.note(&format!(
        "Waiting up to {} s for the other device…",
        timeout.as_secs()
    ));
    let incoming = interruptible(request.wait(timeout))
        .await?
        .map_err(|e| s.at.account(e))?;
    let code = incoming.sas().to_owned();
    s.out.result(
        &format!("Code: {}", spaced(&code)),
        json!({"event": "code", "code": code}),
    )?;
    let question = format!("Does the other device show the code {}?", spaced(&code));
    if !interruptible(confirm_async(question, s.yes)).await?? {
        incoming.reject().await;
        return Err(CliError::LinkStopped(
            "the codes differ, so the request was rejected",
        ));
    }
    s.out.note("Waiting for the other device to approve…");
    let creating = Creating::begin(&s.at, &s.key_path, found)?;
    let bar = s.out.restore_bar();
    let feed = bar.clone();
    let linked = interruptible(incoming.confirm(timeout, &s.at.dir, creating.key(), move |p| {
        show_progress(&feed, p);
    }))
    .await
    .and_then(|r| r.map_err(|e| s.at.account(e)));
    bar.finish_and_clear();
    let (account, _lock) = creating.finish(linked)?;
    s.track(&account);
    let id = account.account_id();
    s.out.result(
        &format!("Linked: this device is signed in to account {id}."),
        json!({"event": "linked", "account_id": id, "state_dir": s.at.dir}),
    )
}

async fn scan(s: &Session, payload: &str, decline: bool) -> Result<(), CliError> {
    let payload = if payload == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(CliError::io("cannot read the link code from stdin"))?;
        text
    } else {
        payload.to_owned()
    };
    let opened = s.open().await?;
    let account = &opened.account;
    let request = account
        .inspect_link(&payload)
        .await
        .map_err(|e| s.at.account(e))?;
    let name = printable(request.device_name());
    let relay = printable(request.relay_addr());
    let code = request.sas().to_owned();
    let mut text = format!(
        "The device \"{name}\" asks to join account {}.\nIts relay: {relay}",
        account.account_id()
    );
    if !request.same_relay() {
        text.push_str(&format!(
            "\nWARNING: that is not this account's relay ({}). Approve only a device you hold.",
            s.at.relay
        ));
    }
    text.push_str(&format!("\nCode: {}", spaced(&code)));
    s.out.result(
        &text,
        json!({
            "event": "request",
            "device_name": request.device_name(),
            "relay": request.relay_addr(),
            "same_relay": request.same_relay(),
            "code": code,
        }),
    )?;
    let approve = !decline && {
        let question = format!(
            "Approve only if the new device shows the same code, {}. Approve?",
            spaced(&code)
        );
        interruptible(confirm_async(question, s.yes)).await??
    };
    if !approve {
        account.decline_link(request).await.map_err(|e| s.at.account(e))?;
        s.out.result("Declined.", json!({"event": "declined"}))?;
        return Err(CliError::LinkStopped("declined"));
    }
    account
        .approve_link(&request)
        .await
        .map_err(|e| s.at.account(e))?;
    s.out.result(
        "Approved: the new device signs in to this account once its user confirms the code.",
        json!({"event": "approved"}),
    )
}

/// `fut`, unless the user presses Ctrl-C first.
async fn interruptible<T>(fut: impl Future<Output = T>) -> Result<T, CliError> {
    tokio::select! {
        value = fut => Ok(value),
        () = wait::ctrl_c() => Err(CliError::Interrupted),
    }
}

/// `123456` as `123 456`, easier to compare at a glance.
fn spaced(code: &str) -> String {
    if code.len() == 6 && code.is_ascii() {
        format!("{} {}", &code[..3], &code[3..])
    } else {
        code.to_owned()
    }
}

/// "tidings on HOSTNAME", cut to what a link code carries.
fn default_device_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host: String = host.chars().filter(|c| !c.is_control()).take(40).collect();
    if host.is_empty() {
        "tidings terminal".to_owned()
    } else {
        format!("tidings on {host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_device_link::link::check_device_name;

    #[test]
    fn codes_are_grouped() {
        assert_eq!(spaced("123456"), "123 456");
        assert_eq!(spaced("12345"), "12345");
    }

    #[test]
    fn the_default_name_is_a_valid_device_name() {
        assert_eq!(check_device_name(&default_device_name()), Ok(()));
    }
}
