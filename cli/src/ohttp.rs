//! `--ohttp-relay`: every relay call through an independent OHTTP relay (Oblivious HTTP,
//! device-link's `ohttp`), and the gateway's key configuration pinned in the state dir.
//!
//! The key configuration is what a call is encapsulated to. Without `--ohttp-keys` it is
//! fetched from the gateway (`--relay`) directly, once: that one request shows this
//! machine's address to the relay, with nothing else in it. It is kept in the state dir
//! ([`PIN_FILE`], public data, so not sealed) and given to device-link as a pinned key by
//! every later command. device-link follows the gateway's rotations with an overlap
//! (the new key comes inside an answer), and what it moved to is written back when the
//! command ends; a key the gateway no longer accepts at all drops the pin, so the next
//! command fetches the current one.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::json;
use tidings_device_link::{
    account::Account,
    client::{ClientError, ClientOptions, RelayClient},
    ohttp::OhttpSettings,
    tls::TrustRoots,
};

use crate::error::{CliError, Where};

/// The pinned key configuration's file in the state dir.
pub const PIN_FILE: &str = "ohttp-keys.json";
/// The largest key configuration file read (one is about 50 bytes; a list of a few more).
const MAX_KEYS_BYTES: u64 = 64 * 1024;

/// What `--ohttp-relay` (and `--ohttp-keys`) set up for one command.
pub struct Ohttp {
    /// The OHTTP relay's URL.
    pub relay_url: String,
    /// The pin file.
    path: PathBuf,
    /// The gateway, as the pin file names it.
    gateway: String,
    /// What the pin file held for this gateway when the command started.
    loaded: Option<Vec<u8>>,
    /// The key configuration handed to clients now: pinned, given, or fetched this run.
    keys: Mutex<Option<Vec<u8>>>,
    /// Every client and account handed out: device-link moves them to a rotated key.
    handles: Mutex<Vec<Handle>>,
}

/// Something that talks through OHTTP and may have moved to a new key.
enum Handle {
    Client(Box<RelayClient>),
    Account(Account),
}

impl Handle {
    fn key_config(&self) -> Option<Vec<u8>> {
        match self {
            Handle::Client(c) => c.ohttp_key_config(),
            Handle::Account(a) => a.ohttp_key_config(),
        }
    }
}

impl Ohttp {
    /// The settings for `relay_url` and the gateway `at.relay`: the key configuration from
    /// `keys_file` if given, else what the state dir pinned for this gateway.
    pub fn new(at: &Where, relay_url: &str, keys_file: Option<&Path>) -> Result<Ohttp, CliError> {
        check_url(relay_url)?;
        let path = at.dir.join(PIN_FILE);
        let gateway = normalise(&at.relay);
        // A damaged pin is as good as none: fetched again, and rewritten.
        let loaded = load_pin(&path, &gateway).filter(|k| usable(&at.relay, k));
        let given = keys_file.map(read_keys_file).transpose()?;
        if let (Some(keys), Some(file)) = (&given, keys_file)
            && !usable(&at.relay, keys)
        {
            return Err(keys_file_error(
                file,
                "holds no OHTTP key configuration this client can use (X25519, HKDF-SHA256, \
                 ChaCha20-Poly1305 or AES-128-GCM)",
            ));
        }
        // The state dir's pin, once there is one, has followed the gateway's rotations.
        let keys = loaded.clone().or(given);
        Ok(Ohttp {
            relay_url: relay_url.to_owned(),
            path,
            gateway,
            loaded,
            keys: Mutex::new(keys),
            handles: Mutex::new(Vec::new()),
        })
    }

    /// The OHTTP settings for a client made now.
    pub fn settings(&self) -> OhttpSettings {
        OhttpSettings {
            relay_url: self.relay_url.clone(),
            key_config: self.current(),
            local_address: None,
        }
    }

    /// The newest key configuration known: the last one a handle moved to, else the one
    /// clients were given.
    fn current(&self) -> Option<Vec<u8>> {
        let given = lock(&self.keys).clone();
        let moved = lock(&self.handles)
            .iter()
            .rev()
            .filter_map(Handle::key_config)
            .find(|k| Some(k) != given.as_ref());
        moved.or(given)
    }

