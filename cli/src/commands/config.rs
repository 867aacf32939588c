//! `tidings profile …` and `tidings settings …`: synced first, edits uploaded before the
//! command returns.

use serde_json::{Value, json};
use tidings_device_link::config::{Change, NotificationMode, Previews, Profile, Settings};

use crate::{
    args::{ProfileAction, SettingsAction, Toggle},
    error::CliError,
    output::printable,
    session::Session,
};

/// Runs `tidings profile …`.
pub async fn profile(s: &Session, action: ProfileAction) -> Result<(), CliError> {
    let opened = s.open_synced().await?;
    let account = &opened.account;
    if let ProfileAction::SetName { name } = action {
        account
            .change(Change::DisplayName(name))
            .await
            .map_err(|e| s.at.account(e))?;
        s.upload(account).await?;
    }
    let profile = account.profile();
    s.out.result(&profile_text(&profile), profile_json(&profile))
}

/// Runs `tidings settings …`.
pub async fn settings(s: &Session, action: SettingsAction) -> Result<(), CliError> {
    let opened = s.open_synced().await?;
    let account = &opened.account;
    if let SettingsAction::Previews { sender, content } = action {
        let now = account.settings().previews;
        let previews = Previews {
            show_sender: sender.map_or(now.show_sender, Toggle::is_on),
            show_content: content.map_or(now.show_content, Toggle::is_on),
        };
        account
            .change(Change::Previews(previews))
            .await
            .map_err(|e| s.at.account(e))?;
        s.upload(account).await?;
    }
    let settings = account.settings();
    s.out.result(&settings_text(&settings), settings_json(&settings))
}

fn profile_text(p: &Profile) -> String {
    let name = if p.display_name.is_empty() {
        "(none: `tidings profile set-name NAME`)".to_owned()
    } else {
        printable(&p.display_name)
    };
    let avatar = if p.avatar.is_some() { "set" } else { "none" };
    format!("Display name: {name}\nAvatar: {avatar}")
}

fn profile_json(p: &Profile) -> Value {
    // The avatar's key stays out of the output: it decrypts the picture.
    json!({"display_name": p.display_name, "avatar": p.avatar.is_some()})
}

fn mode(m: NotificationMode) -> &'static str {
    match m {
        NotificationMode::Fast => "fast",
        NotificationMode::Slow => "slow",
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn settings_text(s: &Settings) -> String {
    format!(
        "Notification mode: {}\nPreviews: sender {}, content {}",
        mode(s.notification_mode),
        on_off(s.previews.show_sender),
        on_off(s.previews.show_content)
    )
}

fn settings_json(s: &Settings) -> Value {
    json!({
        "notification_mode": mode(s.notification_mode),
        "previews": {"sender": s.previews.show_sender, "content": s.previews.show_content},
    })
}
