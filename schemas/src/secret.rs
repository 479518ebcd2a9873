//! A configured secret (passwords, tokens, signing keys): read from the
//! configuration like a string, never shown. `Serialize` writes
//! `"<redacted>"` (so `securenet config` shows that it is set) and `Debug`
//! writes `<redacted>` (so a logged config or error cannot carry it); the
//! value is reached only through [`Secret::expose`], at the one place that
//! hands it to a client library.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// What a set secret looks like wherever it is shown.
pub const REDACTED: &str = "<redacted>";

#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: only for handing it to what needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Unset (an empty string stands for "none", as with a password).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { REDACTED })
    }
}

/// An empty secret stays empty (it shows that none is set); any other
/// value is [`REDACTED`]. The configuration's defaults pass through this
/// too, and hold no secret.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

/// Where a database is: a file path, or a URL that may carry a password
/// (`postgres://user:password@host/db`, or `?password=…`). Shown
/// (`Serialize`, `Debug`) with the password as [`REDACTED`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: only for handing it to what needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn shown(&self) -> String {
        let Ok(mut url) = url::Url::parse(&self.0) else {
            return self.0.clone();
        };
        if url.scheme().len() < 2 {
            // A Windows path read as a URL ("c:\…"): not one.
            return self.0.clone();
        }
        if url.password().is_some() {
            let _ = url.set_password(Some(REDACTED));
        }
        if url.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_secret_option(&k) {
                        REDACTED.to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

/// Whether a free-form client option (librdkafka's `sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`, `ssl.key.pem`,
/// `sasl.jaas.config`…) holds a secret.
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "jaas",
        ".pem",
        "oauthbearer.config",
        // Object stores (object_store's keys: aws_secret_access_key,
        // aws_session_token, azure_storage_account_key, azure_storage_sas_key,
        // google_service_account_key…).
        "account_key",
        "sas_key",
        "private_key",
    ]
    .iter()
    .any(|part| key.contains(part))
}

/// Free-form client options (librdkafka properties, object store keys): read as a map of
/// strings; shown (`Serialize`, `Debug`) with the values of
/// [`is_secret_option`] keys as [`REDACTED`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ClientOptions(BTreeMap<String, String>);

impl ClientOptions {
    fn shown(&self) -> impl Iterator<Item = (&String, &str)> {
        self.0.iter().map(|(k, v)| {
            let shown = if is_secret_option(k) {
                REDACTED
            } else {
                v.as_str()
            };
            (k, shown)
        })
    }
}

impl std::ops::Deref for ClientOptions {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl From<BTreeMap<String, String>> for ClientOptions {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }
}

impl Serialize for ClientOptions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.shown())
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_show_without_their_password() {
        let url =
            DatabaseUrl::new("postgres://sn:hunter2@db.internal:5432/securenet?sslmode=require");
        let shown = format!("{url:?} {}", serde_json::to_string(&url).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db.internal:5432/securenet"), "{shown}");
        assert!(shown.contains("sslmode=require"), "{shown}");
        let q = DatabaseUrl::new("postgresql://db/securenet?user=sn&password=hunter2");
        assert!(!format!("{q:?}").contains("hunter2"));
        let path = DatabaseUrl::new("/var/lib/securenet/meta.db");
        assert_eq!(format!("{path:?}"), "\"/var/lib/securenet/meta.db\"");
        assert_eq!(
            url.expose(),
            "postgres://sn:hunter2@db.internal:5432/securenet?sslmode=require"
        );
    }

    #[derive(Serialize, Deserialize, Debug)]
    struct Conf {
        password: Secret,
        token: Option<Secret>,
        options: ClientOptions,
    }

    #[test]
    fn secrets_are_read_but_never_shown() {
        let conf: Conf = serde_json::from_str(
            r#"{"password": "hunter2", "token": "t0k3n",
                "options": {"sasl.password": "p4ss", "SSL.KEY.PEM": "-----BEGIN", "client.id": "me",
                            "aws_secret_access_key": "s3cr3t", "aws_session_token": "s3ss-v4l",
                            "azure_storage_account_key": "4zk-v4l", "google_service_account_key": "gk-v4l",
                            "aws_endpoint": "http://minio:9000"}}"#,
        )
        .unwrap();
        assert_eq!(conf.password.expose(), "hunter2");
        assert_eq!(conf.token.as_ref().unwrap().expose(), "t0k3n");
        assert_eq!(conf.options["sasl.password"], "p4ss");
        let shown = serde_json::to_string(&conf).unwrap();
        let debug = format!("{conf:?}");
        for leak in [
            "hunter2", "t0k3n", "p4ss", "BEGIN", "s3cr3t", "s3ss-v4l", "4zk-v4l", "gk-v4l",
        ] {
            assert!(
                !shown.contains(leak) && !debug.contains(leak),
                "{shown} {debug}"
            );
        }
        assert!(shown.contains(r#""client.id":"me""#), "{shown}");
        assert!(
            shown.contains(r#""aws_endpoint":"http://minio:9000""#),
            "{shown}"
        );
        assert!(shown.contains(r#""password":"<redacted>""#), "{shown}");
        // Unset stays visibly unset.
        let empty: Conf =
            serde_json::from_str(r#"{"password": "", "token": null, "options": {}}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&empty).unwrap(),
            r#"{"password":"","token":null,"options":{}}"#
        );
    }
}
