//! Who may use the box: identities and roles, the clinic's directory (LDAP), local accounts
//! (dev mode's users and the break-glass accounts), and server-side sessions.

pub mod directory;
pub mod local;
pub mod session;
pub mod signin;
pub mod throttle;

use serde::{Deserialize, Serialize};

/// The roles the UI knows (their mapping from directory groups is configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Clinician,
    Nurse,
    Admin,
    PrivacyOfficer,
    Auditor,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Nurse => "nurse",
            Role::Admin => "admin",
            Role::PrivacyOfficer => "privacy_officer",
            Role::Auditor => "auditor",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Role::Clinician => "Clinician",
            Role::Nurse => "Nurse",
            Role::Admin => "Administrator",
            Role::PrivacyOfficer => "Privacy officer",
            Role::Auditor => "Auditor",
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub display_name: String,
    pub department: Option<String>,
    pub role: Role,
    /// Signed in with an emergency (break-glass) account.
    pub break_glass: bool,
}

/// Why a sign-in failed: recorded in the audit trail; the user sees one generic message for
/// every refusal that is about the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    EmptyPassword,
    /// Local accounts: unknown name or wrong password (checked alike, not told apart).
    BadCredentials,
    UnknownUser,
    /// The name matched more than one directory entry.
    AmbiguousUser,
    BadPassword,
    /// Found, but not in the directory group that may use the box.
    NotInGroup,
    /// In the access group but in no group mapped to a role.
    NoRole,
    /// The directory could not be reached or refused the service account.
    DirectoryUnavailable,
    /// The directory answered something unusable (a malformed reply, a missing attribute).
    DirectoryError,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::EmptyPassword => "empty_password",
            Refusal::BadCredentials => "bad_credentials",
            Refusal::UnknownUser => "unknown_user",
            Refusal::AmbiguousUser => "ambiguous_user",
            Refusal::BadPassword => "bad_password",
            Refusal::NotInGroup => "not_in_group",
            Refusal::NoRole => "no_role",
            Refusal::DirectoryUnavailable => "directory_unavailable",
            Refusal::DirectoryError => "directory_error",
        }
    }

    /// Whether the refusal is about what the user typed (and so counts towards the throttle),
    /// rather than about the directory.
    pub fn counts_as_failure(self) -> bool {
        !matches!(
            self,
            Refusal::DirectoryUnavailable | Refusal::DirectoryError
        )
    }
}
