//! A real OpenLDAP `slapd` for tests: its own CA and server certificate, LDAP (StartTLS) and
//! LDAPS on free loopback ports, the memberOf overlay, ACLs that hide everything from
//! anonymous clients (so the service bind is needed), and a generated clinic directory.
//! It is killed when the value is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings};
use supervisor::auth::directory::{DirectoryConfig, RoleGroup};
use supervisor::auth::Role;

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const SUFFIX: &str = "dc=clinic,dc=test";
pub const ROOT_DN: &str = "cn=admin,dc=clinic,dc=test";
const ROOT_PW: &str = "root-secret";
pub const SERVICE_DN: &str = "cn=phibox,ou=services,dc=clinic,dc=test";
pub const SERVICE_PW: &str = "service-secret";
pub const ACCESS_GROUP: &str = "cn=phibox-users,ou=groups,dc=clinic,dc=test";
pub const CLINICIANS: &str = "cn=clinicians,ou=groups,dc=clinic,dc=test";
pub const PRIVACY: &str = "cn=privacy,ou=groups,dc=clinic,dc=test";

/// A person in the generated directory.
#[derive(Debug, Clone, Copy)]
pub struct Person {
    pub uid: &'static str,
    pub name: &'static str,
    pub department: &'static str,
    pub password: &'static str,
    pub groups: &'static [&'static str],
}

/// alice: clinician; carol: privacy officer; bob: not in the access group; dave: in the
/// access group but in no role group; "al*" exists only to show `*` stays literal.
pub const PEOPLE: &[Person] = &[
    Person {
        uid: "alice",
        name: "Dr Alice Adams",
        department: "cardiology",
        password: "alice pw 1",
        groups: &[ACCESS_GROUP, CLINICIANS],
    },
    Person {
        uid: "bob",
        name: "Bob Brown",
        department: "radiology",
        password: "bob pw 2",
        groups: &[CLINICIANS],
    },
    Person {
        uid: "carol",
        name: "Carol Chen",
        department: "compliance",
        password: "carol pw 3",
        groups: &[ACCESS_GROUP, PRIVACY],
    },
    Person {
        uid: "dave",
        name: "Dave Diaz",
        department: "billing",
        password: "dave pw 4",
        groups: &[ACCESS_GROUP],
    },
];

