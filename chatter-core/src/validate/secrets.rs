//! `CHT-V021`: secrets pasted into a definition, detected by shape.
//!
//! Two tests, on every string of node configs, node labels, `metadata` and the other top-level
//! fields:
//!
//! * **Known shapes**, anywhere (each whitespace-separated word is tested): `sk-…` API keys
//!   (OpenAI, Anthropic), AWS access key ids (`AKIA…`/`ASIA…` + 16), GitHub tokens (`ghp_…`,
//!   `github_pat_…`), GitLab tokens (`glpat-…`), Slack tokens (`xoxb-…`), Google API keys
//!   (`AIza…`), JSON Web Tokens (`eyJ….eyJ….…`) and PEM private keys.
//! * **High entropy under a key-like name**: when the value's key (the nearest object key)
//!   names a credential by a whole word (`api_key`, `apiKey`, `secret`, `password`, `token`,
//!   `access_key`, `private_key`, `client_secret`, `credentials`, `authorization`, ...), a value
//!   (after an optional `Bearer `/`Basic `/`Token ` prefix) of at least 16 characters, without
//!   whitespace or template/environment placeholders (`{{`, `${`, `env:`), mixing
//!   letters with digits (or both cases) and with a Shannon entropy of at least 3 bits per character.
//!
//! Words are matched whole, so `max_tokens`, `tokenizer` or a label "Token counter" are not
//! key-like, and ordinary words are never flagged. The message never repeats the value.

use serde_json::Value;

use super::{At, Ctx, Issue, codes, paths};

/// What a string looks like, when it looks like a secret.
pub(crate) fn classify(key: Option<&str>, value: &str) -> Option<&'static str> {
    if let Some(shape) = known_shape(value) {
        return Some(shape);
    }
    let key = key?;
    if !key_is_credential(key) {
        return None;
    }
    let trimmed = value.trim();
    let bare = ["Bearer ", "bearer ", "Basic ", "basic ", "Token ", "token "]
        .iter()
        .find_map(|p| trimmed.strip_prefix(p))
        .unwrap_or(trimmed);
    high_entropy(bare).then_some("a credential (a long random value under a credential-like key)")
}

/// Known token shapes, tested on each whitespace-separated word of `value`.
fn known_shape(value: &str) -> Option<&'static str> {
    if value.contains("-----BEGIN") && value.contains("PRIVATE KEY") {
        return Some("a private key (PEM)");
    }
    value
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';' | '=' | '(' | ')'))
        .map(|word| word.trim_end_matches(['.', ':', '!', '?']))
        .find_map(word_shape)
}

fn token_chars(s: &str, extra: &[char]) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

fn word_shape(word: &str) -> Option<&'static str> {
    let has_digit = |s: &str| s.chars().any(|c| c.is_ascii_digit());
    if let Some(rest) = word.strip_prefix("sk-")
        && rest.len() >= 20
        && token_chars(rest, &['-', '_'])
        && has_digit(rest)
    {
        return Some("an API key (`sk-…`)");
    }
    for prefix in ["AKIA", "ASIA"] {
        if let Some(rest) = word.strip_prefix(prefix)
            && rest.len() == 16
            && rest
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Some("an AWS access key id (`AKIA…`)");
        }
    }
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        if let Some(rest) = word.strip_prefix(prefix)
            && rest.len() >= 30
            && token_chars(rest, &[])
        {
            return Some("a GitHub token (`ghp_…`)");
        }
    }
    if let Some(rest) = word.strip_prefix("github_pat_")
        && rest.len() >= 20
        && token_chars(rest, &['_'])
    {
        return Some("a GitHub token (`github_pat_…`)");
    }
    if let Some(rest) = word.strip_prefix("glpat-")
        && rest.len() >= 20
        && token_chars(rest, &['-', '_'])
    {
        return Some("a GitLab token (`glpat-…`)");
    }
    for prefix in ["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"] {
        if let Some(rest) = word.strip_prefix(prefix)
            && rest.len() >= 10
            && token_chars(rest, &['-'])
            && has_digit(rest)
        {
            return Some("a Slack token (`xox…`)");
        }
    }
    if let Some(rest) = word.strip_prefix("AIza")
        && rest.len() == 35
        && token_chars(rest, &['-', '_'])
    {
        return Some("a Google API key (`AIza…`)");
    }
    if word.starts_with("eyJ") {
        let parts: Vec<&str> = word.split('.').collect();
        if parts.len() == 3
            && parts[1].starts_with("eyJ")
            && parts[2].len() >= 10
            && parts.iter().all(|p| token_chars(p, &['-', '_', '=']))
        {
            return Some("a JSON Web Token");
        }
    }
    None
}

