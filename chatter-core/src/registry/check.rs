//! The checker of the JSON Schema subset the registry uses (see the module docs of
//! [`registry`](super) for the keywords and the exact messages).

use serde_json::{Map, Value};

use super::{ConfigIssue, ConfigIssueKind};

/// How deep the checker descends into nested objects and arrays. Deeper values are not checked
/// (no built-in schema nests more than three levels).
pub const MAX_CHECK_DEPTH: usize = 32;

/// Checks `value` against `schema`, appending every issue to `out`.
pub(crate) fn check_value(
    schema: &Value,
    value: &Value,
    path: &str,
    depth: usize,
    out: &mut Vec<ConfigIssue>,
) {
    let Value::Object(schema) = schema else {
        // `true` (or anything that is not an object) accepts every value.
        return;
    };
    if depth > MAX_CHECK_DEPTH {
        return;
    }
    if let Some(types) = schema.get("type") {
        let allowed = type_names(types);
        if !allowed.is_empty() && !allowed.iter().any(|t| has_type(value, t)) {
            out.push(issue(
                path,
                ConfigIssueKind::WrongType,
                format!(
                    "expected {}, found {}",
                    expected_list(&allowed),
                    found(value)
                ),
            ));
            return;
        }
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.iter().any(|o| json_eq(o, value))
    {
        out.push(issue(
            path,
            ConfigIssueKind::NotAllowed,
            format!(
                "must be one of {}, found {}",
                options
                    .iter()
                    .map(option_text)
                    .collect::<Vec<_>>()
                    .join(", "),
                shown(value)
            ),
        ));
    }
    match value {
        Value::Number(_) => check_range(schema, value, path, out),
        Value::String(s) => check_string(schema, s, path, out),
        Value::Array(items) => check_array(schema, items, path, depth, out),
        Value::Object(members) => check_members(schema, members, path, depth, out),
        Value::Null | Value::Bool(_) => {}
    }
    if let Some(Value::Array(branches)) = schema.get("anyOf") {
        check_any_of(branches, value, path, depth, out);
    }
}

fn issue(path: &str, kind: ConfigIssueKind, message: String) -> ConfigIssue {
    ConfigIssue {
        path: path.to_owned(),
        kind,
        message,
    }
}

/// `a.b` for identifier-like keys, `a["x.y"]` otherwise.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", Value::from(key)),
    }
}

fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

