//! Local accounts with argon2id password hashes, from a TOML file:
//!
//! ```toml
//! [[user]]
//! id = "clinician"
//! name = "Dev Clinician"
//! department = "internal_medicine"
//! role = "clinician"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$…"
//! ```
//!
//! Dev mode signs in with these instead of the directory; on the appliance the same format
//! holds the named break-glass accounts.

use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

use super::{Identity, Refusal, Role};

#[derive(Debug, thiserror::Error)]
pub enum LocalUsersError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: user {id:?}: {reason}")]
    Invalid {
        path: PathBuf,
        id: String,
        reason: &'static str,
    },
    #[error("hashing a password: {0}")]
    Hash(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUser {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub department: Option<String>,
    pub role: Role,
    pub password_hash: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    user: Vec<LocalUser>,
}

/// The accounts of one file.
#[derive(Debug, Clone)]
pub struct LocalUsers {
    users: Vec<LocalUser>,
    /// Verified against when the user is unknown, so that both cases take the same time.
    decoy: String,
    break_glass: bool,
}

/// An argon2id hash (PHC string) of a password, with a random salt.
pub fn hash_password(password: &str) -> Result<String, LocalUsersError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| LocalUsersError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| LocalUsersError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| LocalUsersError::Hash(e.to_string()))
}

impl LocalUsers {
    pub fn new(users: Vec<LocalUser>, break_glass: bool) -> Result<LocalUsers, LocalUsersError> {
        Ok(LocalUsers {
            users,
            decoy: hash_password("decoy password that never matches")?,
            break_glass,
        })
    }

    /// Reads and checks a users file (every hash must be argon2id).
    pub fn load(path: &Path, break_glass: bool) -> Result<LocalUsers, LocalUsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| LocalUsersError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|e| LocalUsersError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        for u in &file.user {
            let invalid = |reason| LocalUsersError::Invalid {
                path: path.to_path_buf(),
                id: u.id.clone(),
                reason,
            };
            if u.id.is_empty() || u.id.len() > 64 || u.id.chars().any(char::is_whitespace) {
                return Err(invalid("the id must be 1 to 64 characters without spaces"));
            }
            let hash = PasswordHash::new(&u.password_hash)
                .map_err(|_| invalid("password_hash is not a PHC hash string"))?;
            if hash.algorithm.as_str() != "argon2id" {
                return Err(invalid("password_hash must be argon2id"));
            }
            if file.user.iter().filter(|v| v.id == u.id).count() > 1 {
                return Err(invalid("the id appears twice"));
            }
        }
        LocalUsers::new(file.user, break_glass)
    }

    /// Writes users to a file (mode 0600).
    pub fn save(users: &[LocalUser], path: &Path) -> Result<(), LocalUsersError> {
        let text = toml::to_string(&File {
            user: users.to_vec(),
        })
        .map_err(|e| LocalUsersError::Hash(e.to_string()))?;
        crate::audit::keys::write_secret(path, text.as_bytes())
            .map_err(|e| LocalUsersError::Hash(e.to_string()))
    }

    /// Whether an account of that name exists.
    pub fn contains(&self, id: &str) -> bool {
        self.users.iter().any(|u| u.id == id)
    }

    /// Checks a user name and password. Empty passwords are refused before any hashing.
    pub fn verify(&self, id: &str, password: &str) -> Result<Identity, Refusal> {
        if password.is_empty() {
            return Err(Refusal::EmptyPassword);
        }
        let user = self.users.iter().find(|u| u.id == id);
        let hash = user.map_or(self.decoy.as_str(), |u| u.password_hash.as_str());
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        match user {
            Some(u) if ok => Ok(Identity {
                user_id: u.id.clone(),
                display_name: u.name.clone(),
                department: u.department.clone(),
                role: u.role,
                break_glass: self.break_glass,
            }),
            _ => Err(Refusal::BadCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> LocalUsers {
        LocalUsers::new(
            vec![LocalUser {
                id: "jsmith".into(),
                name: "J. Smith".into(),
                department: Some("nursing".into()),
                role: Role::Nurse,
                password_hash: hash_password("correct horse").unwrap(),
            }],
            false,
        )
        .unwrap()
    }

    #[test]
    fn right_wrong_unknown_and_empty() {
        let u = users();
        assert_eq!(
            u.verify("jsmith", "correct horse").unwrap().role,
            Role::Nurse
        );
        assert_eq!(u.verify("jsmith", "wrong"), Err(Refusal::BadCredentials));
        assert_eq!(
            u.verify("nobody", "correct horse"),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(u.verify("jsmith", ""), Err(Refusal::EmptyPassword));
    }

    #[test]
    fn files_round_trip_and_weak_hashes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.toml");
        let u = users();
        LocalUsers::save(&u.users, &p).unwrap();
        let back = LocalUsers::load(&p, true).unwrap();
        assert!(back.verify("jsmith", "correct horse").unwrap().break_glass);
        std::fs::write(
            &p,
            "[[user]]\nid = \"x\"\nname = \"X\"\nrole = \"admin\"\npassword_hash = \"$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA\"\n",
        )
        .unwrap();
        let e = LocalUsers::load(&p, false).unwrap_err().to_string();
        assert!(e.contains("argon2id"), "{e}");
    }
}