/// Splits a key into lower-case words at `_`, `-`, `.`, spaces and camelCase boundaries.
fn key_words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Whether a key names a credential, by whole words.
fn key_is_credential(key: &str) -> bool {
    const WORDS: &[&str] = &[
        "secret",
        "password",
        "passwd",
        "pwd",
        "token",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "bearer",
    ];
    const PAIRS: &[(&str, &str)] = &[
        ("api", "key"),
        ("access", "key"),
        ("private", "key"),
        ("secret", "key"),
        ("auth", "key"),
        ("client", "secret"),
        ("signing", "key"),
    ];
    let words = key_words(key);
    words.iter().any(|w| WORDS.contains(&w.as_str()))
        || words
            .windows(2)
            .any(|p| PAIRS.contains(&(p[0].as_str(), p[1].as_str())))
}

/// A long, random-looking value: at least 16 characters, no whitespace or placeholders, letters
/// mixed with digits (or both cases), Shannon entropy of at least 3 bits per character.
fn high_entropy(value: &str) -> bool {
    if value.chars().count() < 16
        || value.chars().any(char::is_whitespace)
        || value.contains("{{")
        || value.contains("${")
        || value.starts_with("env:")
        || value.starts_with('$')
    {
        return false;
    }
    let lower = value.chars().any(|c| c.is_ascii_lowercase());
    let upper = value.chars().any(|c| c.is_ascii_uppercase());
    let digit = value.chars().any(|c| c.is_ascii_digit());
    // Random values mix digits with letters, or both cases; `YOUR_API_KEY_HERE` does not.
    if !((digit && (lower || upper)) || (lower && upper)) {
        return false;
    }
    let mut counts = std::collections::HashMap::new();
    let mut total = 0f64;
    for c in value.chars() {
        *counts.entry(c).or_insert(0f64) += 1.0;
        total += 1.0;
    }
    let entropy: f64 = counts
        .values()
        .map(|n| {
            let p = n / total;
            -p * p.log2()
        })
        .sum();
    entropy >= 3.0
}

/// Walks a value iteratively, calling `found` for each string that looks like a secret, with
/// its path. Paths are built only for containers and hits, so scanning stays cheap.
fn scan<'v>(
    root: &'v Value,
    root_path: String,
    root_key: Option<&'v str>,
    found: &mut impl FnMut(String, &'static str),
) {
    let mut stack: Vec<(&'v Value, String, Option<&'v str>)> = Vec::new();
    match root {
        Value::String(s) => {
            if let Some(what) = classify(root_key, s) {
                found(root_path, what);
            }
            return;
        }
        Value::Array(_) | Value::Object(_) => stack.push((root, root_path, root_key)),
        _ => return,
    }
    while let Some((value, path, key)) = stack.pop() {
        let children: Vec<(&'v Value, Option<&'v str>, Step<'v>)> = match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (item, key, Step::Index(i)))
                .collect(),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (v, Some(k.as_str()), Step::Key(k)))
                .collect(),
            _ => Vec::new(),
        };
        for (child, child_key, step) in &children {
            if let Value::String(s) = child
                && let Some(what) = classify(*child_key, s)
            {
                found(step.append_to(&path), what);
            }
        }
        // Reversed, so that the stack yields containers in document order.
        for (child, child_key, step) in children.into_iter().rev() {
            if matches!(child, Value::Array(_) | Value::Object(_)) {
                stack.push((child, step.append_to(&path), child_key));
            }
        }
    }
}

/// One step below a container.
enum Step<'v> {
    Index(usize),
    Key(&'v str),
}

impl Step<'_> {
    fn append_to(&self, path: &str) -> String {
        match self {
            Step::Index(i) => format!("{path}[{i}]"),
            Step::Key(k) => paths::with_key(path, k),
        }
    }
}

/// One string that looks like a secret.
pub(crate) struct Finding<'a> {
    /// Where it sits, for ordering.
    pub(crate) at: At,
    /// The node whose config or label holds it.
    pub(crate) node_id: Option<&'a str>,
    /// JSON path of the value.
    pub(crate) path: String,
    /// What it looks like.
    pub(crate) what: &'static str,
}

