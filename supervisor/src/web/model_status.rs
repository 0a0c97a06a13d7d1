//! The admin page's model section: the model serving now (from the store), the keys bundles
//! must be signed with, and the progress or outcome of the last USB install.

use super::pages::escape;
use super::WebState;
use crate::install::{Phase, Progress};

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// A line for the progress of an install.
pub fn describe(p: &Progress) -> String {
    let bundle = p.bundle.as_deref().unwrap_or("a bundle");
    match &p.phase {
        Phase::Idle => "No install since phiboxd started.".into(),
        Phase::Verifying => "A stick was found: checking the bundle's signature.".into(),
        Phase::Copying => format!(
            "Copying {bundle}: {} of {} ({:.1} MiB/s, about {} s left). Do not remove the stick.",
            mib(p.done),
            mib(p.total),
            p.rate / f64::from(1u32 << 20),
            p.seconds_left.unwrap_or(0)
        ),
        Phase::Checking => format!("Checking the copy of {bundle}."),
        Phase::Probing => {
            format!("Test-loading {bundle} in a confined worker. The stick is no longer needed.")
        }
        Phase::Activating => format!("Activating {bundle}."),
        Phase::Switching => {
            format!("Switching to {bundle}: chats in progress finish on the old model first.")
        }
        Phase::Done { message, .. } => format!("Done: {message}."),
        Phase::Refused { reason, message } => format!("Refused ({reason}): {message}."),
    }
}

/// The section's HTML.
pub fn section(state: &WebState) -> String {
    let Some(installer) = &state.installer else {
        return "<h2>Model</h2><p>Model bundles are not available in this mode.</p>".into();
    };
    let active = match installer.store().active() {
        Ok(Some(i)) => {
            let m = &i.manifest;
            format!(
                "<p id=\"model\">Serving <strong>{}</strong> version {} (sequence {}): {} {}, {} parameters, signed by key <code>{}</code>.</p>",
                escape(&m.name),
                escape(&m.version),
                m.sequence,
                escape(&m.model.architecture),
                escape(&m.model.quantization),
                m.model.parameters,
                escape(&m.signer)
            )
        }
        Ok(None) => {
            "<p id=\"model\">No bundle installed yet: the configured model file is served.</p>"
                .into()
        }
        Err(e) => format!(
            "<p id=\"model\" class=\"error\">The model store cannot be read: {}</p>",
            escape(&sandbox::error_chain::chain(&e))
        ),
    };
    let keys: Vec<String> = installer
        .trusted_keys()
        .ids()
        .iter()
        .map(|k| format!("<code>{k}</code>"))
        .collect();
    let keys = if keys.is_empty() {
        "none: every bundle is refused".to_owned()
    } else {
        keys.join(", ")
    };
    let progress = describe(&installer.progress().borrow());
    format!(
        "<h2>Model</h2>{active}<p>Bundles are accepted from USB sticks only, signed by: {keys}.</p><p id=\"install\">{}</p>",
        escape(&progress)
    )
}
