//! phiboxd's TOML configuration: read once at start-up, every key checked; an invalid file stops
//! phiboxd with a message naming the key and the reason. Secrets never live here (they are
//! files of their own).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("configuration {path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub worker: WorkerSection,
    pub web: WebSection,
    /// The clinic's directory; without it only local accounts exist (dev mode).
    pub directory: Option<crate::auth::directory::DirectoryConfig>,
    pub auth: AuthSection,
    pub transcripts: TranscriptsSection,
    pub bundles: BundlesSection,
}

/// `[bundles]`: signed model bundles from USB sticks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundlesSection {
    /// The public keys bundles must be signed with. The appliance always uses the image's
    /// `/usr/share/phibox/trusted-keys`; dev mode defaults to `trusted-keys/` in the data
    /// directory.
    pub trusted_keys: Option<PathBuf>,
    /// Watch for USB sticks (always on in the appliance; off by default in dev mode, where the
    /// machine's own USB devices are not the box's).
    pub watch_usb: bool,
    /// The private directory sticks are mounted in.
    pub mount_dir: PathBuf,
    /// Seconds the probe may take to load a new model, and to generate its first tokens.
    pub probe_load_secs: u64,
    pub probe_generate_secs: u64,
}

impl Default for BundlesSection {
    fn default() -> Self {
        BundlesSection {
            trusted_keys: None,
            watch_usb: false,
            mount_dir: PathBuf::from("/run/phibox/usb"),
            probe_load_secs: 300,
            probe_generate_secs: 120,
        }
    }
}

/// `[transcripts]`: conversations kept for investigations.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscriptsSection {
    /// Days a conversation is kept; older ones are deleted (checked hourly).
    pub retention_days: u32,
}

impl Default for TranscriptsSection {
    fn default() -> Self {
        TranscriptsSection { retention_days: 90 }
    }
}

/// `[auth]`: accounts that are not in the directory.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// The named break-glass (emergency access) accounts, argon2id hashes (TOML, mode 0600).
    /// Default: `secrets/break-glass.toml` in the data directory.
    pub break_glass_file: Option<PathBuf>,
}

/// `[web]`: where the web UI listens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// HTTPS address; default 0.0.0.0:443 on the appliance, 127.0.0.1:8443 in dev mode.
    pub https: Option<std::net::SocketAddr>,
    /// The redirect-only HTTP address; default 0.0.0.0:80, 127.0.0.1:8080 in dev mode.
    pub http: Option<std::net::SocketAddr>,
    /// Whether to answer plain HTTP with redirects at all.
    pub redirect: bool,
    /// Sessions end after this many minutes without activity (HIPAA automatic logoff).
    pub idle_timeout_mins: u32,
    /// Needed for an idle timeout above 15 minutes; shown on the compliance page.
    pub allow_long_idle_timeout: bool,
}

impl Default for WebSection {
    fn default() -> Self {
        WebSection {
            https: None,
            http: None,
            redirect: true,
            idle_timeout_mins: 15,
            allow_long_idle_timeout: false,
        }
    }
}

impl WebSection {
    /// The HTTPS address for the mode.
    pub fn https_addr(&self, dev: bool) -> std::net::SocketAddr {
        self.https.unwrap_or(if dev {
            std::net::SocketAddr::from(([127, 0, 0, 1], 8443))
        } else {
            std::net::SocketAddr::from(([0, 0, 0, 0], 443))
        })
    }

    /// The redirect address for the mode, if redirects are on.
    pub fn http_addr(&self, dev: bool) -> Option<std::net::SocketAddr> {
        self.redirect.then(|| {
            self.http.unwrap_or(if dev {
                std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
            } else {
                std::net::SocketAddr::from(([0, 0, 0, 0], 80))
            })
        })
    }
}

/// `[worker]`: the confined inference worker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// The GGUF model served (on the appliance: inside the model store).
    pub model: Option<PathBuf>,
    /// Requests decoded together (continuous batching).
    pub slots: u32,
    /// KV cells per request (prompt + reply); 0 = 2048 capped by the model.
    pub context: u32,
    /// CPU threads; 0 = all.
    pub threads: u32,
    /// The worker's nice value (0–19): above 0 the supervisor (web UI, audit trail) is served
    /// first when inference keeps every core busy.
    pub nice: i32,
    /// Upper bound on a request's reply length, in tokens.
    pub max_tokens: u32,
    /// Requests waiting for a slot inside the worker.
    pub queue: u32,
    /// The unprivileged account the worker runs as.
    pub uid: u32,
    pub gid: u32,
    /// How long loading the model may take.
    pub ready_timeout_secs: u64,
    /// Restart back-off after a crash: first delay, doubling up to the maximum.
    pub restart_initial_ms: u64,
    pub restart_max_secs: u64,
    /// On shutdown, how long in-flight generations may take to finish.
    pub shutdown_grace_secs: u64,
}