fn type_names(types: &Value) -> Vec<&str> {
    match types {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64()
}

fn has_type(value: &Value, ty: &str) -> bool {
    match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => is_integer(value),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn type_phrase(ty: &str) -> String {
    match ty {
        "null" => "null".into(),
        "boolean" => "a boolean".into(),
        "integer" => "an integer".into(),
        "number" => "a number".into(),
        "string" => "a string".into(),
        "array" => "an array".into(),
        "object" => "an object".into(),
        other => format!("`{other}`"),
    }
}

fn expected_list(types: &[&str]) -> String {
    let phrases: Vec<String> = types.iter().map(|t| type_phrase(t)).collect();
    match phrases.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// The JSON type of a value, as a phrase (`a string`, `an integer`, ...).
pub(crate) fn found(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) if is_integer(value) => "an integer".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A value as JSON, cut to 60 characters.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn option_text(option: &Value) -> String {
    match option {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

fn number(schema: &Map<String, Value>, keyword: &str) -> Option<(f64, String)> {
    let bound = schema.get(keyword)?;
    Some((bound.as_f64()?, bound.to_string()))
}

fn check_range(schema: &Map<String, Value>, value: &Value, path: &str, out: &mut Vec<ConfigIssue>) {
    let Some(v) = value.as_f64() else { return };
    let min = number(schema, "minimum");
    let xmin = number(schema, "exclusiveMinimum");
    let max = number(schema, "maximum");
    let xmax = number(schema, "exclusiveMaximum");
    let below =
        min.as_ref().is_some_and(|(m, _)| v < *m) || xmin.as_ref().is_some_and(|(m, _)| v <= *m);
    let above =
        max.as_ref().is_some_and(|(m, _)| v > *m) || xmax.as_ref().is_some_and(|(m, _)| v >= *m);
    if !below && !above {
        return;
    }
    let lower = match (&xmin, &min) {
        (Some((_, m)), _) => Some((format!("greater than {m}"), false, m.clone())),
        (None, Some((_, m))) => Some((format!("at least {m}"), true, m.clone())),
        (None, None) => None,
    };
    let upper = match (&xmax, &max) {
        (Some((_, m)), _) => Some((format!("less than {m}"), false, m.clone())),
        (None, Some((_, m))) => Some((format!("at most {m}"), true, m.clone())),
        (None, None) => None,
    };
    let rule = match (lower, upper) {
        (Some((_, true, lo)), Some((_, true, hi))) => format!("between {lo} and {hi}"),
        (Some((lo, ..)), Some((hi, ..))) => format!("{lo} and {hi}"),
        (Some((lo, ..)), None) => lo,
        (None, Some((hi, ..))) => hi,
        (None, None) => return,
    };
    out.push(issue(
        path,
        ConfigIssueKind::OutOfRange,
        format!("must be {rule}, found {value}"),
    ));
}

fn count_bound(schema: &Map<String, Value>, keyword: &str) -> Option<u64> {
    schema.get(keyword).and_then(Value::as_u64)
}

/// `must be between 1 and 5 <unit>s`, with the unit in the singular after 1.
fn count_rule(min: Option<u64>, max: Option<u64>, unit: &str) -> Option<String> {
    let units = |n: u64| {
        if n == 1 {
            unit.to_owned()
        } else {
            format!("{unit}s")
        }
    };
    Some(match (min, max) {
        (Some(lo), Some(hi)) => format!("between {lo} and {hi} {}", units(hi)),
        (Some(lo), None) => format!("at least {lo} {}", units(lo)),
        (None, Some(hi)) => format!("at most {hi} {}", units(hi)),
        (None, None) => return None,
    })
}

fn check_string(schema: &Map<String, Value>, s: &str, path: &str, out: &mut Vec<ConfigIssue>) {
    let min = count_bound(schema, "minLength");
    let max = count_bound(schema, "maxLength");
    let len = s.chars().count() as u64;
    if (min.is_some_and(|m| len < m) || max.is_some_and(|m| len > m))
        && let Some(rule) = count_rule(min, max, "character")
    {
        out.push(issue(
            path,
            ConfigIssueKind::OutOfRange,
            format!("must be {rule} long, found {len}"),
        ));
    }
    if let Some(Value::String(pattern)) = schema.get("pattern") {
        // A pattern that does not compile is a fault of the schema, not of the config: it is
        // reported by `NodeKindInfo::schema_problems` and ignored here.
        if let Some(re) = compiled_pattern(pattern)
            && !re.is_match(s)
        {
            out.push(issue(
                path,
                ConfigIssueKind::NotAllowed,
                format!(
                    "must match the pattern `{pattern}`, found {}",
                    shown(&Value::from(s))
                ),
            ));
        }
    }
}

/// A schema pattern compiled once per process (schemas are few and long-lived; compiling a
/// regex costs far more than matching it, and a config check runs per node per validation).
/// `None` for a pattern that does not compile.
fn compiled_pattern(pattern: &str) -> Option<regex::Regex> {
    static CACHE: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Option<regex::Regex>>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.len() > 1024 && !cache.contains_key(pattern) {
        // Custom kinds could bring unbounded patterns; keep the cache small.
        cache.clear();
    }
    cache
        .entry(pattern.to_owned())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .clone()
}

fn check_array(
    schema: &Map<String, Value>,
    items: &[Value],
    path: &str,
    depth: usize,
    out: &mut Vec<ConfigIssue>,
) {
    let min = count_bound(schema, "minItems");
    let max = count_bound(schema, "maxItems");
    let len = items.len() as u64;
    if (min.is_some_and(|m| len < m) || max.is_some_and(|m| len > m))
        && let Some(rule) = count_rule(min, max, "item")
    {
        out.push(issue(
            path,
            ConfigIssueKind::OutOfRange,
            format!("must have {rule}, found {len}"),
        ));
    }
    if let Some(item_schema) = schema.get("items") {
        for (index, item) in items.iter().enumerate() {
            check_value(item_schema, item, &join_index(path, index), depth + 1, out);
        }
    }
}

fn check_members(
    schema: &Map<String, Value>,
    members: &Map<String, Value>,
    path: &str,
    depth: usize,
    out: &mut Vec<ConfigIssue>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    for (key, value) in members {
        let member_path = join_key(path, key);
        if let Some(member_schema) = properties.and_then(|p| p.get(key)) {
            check_value(member_schema, value, &member_path, depth + 1, out);
            continue;
        }
        match additional {
            Some(Value::Bool(false)) => {
                let suggestion = properties.and_then(|p| suggest(key, p.keys()));
                let message = match suggestion {
                    Some(s) => format!("unknown key `{key}` (did you mean `{s}`?)"),
                    None => format!("unknown key `{key}`"),
                };
                out.push(issue(&member_path, ConfigIssueKind::Unknown, message));
            }
            Some(extra @ Value::Object(_)) => {
                check_value(extra, value, &member_path, depth + 1, out);
            }
            _ => {}
        }
    }
    if let Some(properties) = properties {
        check_sibling_rules(properties, members, path, out);
    }
    if let Some(Value::Array(required)) = schema.get("required") {
        for key in required.iter().filter_map(Value::as_str) {
            if !members.contains_key(key) {
                out.push(issue(
                    &join_key(path, key),
                    ConfigIssueKind::Missing,
                    format!("`{key}` is required"),
                ));
            }
        }
    }
}

/// A sibling's value, or its schema default when it is absent.
fn sibling<'a>(
    properties: &'a Map<String, Value>,
    members: &'a Map<String, Value>,
    key: &str,
) -> Option<&'a Value> {
    members
        .get(key)
        .or_else(|| properties.get(key)?.get("default"))
}

/// The two rules that relate keys of one object: `x-member-of` (a string must be one of the
/// strings of a sibling array, or of its default) and `x-at-most` (a number must not exceed a
/// sibling number). Values of the wrong type were reported already and are skipped here.
fn check_sibling_rules(
    properties: &Map<String, Value>,
    members: &Map<String, Value>,
    path: &str,
    out: &mut Vec<ConfigIssue>,
) {
    for (key, value) in members {
        let Some(schema) = properties.get(key) else {
            continue;
        };
        if let (Some(Value::String(list_key)), Value::String(v)) =
            (schema.get("x-member-of"), value)
            && let Some(Value::Array(list)) = sibling(properties, members, list_key)
        {
            let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
            if names.len() == list.len() && !names.contains(&v.as_str()) {
                out.push(issue(
                    &join_key(path, key),
                    ConfigIssueKind::NotAllowed,
                    format!(
                        "must be one of the `{list_key}` ({}), found {}",
                        names.join(", "),
                        shown(value)
                    ),
                ));
            }
        }
        if let (Some(Value::String(upper_key)), Some(v)) = (schema.get("x-at-most"), value.as_f64())
            && let Some(upper) = members.get(upper_key.as_str())
            && let Some(u) = upper.as_f64()
            && v > u
        {
            out.push(issue(
                &join_key(path, key),
                ConfigIssueKind::OutOfRange,
                format!("must be at most `{upper_key}` ({upper}), found {value}"),
            ));
        }
    }
}

/// The keys of a branch that holds nothing but `required`, or `None`.
fn required_only(branch: &Value) -> Option<Vec<&str>> {
    let branch = branch.as_object()?;
    if branch.len() != 1 {
        return None;
    }
    let keys: Vec<&str> = branch
        .get("required")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!keys.is_empty()).then_some(keys)
}

fn check_any_of(
    branches: &[Value],
    value: &Value,
    path: &str,
    depth: usize,
    out: &mut Vec<ConfigIssue>,
) {
    let mut best: Option<Vec<ConfigIssue>> = None;
    for branch in branches {
        let mut issues = Vec::new();
        check_value(branch, value, path, depth, &mut issues);
        if issues.is_empty() {
            return;
        }
        if best.as_ref().is_none_or(|b| issues.len() < b.len()) {
            best = Some(issues);
        }
    }
    let sets: Option<Vec<Vec<&str>>> = branches.iter().map(required_only).collect();
    match sets {
        Some(sets) if !sets.is_empty() => {
            let alternatives: Vec<String> = sets
                .iter()
                .map(|keys| {
                    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
                    if quoted.len() == 1 {
                        quoted.join("")
                    } else {
                        format!("({})", quoted.join(" and "))
                    }
                })
                .collect();
            out.push(issue(
                &join_key(path, sets[0][0]),
                ConfigIssueKind::Missing,
                format!("one of {} is required", alternatives.join(", ")),
            ));
        }
        _ => out.extend(best.unwrap_or_default()),
    }
}

/// `maxTokens` → `max_tokens`.
fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '-' || c == ' ' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The known key closest to an unknown one, when it is close enough to be a typo: up to 1 edit
/// for keys of up to 4 characters, 2 up to 8, 3 beyond; camelCase is compared as snake_case.
pub(crate) fn suggest<'a>(key: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    let snake = snake_case(key);
    let lower = key.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in known {
        let distance = edit_distance(&snake, candidate).min(edit_distance(&lower, candidate));
        let longest = candidate.chars().count().max(key.chars().count());
        let allowed = match longest {
            0..=4 => 1,
            5..=8 => 2,
            _ => 3,
        };
        if distance <= allowed && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, k)| k)
}

