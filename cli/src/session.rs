//! One command's surroundings: the relay (directly or through an OHTTP relay), the state
//! dir and its key, how to print; and the steps most commands share (open the account,
//! sync first).

use std::{path::PathBuf, time::Duration};

use tidings_device_link::{
    account::{Account, RelaySettings, SyncReport},
    client::{ClientOptions, RelayClient, RetryPolicy},
    identity::Identity,
};

use crate::{
    args::{DEFAULT_OHTTP_GATEWAY, DEFAULT_RELAY, Global},
    error::{CliError, Where},
    ohttp::Ohttp,
    output::Output,
    state_dir::{self, Found},
    state_key::{self, StateKey, StateLock},
};

/// The resolved global options.
pub struct Session {
    /// The relay and the state dir, for messages.
    pub at: Where,
    /// The key file.
    pub key_path: PathBuf,
    /// How to print.
    pub out: Output,
    /// `--yes`.
    pub yes: bool,
    /// `--offline`.
    pub offline: bool,
    /// `--ohttp-relay`: how calls go through it.
    ohttp: Option<Ohttp>,
}

/// An account opened for a command, with the state dir locked for as long as it lives.
pub struct Opened {
    /// The account.
    pub account: Account,
    lock: StateLock,
}

impl Opened {
    /// Lets go of the account and keeps the lock (after sign-out, the handle is done with).
    pub fn into_lock(self) -> StateLock {
        self.lock
    }
}

impl Session {
    /// Resolves the options: the state dir defaults to the platform's data dir.
    pub fn new(global: &Global) -> Result<Session, CliError> {
        let dir = match &global.state_dir {
            Some(dir) => dir.clone(),
            None => directories::ProjectDirs::from("", "", "tidings")
                .map(|p| p.data_dir().to_path_buf())
                .ok_or_else(|| {
                    CliError::Input(
                        "this system has no home directory to keep the state in: pass --state-dir DIR".into(),
                    )
                })?,
        };
        let key_path = state_key::default_path(&dir, global.key_file.as_deref());
        let default_relay = match global.ohttp_relay {
            Some(_) => DEFAULT_OHTTP_GATEWAY,
            None => DEFAULT_RELAY,
        };
        let at = Where {
            relay: global.relay.clone().unwrap_or_else(|| default_relay.to_owned()),
            dir,
            ohttp_relay: global.ohttp_relay.clone(),
        };
        let ohttp = match &global.ohttp_relay {
            Some(url) => Some(Ohttp::new(&at, url, global.ohttp_keys.as_deref())?),
            None if global.ohttp_keys.is_some() => {
                return Err(CliError::Input(
                    "--ohttp-keys is the OHTTP gateway's key configuration: it needs --ohttp-relay".into(),
                ));
            }
            None => None,
        };
        Ok(Session {
            at,
            key_path,
            out: Output::new(global.json),
            yes: global.yes,
            offline: global.offline,
            ohttp,
        })
    }

    /// The relay settings for device-link: few, quick retries (a person is waiting).
    pub fn settings(&self) -> RelaySettings {
        RelaySettings {
            client: self.client_options(),
            ..RelaySettings::new(self.at.relay.as_str())
        }
    }

