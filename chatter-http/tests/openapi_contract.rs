//! The generated OpenAPI document (`GET /openapi.json`) against the old platform's contract
//! (`tests/data/chatter-v1-contract.openapi.json`, a copy of
//! `reference/chatter-v1-contract.openapi.json`), and against the server's real answers.
//!
//! `generated_document_matches_the_v1_contract` compares path by path and operation by
//! operation (operationId, tags, security, parameters, request body, answers with their status
//! codes, media types, schemas and headers), then schema by schema (property names, types,
//! required lists, enums), and reports every difference in one assertion message. The rules:
//!
//! - everything of the contract must be there and the same; the document may have more
//!   (native endpoints and schemas, optional parameters, extra answers, extra properties of
//!   answers), but a request schema may not require more than the contract;
//! - types are compared after normalising `anyOf`/`oneOf`/`type: [..]` unions, so
//!   `anyOf: [{type: string}, {type: null}]` equals `type: [string, null]`; a free-form object
//!   of the contract accepts a precise object schema (a refinement); titles, descriptions,
//!   defaults, formats and bounds are not compared; parameters are compared without their
//!   nullability (a query parameter is either sent or not);
//! - the FastAPI artefact of an empty `application/json` schema next to `text/event-stream` on
//!   streaming answers is not required.
//!
//! What differs on purpose is in [`ALLOWED`], each with its reason. An entry that no longer
//! matches any difference fails the test, so the list stays as short as the truth.
//!
//! `documented_answers_match_the_real_answers` calls (nearly) every endpoint over loopback and
//! checks each answer against the document: the status is documented, the media type is the
//! documented one, and the JSON body has every required property, the documented types, and
//! no property the document does not name.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use common::{ADMIN_KEY, Answer, Harness, PASSWORD, run_sqlite};

/// Differences that are deliberate: (substrings of the difference, reason).
const ALLOWED: &[(&[&str], &str)] = &[
    (
        &[
            ": response 422: media type application/json missing",
            "schema HTTPValidationError: missing",
        ],
        "422 answers are `application/problem+json` Problem documents (with the validator's \
         `errors` of {loc, msg, type} for invalid workflows) instead of FastAPI's \
         HTTPValidationError: every error of the server has one format (docs/http.md, Errors)",
    ),
    (
        &[
            "schema WorkflowTemplateValidationResponse.errors: type",
            "schema WorkflowTemplateValidationResponse.warnings: type",
        ],
        "template validation reports its `errors` and `warnings` as {loc, msg, type} objects, \
         like definition validation (WorkflowValidationResponse), instead of bare strings \
         (docs/http.md, The workflow endpoints)",
    ),
    (
        &[
            "GET /healthz: response 200: header `X-RateLimit-",
            "GET /readyz: response 200: header `X-RateLimit-",
            "GET /live: response 200: header `X-RateLimit-",
            "GET /metrics: response 200: header `X-RateLimit-",
        ],
        "probes and metrics scrapes are not rate limited, so their answers carry no \
         `X-RateLimit-*` headers (docs/http.md, Rate limits)",
    ),
];

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/chatter-v1-contract.openapi.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn served_document(h: &Harness) -> Value {
    let answer = h.get("/openapi.json", None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.content_type(), "application/json");
    assert!(answer.body.is_object(), "{}", answer.text);
    answer.body
}

// ---------------------------------------------------------------------------------------------
// Normalised types
// ---------------------------------------------------------------------------------------------

/// A schema reduced to what is compared: `{"ref": name}`, `{"any": true}`, `{"type": t}` (with
/// `items` for arrays and `enum` for enumerations), `{"union": [..]}`, each with
/// `"nullable": true` when null is allowed.
fn norm(schema: &Value) -> Value {
    let Some(obj) = schema.as_object() else {
        return json!({"any": true});
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        return json!({"ref": r.rsplit('/').next().unwrap_or(r)});
    }
    if let Some(all) = obj.get("allOf").and_then(Value::as_array)
        && all.len() == 1
    {
        return norm(&all[0]);
    }
    let mut members: Vec<Value> = Vec::new();
    if let Some(union) = obj
        .get("anyOf")
        .or_else(|| obj.get("oneOf"))
        .and_then(Value::as_array)
    {
        for member in union {
            members.extend(flatten(norm(member)));
        }
    } else if let Some(types) = obj.get("type").and_then(Value::as_array) {
        for t in types {
            let mut single = schema.clone();
            single["type"] = t.clone();
            members.extend(flatten(norm(&single)));
        }
    } else if let Some(t) = obj.get("type").and_then(Value::as_str) {
        let mut out = json!({"type": t});
        if t == "array" {
            out["items"] = obj.get("items").map_or(json!({"any": true}), norm);
        }
        if let Some(values) = obj.get("enum").and_then(Value::as_array) {
            let mut values: Vec<String> = values.iter().map(Value::to_string).collect();
            values.sort();
            out["enum"] = json!(values);
        }
        return out;
    } else {
        return json!({"any": true});
    }
    let nullable = members.iter().any(|m| m == &json!({"type": "null"}));
    let mut rest: Vec<Value> = members
        .into_iter()
        .filter(|m| m != &json!({"type": "null"}))
        .collect();
    if rest.iter().any(|m| m.get("any").is_some()) {
        return json!({"any": true});
    }
    if rest.contains(&json!({"type": "number"})) {
        rest.retain(|m| m != &json!({"type": "integer"}));
    }
    rest.sort_by_key(Value::to_string);
    rest.dedup();
    let mut out = if rest.len() == 1 {
        rest.remove(0)
    } else {
        json!({"union": rest})
    };
    if nullable {
        out["nullable"] = json!(true);
    }
    out
}

/// The members of a normalised union (a nullable type is itself and null).
fn flatten(n: Value) -> Vec<Value> {
    if let Some(union) = n.get("union").and_then(Value::as_array) {
        let mut out = union.clone();
        if n.get("nullable").is_some() {
            out.push(json!({"type": "null"}));
        }
        return out;
    }
    if n.get("nullable").is_some() {
        let mut plain = n.clone();
        plain.as_object_mut().unwrap().remove("nullable");
        return vec![plain, json!({"type": "null"})];
    }
    vec![n]
}

fn without_null(mut n: Value) -> Value {
    if let Some(obj) = n.as_object_mut() {
        obj.remove("nullable");
    }
    n
}