/// Problems of a schema itself (patterns that do not compile, unknown types), as
/// `(schema path, message)`.
pub(crate) fn schema_problems(schema: &Value, path: &str, depth: usize, out: &mut Vec<String>) {
    let Value::Object(map) = schema else { return };
    if depth > MAX_CHECK_DEPTH {
        out.push(format!(
            "{path}: nests deeper than {MAX_CHECK_DEPTH} levels"
        ));
        return;
    }
    if let Some(types) = map.get("type") {
        for t in type_names(types) {
            if !matches!(
                t,
                "null" | "boolean" | "integer" | "number" | "string" | "array" | "object"
            ) {
                out.push(format!("{path}: unknown type `{t}`"));
            }
        }
    }
    if let Some(Value::String(p)) = map.get("pattern")
        && let Err(e) = regex::Regex::new(p)
    {
        out.push(format!("{path}: pattern does not compile: {e}"));
    }
    if let Some(Value::Object(props)) = map.get("properties") {
        for (k, s) in props {
            for rule in ["x-member-of", "x-at-most"] {
                if let Some(Value::String(other)) = s.get(rule)
                    && !props.contains_key(other)
                {
                    out.push(format!(
                        "{path}.properties.{k}: `{rule}` names `{other}`, which is not a sibling key"
                    ));
                }
            }
            schema_problems(s, &format!("{path}.properties.{k}"), depth + 1, out);
        }
    }
    if let Some(items) = map.get("items") {
        schema_problems(items, &format!("{path}.items"), depth + 1, out);
    }
    if let Some(extra) = map.get("additionalProperties") {
        schema_problems(
            extra,
            &format!("{path}.additionalProperties"),
            depth + 1,
            out,
        );
    }
    if let Some(Value::Array(branches)) = map.get("anyOf") {
        for (i, b) in branches.iter().enumerate() {
            schema_problems(b, &format!("{path}.anyOf[{i}]"), depth + 1, out);
        }
    }
    if let (Some(default), false) = (map.get("default"), path.is_empty()) {
        let mut issues = Vec::new();
        let mut without_default = map.clone();
        without_default.remove("default");
        check_value(&Value::Object(without_default), default, "", 0, &mut issues);
        for i in issues {
            out.push(format!("{path}: default does not match: {}", i.message));
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }

    #[test]
    fn snake_case_converts_camel_case() {
        assert_eq!(snake_case("maxTokns"), "max_tokns");
        assert_eq!(snake_case("keepSystem"), "keep_system");
        assert_eq!(snake_case("top-k"), "top_k");
    }

    #[test]
    fn keys_with_dots_are_quoted_in_paths() {
        assert_eq!(join_key("", "retry"), "retry");
        assert_eq!(join_key("retry", "max_attempts"), "retry.max_attempts");
        assert_eq!(join_key("headers", "X.Trace"), "headers[\"X.Trace\"]");
    }
}
