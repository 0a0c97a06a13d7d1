//! Which account source checks a sign-in: the named break-glass accounts first (they must
//! work when the directory does not), then the clinic's directory, or dev mode's local users
//! where no directory is configured.

use super::directory::Directory;
use super::local::LocalUsers;
use super::{Identity, Refusal};

/// Where an identity came from (recorded as the sign-in's `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Directory,
    Local,
    BreakGlass,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Directory => "directory",
            Method::Local => "local",
            Method::BreakGlass => "break_glass",
        }
    }
}

/// The account sources of one box.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// The clinic's directory (the normal way on the appliance).
    pub directory: Option<Directory>,
    /// Dev mode's users; consulted only when no directory is configured.
    pub local: Option<LocalUsers>,
    /// Named emergency accounts, checked before the directory whatever its state. Their
    /// names should not be directory names (the emergency account wins).
    pub break_glass: Option<LocalUsers>,
}

impl Accounts {
    /// Checks a user name and password against the right source. Empty passwords are refused
    /// before any source is asked.
    pub async fn sign_in(&self, user: &str, password: &str) -> (Method, Result<Identity, Refusal>) {
        if password.is_empty() {
            let method = match (&self.break_glass, &self.directory) {
                (Some(bg), _) if bg.contains(user) => Method::BreakGlass,
                (_, Some(_)) => Method::Directory,
                _ => Method::Local,
            };
            return (method, Err(Refusal::EmptyPassword));
        }
        if let Some(bg) = self.break_glass.as_ref().filter(|bg| bg.contains(user)) {
            return (Method::BreakGlass, verify_local(bg, user, password).await);
        }
        if let Some(d) = &self.directory {
            return (Method::Directory, d.authenticate(user, password).await);
        }
        match &self.local {
            Some(l) => (Method::Local, verify_local(l, user, password).await),
            None => (Method::Local, Err(Refusal::BadCredentials)),
        }
    }
}

/// argon2id off the async threads.
async fn verify_local(users: &LocalUsers, user: &str, password: &str) -> Result<Identity, Refusal> {
    let users = users.clone();
    let (u, p) = (
        user.to_owned(),
        zeroize::Zeroizing::new(password.to_owned()),
    );
    tokio::task::spawn_blocking(move || users.verify(&u, &p))
        .await
        .unwrap_or(Err(Refusal::BadCredentials))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::local::{hash_password, LocalUser};
    use crate::auth::Role;

    fn users(id: &str, pw: &str, break_glass: bool) -> LocalUsers {
        LocalUsers::new(
            vec![LocalUser {
                id: id.into(),
                name: id.into(),
                department: None,
                role: Role::Clinician,
                password_hash: hash_password(pw).unwrap(),
            }],
            break_glass,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn break_glass_accounts_come_first_and_empty_passwords_never_reach_a_source() {
        let a = Accounts {
            directory: None,
            local: Some(users("alice", "pw-a", false)),
            break_glass: Some(users("emergency-1", "pw-e", true)),
        };
        let (m, r) = a.sign_in("emergency-1", "pw-e").await;
        assert_eq!(m, Method::BreakGlass);
        assert!(r.unwrap().break_glass);
        let (m, r) = a.sign_in("alice", "pw-a").await;
        assert_eq!(m, Method::Local);
        assert!(!r.unwrap().break_glass);
        assert_eq!(
            a.sign_in("emergency-1", "").await,
            (Method::BreakGlass, Err(Refusal::EmptyPassword))
        );
        assert_eq!(
            a.sign_in("emergency-1", "pw-a").await.1,
            Err(Refusal::BadCredentials)
        );
        let none = Accounts::default();
        assert_eq!(
            none.sign_in("alice", "pw-a").await.1,
            Err(Refusal::BadCredentials)
        );
    }
}
