//! Who may use the box: identities and roles, local accounts (dev mode's users and, on the
//! appliance, the break-glass accounts), and server-side sessions. Directory (LDAP) sign-in
//! comes next (issue 5).

pub mod local;
pub mod session;
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
