//! The prompt templates a role may use (minimum necessary: each role sees only what its work
//! needs; administrators, privacy officers and auditors do not chat). The guide's
//! clinical-summary template comes first.

use crate::auth::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub id: &'static str,
    pub title: &'static str,
    /// Put before the user's text in the prompt.
    pub instruction: &'static str,
    pub roles: &'static [Role],
}

const CLINICAL: &[Role] = &[Role::Clinician, Role::Nurse];

pub const TEMPLATES: &[Template] = &[
    Template {
        id: "clinical_summary",
        title: "Clinical summary",
        instruction: "Summarise the following clinical note for a colleague: the main problem, \
                      relevant history, current medications, and the plan. Use only what the \
                      note says.",
        roles: CLINICAL,
    },
    Template {
        id: "discharge_instructions",
        title: "Discharge instructions (draft)",
        instruction: "Draft plain-language discharge instructions for the patient from the \
                      following information: medications, warning signs, follow-up.",
        roles: CLINICAL,
    },
    Template {
        id: "structured_report",
        title: "Structured report",
        instruction: "Rewrite the following findings as a structured report with the headings \
                      Findings, Impression and Recommendations.",
        roles: &[Role::Clinician],
    },
    Template {
        id: "literature_question",
        title: "Literature question",
        instruction: "Answer the following clinical question from general medical knowledge, \
                      and say where the evidence is uncertain.",
        roles: CLINICAL,
    },
];

/// The templates `role` may use, in display order.
pub fn for_role(role: Role) -> impl Iterator<Item = &'static Template> {
    TEMPLATES.iter().filter(move |t| t.roles.contains(&role))
}

/// A template by id, if `role` may use it.
pub fn find(id: &str, role: Role) -> Option<&'static Template> {
    for_role(role).find(|t| t.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clinical_summary_comes_first_and_admins_get_none() {
        assert_eq!(for_role(Role::Nurse).next().unwrap().id, "clinical_summary");
        assert!(find("structured_report", Role::Nurse).is_none());
        assert!(find("structured_report", Role::Clinician).is_some());
        for r in [Role::Admin, Role::PrivacyOfficer, Role::Auditor] {
            assert_eq!(for_role(r).count(), 0, "{r:?}");
        }
    }
}
