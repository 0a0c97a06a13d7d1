//! Sign-in against the clinic's directory (OpenLDAP or Active Directory) with ldap3:
//!
//! 1. an empty password is refused before anything is sent (a directory that allows
//!    unauthenticated binds, as AD does, would call it a success);
//! 2. TLS (LDAPS or StartTLS) against the configured CA only; plain LDAP only with an explicit
//!    flag, and only in dev mode;
//! 3. a bind as the service account (password from a file of its own);
//! 4. the user is looked up with the configured filter, the typed name escaped
//!    ([`ldap3::ldap_escape`]) so that `*`, `(`, `)`, `\` and NUL stay literal;
//! 5. the entry must be in the access group (its `memberOf`, or with `nested_groups` AD's
//!    in-chain matching rule, so that members of nested groups count) and in one of the role
//!    groups (the first that matches, in configuration order);
//! 6. only then is it bound with the user's own password, by the DN the search returned.
//!
//! Every step has a deadline; an unreachable or misbehaving directory is a refusal, never a
//! hang and never a sign-in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{Identity, Refusal, Role};

/// Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: membership through nested groups.
pub const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// `[directory]` in phiboxd's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `starttls = true`.
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    /// The CA (PEM) that signed the directory's certificate. Required for TLS.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Plain, unencrypted LDAP. Refused outside dev mode.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// The service account that looks users up.
    pub bind_dn: String,
    /// A file holding the service account's password (mode 0600 or stricter).
    pub bind_password_file: PathBuf,
    /// Where users are searched (subtree).
    pub base_dn: String,
    /// The search filter; `{user}` stands for the typed user name, escaped.
    #[serde(default = "default_filter")]
    pub user_filter: String,
    /// Members of this group may sign in at all.
    pub access_group: String,
    /// Count members of nested groups (AD's in-chain matching rule).
    #[serde(default)]
    pub nested_groups: bool,
    /// The attribute recorded as the user's id.
    #[serde(default = "default_id_attribute")]
    pub id_attribute: String,
    #[serde(default = "default_name_attribute")]
    pub name_attribute: String,
    #[serde(default)]
    pub department_attribute: Option<String>,
    /// Seconds each directory operation may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Group → role, first match wins.
    #[serde(default, rename = "role")]
    pub roles: Vec<RoleGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleGroup {
    pub group: String,
    pub role: Role,
}

fn default_filter() -> String {
    "(&(objectClass=person)(uid={user}))".to_owned()
}
fn default_id_attribute() -> String {
    "uid".to_owned()
}
fn default_name_attribute() -> String {
    "displayName".to_owned()
}
fn default_timeout() -> u64 {
    5
}

/// Whether a filter template's parentheses balance (outside `\` escapes).
fn balanced(filter: &str) -> bool {
    let mut depth = 0i32;
    let mut chars = filter.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

impl DirectoryConfig {
    /// Whether passwords travel encrypted: LDAPS, or StartTLS on an ldap:// URL.
    pub fn uses_tls(&self) -> bool {
        self.url.starts_with("ldaps://") || self.starttls
    }

    /// Checks what can be checked without the files: the key that is wrong and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let plain = self.url.starts_with("ldap://");
        if !plain && !self.url.starts_with("ldaps://") {
            return Err((
                "directory.url",
                format!("must start with ldaps:// or ldap://, not {:?}", self.url),
            ));
        }
        if !plain && self.starttls {
            return Err((
                "directory.starttls",
                "StartTLS applies to ldap:// URLs; ldaps:// is TLS already".into(),
            ));
        }
        let tls = self.uses_tls();
        if tls && self.ca_file.is_none() {
            return Err((
                "directory.ca_file",
                "TLS to the directory needs the CA that signed its certificate".into(),
            ));
        }
        if !tls && !self.allow_plaintext {
            return Err((
                "directory.url",
                "plain ldap:// sends passwords unencrypted; use ldaps://, starttls = true, or \
                 (dev only) allow_plaintext = true"
                    .into(),
            ));
        }
        if self.user_filter.matches("{user}").count() != 1
            || !self.user_filter.starts_with('(')
            || !balanced(&self.user_filter)
        {
            return Err((
                "directory.user_filter",
                "must be a parenthesised filter containing {user} exactly once".into(),
            ));
        }
        for (key, v) in [
            ("directory.bind_dn", &self.bind_dn),
            ("directory.base_dn", &self.base_dn),
            ("directory.access_group", &self.access_group),
            ("directory.id_attribute", &self.id_attribute),
            ("directory.name_attribute", &self.name_attribute),
        ] {
            if v.trim().is_empty() {
                return Err((key, "must not be empty".into()));
            }
        }
        if self.roles.is_empty() {
            return Err((
                "directory.role",
                "map at least one group to a role ([[directory.role]] group, role)".into(),
            ));
        }
        if !(1..=60).contains(&self.timeout_secs) {
            return Err((
                "directory.timeout_secs",
                format!("must be 1 to 60, not {}", self.timeout_secs),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory configuration: {key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is readable by others (mode {mode:o}); it must be 0600 or stricter")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path}: no certificate in it")]
    NoCa { path: PathBuf },
    #[error("{path}: {reason}")]
    Ca { path: PathBuf, reason: String },
}

/// Why a directory step failed: for the operational log (never shown to the user).
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error("{step}: {source}")]
    Ldap {
        step: &'static str,
        #[source]
        source: Box<ldap3::LdapError>,
    },
    #[error("{step}: result code {rc} ({text})")]
    Code {
        step: &'static str,
        rc: u32,
        text: String,
    },
    #[error("the entry has no single {0} attribute")]
    Attribute(String),
}

fn at(step: &'static str) -> impl FnOnce(ldap3::LdapError) -> Fault {
    move |source| Fault::Ldap {
        step,
        source: Box::new(source),
    }
}

/// A configured directory, ready to sign users in. Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    config: DirectoryConfig,
    bind_password: Zeroizing<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("url", &self.inner.config.url)
            .finish_non_exhaustive()
    }
}

