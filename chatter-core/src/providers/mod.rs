//! Chat model providers: [`scripted::ScriptedModel`] (deterministic, offline, for tests and
//! examples) and, with the `openai` cargo feature, [`openai::OpenAiModel`] (any
//! OpenAI-compatible `/v1/chat/completions` server).

#[cfg(feature = "openai")]
pub mod openai;
pub mod scripted;

#[cfg(feature = "openai")]
pub use openai::{OpenAiConfig, OpenAiModel};
pub use scripted::ScriptedModel;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::ChatModel;

/// Builds a provider from a command-line style spec and returns it with the name to register it
/// under: `scripted:FILE` (a [`ScriptedModel`] script) or, with the `openai` feature,
/// `openai:MODEL` / `openai` ([`OpenAiModel`] configured by [`OpenAiConfig::from_env`], with
/// `MODEL` as its default model).
///
/// # Errors
///
/// [`Error::Config`] for an unknown provider or a bad spec, and the errors of
/// [`ScriptedModel::from_file`] / [`OpenAiModel::new`].
pub fn from_spec(spec: &str) -> Result<(String, Arc<dyn ChatModel>)> {
    let (provider, argument) = match spec.split_once(':') {
        Some((p, a)) => (p.trim(), Some(a.trim()).filter(|a| !a.is_empty())),
        None => (spec.trim(), None),
    };
    match provider {
        "scripted" => {
            let path = argument.ok_or_else(|| Error::Config {
                message: format!("model spec `{spec}`: expected `scripted:FILE`"),
            })?;
            let model: Arc<dyn ChatModel> = Arc::new(ScriptedModel::from_file(path)?);
            Ok((scripted::SCRIPTED_PROVIDER.to_owned(), model))
        }
        #[cfg(feature = "openai")]
        "openai" => {
            let mut config = OpenAiConfig::from_env();
            if let Some(model) = argument {
                config = config.default_model(model);
            }
            let name = config.provider_name.clone();
            let model: Arc<dyn ChatModel> = Arc::new(OpenAiModel::new(config)?);
            Ok((name, model))
        }
        other => Err(Error::Config {
            message: format!(
                "model spec `{spec}`: unknown provider `{other}` (expected {})",
                if cfg!(feature = "openai") {
                    "`scripted:FILE` or `openai:MODEL`"
                } else {
                    "`scripted:FILE`; `openai` needs the `openai` cargo feature"
                }
            ),
        }),
    }
}

/// Installs rustls' `ring` crypto provider as the process default, once. Harmless when the host
/// application installed a provider of its own first (that one stays in place).
#[cfg(any(feature = "openai", feature = "http-tool"))]
pub(crate) fn ensure_crypto_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // An `Err` means another thread installed one in the meantime: that one is used.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}
