//! Chat model providers: [`scripted::ScriptedModel`] (deterministic, offline, for tests and
//! examples) and, with the `openai` cargo feature, [`openai::OpenAiModel`] (any
//! OpenAI-compatible `/v1/chat/completions` server).

#[cfg(feature = "openai")]
pub mod openai;
pub mod scripted;

#[cfg(feature = "openai")]
pub use openai::{OpenAiConfig, OpenAiModel};
pub use scripted::ScriptedModel;

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