/// Reads a secret file that only its owner may read.
fn read_secret(path: &Path) -> Result<Zeroizing<String>, DirectoryError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| DirectoryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DirectoryError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read)?);
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// TLS 1.2/1.3 with ring, trusting only the configured CA.
fn client_tls(ca: &Path) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    let err = |reason: String| DirectoryError::Ca {
        path: ca.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(DirectoryError::NoCa {
            path: ca.to_path_buf(),
        });
    }
    for c in certs {
        roots.add(c).map_err(|e| err(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
    .map_err(|e| err(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A DN compared the way directories do in practice: case and spaces after separators
/// do not matter.
fn same_dn(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split(',')
            .map(|rdn| {
                rdn.split('=')
                    .map(|p| p.trim().to_lowercase())
                    .collect::<Vec<_>>()
                    .join("=")
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    norm(a) == norm(b)
}

impl Directory {
    /// Reads the service password and the CA. `dev` allows `allow_plaintext`.
    pub fn new(config: DirectoryConfig, dev: bool) -> Result<Directory, DirectoryError> {
        config
            .validate()
            .map_err(|(key, reason)| DirectoryError::Config { key, reason })?;
        if !config.uses_tls() && !dev {
            return Err(DirectoryError::Config {
                key: "directory.allow_plaintext",
                reason: "plain LDAP is for development only; the appliance refuses it".into(),
            });
        }
        let tls = match (&config.ca_file, config.uses_tls()) {
            (Some(ca), true) => Some(client_tls(ca)?),
            _ => None,
        };
        let bind_password = read_secret(&config.bind_password_file)?;
        Ok(Directory {
            inner: Arc::new(Inner {
                config,
                bind_password,
                tls,
            }),
        })
    }

    pub fn config(&self) -> &DirectoryConfig {
        &self.inner.config
    }

    /// The search filter for a typed user name: the value is escaped, so whatever it holds
    /// stays one literal value.
    pub fn user_filter(&self, user: &str) -> String {
        self.inner
            .config
            .user_filter
            .replace("{user}", &ldap3::ldap_escape(user))
    }

    /// The filter that asks, on the user's entry, for membership through nested groups.
    pub fn in_chain_filter(group: &str) -> String {
        format!("(memberOf:{IN_CHAIN}:={})", ldap3::ldap_escape(group))
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.inner.config.timeout_secs)
    }

    /// Signs `user` in: the identity, or why not.
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<Identity, Refusal> {
        if password.is_empty() {
            return Err(Refusal::EmptyPassword);
        }
        if user.is_empty() {
            return Err(Refusal::UnknownUser);
        }
        let this = self.clone();
        let (user, password) = (user.to_owned(), Zeroizing::new(password.to_owned()));
        // Its own task: ldap3 panics on some malformed replies, which must not take the web
        // server's task with it. The whole exchange has one deadline on top of each step's.
        let task = tokio::spawn(async move { this.exchange(&user, &password).await });
        let overall = self.timeout() * 4;
        match tokio::time::timeout(overall, task).await {
            Ok(Ok(Ok(outcome))) => outcome,
            Ok(Ok(Err(fault))) => {
                tracing::warn!(url = %self.inner.config.url, error = %sandbox::error_chain::chain(&fault), "directory sign-in failed");
                Err(match fault {
                    Fault::Attribute(_) => Refusal::DirectoryError,
                    _ => Refusal::DirectoryUnavailable,
                })
            }
            Ok(Err(_panic)) => {
                tracing::warn!(url = %self.inner.config.url, "directory client failed on a reply");
                Err(Refusal::DirectoryError)
            }
            Err(_) => {
                tracing::warn!(url = %self.inner.config.url, "the directory did not answer in time");
                Err(Refusal::DirectoryUnavailable)
            }
        }
    }

    /// The conversation with the directory. `Ok(Err(_))` is a refusal of the user; `Err` a
    /// fault of the directory or the network.
    async fn exchange(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Result<Identity, Refusal>, Fault> {
        let c = &self.inner.config;
        let t = self.timeout();
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(t)
            .set_starttls(c.starttls);
        if let Some(tls) = &self.inner.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &c.url)
            .await
            .map_err(at("connect"))?;
        ldap3::drive!(conn);

        let service = ldap
            .with_timeout(t)
            .simple_bind(&c.bind_dn, &self.inner.bind_password)
            .await
            .map_err(at("service bind"))?;
        if service.rc != 0 {
            return Err(Fault::Code {
                step: "service bind",
                rc: service.rc,
                text: service.text,
            });
        }

        let mut attrs = vec![
            c.id_attribute.as_str(),
            c.name_attribute.as_str(),
            "memberOf",
        ];
        if let Some(d) = &c.department_attribute {
            attrs.push(d);
        }
        let found = ldap
            .with_timeout(t)
            .with_search_options(SearchOptions::new().sizelimit(2))
            .search(&c.base_dn, Scope::Subtree, &self.user_filter(user), attrs)
            .await
            .map_err(at("user search"))?;
        let (entries, result) = (found.0, found.1);
        match result.rc {
            0 => {}
            // sizeLimitExceeded: more than one entry for the name.
            4 => return Ok(Err(Refusal::AmbiguousUser)),
            rc => {
                return Err(Fault::Code {
                    step: "user search",
                    rc,
                    text: result.text,
                })
            }
        }
        let entry = match entries.len() {
            0 => return Ok(Err(Refusal::UnknownUser)),
            1 => SearchEntry::construct(entries.into_iter().next().expect("one entry")),
            _ => return Ok(Err(Refusal::AmbiguousUser)),
        };

        if !self.member_of(&mut ldap, &entry, &c.access_group).await? {
            return Ok(Err(Refusal::NotInGroup));
        }
        let mut role = None;
        for rg in &c.roles {
            if self.member_of(&mut ldap, &entry, &rg.group).await? {
                role = Some(rg.role);
                break;
            }
        }
        let Some(role) = role else {
            return Ok(Err(Refusal::NoRole));
        };

        let single = |attr: &str| -> Result<String, Fault> {
            match entry.attrs.get(attr).map(Vec::as_slice) {
                Some([v]) if !v.is_empty() => Ok(v.clone()),
                _ => Err(Fault::Attribute(attr.to_owned())),
            }
        };
        let user_id = single(&c.id_attribute)?;
        let display_name = single(&c.name_attribute).unwrap_or_else(|_| user_id.clone());
        let department = c
            .department_attribute
            .as_deref()
            .and_then(|d| single(d).ok());

        let own = ldap
            .with_timeout(t)
            .simple_bind(&entry.dn, password)
            .await
            .map_err(at("user bind"))?;
        let _ = ldap.unbind().await;
        match own.rc {
            0 => Ok(Ok(Identity {
                user_id,
                display_name,
                department,
                role,
                break_glass: false,
            })),
            // invalidCredentials
            49 => Ok(Err(Refusal::BadPassword)),
            rc => Err(Fault::Code {
                step: "user bind",
                rc,
                text: own.text,
            }),
        }
    }

    /// Whether the entry is in `group`: its `memberOf` values, or AD's in-chain rule.
    async fn member_of(
        &self,
        ldap: &mut ldap3::Ldap,
        entry: &SearchEntry,
        group: &str,
    ) -> Result<bool, Fault> {
        if !self.inner.config.nested_groups {
            return Ok(entry
                .attrs
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("memberOf"))
                .flat_map(|(_, v)| v)
                .any(|g| same_dn(g, group)));
        }
        let found = ldap
            .with_timeout(self.timeout())
            .search(
                &entry.dn,
                Scope::Base,
                &Self::in_chain_filter(group),
                vec!["1.1"],
            )
            .await
            .map_err(at("group search"))?;
        match found.1.rc {
            0 => Ok(!found.0.is_empty()),
            rc => Err(Fault::Code {
                step: "group search",
                rc,
                text: found.1.text,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DirectoryConfig {
        DirectoryConfig {
            url: "ldaps://dc1.clinic.test".into(),
            starttls: false,
            ca_file: Some("/etc/phibox/ca.pem".into()),
            allow_plaintext: false,
            bind_dn: "cn=phibox,dc=clinic,dc=test".into(),
            bind_password_file: "/nonexistent".into(),
            base_dn: "dc=clinic,dc=test".into(),
            user_filter: default_filter(),
            access_group: "cn=phibox,dc=clinic,dc=test".into(),
            nested_groups: false,
            id_attribute: "uid".into(),
            name_attribute: "displayName".into(),
            department_attribute: None,
            timeout_secs: 5,
            roles: vec![RoleGroup {
                group: "cn=clinicians,dc=clinic,dc=test".into(),
                role: Role::Clinician,
            }],
        }
    }

    fn key_of(c: DirectoryConfig) -> &'static str {
        c.validate().unwrap_err().0
    }

    #[test]
    fn configuration_mistakes_name_their_key() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.url = "http://dc1".into();
        assert_eq!(key_of(c), "directory.url");
        let mut c = config();
        c.ca_file = None;
        assert_eq!(key_of(c), "directory.ca_file");
        let mut c = config();
        c.url = "ldap://dc1".into();
        assert_eq!(key_of(c), "directory.url");
        let mut c = config();
        c.url = "ldap://dc1".into();
        c.allow_plaintext = true;
        assert!(c.validate().is_ok());
        for f in [
            "(uid=x)",
            "uid={user}",
            "(uid={user}",
            "(|(uid={user})(cn={user}))",
        ] {
            let mut c = config();
            c.user_filter = f.into();
            assert_eq!(key_of(c), "directory.user_filter", "{f}");
        }
        let mut c = config();
        c.roles.clear();
        assert_eq!(key_of(c), "directory.role");
    }

    #[test]
    fn plaintext_is_refused_outside_dev_mode() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        crate::audit::keys::write_secret(&pw, b"secret\n").unwrap();
        let mut c = config();
        c.url = "ldap://127.0.0.1:1".into();
        c.ca_file = None;
        c.allow_plaintext = true;
        c.bind_password_file = pw;
        let e = Directory::new(c.clone(), false).unwrap_err().to_string();
        assert!(e.contains("directory.allow_plaintext"), "{e}");
        let d = Directory::new(c, true).unwrap();
        assert_eq!(&*d.inner.bind_password, "secret");
    }

    #[test]
    fn an_exposed_password_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = config();
        c.url = "ldap://127.0.0.1:1".into();
        c.allow_plaintext = true;
        c.bind_password_file = pw;
        let e = Directory::new(c, true).unwrap_err().to_string();
        assert!(e.contains("0600"), "{e}");
    }

    #[test]
    fn typed_names_cannot_change_the_filter() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        crate::audit::keys::write_secret(&pw, b"x").unwrap();
        let mut c = config();
        c.url = "ldap://127.0.0.1:1".into();
        c.allow_plaintext = true;
        c.bind_password_file = pw;
        let d = Directory::new(c, true).unwrap();
        assert_eq!(d.user_filter("alice"), "(&(objectClass=person)(uid=alice))");
        assert_eq!(d.user_filter("*"), "(&(objectClass=person)(uid=\\2a))");
        assert_eq!(
            d.user_filter("a)(uid=*"),
            "(&(objectClass=person)(uid=a\\29\\28uid=\\2a))"
        );
        assert_eq!(
            d.user_filter("a\\62"),
            "(&(objectClass=person)(uid=a\\5c62))"
        );
        assert_eq!(d.user_filter("a\0"), "(&(objectClass=person)(uid=a\\00))");
        assert_eq!(
            Directory::in_chain_filter("cn=a*b,dc=x"),
            "(memberOf:1.2.840.113556.1.4.1941:=cn=a\\2ab,dc=x)"
        );
    }

    #[test]
    fn dns_compare_without_case_or_spacing() {
        assert!(same_dn(
            "CN=Phibox, OU=Groups,DC=clinic",
            "cn=phibox,ou=groups,dc=clinic"
        ));
        assert!(!same_dn("cn=phibox2,dc=clinic", "cn=phibox,dc=clinic"));
    }
}
