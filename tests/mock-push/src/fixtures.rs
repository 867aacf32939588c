//! Provider credentials for tests: an APNs `.p8` signing key and a Google service account,
//! made fresh, except the RSA key: a fixed throwaway key checked in under `fixtures/`, so
//! that no crate of the workspace needs RSA key generation (the `rsa` crate carries
//! RUSTSEC-2023-0071) and no test waits for one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::record::fill_random;

/// Google's real token endpoint, the default `token_uri` until a test points it at a mock.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// An APNs token-signing key as Apple hands it out (`AuthKey_<key id>.p8`), with its ids.
#[derive(Clone)]
pub struct ApnsKey {
    /// The 10-character key id (the JWT header's `kid`).
    pub key_id: String,
    /// The 10-character team id (the JWT's `iss`).
    pub team_id: String,
    /// PKCS#8 PEM of the P-256 private key: the `.p8` file's content.
    pub private_key_pem: String,
    /// SPKI PEM of the public key: what the mock verifies with.
    pub public_key_pem: String,
}

impl std::fmt::Debug for ApnsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsKey")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish()
    }
}

impl ApnsKey {
    /// Generates a fresh P-256 key for `key_id` / `team_id`.
    pub fn generate(key_id: &str, team_id: &str) -> ApnsKey {
        // rcgen's ring backend only fails here if the OS random generator does.
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("P-256 key generation failed");
        ApnsKey {
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            private_key_pem: pair.serialize_pem(),
            public_key_pem: pair.public_key_pem(),
        }
    }

    /// Writes `AuthKey_<key id>.p8` into `dir` and returns its path.
    pub fn write_p8(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join(format!("AuthKey_{}.p8", self.key_id));
        std::fs::write(&path, &self.private_key_pem)?;
        Ok(path)
    }
}

/// A VAPID key pair (RFC 8292): the PEM the relay is configured with, and the public key
/// subscriptions are restricted to.
#[derive(Clone)]
pub struct VapidKeyPair {
    /// PKCS#8 PEM of the P-256 private key.
    pub private_key_pem: String,
    /// The uncompressed public key (65 bytes).
    pub public_key: [u8; 65],
}

impl std::fmt::Debug for VapidKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKeyPair").finish_non_exhaustive()
    }
}

impl VapidKeyPair {
    /// A fresh P-256 key.
    pub fn generate() -> Self {
        // rcgen's ring backend only fails here if the OS random generator does.
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("P-256 key generation failed");
        let mut public_key = [0u8; 65];
        public_key.copy_from_slice(pair.public_key_raw());
        Self {
            private_key_pem: pair.serialize_pem(),
            public_key,
        }
    }

    /// Writes `vapid.pem` into `dir` and returns its path.
    pub fn write_pem(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("vapid.pem");
        std::fs::write(&path, &self.private_key_pem)?;
        Ok(path)
    }
}

/// An RSA key pair in the PEM forms a service-account file and a verifier need.
#[derive(Clone)]
pub struct RsaKey {
    /// PKCS#8 PEM private key.
    pub private_key_pem: String,
    /// SPKI PEM public key.
    pub public_key_pem: String,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaKey")
    }
}

impl RsaKey {
    /// The process-wide test key: 2048 bits, made once with `openssl genpkey` and checked
    /// in (`fixtures/service-account-rsa-2048.*.pem`). It is public, so it protects nothing:
    /// it only stands in for a service account's key against the mocks.
    pub fn shared() -> &'static RsaKey {
        static KEY: OnceLock<RsaKey> = OnceLock::new();
        KEY.get_or_init(|| RsaKey {
            private_key_pem: include_str!("../fixtures/service-account-rsa-2048.key.pem").to_owned(),
            public_key_pem: include_str!("../fixtures/service-account-rsa-2048.pub.pem").to_owned(),
        })
    }
}

/// A Google service account, as in the JSON key file the Firebase console hands out.
#[derive(Clone)]
pub struct ServiceAccount {
    /// The Firebase / Google Cloud project.
    pub project_id: String,
    /// The key's id (the assertion's `kid`).
    pub private_key_id: String,
    /// The account's e-mail: the assertion's `iss`.
    pub client_email: String,
    /// Where access tokens are fetched: point it at [`crate::MockFcm::token_uri`].
    pub token_uri: String,
    /// The account's RSA key.
    pub key: RsaKey,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

impl ServiceAccount {
    /// A service account of `project_id` using the process-wide shared RSA key and Google's
    /// token URI (set [`ServiceAccount::token_uri`] to the mock's).
    pub fn generate(project_id: &str) -> ServiceAccount {
        ServiceAccount::with_key(project_id, RsaKey::shared().clone())
    }

    /// A service account of `project_id` signing with `key`.
    pub fn with_key(project_id: &str, key: RsaKey) -> ServiceAccount {
        let mut id = [0u8; 20];
        fill_random(&mut id);
        ServiceAccount {
            project_id: project_id.to_owned(),
            private_key_id: hex::encode(id),
            client_email: format!("firebase-adminsdk@{project_id}.iam.gserviceaccount.com"),
            token_uri: GOOGLE_TOKEN_URI.to_owned(),
            key,
        }
    }

    /// The key file's JSON, with the same fields Google's has.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self.key.private_key_pem,
            "client_email": self.client_email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                self.client_email.replace('@', "%40")
            ),
            "universe_domain": "googleapis.com",
        })
        .to_string()
    }

    /// Writes `service-account.json` into `dir` and returns its path.
    pub fn write_json(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("service-account.json");
        std::fs::write(&path, self.to_json())?;
        Ok(path)
    }
}