/// Whether a normalised schema of ours serves where the contract's is expected.
fn compatible(theirs: &Value, ours: &Value) -> bool {
    if theirs == ours || theirs.get("any").is_some() {
        return true;
    }
    if theirs.get("nullable") != ours.get("nullable") {
        return false;
    }
    let (t, o) = (without_null(theirs.clone()), without_null(ours.clone()));
    if t == json!({"type": "object"}) && (o == json!({"type": "object"}) || o.get("ref").is_some())
    {
        return true;
    }
    if t.get("type") == Some(&json!("array")) && o.get("type") == Some(&json!("array")) {
        return compatible(&t["items"], &o["items"]);
    }
    if let (Some(tu), Some(ou)) = (
        t.get("union").and_then(Value::as_array),
        o.get("union").and_then(Value::as_array),
    ) {
        return tu.iter().all(|a| ou.iter().any(|b| compatible(a, b)))
            && ou.iter().all(|b| tu.iter().any(|a| compatible(a, b)));
    }
    false
}

fn show(n: &Value) -> String {
    n.to_string()
}

// ---------------------------------------------------------------------------------------------
// The comparison
// ---------------------------------------------------------------------------------------------

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

fn schema_of_media(media: &Value) -> Value {
    media.get("schema").cloned().unwrap_or_else(|| json!({}))
}

/// Schema names reachable from the contract's request bodies.
fn request_schemas(doc: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, doc: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    let name = r.rsplit('/').next().unwrap_or(r).to_owned();
                    if out.insert(name.clone()) {
                        walk(&doc["components"]["schemas"][&name], doc, out);
                    }
                }
                for value in map.values() {
                    walk(value, doc, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, doc, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for method in METHODS {
            if let Some(body) = item.get(*method).and_then(|o| o.get("requestBody")) {
                walk(body, doc, &mut out);
            }
        }
    }
    out
}

fn compare_parameters(op: &str, theirs: &Value, ours: &Value, diffs: &mut Vec<String>) {
    let key = |p: &Value| {
        let name = p["name"].as_str().unwrap_or_default();
        let location = p["in"].as_str().unwrap_or_default();
        let name = if location == "header" {
            name.to_ascii_lowercase()
        } else {
            name.to_owned()
        };
        (location.to_owned(), name)
    };
    let empty = Vec::new();
    let ours_by_key: BTreeMap<_, _> = ours
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|p| (key(p), p))
        .collect();
    let theirs_keys: BTreeSet<_> = theirs
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(key)
        .collect();
    for p in theirs.as_array().unwrap_or(&empty) {
        let (location, name) = key(p);
        let Some(o) = ours_by_key.get(&(location.clone(), name.clone())) else {
            diffs.push(format!("{op}: parameter {location} `{name}` missing"));
            continue;
        };
        let required = |p: &Value| p["required"].as_bool().unwrap_or(false);
        if required(p) != required(o) {
            diffs.push(format!(
                "{op}: parameter {location} `{name}`: required {} != ours {}",
                required(p),
                required(o)
            ));
        }
        let (t, u) = (
            without_null(norm(&schema_of_media(p))),
            without_null(norm(&schema_of_media(o))),
        );
        if !compatible(&t, &u) {
            diffs.push(format!(
                "{op}: parameter {location} `{name}`: type {} != ours {}",
                show(&t),
                show(&u)
            ));
        }
    }
    for (k, o) in &ours_by_key {
        if !theirs_keys.contains(k) && o["required"].as_bool().unwrap_or(false) {
            diffs.push(format!("{op}: extra required parameter {} `{}`", k.0, k.1));
        }
    }
}

