//! The shared minijinja environment and the checks run on every expression and template.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use minijinja::machinery::{Span, Token, tokenize};
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use super::{
    FUEL, MAX_CONTEXT_DEPTH, MAX_OPERATORS_PER_EXPRESSION, MAX_RECURSION, STATE_VARIABLES,
};

/// The one environment every expression and template is compiled against and evaluated in.
///
/// Built once; evaluation never touches it mutably, so it is shared by every thread.
pub(super) static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Missing keys and attributes of missing values are undefined (falsy, printed empty), as
    // in the old platform, instead of errors.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(MAX_RECURSION);
    // Error values carry kind, detail and line; the source dump of debug mode is not needed.
    env.set_debug(false);
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.keep_trailing_newline(true);
    if let Ok(syntax) = syntax.build() {
        env.set_syntax(syntax);
    }
    env
});

/// Names a template or expression may use besides the state variables: the environment's
/// global functions (`range`, `dict`, `namespace`, ...).
pub(super) fn is_global(name: &str) -> bool {
    ENV.globals().any(|(global, _)| global == name)
}

/// What the token scan found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// `variables.x` / `variables["x"]` reads, in order of first appearance.
    pub(super) variable_reads: Vec<String>,
    /// `variables` is also used in a way whose keys cannot be known (`variables[k]`,
    /// `variables | tojson`, `variables.items()`).
    pub(super) dynamic_variable_reads: bool,
    /// Line of the first use of each top-level name (not after a `.`).
    pub(super) first_line: HashMap<String, usize>,
}

/// Whether a token adds a level to the syntax tree the parser and compiler build recursively.
///
/// minijinja parses chains (`a + b + c`, `x | f | g`, `not not x`, `f()()`) into trees as deep
/// as the chain is long and walks them recursively; capping these tokens per expression keeps
/// that depth far below what a 2 MiB thread stack holds.
fn deepens(token: &Token<'_>) -> bool {
    match token {
        Token::Ident(word) => matches!(*word, "not" | "and" | "or" | "is" | "in" | "if" | "else"),
        Token::TemplateData(_)
        | Token::VariableStart
        | Token::VariableEnd
        | Token::BlockStart
        | Token::BlockEnd
        | Token::Str(_)
        | Token::String(_)
        | Token::Int(_)
        | Token::Int128(_)
        | Token::Float(_)
        | Token::Comma
        | Token::Colon => false,
        _ => true,
    }
}

/// Scans the tokens of an expression (`in_expr`) or template: enforces the operator cap and
/// collects variable reads and name positions. Lexing errors are left to the compiler, which
/// reports them with their position.
pub(super) fn scan(source: &str, in_expr: bool) -> Result<Scan, (String, usize)> {
    let mut scan = Scan::default();
    let mut operators = 0usize;
    let mut tokens: Vec<(Token<'_>, Span)> = Vec::new();
    for item in tokenize(source, in_expr, ENV.syntax().clone()) {
        let Ok((token, span)) = item else { break };
        if matches!(token, Token::VariableStart | Token::BlockStart) {
            operators = 0;
        }
        if deepens(&token) {
            operators += 1;
            if operators > MAX_OPERATORS_PER_EXPRESSION {
                return Err((
                    format!(
                        "too complex: more than {MAX_OPERATORS_PER_EXPRESSION} operators in one \
                         expression"
                    ),
                    usize::from(span.start_line),
                ));
            }
        }
        if !matches!(token, Token::TemplateData(_)) {
            tokens.push((token, span));
        }
    }
    for (i, (token, span)) in tokens.iter().enumerate() {
        let Token::Ident(name) = token else { continue };
        if i > 0 && matches!(tokens[i - 1].0, Token::Dot) {
            continue;
        }
        scan.first_line
            .entry((*name).to_owned())
            .or_insert(usize::from(span.start_line));
        if *name != "variables" {
            continue;
        }
        let next = |k: usize| tokens.get(i + k).map(|(t, _)| t);
        let key = match (next(1), next(2), next(3)) {
            (Some(Token::Dot), Some(Token::Ident(key)), after)
                if !matches!(after, Some(Token::ParenOpen)) =>
            {
                Some((*key).to_owned())
            }
            (Some(Token::BracketOpen), Some(Token::Str(key)), Some(Token::BracketClose)) => {
                Some((*key).to_owned())
            }
            (Some(Token::BracketOpen), Some(Token::String(key)), Some(Token::BracketClose)) => {
                Some(key.to_string())
            }
            _ => None,
        };
        match key {
            Some(key) => {
                if !scan.variable_reads.contains(&key) {
                    scan.variable_reads.push(key);
                }
            }
            None => scan.dynamic_variable_reads = true,
        }
    }
    Ok(scan)
}

/// The state variables among `names`, in [`STATE_VARIABLES`] order; the first name that is
/// neither a state variable nor a global is returned as the error.
pub(super) fn check_names<'n>(
    names: impl IntoIterator<Item = &'n String>,
) -> Result<Vec<&'static str>, String> {
    let mut unknown: Vec<&String> = Vec::new();
    let mut used = Vec::new();
    for name in names {
        if let Some(state) = STATE_VARIABLES.iter().find(|s| **s == name.as_str()) {
            used.push(*state);
        } else if !is_global(name) {
            unknown.push(name);
        }
    }
    if let Some(name) = unknown.iter().min() {
        return Err((*name).clone());
    }
    used.sort_by_key(|name| STATE_VARIABLES.iter().position(|s| s == name));
    Ok(used)
}

