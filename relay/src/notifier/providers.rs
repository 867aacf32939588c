//! The senders of every configured app, built once at start from the config.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use super::breaker::Breakers;
use crate::{
    config::{App, ServiceName, WebPushPolicy},
    metrics::Metrics,
    push::{
        ApnsSender, ApnsSettings, EndpointPolicy, FcmSender, FcmSettings, HmsSender, HmsSettings,
        PushConfigError, TokenRefreshes, WebPushSender, WebPushSettings,
    },
    registration::AppCatalog,
};

/// The senders of one app.
#[derive(Default)]
pub struct AppProviders {
    /// Present when the app has an `[apps.apns]` section.
    pub apns: Option<Arc<ApnsSender>>,
    /// Present when the app has an `[apps.fcm]` section.
    pub fcm: Option<Arc<FcmSender>>,
    /// Present when the app has an `[apps.webpush]` section.
    pub webpush: Option<Arc<WebPushSender>>,
    /// Present when the app has an `[apps.hms]` section.
    pub hms: Option<Arc<HmsSender>>,
    /// The services Subscribe accepts for the app.
    pub accepts: Vec<ServiceName>,
}

/// Every app's senders, by app id, and their circuit breakers.
#[derive(Default)]
pub struct Providers {
    apps: HashMap<String, AppProviders>,
    breakers: Breakers,
    policy: EndpointPolicy,
}

/// A provider could not be set up for an app.
#[derive(Debug, thiserror::Error)]
#[error("apps[{app}].{provider}: {reason}")]
pub struct ProviderSetupError {
    /// The app id.
    pub app: String,
    /// `apns`, `fcm`, `webpush` or `hms`.
    pub provider: &'static str,
    /// What went wrong.
    pub reason: String,
}

impl Providers {
    /// Reads the key files and builds (and, for FCM, warms) every sender; Web Push
    /// endpoints are checked against `webpush` (the `[webpush]` policy).
    /// Token refreshes are counted in `metrics`.
    pub async fn from_config_with(
        apps: &[App],
        webpush: &WebPushPolicy,
        timeout: Duration,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, ProviderSetupError> {
        let policy = webpush.endpoint_policy();
        let webpush_ca = read_ca(webpush.ca_file.as_deref()).map_err(|e| ProviderSetupError {
            app: "*".into(),
            provider: "webpush",
            reason: e.to_string(),
        })?;
        let mut out = HashMap::new();
        for app in apps {
            let mut p = AppProviders {
                accepts: ServiceName::ALL.into_iter().filter(|s| app.accepts(*s)).collect(),
                ..AppProviders::default()
            };
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
            if let Some(w) = &app.webpush {
                let settings = WebPushSettings {
                    vapid_key_pem: read(&w.vapid_key_file).map_err(err(app, "webpush"))?,
                    subject: w.subject.clone(),
                    policy: policy.clone(),
                    ca_pem: webpush_ca.clone(),
                    timeout,
                };
                let sender = WebPushSender::new(settings)
                    .map_err(SetupError::from)
                    .map_err(err(app, "webpush"))?;
                p.webpush = Some(Arc::new(sender));
            }
            if let Some(hms) = &app.hms {
                let refreshes = metrics.token_refreshes("hms");
                p.hms = Some(Arc::new(
                    build_hms(hms, timeout, refreshes)
                        .await
                        .map_err(err(app, "hms"))?,
                ));
            }
            out.insert(app.id.clone(), p);
        }
        Ok(Self {
            apps: out,
            breakers: Breakers::default(),
            policy,
        })
    }

    /// What `GetRelayInfo` says of each app: the services it accepts and its VAPID key.
    pub fn app_info(&self, apps: &[App]) -> Vec<tidings_proto::v1::AppPushInfo> {
        use tidings_proto::v1::PushService;
        apps.iter()
            .filter_map(|app| {
                let p = self.app(&app.id)?;
                let services = p
                    .accepts
                    .iter()
                    .map(|s| match s {
                        ServiceName::Apns => PushService::Apns,
                        ServiceName::Fcm => PushService::Fcm,
                        ServiceName::Webpush => PushService::Webpush,
                        ServiceName::Hms => PushService::Hms,
                    } as i32)
                    .collect();
                Some(tidings_proto::v1::AppPushInfo {
                    app_id: app.id.clone(),
                    services,
                    vapid_public_key: p
                        .webpush
                        .as_ref()
                        .map(|w| w.vapid_public_key().to_vec())
                        .unwrap_or_default(),
                })
            })
            .collect()
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
            if app.webpush.is_some() && have.is_none_or(|p| p.webpush.is_none()) {
                out.push(format!("{}.webpush", app.id));
            }
            if app.hms.is_some() && have.is_none_or(|p| p.hms.is_none()) {
                out.push(format!("{}.hms", app.id));
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

impl Providers {
    fn accepts(&self, app_id: &str, service: ServiceName) -> bool {
        self.app(app_id).is_some_and(|a| a.accepts.contains(&service))
    }
}

impl AppCatalog for Providers {
    fn has_apns(&self, app_id: &str) -> bool {
        self.accepts(app_id, ServiceName::Apns) && self.app(app_id).is_some_and(|a| a.apns.is_some())
    }
    fn has_fcm(&self, app_id: &str) -> bool {
        self.accepts(app_id, ServiceName::Fcm) && self.app(app_id).is_some_and(|a| a.fcm.is_some())
    }
    fn has_webpush(&self, app_id: &str) -> bool {
        self.accepts(app_id, ServiceName::Webpush) && self.app(app_id).is_some_and(|a| a.webpush.is_some())
    }
    fn has_hms(&self, app_id: &str) -> bool {
        self.accepts(app_id, ServiceName::Hms) && self.app(app_id).is_some_and(|a| a.hms.is_some())
    }
    fn webpush_policy(&self) -> &EndpointPolicy {
        &self.policy
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

async fn build_hms(
    c: &crate::config::Hms,
    timeout: Duration,
    refreshes: TokenRefreshes,
) -> Result<HmsSender, SetupError> {
    let settings = HmsSettings {
        app_id: c.app_id.clone(),
        client_id: c.client_id().to_owned(),
        client_secret: read(&c.client_secret_file)?.trim().to_owned(),
        endpoint: c.endpoint.clone(),
        token_endpoint: c.token_endpoint.clone(),
        ca_pem: read_ca(c.ca_file.as_deref())?,
        timeout,
    };
    Ok(HmsSender::new(settings, refreshes).await?)
}