fn compare_content(what: &str, theirs: &Value, ours: &Value, diffs: &mut Vec<String>) {
    let Some(theirs) = theirs.as_object() else {
        return;
    };
    let ours = ours.as_object().cloned().unwrap_or_default();
    for (media, t) in theirs {
        let artefact = theirs.len() > 1 && t.get("schema") == Some(&json!({}));
        let Some(o) = ours.get(media) else {
            if !artefact {
                diffs.push(format!(
                    "{what}: media type {media} missing (ours: {})",
                    ours.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            continue;
        };
        let (tn, on) = (norm(&schema_of_media(t)), norm(&schema_of_media(o)));
        if !compatible(&tn, &on) {
            diffs.push(format!(
                "{what}: {media} schema {} != ours {}",
                show(&tn),
                show(&on)
            ));
        }
    }
}

fn compare_operation(op: &str, theirs: &Value, ours: &Value, diffs: &mut Vec<String>) {
    if theirs["operationId"] != ours["operationId"] {
        diffs.push(format!(
            "{op}: operationId {} != ours {}",
            theirs["operationId"], ours["operationId"]
        ));
    }
    if theirs["tags"] != ours["tags"] {
        diffs.push(format!(
            "{op}: tags {} != ours {}",
            theirs["tags"], ours["tags"]
        ));
    }
    let security = |v: &Value| v.get("security").cloned().unwrap_or_else(|| json!([]));
    if security(theirs) != security(ours) {
        diffs.push(format!(
            "{op}: security {} != ours {}",
            security(theirs),
            security(ours)
        ));
    }
    compare_parameters(
        op,
        theirs.get("parameters").unwrap_or(&json!([])),
        ours.get("parameters").unwrap_or(&json!([])),
        diffs,
    );
    match (theirs.get("requestBody"), ours.get("requestBody")) {
        (Some(t), Some(o)) => {
            let required = |b: &Value| b["required"].as_bool().unwrap_or(false);
            if required(t) != required(o) {
                diffs.push(format!(
                    "{op}: request body required {} != ours {}",
                    required(t),
                    required(o)
                ));
            }
            compare_content(
                &format!("{op}: request body"),
                &t["content"],
                &o["content"],
                diffs,
            );
        }
        (Some(_), None) => diffs.push(format!("{op}: request body missing")),
        (None, Some(o)) if o["required"].as_bool().unwrap_or(false) => {
            diffs.push(format!("{op}: extra required request body"));
        }
        _ => {}
    }
    let ours_responses = ours["responses"].as_object().cloned().unwrap_or_default();
    for (status, t) in theirs["responses"].as_object().unwrap() {
        let what = format!("{op}: response {status}");
        let Some(o) = ours_responses.get(status) else {
            diffs.push(format!("{what}: missing"));
            continue;
        };
        compare_content(
            &what,
            t.get("content").unwrap_or(&json!({})),
            o.get("content").unwrap_or(&json!({})),
            diffs,
        );
        let ours_headers: BTreeSet<String> = o
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| h.keys().map(|k| k.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        if let Some(headers) = t.get("headers").and_then(Value::as_object) {
            for name in headers.keys() {
                if !ours_headers.contains(&name.to_ascii_lowercase()) {
                    diffs.push(format!("{what}: header `{name}` missing"));
                }
            }
        }
    }
}

fn compare_schema(
    name: &str,
    theirs: &Value,
    ours: &Value,
    request: bool,
    diffs: &mut Vec<String>,
) {
    let what = format!("schema {name}");
    let required = |s: &Value| -> BTreeSet<String> {
        s.get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (t_req, o_req) = (required(theirs), required(ours));
    let t_props = theirs.get("properties").and_then(Value::as_object);
    let o_props = ours.get("properties").and_then(Value::as_object);
    match (t_props, o_props) {
        (Some(t_props), Some(o_props)) => {
            for (prop, t) in t_props {
                let Some(o) = o_props.get(prop) else {
                    diffs.push(format!("{what}.{prop}: missing"));
                    continue;
                };
                let (tn, on) = (norm(t), norm(o));
                if !compatible(&tn, &on) {
                    diffs.push(format!(
                        "{what}.{prop}: type {} != ours {}",
                        show(&tn),
                        show(&on)
                    ));
                }
                if t_req.contains(prop) != o_req.contains(prop) {
                    diffs.push(format!(
                        "{what}.{prop}: required {} != ours {}",
                        t_req.contains(prop),
                        o_req.contains(prop)
                    ));
                }
            }
            for prop in o_req.iter().filter(|p| !t_props.contains_key(*p)) {
                if request {
                    diffs.push(format!("{what}: extra required property `{prop}`"));
                }
            }
        }
        (Some(_), None) => diffs.push(format!("{what}: not an object with properties")),
        _ => {
            let (tn, on) = (norm(theirs), norm(ours));
            if !compatible(&tn, &on) {
                diffs.push(format!("{what}: {} != ours {}", show(&tn), show(&on)));
            }
        }
    }
}

/// Every difference between the contract and our document, as lines.
fn differences(theirs: &Value, ours: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    for key in ["openapi"] {
        if theirs[key] != ours[key] {
            diffs.push(format!("{key}: {} != ours {}", theirs[key], ours[key]));
        }
    }
    if theirs["info"]["title"] != ours["info"]["title"] {
        diffs.push(format!(
            "info.title: {} != ours {}",
            theirs["info"]["title"], ours["info"]["title"]
        ));
    }
    for (path, item) in theirs["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(t) = item.get(*method) else {
                continue;
            };
            let op = format!("{} {path}", method.to_ascii_uppercase());
            match ours["paths"].get(path).and_then(|i| i.get(*method)) {
                Some(o) => compare_operation(&op, t, o, &mut diffs),
                None => diffs.push(format!("{op}: missing")),
            }
        }
    }
    let requests = request_schemas(theirs);
    for (name, t) in theirs["components"]["schemas"].as_object().unwrap() {
        match ours["components"]["schemas"].get(name) {
            Some(o) => compare_schema(name, t, o, requests.contains(name), &mut diffs),
            None => diffs.push(format!("schema {name}: missing")),
        }
    }
    for (name, t) in theirs["components"]["securitySchemes"].as_object().unwrap() {
        let o = &ours["components"]["securitySchemes"][name];
        if t != o {
            diffs.push(format!("securityScheme {name}: {t} != ours {o}"));
        }
    }
    diffs
}

#[tokio::test]
async fn generated_document_matches_the_v1_contract() {
    run_sqlite(|h| async move {
        let ours = served_document(&h).await;
        // What is served is what the code generates (and what `chatter openapi` prints).
        let generated: Value =
            serde_json::from_str(&chatter_http::server::openapi::document_json()).unwrap();
        assert_eq!(ours, generated);

        let theirs = reference();
        let all = differences(&theirs, &ours);
        let mut used = vec![false; ALLOWED.len()];
        let unexplained: Vec<&String> = all
            .iter()
            .filter(|d| {
                let hit = ALLOWED
                    .iter()
                    .position(|(patterns, _)| patterns.iter().any(|p| d.contains(p)));
                if let Some(i) = hit {
                    used[i] = true;
                }
                hit.is_none()
            })
            .collect();
        let stale: Vec<&str> = ALLOWED
            .iter()
            .zip(&used)
            .filter(|(_, used)| !**used)
            .map(|((_, reason), _)| *reason)
            .collect();
        assert!(
            unexplained.is_empty() && stale.is_empty(),
            "{} difference(s) from the v1 contract:\n  {}\nallow-list entries that match \
             nothing any more (remove them):\n  {}",
            unexplained.len(),
            unexplained
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            stale.join("\n  ")
        );

        // The comparison saw the whole contract (41 operations), and the native endpoints are
        // documented too.
        let operations = |doc: &Value| -> BTreeSet<String> {
            let mut out = BTreeSet::new();
            for (path, item) in doc["paths"].as_object().unwrap() {
                for method in METHODS {
                    if item.get(*method).is_some() {
                        out.insert(format!("{method} {path}"));
                    }
                }
            }
            out
        };
        let (t_ops, o_ops) = (operations(&theirs), operations(&ours));
        assert_eq!(t_ops.len(), 41);
        assert!(o_ops.len() > 60, "{o_ops:?}");
        for native in [
            "post /api/v1/workflows/executions/{execution_id}/resume",
            "post /api/v1/workflows/executions/{execution_id}/approve",
            "post /api/v1/workflows/executions/{execution_id}/cancel",
            "get /api/v1/workflows/executions/{execution_id}/steps",
            "post /api/v1/workflows/executions/{execution_id}/fork",
            "get /api/v1/workflows/executions/{execution_id}/events",
            "post /api/v1/workspaces",
            "delete /api/v1/workspaces/{workspace_id}/resources/{resource_type}/{resource_id}",
            "post /api/v1/auth/api-keys",
            "delete /api/v1/auth/api-keys/{key_id}",
            "get /api/v1/admin/users",
            "get /api/v1/audit/logs",
            "get /openapi.json",
            "get /v1/models",
            "get /v1/models/{model}",
            "post /v1/chat/completions",
        ] {
            assert!(o_ops.contains(native), "{native} is not documented");
        }
    })
    .await;
}

#[tokio::test]
async fn chatter_openapi_prints_the_served_document() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatter"))
        .arg("openapi")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    run_sqlite(|h| async move {
        assert_eq!(served_document(&h).await, printed);
    })
    .await;
}

#[tokio::test]
async fn the_comparison_reports_what_differs() {
    // The comparison itself: a document with a renamed operation, a lost parameter, a
    // required property turned optional and a changed type is reported line by line.
    let theirs = reference();
    let mut ours = theirs.clone();
    let get = &mut ours["paths"]["/api/v1/workflows/definitions/{workflow_id}"]["get"];
    get["operationId"] = json!("get_definition");
    get["parameters"] = json!([]);
    let schema = &mut ours["components"]["schemas"]["WorkflowDeleteResponse"];
    schema["required"] = json!(["message"]);
    schema["properties"]["message"] = json!({"type": "integer"});
    ours["paths"]
        .as_object_mut()
        .unwrap()
        .remove("/api/v1/auth/logout");
    // Equivalent spellings are not differences.
    let schema = &mut ours["components"]["schemas"]["ChatRequest"]["properties"];
    schema["conversation_id"] = json!({"type": ["string", "null"]});
    schema["workflow_config"] = json!({"oneOf": [{"type": "null"}, {"type": "object"}]});
    let diffs = differences(&theirs, &ours);
    assert_eq!(
        diffs,
        vec![
            "POST /api/v1/auth/logout: missing",
            "GET /api/v1/workflows/definitions/{workflow_id}: operationId \
             \"get_workflow_definition_api_v1_workflows_definitions__workflow_id__get\" != ours \
             \"get_definition\"",
            "GET /api/v1/workflows/definitions/{workflow_id}: parameter path `workflow_id` missing",
            "schema WorkflowDeleteResponse.message: type {\"type\":\"string\"} != ours {\"type\":\"integer\"}",
            "schema WorkflowDeleteResponse.workflow_id: required true != ours false",
        ]
    );
    assert!(differences(&theirs, &theirs).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The document against real answers
// ---------------------------------------------------------------------------------------------

fn resolve<'a>(schema: &'a Value, doc: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or(r);
            let target = &doc["components"]["schemas"][name];
            assert!(!target.is_null(), "dangling $ref {r}");
            resolve(target, doc)
        }
        None => schema,
    }
}

fn type_matches(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

/// Checks `value` against `schema`; `strict`: properties the schema does not name are errors.
fn check(
    value: &Value,
    schema: &Value,
    doc: &Value,
    at: &str,
    strict: bool,
    errs: &mut Vec<String>,
) {
    let schema = resolve(schema, doc);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        let mut names = BTreeSet::new();
        for member in all {
            check(value, member, doc, at, false, errs);
            if let Some(props) = resolve(member, doc)
                .get("properties")
                .and_then(Value::as_object)
            {
                names.extend(props.keys().cloned());
            }
        }
        if let (true, Some(obj)) = (strict, value.as_object()) {
            for key in obj.keys().filter(|k| !names.contains(*k)) {
                errs.push(format!("{at}.{key}: not in the document"));
            }
        }
        return;
    }
    if let Some(union) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        let fits = union.iter().any(|member| {
            let mut e = Vec::new();
            check(value, member, doc, at, strict, &mut e);
            e.is_empty()
        });
        if !fits {
            errs.push(format!("{at}: {value} matches no member of {union:?}"));
        }
        return;
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(value, t)) {
        errs.push(format!("{at}: {value} is not of type {types:?}"));
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !value.is_null()
        && !values.contains(value)
    {
        errs.push(format!("{at}: {value} is not one of {values:?}"));
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(name) {
                errs.push(format!("{at}: required `{name}` missing"));
            }
        }
        if let Some(props) = props {
            for (key, v) in obj {
                match props.get(key) {
                    Some(s) => check(v, s, doc, &format!("{at}.{key}"), strict, errs),
                    None if strict => errs.push(format!("{at}.{key}: not in the document")),
                    None => {}
                }
            }
        }
    }
    if let (Some(items), Some(schema_items)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(item, schema_items, doc, &format!("{at}[{i}]"), strict, errs);
        }
    }
}