/// The message for an unknown top-level name.
pub(super) fn unknown_name_message(name: &str) -> String {
    let mut message = format!(
        "unknown variable `{name}`; the variables are {}",
        STATE_VARIABLES.join(", ")
    );
    let hint = match name {
        "has_tool_calls" => Some("(last_message.tool_calls or []) | length > 0"),
        "no_tool_calls" => Some("(last_message.tool_calls or []) | length == 0"),
        "has_errors" => Some("(errors or []) | length > 0"),
        "variable" => Some("variables.<name> == <value>"),
        "message" => Some("\"text\" in last_message.content | lower"),
        "AND" | "OR" | "NOT" => Some("lowercase and / or / not"),
        _ => None,
    };
    if let Some(hint) = hint {
        let _ = write!(
            message,
            " (`{name}` is an old phrase, which only combines with other old phrases; in a \
             native expression write `{hint}`)"
        );
    } else if let Some(rest) = name.strip_prefix("loop_")
        && let Some(id) = rest.strip_suffix("_continue")
        && !id.is_empty()
    {
        let _ = write!(
            message,
            " (`{name}` is an old phrase, which only combines with other old phrases; in a \
             native expression write `loop[{}].continue`)",
            super::legacy::string_literal(id)
        );
    }
    message
}

/// Describes a minijinja error without its source dump: kind and detail.
pub(super) fn describe(err: &minijinja::Error) -> String {
    let mut message = err.kind().to_string();
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message
}

/// 1-based column (in characters) of a byte offset.
pub(super) fn column(source: &str, offset: usize) -> usize {
    source
        .get(..offset)
        .map_or(offset, |before| before.chars().count())
        + 1
}

/// Converts a JSON value into an engine value.
///
/// # Errors
///
/// A message when the value nests deeper than [`MAX_CONTEXT_DEPTH`].
pub(super) fn json_to_value(json: &serde_json::Value, depth: usize) -> Result<Value, String> {
    if depth > MAX_CONTEXT_DEPTH {
        return Err(format!(
            "the context nests deeper than {MAX_CONTEXT_DEPTH} levels"
        ));
    }
    Ok(match json {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => Value::from(
            items
                .iter()
                .map(|item| json_to_value(item, depth + 1))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        serde_json::Value::Object(map) => Value::from_pairs(
            map.iter()
                .map(|(k, v)| Ok((Value::from(k.as_str()), json_to_value(v, depth + 1)?)))
                .collect::<Result<Vec<_>, String>>()?,
        ),
    })
}

/// Converts an engine value back into JSON (undefined and none become null; objects that are
/// neither sequences nor maps become their string form).
///
/// # Errors
///
/// A message when the value nests deeper than [`MAX_CONTEXT_DEPTH`] or a sequence fails to
/// iterate.
pub(super) fn value_to_json(value: &Value, depth: usize) -> Result<serde_json::Value, String> {
    if depth > MAX_CONTEXT_DEPTH {
        return Err(format!(
            "the value nests deeper than {MAX_CONTEXT_DEPTH} levels"
        ));
    }
    Ok(match value.kind() {
        ValueKind::Undefined | ValueKind::None => serde_json::Value::Null,
        ValueKind::Bool => serde_json::Value::Bool(value.is_true()),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(value.clone()) {
                serde_json::Value::from(i)
            } else if let Ok(u) = u64::try_from(value.clone()) {
                serde_json::Value::from(u)
            } else {
                f64::try_from(value.clone())
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        }
        ValueKind::String => serde_json::Value::String(value.as_str().unwrap_or("").to_owned()),
        ValueKind::Map => {
            let mut map = serde_json::Map::new();
            for key in value.try_iter().map_err(|e| describe(&e))? {
                let item = value.get_item(&key).map_err(|e| describe(&e))?;
                let key = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
                map.insert(key, value_to_json(&item, depth + 1)?);
            }
            serde_json::Value::Object(map)
        }
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Bytes => serde_json::Value::Array(
            value
                .try_iter()
                .map_err(|e| describe(&e))?
                .map(|item| value_to_json(&item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        _ => serde_json::Value::String(value.to_string()),
    })
}

/// The context value holding only the top-level keys in `names`, converted from `context`.
pub(super) fn context_value(
    context: &serde_json::Value,
    names: &[&'static str],
) -> Result<Value, String> {
    let map = match context {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => {
            return Ok(Value::from_pairs(std::iter::empty::<(Value, Value)>()));
        }
        other => {
            return Err(format!(
                "the context must be a JSON object, not {}",
                json_kind(other)
            ));
        }
    };
    let mut pairs = Vec::with_capacity(names.len());
    for name in names {
        if let Some(value) = map.get(*name) {
            pairs.push((Value::from(*name), json_to_value(value, 1)?));
        }
    }
    Ok(Value::from_pairs(pairs))
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