    /// How the CLI talks to the relay: a person is waiting, so few retries and a short
    /// connection timeout; long-polls get their own deadline from device-link. Through
    /// the OHTTP relay with `--ohttp-relay`.
    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            ohttp: self.ohttp.as_ref().map(Ohttp::settings),
            ..client_options()
        }
    }

    /// With `--ohttp-relay`: fetches the gateway's key configuration if none is pinned yet,
    /// so that its failure is reported as what it is (and only once per command).
    async fn ohttp_ready(&self) -> Result<(), CliError> {
        match &self.ohttp {
            Some(ohttp) => ohttp.ready(&self.at, client_options()).await,
            None => Ok(()),
        }
    }

    /// A relay client (connecting on first use).
    pub async fn client(&self) -> Result<RelayClient, CliError> {
        self.ohttp_ready().await?;
        let client =
            RelayClient::connect_lazy(&self.at.relay, self.client_options()).map_err(|e| self.at.relay(e))?;
        if let Some(ohttp) = &self.ohttp {
            ohttp.track_client(&client);
        }
        Ok(client)
    }

    /// Checks that the relay answers, before a command writes anything that needs it.
    pub async fn probe(&self) -> Result<(), CliError> {
        self.ohttp_ready().await?;
        let client = RelayClient::connect_with(&self.at.relay, self.client_options())
            .await
            .map_err(|e| self.at.relay(e))?;
        if let Some(ohttp) = &self.ohttp {
            ohttp.track_client(&client);
        }
        client.relay_info().await.map_err(|e| self.at.relay(e))?;
        Ok(())
    }

    /// Follows `account`'s OHTTP key configuration (a rotation it sees is kept).
    pub fn track(&self, account: &Account) {
        if let Some(ohttp) = &self.ohttp {
            ohttp.track_account(account);
        }
    }

    /// At the end of a command: with `--ohttp-relay`, keeps the gateway's key
    /// configuration in the state dir for the next command (when the dir holds an
    /// account, or one signed out), or forgets it when the gateway refused it.
    pub fn finish(&self, result: &Result<(), CliError>) {
        let Some(ohttp) = &self.ohttp else { return };
        let key_rejected = matches!(
            result,
            Err(CliError::OhttpRefused {
                key_rejected: true,
                ..
            })
        );
        let holds_state = matches!(
            self.inspect(),
            Ok(Found::SignedIn { .. } | Found::SignedOut { .. })
        );
        ohttp.finish(key_rejected, holds_state, |note| self.out.note(note));
    }

    /// What the state dir holds (nothing is written).
    pub fn inspect(&self) -> Result<Found, CliError> {
        state_dir::inspect(&self.at, &self.key_path)
    }

    /// The signed-in account's key and identity, read without writing or locking anything.
    pub fn signed_in(&self) -> Result<(StateKey, Identity), CliError> {
        match self.inspect()? {
            Found::SignedIn { key, identity } => Ok((key, *identity)),
            Found::Empty { .. } | Found::SignedOut { .. } => Err(CliError::NoAccount {
                dir: self.at.dir.clone(),
            }),
        }
    }

    /// Opens the signed-in account, locking the state dir. Checked read-only first, so a
    /// damaged state dir is reported without anything written to it.
    pub async fn open(&self) -> Result<Opened, CliError> {
        let (key, _) = self.signed_in()?;
        let lock = state_key::lock(&self.key_path, &self.at.dir)?;
        if !self.offline {
            // Offline, nothing may touch the network unasked; a call that needs a key
            // anyway (`listen --offline`) has device-link fetch it.
            self.ohttp_ready().await?;
        }
        let account = Account::open(&self.at.dir, key.bytes(), self.settings())
            .await
            .map_err(|e| self.at.account(e))?;
        self.track(&account);
        Ok(Opened { account, lock })
    }

    /// [`Session::open`], then a sync (unless `--offline`): what other devices changed.
    pub async fn open_synced(&self) -> Result<Opened, CliError> {
        let opened = self.open().await?;
        if !self.offline {
            self.sync(&opened.account).await?;
        }
        Ok(opened)
    }

    /// One sync, with a spinner.
    pub async fn sync(&self, account: &Account) -> Result<SyncReport, CliError> {
        let spinner = self.out.spinner(&format!("syncing with {}", self.at.relay));
        let report = account.sync_report().await;
        spinner.finish_and_clear();
        report.map_err(|e| self.at.account(e))
    }

    /// After an edit: uploads it now when the edit's own upload did not go out (unless
    /// `--offline`). A failure says the change is kept here.
    pub async fn upload(&self, account: &Account) -> Result<(), CliError> {
        if self.offline || account.pending_uploads().map_err(|e| self.at.account(e))? == 0 {
            return Ok(());
        }
        if let Err(e) = self.sync(account).await {
            self.out
                .note("The change is saved on this device and uploads with the next command that syncs.");
            return Err(e);
        }
        Ok(())
    }
}

/// How the CLI talks to the relay: a person is waiting, so few retries and a short
/// connection timeout; long-polls get their own deadline from device-link.
fn client_options() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
        },
        connect_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}