/// Checks one real answer against the documented operation `method template`.
fn conforms(doc: &Value, method: &str, template: &str, answer: &Answer, errs: &mut Vec<String>) {
    let op = format!("{} {template}", method.to_ascii_uppercase());
    let Some(operation) = doc["paths"].get(template).and_then(|i| i.get(method)) else {
        errs.push(format!("{op}: not documented"));
        return;
    };
    let status = answer.status.to_string();
    let responses = &operation["responses"];
    let Some(response) = responses.get(&status).or_else(|| {
        // `default` documents the error statuses not listed one by one.
        (answer.status >= 400)
            .then(|| responses.get("default"))
            .flatten()
    }) else {
        errs.push(format!(
            "{op}: status {status} is not documented ({})",
            answer.text
        ));
        return;
    };
    // Headers: the documented ones are sent (the `X-RateLimit-*` set only when the server
    // limits requests, i.e. when it sent one of them), and the rate limit headers sent are
    // documented.
    let documented: BTreeSet<String> = response["headers"]
        .as_object()
        .map(|h| h.keys().map(|k| k.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    let limits_on = answer.headers.contains_key("x-ratelimit-limit-minute");
    for name in &documented {
        if (limits_on || !name.starts_with("x-ratelimit-")) && !answer.headers.contains_key(name) {
            errs.push(format!(
                "{op} {status}: documented header `{name}` not sent"
            ));
        }
    }
    for name in answer.headers.keys().map(|n| n.as_str()) {
        if (name.starts_with("x-ratelimit-") || name == "retry-after") && !documented.contains(name)
        {
            errs.push(format!(
                "{op} {status}: header `{name}` sent but not documented"
            ));
        }
    }
    let media = answer.content_type().split(';').next().unwrap_or("").trim();
    let Some(content) = response["content"].get(media) else {
        errs.push(format!(
            "{op} {status}: media type `{media}` is not documented (documented: {})",
            response["content"]
        ));
        return;
    };
    if media.ends_with("json") {
        check(
            &answer.body,
            &schema_of_media(content),
            doc,
            &format!("{op} {status}"),
            true,
            errs,
        );
    }
}

/// start → model `chat` → end.
fn graph() -> Value {
    json!({
        "nodes": [
            {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
             "data": {"label": "Start", "nodeType": "start"}},
            {"id": "chat", "type": "model", "position": {"x": 200, "y": 0},
             "data": {"label": "Chat", "nodeType": "model", "config": {"maxTokens": 300}}},
            {"id": "end", "type": "end", "position": {"x": 400, "y": 0},
             "data": {"label": "End", "nodeType": "end"}}
        ],
        "edges": [
            {"id": "e1", "source": "start", "target": "chat"},
            {"id": "e2", "source": "chat", "target": "end", "type": "smoothstep",
             "data": {"condition": "no_tool_calls", "label": "done"}}
        ]
    })
}

/// start → approval `ask` → end.
fn approval_graph() -> Value {
    json!({
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "ask", "type": "approval",
             "config": {"question": "Ship it?", "allowed_decisions": ["approve", "reject"]}},
            {"id": "end", "type": "end"}
        ],
        "edges": [
            {"source": "start", "target": "ask"},
            {"source": "ask", "target": "end"}
        ]
    })
}