impl Default for WorkerSection {
    fn default() -> Self {
        WorkerSection {
            model: None,
            slots: 8,
            context: 2048,
            threads: 0,
            nice: 10,
            max_tokens: 2048,
            queue: 64,
            uid: 65534,
            gid: 65534,
            ready_timeout_secs: 120,
            restart_initial_ms: 500,
            restart_max_secs: 30,
            shutdown_grace_secs: 30,
        }
    }
}

impl WorkerSection {
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.ready_timeout_secs)
    }
    pub fn restart_initial(&self) -> Duration {
        Duration::from_millis(self.restart_initial_ms)
    }
    pub fn restart_max(&self) -> Duration {
        Duration::from_secs(self.restart_max_secs)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// `value` must lie in `lo..=hi`.
fn range(key: &'static str, value: u64, lo: u64, hi: u64) -> Result<(), (&'static str, String)> {
    check(
        (lo..=hi).contains(&value),
        key,
        format!("must be {lo} to {hi}, not {value}"),
    )
}

fn check(ok: bool, key: &'static str, reason: String) -> Result<(), (&'static str, String)> {
    if ok {
        Ok(())
    } else {
        Err((key, reason))
    }
}

impl Config {
    /// Parses and validates `text` (from `path`, used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        cfg.validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                reason,
            })?;
        Ok(cfg)
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let w = &self.worker;
        range("worker.slots", u64::from(w.slots), 1, 64)?;
        check(
            w.context == 0 || (64..=131_072).contains(&w.context),
            "worker.context",
            format!("must be 0 (automatic) or 64 to 131072, not {}", w.context),
        )?;
        check(
            w.threads <= 1024,
            "worker.threads",
            format!("must be at most 1024, not {}", w.threads),
        )?;
        check(
            (0..=19).contains(&w.nice),
            "worker.nice",
            format!("must be 0 to 19, not {}", w.nice),
        )?;
        range("worker.max_tokens", u64::from(w.max_tokens), 1, 32_768)?;
        range("worker.queue", u64::from(w.queue), 1, 4096)?;
        check(
            w.uid != 0,
            "worker.uid",
            "the worker must not run as root (0)".into(),
        )?;
        check(
            w.gid != 0,
            "worker.gid",
            "the worker must not run with group root (0)".into(),
        )?;
        range("worker.ready_timeout_secs", w.ready_timeout_secs, 1, 3600)?;
        range(
            "worker.restart_initial_ms",
            w.restart_initial_ms,
            10,
            60_000,
        )?;
        check(
            (1..=3600).contains(&w.restart_max_secs)
                && w.restart_max_secs * 1000 >= w.restart_initial_ms,
            "worker.restart_max_secs",
            format!(
                "must be 1 to 3600 and at least restart_initial_ms, not {}",
                w.restart_max_secs
            ),
        )?;
        check(
            w.shutdown_grace_secs <= 600,
            "worker.shutdown_grace_secs",
            format!("must be at most 600, not {}", w.shutdown_grace_secs),
        )?;
        range(
            "web.idle_timeout_mins",
            u64::from(self.web.idle_timeout_mins),
            1,
            240,
        )?;
        check(
            self.web.idle_timeout_mins <= 15 || self.web.allow_long_idle_timeout,
            "web.idle_timeout_mins",
            format!(
                "{} minutes is longer than the recommended 15; set web.allow_long_idle_timeout = true to accept that",
                self.web.idle_timeout_mins
            ),
        )?;
        if let (Some(a), Some(b)) = (self.web.https, self.web.http) {
            check(
                a != b || a.port() == 0,
                "web.http",
                format!("must differ from web.https ({a})"),
            )?;
        }
        if let Some(d) = &self.directory {
            d.validate()?;
        }
        range(
            "transcripts.retention_days",
            u64::from(self.transcripts.retention_days),
            1,
            3650,
        )?;
        if let Some(p) = &self.auth.break_glass_file {
            check(
                p.is_absolute(),
                "auth.break_glass_file",
                format!("must be an absolute path, not {}", p.display()),
            )?;
        }
        if let Some(m) = &w.model {
            check(
                m.is_absolute(),
                "worker.model",
                format!("must be an absolute path, not {}", m.display()),
            )?;
        }
        let b = &self.bundles;
        if let Some(k) = &b.trusted_keys {
            check(
                k.is_absolute(),
                "bundles.trusted_keys",
                format!("must be an absolute path, not {}", k.display()),
            )?;
        }
        check(
            b.mount_dir.is_absolute(),
            "bundles.mount_dir",
            format!("must be an absolute path, not {}", b.mount_dir.display()),
        )?;
        range("bundles.probe_load_secs", b.probe_load_secs, 1, 3600)?;
        range(
            "bundles.probe_generate_secs",
            b.probe_generate_secs,
            1,
            3600,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/phibox/phiboxd.toml"))
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn the_directory_section_is_read_and_checked() {
        let text = r#"
[directory]
url = "ldaps://dc1.clinic.test"
ca_file = "/etc/phibox/directory-ca.pem"
bind_dn = "cn=phibox,ou=services,dc=clinic,dc=test"
bind_password_file = "/var/lib/phibox/secrets/directory-password"
base_dn = "ou=people,dc=clinic,dc=test"
access_group = "cn=phibox,ou=groups,dc=clinic,dc=test"
department_attribute = "departmentNumber"
[[directory.role]]
group = "cn=clinicians,ou=groups,dc=clinic,dc=test"
role = "clinician"
[[directory.role]]
group = "cn=privacy,ou=groups,dc=clinic,dc=test"
role = "privacy_officer"
"#;
        let c = parse(text).unwrap();
        let d = c.directory.unwrap();
        assert_eq!(d.roles.len(), 2);
        assert_eq!(d.roles[1].role, crate::auth::Role::PrivacyOfficer);
        assert_eq!(d.id_attribute, "uid");
        let e = parse(&text.replace("ldaps://", "ldap://"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("directory.url") && e.contains("unencrypted"),
            "{e}"
        );
        let e = parse(&text.replace("role = \"clinician\"", "role = \"doctor\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("doctor"), "{e}");
        let e = parse("[auth]\nbreak_glass_file = \"bg.toml\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.break_glass_file"), "{e}");
    }

    #[test]
    fn web_addresses_are_read_and_checked() {
        let c = parse("[web]\nhttps = \"127.0.0.1:9443\"\nredirect = false\n").unwrap();
        assert_eq!(c.web.https_addr(true).port(), 9443);
        assert_eq!(c.web.http_addr(true), None);
        assert_eq!(Config::default().web.https_addr(false).port(), 443);
        assert_eq!(
            Config::default().web.http_addr(true).map(|a| a.port()),
            Some(8080)
        );
        let e = parse("[web]\nhttps = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("https"), "{e}");
        let e = parse("[web]\nhttps = \"0.0.0.0:443\"\nhttp = \"0.0.0.0:443\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("web.http: must differ"), "{e}");
        let e = parse("[web]\nidle_timeout_mins = 30\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("web.idle_timeout_mins") && e.contains("allow_long_idle_timeout"),
            "{e}"
        );
        let c = parse("[web]\nidle_timeout_mins = 30\nallow_long_idle_timeout = true\n").unwrap();
        assert_eq!(c.web.idle_timeout_mins, 30);
        assert!(parse("[web]\nidle_timeout_mins = 0\n").is_err());
    }

    #[test]
    fn values_are_read() {
        let c = parse("[worker]\nslots = 16\nmodel = \"/m/x.gguf\"\n").unwrap();
        assert_eq!(c.worker.slots, 16);
        assert_eq!(c.worker.model.as_deref(), Some(Path::new("/m/x.gguf")));
    }

    #[test]
    fn invalid_values_name_the_key_and_the_reason() {
        let cases = [
            (
                "[transcripts]\nretention_days = 0",
                "transcripts.retention_days: must be 1 to 3650, not 0",
            ),
            (
                "[worker]\nslots = 0",
                "worker.slots: must be 1 to 64, not 0",
            ),
            (
                "[worker]\nuid = 0",
                "worker.uid: the worker must not run as root",
            ),
            (
                "[worker]\nmodel = \"rel.gguf\"",
                "worker.model: must be an absolute path",
            ),
            (
                "[worker]\ncontext = 10",
                "worker.context: must be 0 (automatic) or 64",
            ),
            (
                "[bundles]\ntrusted_keys = \"keys\"",
                "bundles.trusted_keys: must be an absolute path",
            ),
            (
                "[bundles]\nprobe_load_secs = 0",
                "bundles.probe_load_secs: must be 1 to 3600, not 0",
            ),
        ];
        for (text, expected) in cases {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.contains(expected), "{text:?}: {msg}");
            assert!(
                msg.starts_with("configuration /etc/phibox/phiboxd.toml: "),
                "{msg}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let msg = parse("[worker]\nslotz = 4").unwrap_err().to_string();
        assert!(msg.contains("slotz"), "{msg}");
        let msg = parse("[worker]\nslots = \"four\"").unwrap_err().to_string();
        assert!(msg.contains("slots"), "{msg}");
        let msg = parse("[webui]\nport = 1").unwrap_err().to_string();
        assert!(msg.contains("webui"), "{msg}");
        let msg = parse("[web]\nport = 1").unwrap_err().to_string();
        assert!(msg.contains("port"), "{msg}");
    }
}