/// An entry's attributes, as ldap3's `add` takes them.
type Entry = Vec<(&'static str, std::collections::HashSet<String>)>;

pub fn person(uid: &str) -> Person {
    *PEOPLE
        .iter()
        .find(|p| p.uid == uid)
        .expect("a generated person")
}

#[derive(Debug)]
pub struct Slapd {
    child: Child,
    pub dir: PathBuf,
    /// `ldap://127.0.0.1:PORT` (use with StartTLS).
    pub ldap_url: String,
    /// `ldaps://127.0.0.1:PORT`.
    pub ldaps_url: String,
    /// The test CA (PEM) that signed slapd's certificate.
    pub ca_file: PathBuf,
    /// The service account's password file (0600).
    pub password_file: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a server certificate for 127.0.0.1 / localhost, written into `dir`.
fn certificates(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "phibox test directory CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "ldap.clinic.test");
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    ca_file
}

impl Slapd {
    /// Starts slapd in `dir` and fills the directory. Fails loudly where slapd is missing.
    pub async fn start(dir: &Path) -> Slapd {
        assert!(
            Path::new(SLAPD).exists(),
            "{SLAPD} is missing: the directory tests need OpenLDAP's slapd \
             (./scripts/test.sh installs the Debian package slapd)"
        );
        let ca_file = certificates(dir);
        let db = dir.join("db");
        std::fs::create_dir_all(&db).unwrap();
        let conf = dir.join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {dir}/slapd.pid
TLSCACertificateFile {dir}/ca.pem
TLSCertificateFile {dir}/server.pem
TLSCertificateKeyFile {dir}/server.key
database mdb
maxsize 10485760
suffix \"{SUFFIX}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PW}
directory {db}
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
overlay memberof
",
                dir = dir.display(),
                db = db.display()
            ),
        )
        .unwrap();
        let (ldap_port, ldaps_port) = (free_port(), free_port());
        let ldap_url = format!("ldap://127.0.0.1:{ldap_port}");
        let ldaps_url = format!("ldaps://127.0.0.1:{ldaps_port}");
        let child = Command::new(SLAPD)
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(format!("{ldap_url}/ {ldaps_url}/"))
            // Foreground, logging connections and operations (binds, searches) to its log.
            .args(["-d", "stats"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("slapd.log")).unwrap())
            .spawn()
            .expect("starting slapd");
        let password_file = dir.join("service-password");
        std::fs::write(&password_file, format!("{SERVICE_PW}\n")).unwrap();
        std::fs::set_permissions(
            &password_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let slapd = Slapd {
            child,
            dir: dir.to_path_buf(),
            ldap_url,
            ldaps_url,
            ca_file,
            password_file,
        };
        slapd.populate().await;
        slapd
    }

    /// Adds the organisation, the service account, the people and the groups as the root DN
    /// (the memberOf overlay then gives each person its `memberOf` values).
    async fn populate(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut ldap = loop {
            match LdapConnAsync::with_settings(
                LdapConnSettings::new().set_conn_timeout(Duration::from_secs(2)),
                &self.ldap_url,
            )
            .await
            {
                Ok((conn, ldap)) => {
                    ldap3::drive!(conn);
                    break ldap;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "slapd did not start: {e}; log: {}",
                        std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        ldap.simple_bind(ROOT_DN, ROOT_PW)
            .await
            .unwrap()
            .success()
            .unwrap();
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<std::collections::HashSet<_>>()
        };
        let mut entries: Vec<(String, Entry)> = vec![(
            SUFFIX.to_owned(),
            vec![
                ("objectClass", set(&["dcObject", "organization"])),
                ("o", set(&["Test Clinic"])),
                ("dc", set(&["clinic"])),
            ],
        )];
        for ou in ["people", "groups", "services"] {
            entries.push((
                format!("ou={ou},{SUFFIX}"),
                vec![
                    ("objectClass", set(&["organizationalUnit"])),
                    ("ou", set(&[ou])),
                ],
            ));
        }
        entries.push((
            SERVICE_DN.to_owned(),
            vec![
                ("objectClass", set(&["person"])),
                ("cn", set(&["phibox"])),
                ("sn", set(&["service"])),
                ("userPassword", set(&[SERVICE_PW])),
            ],
        ));
        // "al*": a real entry whose uid holds a star, to show the star is not a wildcard.
        let mut all: Vec<Person> = PEOPLE.to_vec();
        all.push(Person {
            uid: "al*",
            name: "Star Entry",
            department: "none",
            password: "star pw",
            groups: &[ACCESS_GROUP, CLINICIANS],
        });
        for p in &all {
            entries.push((
                format!("uid={},ou=people,{SUFFIX}", ldap3::dn_escape(p.uid)),
                vec![
                    ("objectClass", set(&["inetOrgPerson"])),
                    ("uid", set(&[p.uid])),
                    ("cn", set(&[p.name])),
                    ("sn", set(&[p.name.rsplit(' ').next().unwrap()])),
                    ("displayName", set(&[p.name])),
                    ("departmentNumber", set(&[p.department])),
                    ("userPassword", set(&[p.password])),
                ],
            ));
        }
        for group in [ACCESS_GROUP, CLINICIANS, PRIVACY] {
            let members: Vec<String> = all
                .iter()
                .filter(|p| p.groups.contains(&group))
                .map(|p| format!("uid={},ou=people,{SUFFIX}", ldap3::dn_escape(p.uid)))
                .collect();
            let cn = group.split(',').next().unwrap().trim_start_matches("cn=");
            entries.push((
                group.to_owned(),
                vec![
                    ("objectClass", set(&["groupOfNames"])),
                    ("cn", set(&[cn])),
                    ("member", members.into_iter().collect()),
                ],
            ));
        }
        for (dn, attrs) in entries {
            let attrs = attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            ldap.add(&dn, attrs)
                .await
                .unwrap()
                .success()
                .unwrap_or_else(|e| panic!("adding {dn}: {e}"));
        }
        let _ = ldap.unbind().await;
    }

    /// A configuration for this directory: LDAPS with the test CA, uid/displayName/
    /// departmentNumber, clinicians and privacy officers mapped.
    pub fn config(&self) -> DirectoryConfig {
        DirectoryConfig {
            url: self.ldaps_url.clone(),
            starttls: false,
            ca_file: Some(self.ca_file.clone()),
            allow_plaintext: false,
            bind_dn: SERVICE_DN.to_owned(),
            bind_password_file: self.password_file.clone(),
            base_dn: format!("ou=people,{SUFFIX}"),
            user_filter: "(&(objectClass=inetOrgPerson)(uid={user}))".to_owned(),
            access_group: ACCESS_GROUP.to_owned(),
            nested_groups: false,
            id_attribute: "uid".to_owned(),
            name_attribute: "displayName".to_owned(),
            department_attribute: Some("departmentNumber".to_owned()),
            timeout_secs: 3,
            roles: vec![
                RoleGroup {
                    group: CLINICIANS.to_owned(),
                    role: Role::Clinician,
                },
                RoleGroup {
                    group: PRIVACY.to_owned(),
                    role: Role::PrivacyOfficer,
                },
            ],
        }
    }

    /// slapd's log at `stats` level: every connection, bind and search.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