    /// Makes sure a key configuration is known, fetching it from the gateway (a direct
    /// request to `--relay`) when neither the state dir nor `--ohttp-keys` has one.
    pub async fn ready(&self, at: &Where, options: ClientOptions) -> Result<(), CliError> {
        if self.current().is_some() {
            return Ok(());
        }
        let mut options = options;
        options.ohttp = Some(OhttpSettings {
            key_config: None,
            ..self.settings()
        });
        // Connecting fetches the key configuration, retrying as a connection would.
        let client = RelayClient::connect_with(&at.relay, options)
            .await
            .map_err(|e| at.ohttp_key_fetch(e))?;
        let fetched = client.ohttp_key_config().ok_or_else(|| {
            CliError::Internal("the OHTTP key configuration was fetched but not kept".into())
        })?;
        *lock(&self.keys) = Some(fetched);
        Ok(())
    }

    /// Follows `client`'s key configuration from now on.
    pub fn track_client(&self, client: &RelayClient) {
        lock(&self.handles).push(Handle::Client(Box::new(client.clone())));
    }

    /// Follows `account`'s key configuration from now on.
    pub fn track_account(&self, account: &Account) {
        lock(&self.handles).push(Handle::Account(account.clone()));
    }

    /// At the end of a command that ran in a state dir with an account (or one signed out):
    /// keeps the newest key configuration for the next command, or drops the pin when the
    /// gateway refused it. Best effort, with a note: the command's own result stands.
    pub fn finish(&self, failed_with_key: bool, holds_state: bool, note: impl Fn(&str)) {
        if failed_with_key {
            match fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => note(&format!(
                    "Could not remove the stale OHTTP key configuration {}: {e}; remove it by hand.",
                    self.path.display()
                )),
            }
            return;
        }
        let Some(newest) = self.current() else { return };
        if !holds_state || self.loaded.as_ref() == Some(&newest) {
            return;
        }
        if let Err(e) = save_pin(&self.path, &self.gateway, &newest) {
            note(&format!(
                "Could not keep the relay's OHTTP key configuration in {} ({e}): the next command \
                 fetches it again.",
                self.path.display()
            ));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A gateway address compared as written, without the trailing slash.
fn normalise(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// `--ohttp-relay` must be an `http://` or `https://` URL with a host.
fn check_url(url: &str) -> Result<(), CliError> {
    let ok = url
        .parse::<tonic::transport::Uri>()
        .ok()
        .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(CliError::Input(
            "--ohttp-relay must be the OHTTP relay's URL, https://HOST[:PORT]/PATH (or http:// on a \
             network you trust), as its operator publishes it for this relay"
                .into(),
        ))
    }
}

/// The key configuration in `--ohttp-keys FILE` (as the gateway serves it).
fn read_keys_file(path: &Path) -> Result<Vec<u8>, CliError> {
    let file = fs::File::open(path).map_err(|e| keys_file_error(path, &format!("cannot be read ({e})")))?;
    let mut keys = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_KEYS_BYTES + 1), &mut keys)
        .map_err(|e| keys_file_error(path, &format!("cannot be read ({e})")))?;
    if keys.is_empty() || keys.len() as u64 > MAX_KEYS_BYTES {
        return Err(keys_file_error(path, "is not an OHTTP key configuration"));
    }
    Ok(keys)
}

fn keys_file_error(path: &Path, what: &str) -> CliError {
    CliError::Input(format!(
        "--ohttp-keys {}: {what}; save it with `curl -s GATEWAY/.well-known/ohttp-gateway > FILE`",
        path.display()
    ))
}

/// Whether device-link can encapsulate to `keys` (asked by making a client, which checks
/// them and touches no network). A gateway address it refuses for another reason counts
/// as usable here: the command reports that address itself.
fn usable(gateway: &str, keys: &[u8]) -> bool {
    let options = ClientOptions {
        // The cheapest roots to set up; nothing is connected.
        roots: TrustRoots::Bundled,
        ohttp: Some(OhttpSettings {
            relay_url: "http://127.0.0.1/".into(),
            key_config: Some(keys.to_vec()),
            local_address: None,
        }),
        ..ClientOptions::default()
    };
    match RelayClient::connect_lazy(gateway, options) {
        Ok(_) => true,
        Err(ClientError::Endpoint { reason, .. }) => !reason.contains("ohttp.key_config"),
        Err(_) => true,
    }
}

