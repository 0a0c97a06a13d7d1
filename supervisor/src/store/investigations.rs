//! The privacy officer's investigations: each retrieval of a transcript with its stated
//! reason. The audit record carries the category and the reason's keyed hash (the trail holds
//! no free text); the reason's text is kept here, beside the transcripts.

use jiff::Timestamp;
use rusqlite::params;
use sandbox::protocol::Phi;

use super::{micros, Store, StoreError};

/// Why a transcript is retrieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    PatientComplaint,
    PatientAccessRequest,
    LegalRequest,
    SecurityIncident,
    QualityReview,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::PatientComplaint,
        Category::PatientAccessRequest,
        Category::LegalRequest,
        Category::SecurityIncident,
        Category::QualityReview,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::PatientComplaint => "patient_complaint",
            Category::PatientAccessRequest => "patient_access_request",
            Category::LegalRequest => "legal_request",
            Category::SecurityIncident => "security_incident",
            Category::QualityReview => "quality_review",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Category::PatientComplaint => "Patient complaint",
            Category::PatientAccessRequest => "Patient's request for access or accounting",
            Category::LegalRequest => "Legal request",
            Category::SecurityIncident => "Security incident",
            Category::QualityReview => "Quality review",
        }
    }

    pub fn parse(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl Store {
    /// Records an investigation; its id.
    pub async fn record_investigation(
        &self,
        at: Timestamp,
        officer: &str,
        session_id: &str,
        category: Category,
        reason: &Phi,
    ) -> Result<i64, StoreError> {
        let (o, s, r) = (officer.to_owned(), session_id.to_owned(), reason.0.clone());
        self.with(move |c| {
            c.execute(
                "INSERT INTO investigations (at_us, officer, session_id, category, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![micros(at), o, s, category.name(), r],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::parse(c.name()), Some(c));
        }
        assert_eq!(Category::parse("curiosity"), None);
    }
}
