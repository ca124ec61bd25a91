//! Prompt analysis: what a [`ChatRequest`] needs, and how hard it looks.
//!
//! # The token estimator
//!
//! Provider tokenizers are not available offline, so tokens are *estimated*: one token per four
//! characters (Unicode scalar values) of text, rounded up, which is the usual rule of thumb for
//! English under OpenAI's BPE tokenizers; plus 4 tokens of framing per message (role and
//! separators), the tool calls of assistant messages counted as their JSON text, each offered
//! tool counted as its JSON definition, and 3 tokens priming the reply. The estimate is meant
//! for routing and budget checks, not billing (billing uses the provider's counts). It
//! under-counts text in scripts with more tokens per character (Chinese, Japanese).

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::model::{ChatRequest, Message, Role, ToolChoice};

use super::config::AnalysisConfig;

/// How demanding a call looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Complexity {
    /// A short exchange needing no tools, code or documents.
    Simple,
    /// Some length, or one of: tools, code, documents.
    Moderate,
    /// Long, or several demanding traits together.
    Complex,
}

impl Complexity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Complexity::Simple => "simple",
            Complexity::Moderate => "moderate",
            Complexity::Complex => "complex",
        }
    }
}

/// What the analysis found in a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PromptAnalysis {
    /// Estimated prompt tokens (see the module docs for the estimator).
    pub estimated_tokens: u64,
    /// Tools are offered and the model may call them.
    pub tools_needed: bool,
    /// Some message contains source code.
    pub code_present: bool,
    /// JSON output is asked for (JSON mode, or the system/last user message asks for JSON).
    pub json_requested: bool,
    /// System and tool messages are large enough to be attached documents.
    pub documents_attached: bool,
    /// Estimated tokens of the system and tool messages (the context).
    pub context_tokens: u64,
    /// The resulting class.
    pub complexity: Complexity,
}

/// Tokens of framing per message.
const MESSAGE_OVERHEAD: u64 = 4;
/// Tokens priming the reply.
const REPLY_PRIMING: u64 = 3;

/// Estimated tokens of a text: a quarter of its characters, rounded up.
pub fn estimate_text_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

fn message_tokens(m: &Message) -> u64 {
    let mut n = MESSAGE_OVERHEAD + estimate_text_tokens(&m.content);
    for call in &m.tool_calls {
        n += estimate_text_tokens(&call.name) + estimate_text_tokens(&call.arguments.to_string());
    }
    if let Some(name) = &m.name {
        n += estimate_text_tokens(name);
    }
    n
}

/// Estimated prompt tokens of a request (see the module docs).
pub fn estimate_tokens(request: &ChatRequest) -> u64 {
    let messages: u64 = request.messages.iter().map(message_tokens).sum();
    let tools: u64 = request
        .tools
        .iter()
        .map(|t| {
            estimate_text_tokens(&t.name)
                + estimate_text_tokens(&t.description)
                + estimate_text_tokens(&t.parameters.to_string())
        })
        .sum();
    messages + tools + REPLY_PRIMING
}

static CODE_LINE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?m)^\s*(def |fn |class |import |from \S+ import |function |const |let |var |pub fn |#include|SELECT |package |public |async def |func )",
    )
    .ok()
});

static JSON_WORD: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"(?i)\bjson\b").ok());

/// Whether a text contains source code: a fenced block, or at least two lines that open with a
/// programming keyword (`def`, `fn`, `class`, `import`, `function`, `SELECT`, ...).
pub fn looks_like_code(text: &str) -> bool {
    if text.contains("```") {
        return true;
    }
    CODE_LINE
        .as_ref()
        .is_some_and(|re| re.find_iter(text).nth(1).is_some())
}

/// Analyses a request with the given thresholds.
///
/// Complexity: the prompt size counts 0 (at most `short_max_tokens`), 1, or 2 (at least
/// `long_min_tokens`); tools needed, code present and documents attached count 1 each. A score
/// of 0 is simple, 3 or more (or a long prompt) complex, anything else moderate.
pub fn analyze(request: &ChatRequest, config: &AnalysisConfig) -> PromptAnalysis {
    let estimated_tokens = estimate_tokens(request);
    let tools_needed = !request.tools.is_empty() && request.tool_choice != Some(ToolChoice::None);
    let code_present = request.messages.iter().any(|m| looks_like_code(&m.content));
    let last_user = request.messages.iter().rev().find(|m| m.role == Role::User);
    let asks_json = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .chain(last_user)
        .any(|m| JSON_WORD.as_ref().is_some_and(|re| re.is_match(&m.content)));
    let json_requested = request.json_mode || asks_json;
    let context_tokens: u64 = request
        .messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Tool))
        .map(|m| estimate_text_tokens(&m.content))
        .sum();
    let documents_attached = context_tokens >= config.documents_min_tokens;
    let size = if estimated_tokens >= config.long_min_tokens {
        2
    } else if estimated_tokens > config.short_max_tokens {
        1
    } else {
        0
    };
    let score =
        size + u32::from(tools_needed) + u32::from(code_present) + u32::from(documents_attached);
    let complexity = if size == 2 || score >= 3 {
        Complexity::Complex
    } else if score == 0 {
        Complexity::Simple
    } else {
        Complexity::Moderate
    };
    PromptAnalysis {
        estimated_tokens,
        tools_needed,
        code_present,
        json_requested,
        documents_attached,
        context_tokens,
        complexity,
    }
}