/// The pinned key configuration for `gateway`, if the file holds one (a damaged file or
/// another gateway's is ignored: the keys are fetched again and the file rewritten).
fn load_pin(path: &Path, gateway: &str) -> Option<Vec<u8>> {
    let text = fs::read(path).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&text).ok()?;
    if json["gateway"].as_str() != Some(gateway) {
        return None;
    }
    STANDARD.decode(json["key_config"].as_str()?).ok()
}

/// Writes the pin atomically (another tidings command may read it meanwhile).
fn save_pin(path: &Path, gateway: &str, keys: &[u8]) -> io::Result<()> {
    let text = json!({"gateway": gateway, "key_config": STANDARD.encode(keys)}).to_string();
    // Not device-link's temporary-file pattern, which it removes when it opens the state.
    let tmp = path.with_file_name(format!(".{PIN_FILE}.new-{}", std::process::id()));
    fs::write(&tmp, format!("{text}\n"))?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(dir: &Path, relay: &str) -> Where {
        Where {
            relay: relay.into(),
            dir: dir.to_path_buf(),
            ohttp_relay: Some("http://127.0.0.2:3000/".into()),
        }
    }

    /// An `application/ohttp-keys` list of one configuration: `id`, X25519, HKDF-SHA256
    /// with ChaCha20-Poly1305.
    fn key_config(id: u8) -> Vec<u8> {
        let mut config = vec![id, 0x00, 0x20];
        config.extend([id; 32]);
        config.extend([0x00, 0x04, 0x00, 0x01, 0x00, 0x03]);
        let mut list = u16::try_from(config.len()).unwrap().to_be_bytes().to_vec();
        list.extend(config);
        list
    }

    #[test]
    fn the_pin_is_kept_per_gateway_and_dropped_when_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let here = at(tmp.path(), "http://127.0.0.1:7402/");
        let ohttp = Ohttp::new(&here, "http://127.0.0.2:3000/", None).unwrap();
        assert_eq!(ohttp.settings().key_config, None);
        *lock(&ohttp.keys) = Some(key_config(1));
        ohttp.finish(false, false, |n| panic!("{n}"));
        assert!(!tmp.path().join(PIN_FILE).exists(), "no state, no pin");
        ohttp.finish(false, true, |n| panic!("{n}"));

        let again = Ohttp::new(&here, "http://127.0.0.2:3000/", None).unwrap();
        assert_eq!(again.settings().key_config, Some(key_config(1)));
        let other = Ohttp::new(&at(tmp.path(), "http://127.0.0.1:9999"), "http://x/", None).unwrap();
        assert_eq!(
            other.settings().key_config,
            None,
            "another gateway's key is not used"
        );

        again.finish(true, true, |n| panic!("{n}"));
        assert!(!tmp.path().join(PIN_FILE).exists());

        // A damaged pin is ignored (and replaced by the next one kept).
        save_pin(&tmp.path().join(PIN_FILE), "http://127.0.0.1:7402", &[1, 2, 3]).unwrap();
        let damaged = Ohttp::new(&here, "http://127.0.0.2:3000/", None).unwrap();
        assert_eq!(damaged.settings().key_config, None);
    }

    #[test]
    fn a_given_key_file_is_used_until_there_is_a_pin() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("keys.bin");
        fs::write(&file, key_config(9)).unwrap();
        let here = at(tmp.path(), "http://127.0.0.1:7402");
        let ohttp = Ohttp::new(&here, "https://ohttp.example/relay", Some(&file)).unwrap();
        assert_eq!(ohttp.settings().key_config, Some(key_config(9)));
        for bad in [&[][..], &[9u8; 47]] {
            fs::write(&file, bad).unwrap();
            assert!(matches!(
                Ohttp::new(&here, "https://ohttp.example/", Some(&file)),
                Err(CliError::Input(m)) if m.starts_with("--ohttp-keys")
            ));
        }
    }

    #[test]
    fn the_relay_url_must_be_http() {
        let tmp = tempfile::tempdir().unwrap();
        let here = at(tmp.path(), "http://127.0.0.1:7402");
        for bad in ["ohttp.example", "ftp://ohttp.example/", "https://", ""] {
            assert!(Ohttp::new(&here, bad, None).is_err(), "{bad}");
        }
        assert!(Ohttp::new(&here, "https://ohttp.example:8443/relay", None).is_ok());
    }
}
