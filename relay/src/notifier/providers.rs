//! The senders of every configured app, built once at start from the config.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use super::breaker::Breakers;
use crate::{
    config::App,
    metrics::Metrics,
    push::{ApnsSender, ApnsSettings, FcmSender, FcmSettings, PushConfigError, TokenRefreshes},
    registration::AppCatalog,
};

/// The senders of one app.
#[derive(Default)]
pub struct AppProviders {
    /// Present when the app has an `[apps.apns]` section.
    pub apns: Option<Arc<ApnsSender>>,
    /// Present when the app has an `[apps.fcm]` section.
    pub fcm: Option<Arc<FcmSender>>,
}

/// Every app's senders, by app id, and their circuit breakers.
#[derive(Default)]
pub struct Providers {
    apps: HashMap<String, AppProviders>,
    breakers: Breakers,
}

/// A provider could not be set up for an app.
#[derive(Debug, thiserror::Error)]
#[error("apps[{app}].{provider}: {reason}")]
pub struct ProviderSetupError {
    /// The app id.
    pub app: String,
    /// `apns` or `fcm`.
    pub provider: &'static str,
    /// What went wrong.
    pub reason: String,
}

impl Providers {
    /// Reads the key files and builds (and, for FCM, warms) every sender.
    /// Token refreshes are counted in `metrics`.
    pub async fn from_config(
        apps: &[App],
        timeout: Duration,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, ProviderSetupError> {
        let mut out = HashMap::new();
        for app in apps {
            let mut p = AppProviders::default();
            if let Some(apns) = &app.apns {
                let sender = build_apns(apns, timeout).map_err(err(app, "apns"))?;
                p.apns = Some(Arc::new(
                    sender.with_token_refreshes(metrics.token_refreshes("apns")),
                ));
            }
            if let Some(fcm) = &app.fcm {
                let refreshes = metrics.token_refreshes("fcm");
                p.fcm = Some(Arc::new(
                    build_fcm(fcm, timeout, refreshes)
                        .await
                        .map_err(err(app, "fcm"))?,
                ));
            }
            out.insert(app.id.clone(), p);
        }
        Ok(Self {
            apps: out,
            breakers: Breakers::default(),
        })
    }

    /// Apps of `apps` whose configured providers have no sender (empty when every
    /// configured provider was set up). `/readyz` reports these.
    pub fn missing(&self, apps: &[App]) -> Vec<String> {
        let mut out = Vec::new();
        for app in apps {
            let have = self.app(&app.id);
            if app.apns.is_some() && have.is_none_or(|p| p.apns.is_none()) {
                out.push(format!("{}.apns", app.id));
            }
            if app.fcm.is_some() && have.is_none_or(|p| p.fcm.is_none()) {
                out.push(format!("{}.fcm", app.id));
            }
        }
        out
    }

    /// The per-(app, provider) circuit breakers every push goes through.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// The senders of `app_id`, if it is configured.
    pub fn app(&self, app_id: &str) -> Option<&AppProviders> {
        self.apps.get(app_id)
    }
}

impl AppCatalog for Providers {
    fn has_apns(&self, app_id: &str) -> bool {
        self.app(app_id).is_some_and(|a| a.apns.is_some())
    }
    fn has_fcm(&self, app_id: &str) -> bool {
        self.app(app_id).is_some_and(|a| a.fcm.is_some())
    }
}

fn err(app: &App, provider: &'static str) -> impl Fn(SetupError) -> ProviderSetupError {
    let app = app.id.clone();
    move |e| ProviderSetupError {
        app: app.clone(),
        provider,
        reason: e.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Push(#[from] PushConfigError),
}

fn read(path: &Path) -> Result<String, SetupError> {
    std::fs::read_to_string(path).map_err(|source| SetupError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn read_ca(path: Option<&Path>) -> Result<Option<String>, SetupError> {
    path.map(read).transpose()
}

fn build_apns(c: &crate::config::Apns, timeout: Duration) -> Result<ApnsSender, SetupError> {
    Ok(ApnsSender::new(ApnsSettings {
        key_pem: read(&c.key_file)?,
        key_id: c.key_id.clone(),
        team_id: c.team_id.clone(),
        topic: c.topic.clone(),
        endpoint: c.endpoint.clone(),
        sandbox_endpoint: c.sandbox_endpoint.clone(),
        ca_pem: read_ca(c.ca_file.as_deref())?,
        timeout,
    })?)
}

async fn build_fcm(
    c: &crate::config::Fcm,
    timeout: Duration,
    refreshes: TokenRefreshes,
) -> Result<FcmSender, SetupError> {
    let settings = FcmSettings {
        service_account_json: read(&c.service_account_file)?,
        endpoint: c.endpoint.clone(),
        ca_pem: read_ca(c.ca_file.as_deref())?,
        timeout,
    };
    Ok(FcmSender::new_with_refreshes(settings, refreshes).await?)
}