/// Every string of the definition that looks like a secret, in document order.
pub(crate) fn find(def: &crate::WorkflowDefinition) -> Vec<Finding<'_>> {
    let mut found: Vec<(At, Option<&str>, String, &'static str)> = Vec::new();
    for (i, node) in def.nodes.iter().enumerate() {
        let id = Some(node.id.as_str());
        let config_path = paths::node_config(i, node);
        for (key, value) in &node.config {
            let written = node.config_key_as_written(key);
            scan(
                value,
                paths::with_key(&config_path, written),
                Some(written),
                &mut |path, what| found.push((At::Node(i), id, path, what)),
            );
        }
        if let Some(label) = &node.label
            && let Some(what) = known_shape(label)
        {
            let path = match node.shape() {
                crate::definition::Shape::Flat => format!("{}.label", paths::node(i)),
                _ => format!("{}.data.label", paths::node(i)),
            };
            found.push((At::Node(i), id, path, what));
        }
    }
    for (key, value) in &def.metadata {
        scan(
            value,
            paths::with_key("$.metadata", key),
            Some(key),
            &mut |path, what| found.push((At::Metadata, None, path, what)),
        );
    }
    for (key, value) in &def.extra {
        scan(
            value,
            paths::with_key("$", key),
            Some(key),
            &mut |path, what| found.push((At::Top, None, path, what)),
        );
    }
    found
        .into_iter()
        .map(|(at, node_id, path, what)| Finding {
            at,
            node_id,
            path,
            what,
        })
        .collect()
}

pub(super) fn check(ctx: &mut Ctx<'_>) {
    for Finding {
        at,
        node_id,
        path,
        what,
    } in find(ctx.def)
    {
        let place = match node_id {
            Some(id) => format!("node `{id}` at {path}"),
            None => path.clone(),
        };
        let mut issue = Issue::warning(
            codes::POSSIBLE_SECRET,
            path,
            format!(
                "possible secret at {place}: the value looks like {what}; keep secrets out of \
                 definitions (use the provider configuration or a secret store)"
            ),
        );
        if let Some(id) = node_id {
            issue = issue.node(id);
        }
        ctx.push(at, issue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_shapes_are_found_anywhere() {
        let key = "sk-proj-Abc123def456GHI789jkl012";
        assert_eq!(classify(None, key), Some("an API key (`sk-…`)"));
        assert_eq!(
            classify(Some("note"), &format!("use {key} here")),
            Some("an API key (`sk-…`)")
        );
        assert_eq!(
            classify(Some("x"), "AKIAIOSFODNN7EXAMPLE"),
            Some("an AWS access key id (`AKIA…`)")
        );
        assert_eq!(
            classify(None, "ghp_0123456789abcdefghijABCDEFGHIJ0123"),
            Some("a GitHub token (`ghp_…`)")
        );
        assert_eq!(
            classify(None, "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
            Some("a Google API key (`AIza…`)")
        );
        assert_eq!(
            classify(
                None,
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dGhpc2lzYXNpZ25hdHVyZQ"
            ),
            Some("a JSON Web Token")
        );
        assert_eq!(
            classify(None, "-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n"),
            Some("a private key (PEM)")
        );
    }

    #[test]
    fn ordinary_words_are_not_secrets() {
        for (key, value) in [
            (Some("label"), "Token counter"),
            (Some("token"), "token"),
            (Some("api_key"), "YOUR_API_KEY_HERE"),
            (Some("password"), "{{ input.variables.password }}"),
            (Some("api_key"), "${OPENAI_API_KEY}"),
            (Some("api_key"), "env:OPENAI_API_KEY"),
            (Some("description"), "sk-learn is a library"),
            (Some("max_tokens"), "aB3$xY9!qW2#eR5%tZ"),
            (Some("tokenizer"), "aB3$xY9!qW2#eR5%tZ"),
            (
                None,
                "a perfectly ordinary sentence about secrets and tokens",
            ),
            (Some("task"), "ask-me-anything-about-the-weather-please"),
        ] {
            assert_eq!(classify(key, value), None, "{key:?} = {value:?}");
        }
    }

    #[test]
    fn random_values_under_credential_keys_are_secrets() {
        let what = Some("a credential (a long random value under a credential-like key)");
        assert_eq!(classify(Some("apiKey"), "q8Zr2LmN4vX7pT1kW9sB"), what);
        assert_eq!(
            classify(Some("client_secret"), "q8Zr2LmN4vX7pT1kW9sB"),
            what
        );
        assert_eq!(
            classify(Some("Authorization"), "Bearer q8Zr2LmN4vX7pT1kW9sB"),
            what
        );
        assert_eq!(
            classify(Some("password"), "hunter2"),
            None,
            "too short to tell"
        );
        assert!(key_is_credential("x-api-key"));
        assert!(key_is_credential("AWS_SECRET_ACCESS_KEY"));
        assert!(!key_is_credential("max_tokens"));
        assert!(!key_is_credential("keyword"));
    }
}