#[tokio::test]
async fn documented_answers_match_the_real_answers() {
    run_sqlite(|h| async move {
        let doc = served_document(&h).await;
        let mut errs = Vec::new();
        let mut seen = BTreeSet::new();
        let admin = Some(ADMIN_KEY);
        let ann = h.user("ann", &["user"]).await;
        let key = Some(ann.key.as_str());
        let w = "/api/v1/workflows";

        // (method, template, answer): each answer is checked against the document.
        macro_rules! call {
            ($method:literal, $template:expr, $path:expr, $token:expr, $body:expr) => {{
                let body: Option<Value> = $body;
                let answer = h.send($method, &$path, $token, body.as_ref()).await;
                conforms(
                    &doc,
                    &$method.to_ascii_lowercase(),
                    &$template,
                    &answer,
                    &mut errs,
                );
                seen.insert(format!("{} {}", $method.to_ascii_lowercase(), $template));
                answer
            }};
        }

        for path in ["/healthz", "/readyz", "/live", "/openapi.json"] {
            call!("GET", path, path, None, None);
        }

        // Metrics: the JSON document by default, Prometheus text and OpenMetrics by `Accept`.
        let metrics = call!("GET", "/metrics", "/metrics", None, None);
        assert_eq!(metrics.status, 200, "{}", metrics.text);
        assert_eq!(metrics.content_type(), "application/json");
        for (accept, media) in [
            ("text/plain", "text/plain"),
            ("application/openmetrics-text", "application/openmetrics-text"),
        ] {
            let response = h
                .client
                .get(h.url("/metrics"))
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            let answer = common::answer(response).await;
            assert_eq!(answer.status, 200, "{}", answer.text);
            assert!(answer.content_type().starts_with(media), "{answer:?}");
            assert!(answer.text.contains("chatter_"), "{}", answer.text);
            conforms(&doc, "get", "/metrics", &answer, &mut errs);
        }

        // The global events stream: its answer's status and media type (it never ends; the
        // client goes after the headers).
        let opened = h
            .client
            .get(h.url("/api/v1/events/stream"))
            .bearer_auth(ann.key.as_str())
            .send()
            .await
            .unwrap();
        let headers_only = Answer {
            status: opened.status().as_u16(),
            headers: opened.headers().clone(),
            body: Value::Null,
            text: String::new(),
        };
        drop(opened);
        assert_eq!(headers_only.status, 200);
        conforms(
            &doc,
            "get",
            "/api/v1/events/stream",
            &headers_only,
            &mut errs,
        );
        seen.insert("get /api/v1/events/stream".to_owned());
        let future = ulid::Ulid::from_parts(u64::MAX >> 20, 0).to_string();
        let refused = h
            .client
            .get(h.url("/api/v1/events/stream"))
            .bearer_auth(ann.key.as_str())
            .header("Last-Event-ID", future)
            .send()
            .await
            .unwrap();
        let refused = common::answer(refused).await;
        refused.assert_problem(422);
        conforms(&doc, "get", "/api/v1/events/stream", &refused, &mut errs);

        // Authentication
        let login = call!(
            "POST",
            "/api/v1/auth/login",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "ann", "password": PASSWORD}))
        );
        assert_eq!(login.status, 200, "{}", login.text);
        let refresh_token = login.body["refresh_token"].as_str().unwrap().to_owned();
        call!(
            "POST",
            "/api/v1/auth/login",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "ann", "password": "wrong password"}))
        )
        .assert_problem(401);
        let refreshed = call!(
            "POST",
            "/api/v1/auth/refresh",
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh_token}))
        );
        assert_eq!(refreshed.status, 200, "{}", refreshed.text);
        let access = refreshed.body["access_token"].as_str().unwrap().to_owned();
        call!("GET", "/api/v1/auth/me", "/api/v1/auth/me", key, None);
        call!(
            "PUT",
            "/api/v1/auth/me",
            "/api/v1/auth/me",
            key,
            Some(json!({"full_name": "Ann Example", "bio": "testing"}))
        );
        let created_key = call!(
            "POST",
            "/api/v1/auth/api-keys",
            "/api/v1/auth/api-keys",
            key,
            Some(json!({"name": "ci"}))
        );
        call!(
            "GET",
            "/api/v1/auth/api-keys",
            "/api/v1/auth/api-keys",
            key,
            None
        );
        assert_eq!(created_key.status, 200, "{}", created_key.text);
        let key_id = created_key.body["id"].as_str().unwrap().to_owned();
        call!(
            "DELETE",
            "/api/v1/auth/api-keys/{key_id}",
            format!("/api/v1/auth/api-keys/{key_id}"),
            key,
            None
        );
        call!(
            "GET",
            "/api/v1/admin/users",
            "/api/v1/admin/users",
            admin,
            None
        );
        let bob = call!(
            "POST",
            "/api/v1/admin/users",
            "/api/v1/admin/users",
            admin,
            Some(json!({"email": "bob@example.com", "username": "bob", "password": PASSWORD}))
        );
        assert_eq!(bob.status, 200, "{}", bob.text);
        let bob_id = bob.body["id"].as_str().unwrap().to_owned();
        call!(
            "PUT",
            "/api/v1/admin/users/{user_id}",
            format!("/api/v1/admin/users/{bob_id}"),
            admin,
            Some(json!({"roles": ["power_user"]}))
        );

        // Definitions
        let mut body = graph();
        body["name"] = json!("doc check");
        body["tags"] = json!(["a"]);
        body["metadata"] = json!({"color": "blue"});
        let created = call!(
            "POST",
            format!("{w}/definitions"),
            format!("{w}/definitions"),
            key,
            Some(body)
        );
        assert_eq!(created.status, 200, "{}", created.text);
        let id = created.body["id"].as_str().unwrap().to_owned();
        let by_id = format!("{w}/definitions/{{workflow_id}}");
        call!(
            "GET",
            format!("{w}/definitions"),
            format!("{w}/definitions"),
            key,
            None
        );
        call!("GET", by_id, format!("{w}/definitions/{id}"), key, None);
        call!("GET", by_id, format!("{w}/definitions/nope"), key, None).assert_problem(404);
        call!(
            "PUT",
            by_id,
            format!("{w}/definitions/{id}"),
            key,
            Some(json!({"description": "changed"}))
        );
        let mut invalid = graph();
        invalid["name"] = json!("bad");
        invalid["edges"] = json!([]);
        call!(
            "POST",
            format!("{w}/definitions"),
            format!("{w}/definitions"),
            key,
            Some(invalid.clone())
        )
        .assert_problem(422);
        call!(
            "POST",
            format!("{w}/definitions/validate"),
            format!("{w}/definitions/validate"),
            key,
            Some(invalid)
        );
        call!(
            "POST",
            format!("{w}/definitions/validate"),
            format!("{w}/definitions/validate"),
            key,
            Some(graph())
        );
        call!(
            "GET",
            format!("{by_id}/analytics"),
            format!("{w}/definitions/{id}/analytics"),
            key,
            None
        );
        let execution = call!(
            "POST",
            format!("{by_id}/execute"),
            format!("{w}/definitions/{id}/execute"),
            key,
            Some(json!({"input_data": {"message": "hello"}, "definition_id": id}))
        );
        assert_eq!(execution.status, 200, "{}", execution.text);
        let eid = execution.body["id"].as_str().unwrap().to_owned();
        call!(
            "GET",
            format!("{w}/executions"),
            format!("{w}/executions"),
            key,
            None
        );
        call!(
            "GET",
            format!("{by_id}/executions"),
            format!("{w}/definitions/{id}/executions"),
            key,
            None
        );
        call!(
            "GET",
            format!("{by_id}/executions/{{execution_id}}"),
            format!("{w}/definitions/{id}/executions/{eid}"),
            key,
            None
        );
        call!(
            "GET",
            format!("{by_id}/executions/{{execution_id}}/logs"),
            format!("{w}/definitions/{id}/executions/{eid}/logs"),
            key,
            None
        );
        call!(
            "POST",
            format!("{w}/definitions/custom/execute"),
            format!("{w}/definitions/custom/execute?message=hi"),
            key,
            Some(graph())
        );
        call!(
            "POST",
            format!("{w}/definitions/from-template"),
            format!("{w}/definitions/from-template"),
            key,
            Some(json!({"template_id": "universal_chat", "name_suffix": "copy"}))
        );

        // Native execution endpoints
        let x = format!("{w}/executions/{{execution_id}}");
        call!(
            "GET",
            format!("{x}/steps"),
            format!("{w}/executions/{eid}/steps"),
            key,
            None
        );
        let events = call!(
            "GET",
            format!("{x}/events"),
            format!("{w}/executions/{eid}/events"),
            key,
            None
        );
        assert!(
            events.text.contains("event: execution_completed"),
            "{}",
            events.text
        );
        call!(
            "POST",
            format!("{x}/cancel"),
            format!("{w}/executions/{eid}/cancel"),
            key,
            None
        )
        .assert_problem(409);
        call!(
            "POST",
            format!("{x}/fork"),
            format!("{w}/executions/{eid}/fork"),
            key,
            Some(json!({"step": 1}))
        );
        call!(
            "POST",
            format!("{x}/resume"),
            format!("{w}/executions/{eid}/resume"),
            key,
            None
        );
        let mut approval = approval_graph();
        approval["name"] = json!("approval");
        let approval = h.post(&format!("{w}/definitions"), key, &approval).await;
        let waiting = h
            .post(
                &format!(
                    "{w}/definitions/{}/execute",
                    approval.body["id"].as_str().unwrap()
                ),
                key,
                &json!({"input_data": {}}),
            )
            .await;
        assert_eq!(waiting.body["status"], "waiting", "{}", waiting.text);
        let waiting_id = waiting.body["id"].as_str().unwrap().to_owned();
        call!(
            "POST",
            format!("{x}/approve"),
            format!("{w}/executions/{waiting_id}/approve"),
            key,
            Some(json!({"decision": "approve"}))
        );

        // Templates
        let t = format!("{w}/templates/{{template_id}}");
        call!(
            "GET",
            format!("{w}/templates"),
            format!("{w}/templates"),
            key,
            None
        );
        call!(
            "GET",
            format!("{t}/load"),
            format!("{w}/templates/universal_chat/load"),
            key,
            None
        );
        let exported = call!(
            "GET",
            format!("{t}/export"),
            format!("{w}/templates/universal_chat/export"),
            key,
            None
        );
        let mut spec = exported.body["template"].clone();
        // The built-in template is public; publishing a copy needs `template:publish`.
        spec["is_public"] = json!(false);
        call!(
            "POST",
            format!("{w}/templates/validate"),
            format!("{w}/templates/validate"),
            key,
            Some(json!({"template": spec}))
        );
        let imported = call!(
            "POST",
            format!("{w}/templates/import"),
            format!("{w}/templates/import"),
            key,
            Some(json!({"template": spec, "override_name": "my chat"}))
        );
        assert_eq!(imported.status, 200, "{}", imported.text);
        let tid = imported.body["id"].as_str().unwrap().to_owned();
        call!(
            "PUT",
            t,
            format!("{w}/templates/{tid}"),
            key,
            Some(json!({"description": "changed"}))
        );
        call!(
            "POST",
            format!("{t}/execute"),
            format!("{w}/templates/{tid}/execute"),
            key,
            Some(json!({"input_data": {"message": "hi"}}))
        );
        call!(
            "POST",
            format!("{w}/templates/execute"),
            format!("{w}/templates/execute"),
            key,
            Some(json!({"template": spec, "input_data": {"message": "hi"}}))
        );
        call!(
            "POST",
            format!("{w}/templates"),
            format!("{w}/templates"),
            key,
            Some(json!({"name": "from def", "description": "d", "workflow_definition_id": id}))
        );
        call!("DELETE", t, format!("{w}/templates/{tid}"), key, None);

        // Node types, defaults, settings
        call!(
            "GET",
            format!("{w}/node-types"),
            format!("{w}/node-types"),
            key,
            None
        );
        call!(
            "GET",
            format!("{w}/node-types/modern"),
            format!("{w}/node-types/modern"),
            key,
            None
        );
        call!(
            "GET",
            format!("{w}/defaults"),
            format!("{w}/defaults?node_type=model"),
            key,
            None
        );
        call!(
            "POST",
            format!("{w}/memory/configure"),
            format!("{w}/memory/configure?base_window_size=5"),
            key,
            None
        );
        call!(
            "POST",
            format!("{w}/tools/configure"),
            format!("{w}/tools/configure?max_total_calls=5"),
            key,
            None
        );

        // Chat
        let chat = call!(
            "POST",
            format!("{w}/execute/chat"),
            format!("{w}/execute/chat"),
            key,
            Some(json!({"message": "hello"}))
        );
        assert_eq!(chat.status, 200, "{}", chat.text);
        let streamed = call!(
            "POST",
            format!("{w}/execute/chat/streaming"),
            format!("{w}/execute/chat/streaming"),
            key,
            Some(json!({"message": "hello", "conversation_id": chat.body["conversation_id"]}))
        );
        assert!(
            streamed.text.ends_with("data: [DONE]\n\n"),
            "{}",
            streamed.text
        );

        // Workspaces
        let s = "/api/v1/workspaces";
        let ws = call!("POST", s, s, key, Some(json!({"name": "team"})));
        assert_eq!(ws.status, 200, "{}", ws.text);
        let ws_id = ws.body["id"].as_str().unwrap().to_owned();
        call!("GET", s, s, key, None);
        let one = format!("{s}/{{workspace_id}}");
        call!("GET", one, format!("{s}/{ws_id}"), key, None);
        call!(
            "PUT",
            format!("{one}/members/{{user_id}}"),
            format!("{s}/{ws_id}/members/{bob_id}"),
            key,
            Some(json!({"role": "viewer"}))
        );
        call!(
            "POST",
            format!("{one}/resources"),
            format!("{s}/{ws_id}/resources"),
            key,
            Some(json!({"resource_type": "definition", "resource_id": id}))
        );
        call!(
            "DELETE",
            format!("{one}/resources/{{resource_type}}/{{resource_id}}"),
            format!("{s}/{ws_id}/resources/definition/{id}"),
            key,
            None
        );
        call!(
            "DELETE",
            format!("{one}/members/{{user_id}}"),
            format!("{s}/{ws_id}/members/{bob_id}"),
            key,
            None
        );
        call!("DELETE", one, format!("{s}/{ws_id}"), key, None);

        // Jobs (the server's workers may run them meanwhile: any state is documented)
        let async_run = call!(
            "POST",
            format!("{by_id}/execute"),
            format!("{w}/definitions/{id}/execute?async=true&priority=high&max_attempts=2"),
            key,
            Some(json!({"input_data": {"message": "later"}}))
        );
        assert_eq!(async_run.status, 202, "{}", async_run.text);
        assert_eq!(async_run.body["priority"], "high", "{}", async_run.text);
        call!(
            "POST",
            format!("{by_id}/execute"),
            format!("{w}/definitions/{id}/execute?async=true&priority=urgent"),
            key,
            Some(json!({"input_data": {}}))
        )
        .assert_problem(422);
        for (template, path) in [
            (
                format!("{w}/definitions/custom/execute"),
                format!("{w}/definitions/custom/execute?message=hi&async=true"),
            ),
            (
                format!("{t}/execute"),
                format!("{w}/templates/universal_chat/execute?async=true"),
            ),
        ] {
            let body = if path.contains("custom") {
                graph()
            } else {
                json!({"input_data": {"message": "hi"}})
            };
            let queued = call!("POST", template, path, key, Some(body));
            assert_eq!(queued.status, 202, "{}", queued.text);
        }
        let queued = call!(
            "POST",
            format!("{w}/templates/execute"),
            format!("{w}/templates/execute?async=true&timeout_ms=60000"),
            key,
            Some(json!({"template": spec, "input_data": {"message": "hi"}}))
        );
        assert_eq!(queued.status, 202, "{}", queued.text);
        let j = "/api/v1/jobs";
        let job = call!(
            "POST",
            j,
            j,
            key,
            Some(json!({"workflow_id": id, "input": {"message": "job"}, "priority": "low"}))
        );
        assert_eq!(job.status, 202, "{}", job.text);
        let job_id = job.body["id"].as_str().unwrap().to_owned();
        call!(
            "POST",
            j,
            j,
            key,
            Some(json!({"workflow_id": id, "template_id": "universal_chat"}))
        )
        .assert_problem(422);
        call!("POST", j, j, key, Some(json!({"workflow_id": "nope"}))).assert_problem(404);
        let batch = call!(
            "POST",
            format!("{j}/batch"),
            format!("{j}/batch"),
            key,
            Some(json!({"template_id": "universal_chat", "concurrency": 1,
                        "inputs": [{"message": "one"}, {"message": "two"}]}))
        );
        assert_eq!(batch.status, 202, "{}", batch.text);
        call!(
            "POST",
            format!("{j}/batch"),
            format!("{j}/batch"),
            key,
            Some(json!({"template_id": "universal_chat", "inputs": []}))
        )
        .assert_problem(422);
        call!("GET", j, j, key, None);
        call!("GET", j, format!("{j}?status=done"), key, None).assert_problem(422);
        call!("GET", format!("{j}/stats"), format!("{j}/stats"), key, None);
        let one_job = format!("{j}/{{job_id}}");
        call!("GET", one_job, format!("{j}/{job_id}"), key, None);
        call!("GET", one_job, format!("{j}/nope"), key, None).assert_problem(404);
        // Cancelled now, or ended already (409): both answers are documented.
        let cancelled = call!(
            "POST",
            format!("{one_job}/cancel"),
            format!("{j}/{job_id}/cancel"),
            key,
            None
        );
        assert!([200, 409].contains(&cancelled.status), "{}", cancelled.text);
        call!("DELETE", one_job, format!("{j}/{job_id}"), key, None).assert_problem(409);
        // Wait until the workers are done, so nothing runs as the server stops.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let stats = h.get(&format!("{j}/stats"), key).await;
            if stats.body["queued_jobs"] == 0 && stats.body["running_jobs"] == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{}", stats.text);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let finished = call!("GET", j, format!("{j}?status=completed"), key, None);
        assert!(
            finished.body["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["result"].is_object()),
            "{}",
            finished.text
        );
        // The OpenAI-compatible API, on the definition above.
        let models = call!("GET", "/v1/models", "/v1/models", key, None);
        assert_eq!(models.status, 200, "{}", models.text);
        let model = format!("workflow:{id}");
        assert!(
            models.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == model.as_str()),
            "{}",
            models.text
        );
        call!(
            "GET",
            "/v1/models/{model}",
            format!("/v1/models/{model}"),
            key,
            None
        );
        let anonymous = call!("GET", "/v1/models", "/v1/models", None, None);
        assert_eq!(anonymous.status, 401, "{}", anonymous.text);
        assert_eq!(anonymous.body["error"]["code"], "invalid_api_key");
        let unknown = call!(
            "GET",
            "/v1/models/{model}",
            "/v1/models/workflow:nope",
            key,
            None
        );
        assert_eq!(unknown.status, 404, "{}", unknown.text);
        assert_eq!(unknown.body["error"]["code"], "model_not_found");
        let messages = json!([{"role": "user", "content": "hello"}]);
        let completion = call!(
            "POST",
            "/v1/chat/completions",
            "/v1/chat/completions",
            key,
            Some(json!({"model": model, "messages": messages}))
        );
        assert_eq!(completion.status, 200, "{}", completion.text);
        assert_eq!(completion.body["object"], "chat.completion");
        let streamed = call!(
            "POST",
            "/v1/chat/completions",
            "/v1/chat/completions",
            key,
            Some(json!({"model": model, "messages": messages, "stream": true,
                        "stream_options": {"include_usage": true}}))
        );
        assert_eq!(streamed.status, 200, "{}", streamed.text);
        assert!(
            streamed.text.ends_with("data: [DONE]\n\n"),
            "{}",
            streamed.text
        );
        // Each frame but `[DONE]` is a documented ChatCompletionChunk.
        let chunk_schema = &doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]
            ["content"]["text/event-stream"]["schema"];
        let frames: Vec<&str> = streamed
            .text
            .split("\n\n")
            .filter_map(|f| f.strip_prefix("data: "))
            .filter(|f| *f != "[DONE]")
            .collect();
        assert!(frames.len() >= 3, "{}", streamed.text);
        for (i, frame) in frames.iter().enumerate() {
            let chunk: Value = serde_json::from_str(frame).unwrap();
            check(
                &chunk,
                chunk_schema,
                &doc,
                &format!("POST /v1/chat/completions chunk {i}"),
                true,
                &mut errs,
            );
        }
        assert!(
            frames.last().unwrap().contains("\"total_tokens\""),
            "{}",
            streamed.text
        );
        let bad = call!(
            "POST",
            "/v1/chat/completions",
            "/v1/chat/completions",
            key,
            Some(json!({"model": model, "messages": messages, "n": 2}))
        );
        assert_eq!(bad.status, 400, "{}", bad.text);
        assert_eq!(bad.body["error"]["param"], "n");

        // The end: audit trail, deletion, logout.
        call!(
            "GET",
            "/api/v1/audit/logs",
            "/api/v1/audit/logs?limit=50",
            admin,
            None
        );
        call!("DELETE", by_id, format!("{w}/definitions/{id}"), key, None);
        call!(
            "POST",
            "/api/v1/auth/logout",
            "/api/v1/auth/logout",
            Some(access.as_str()),
            None
        );

        assert!(
            errs.is_empty(),
            "answers that differ from the document:\n  {}",
            errs.join("\n  ")
        );
        // Every documented operation was called.
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                if item.get(*method).is_some() {
                    documented.insert(format!("{method} {path}"));
                }
            }
        }
        let missed: Vec<_> = documented.difference(&seen).collect();
        assert!(
            missed.is_empty(),
            "documented but not called here: {missed:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn rate_limit_headers_are_sent_where_documented() {
    use chatter_http::server::ratelimit::{CHAT_ROUTE, Limit};
    let mut config = common::config();
    config.rate_limits.enabled = true;
    config.rate_limits.routes.insert(
        CHAT_ROUTE.to_owned(),
        Limit {
            per_minute: 1,
            per_hour: 100,
        },
    );
    common::run_sqlite_with(config, |h| async move {
        let doc = served_document(&h).await;
        let ann = h.user("ann", &["user"]).await;
        let key = Some(ann.key.as_str());
        let mut errs = Vec::new();
        let limit_headers = [
            "x-ratelimit-limit-minute",
            "x-ratelimit-limit-hour",
            "x-ratelimit-remaining-minute",
            "x-ratelimit-remaining-hour",
        ];

        // A limited route: the headers are sent and documented.
        let listed = h.get("/api/v1/workflows/definitions", key).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        for name in limit_headers {
            assert!(listed.headers.contains_key(name), "{name}: {listed:?}");
        }
        conforms(
            &doc,
            "get",
            "/api/v1/workflows/definitions",
            &listed,
            &mut errs,
        );

        // Probes and metrics: neither sent nor documented.
        for path in ["/healthz", "/metrics"] {
            let answer = h.get(path, None).await;
            assert_eq!(answer.status, 200, "{}", answer.text);
            assert!(
                !answer.headers.contains_key("x-ratelimit-limit-minute"),
                "{answer:?}"
            );
            assert!(
                doc["paths"][path]["get"]["responses"]["200"]["headers"]
                    .get("X-RateLimit-Limit-Minute")
                    .is_none()
            );
            conforms(&doc, "get", path, &answer, &mut errs);
        }

        // Beyond the limit: a documented 429 with `Retry-After` and the headers.
        let chat = "/api/v1/workflows/execute/chat";
        let first = h.post(chat, key, &json!({"message": "hello"})).await;
        assert_eq!(first.status, 200, "{}", first.text);
        assert_eq!(first.headers["x-ratelimit-remaining-minute"], "0");
        conforms(&doc, "post", chat, &first, &mut errs);
        let refused = h.post(chat, key, &json!({"message": "again"})).await;
        refused.assert_problem(429);
        assert!(refused.headers.contains_key("retry-after"), "{refused:?}");
        let documented = &doc["paths"][chat]["post"]["responses"]["429"];
        assert!(
            documented["headers"].get("Retry-After").is_some(),
            "{documented}"
        );
        conforms(&doc, "post", chat, &refused, &mut errs);

        assert!(
            errs.is_empty(),
            "answers that differ from the document:\n  {}",
            errs.join("\n  ")
        );
    })
    .await;
}
