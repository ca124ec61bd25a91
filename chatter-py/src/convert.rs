//! Conversions between Python and Rust: JSON values both ways, and the one conversion of
//! `chatter_core::Error` into the Python exception hierarchy of `chatter.errors`.

use chatter_core::Error;
use chatter_core::model::{ChatRequest, Message, Role, ToolChoice, ToolSpec};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// The deepest nesting converted either way (containers are walked recursively; this bound
/// keeps a self-referencing or absurdly deep object from overflowing the stack).
const MAX_DEPTH: usize = 200;

/// A JSON value as a Python object (dicts, lists, str, int, float, bool, None).
pub(crate) fn to_py(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    Ok(to_py_bound(py, value)?.unbind())
}

pub(crate) fn to_py_bound<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py_bound(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => object_to_py(py, map)?.into_any(),
    })
}

/// A JSON object as a Python dict.
pub(crate) fn object_to_py<'py>(
    py: Python<'py>,
    map: &Map<String, Value>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in map {
        dict.set_item(PyString::new(py, k), to_py_bound(py, v)?)?;
    }
    Ok(dict)
}

/// A role's name as an interned Python string.
fn role_to_py<'py>(py: Python<'py>, role: Role) -> Bound<'py, PyString> {
    match role {
        Role::System => intern!(py, "system").clone(),
        Role::User => intern!(py, "user").clone(),
        Role::Assistant => intern!(py, "assistant").clone(),
        Role::Tool => intern!(py, "tool").clone(),
        other => PyString::new(py, other.as_str()),
    }
}

/// A chat message as the dict `serde_json` would make of it (`role`, `content`, and
/// `tool_calls`, `tool_call_id`, `name` when set), built directly with interned keys.
pub(crate) fn message_to_py<'py>(py: Python<'py>, m: &Message) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "role"), role_to_py(py, m.role))?;
    d.set_item(intern!(py, "content"), PyString::new(py, &m.content))?;
    if !m.tool_calls.is_empty() {
        let calls = PyList::empty(py);
        for call in &m.tool_calls {
            let c = PyDict::new(py);
            c.set_item(intern!(py, "id"), PyString::new(py, &call.id))?;
            c.set_item(intern!(py, "name"), PyString::new(py, &call.name))?;
            c.set_item(intern!(py, "arguments"), to_py_bound(py, &call.arguments)?)?;
            calls.append(c)?;
        }
        d.set_item(intern!(py, "tool_calls"), calls)?;
    }
    if let Some(id) = &m.tool_call_id {
        d.set_item(intern!(py, "tool_call_id"), PyString::new(py, id))?;
    }
    if let Some(name) = &m.name {
        d.set_item(intern!(py, "name"), PyString::new(py, name))?;
    }
    Ok(d)
}

/// Whether `d` is what [`message_to_py`] makes of `m`: the same keys in the same order, with
/// values [`matches_json`] would accept.
pub(crate) fn message_matches(d: &Bound<'_, PyDict>, m: &Message) -> bool {
    let py = d.py();
    let len = 2
        + usize::from(!m.tool_calls.is_empty())
        + usize::from(m.tool_call_id.is_some())
        + usize::from(m.name.is_some());
    // The iterator knows the dict's size: no second call to ask it.
    let mut items = d.iter();
    if items.len() != len {
        return false;
    }
    let mut next = |key: &Bound<'_, PyString>, matches: &dyn Fn(&Bound<'_, PyAny>) -> bool| {
        items
            .next()
            .is_some_and(|(k, v)| key_matches(&k, key) && matches(&v))
    };
    next(intern!(py, "role"), &|v| str_matches(v, m.role.as_str()))
        && next(intern!(py, "content"), &|v| str_matches(v, &m.content))
        && (m.tool_calls.is_empty()
            || next(intern!(py, "tool_calls"), &|v| {
                v.cast_exact::<PyList>().is_ok_and(|list| {
                    list.len() == m.tool_calls.len()
                        && list.iter().zip(&m.tool_calls).all(|(c, call)| {
                            c.cast_exact::<PyDict>().is_ok_and(|c| {
                                dict_matches(
                                    c,
                                    [
                                        (intern!(py, "id"), Expect::Str(&call.id)),
                                        (intern!(py, "name"), Expect::Str(&call.name)),
                                        (intern!(py, "arguments"), Expect::Json(&call.arguments)),
                                    ],
                                )
                            })
                        })
                })
            }))
        && m.tool_call_id
            .as_ref()
            .is_none_or(|id| next(intern!(py, "tool_call_id"), &|v| str_matches(v, id)))
        && m.name
            .as_ref()
            .is_none_or(|name| next(intern!(py, "name"), &|v| str_matches(v, name)))
}

/// A tool spec as a dict (`name`, `description`, `parameters`), with what it was made of.
pub(crate) fn tool_to_py<'py>(
    py: Python<'py>,
    t: &ToolSpec,
) -> PyResult<(Bound<'py, PyDict>, Made)> {
    let d = PyDict::new(py);
    let name = PyString::new(py, &t.name).into_any();
    let description = PyString::new(py, &t.description).into_any();
    let (parameters, parameters_made) = to_py_made(py, &t.parameters)?;
    let mut entries = Vec::with_capacity(3);
    for (key, value, made) in [
        (intern!(py, "name"), name.clone(), Made::Leaf(name.unbind())),
        (
            intern!(py, "description"),
            description.clone(),
            Made::Leaf(description.unbind()),
        ),
        (intern!(py, "parameters"), parameters, parameters_made),
    ] {
        d.set_item(key, value)?;
        entries.push((key.clone().unbind(), made));
    }
    let made = Made::Dict(d.clone().unbind(), entries);
    Ok((d, made))
}

/// Whether `a` and `b` are the same tool specs, in the same order: what [`tool_to_py`] makes of
/// one is what it makes of the other (JSON compared with its objects' keys in order, which
/// `Value`'s own `==` ignores).
pub(crate) fn same_specs(a: &[ToolSpec], b: &[ToolSpec]) -> bool {
    fn same_json(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((kx, vx), (ky, vy))| kx == ky && same_json(vx, vy))
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(vx, vy)| same_json(vx, vy))
            }
            // `-0.0 == 0.0`, but Python prints them apart; `1 != 1.0` already.
            (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
                x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits)
            }
            _ => a == b,
        }
    }
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name
                && x.description == y.description
                && same_json(&x.parameters, &y.parameters)
        })
}

/// What a dict or list handed to Python code was made of: the object and, for a container,
/// the objects it held when it was made (a dict's keys too, in order).
///
/// Strings, numbers, `bool` and `None` cannot change, so a container that still holds the very
/// same objects, in the same order, is unchanged: [`Made::is`] tells so by identity alone,
/// without reading any text. Worth it for what is handed out again and again unchanged (a
/// model's tool specs), not for what is made once and dropped (the record costs its own
/// allocations).
pub(crate) enum Made {
    /// An immutable object (`str`, `int`, `float`, `bool`, `None`).
    Leaf(Py<PyAny>),
    /// A list and what its items were made of.
    List(Py<PyList>, Vec<Made>),
    /// A dict, its keys and what its values were made of.
    Dict(Py<PyDict>, Vec<(Py<PyString>, Made)>),
}

impl Made {
    /// Whether `obj` is the object this record is of, holding what it was made of.
    pub(crate) fn is(&self, obj: &Bound<'_, PyAny>) -> bool {
        let py = obj.py();
        match self {
            Made::Leaf(o) => obj.is(o),
            Made::List(list, items) => {
                obj.is(list) && {
                    let list = list.bind(py);
                    list.len() == items.len() && list.iter().zip(items).all(|(o, made)| made.is(&o))
                }
            }
            Made::Dict(dict, entries) => {
                obj.is(dict) && {
                    // The iterator knows the dict's size: no second call to ask it.
                    let items = dict.bind(py).iter();
                    items.len() == entries.len()
                        && items
                            .zip(entries)
                            .all(|((k, v), (key, made))| k.is(key) && made.is(&v))
                }
            }
        }
    }
}

/// [`to_py_bound`] of `value`, with what it was made of.
pub(crate) fn to_py_made<'py>(
    py: Python<'py>,
    value: &Value,
) -> PyResult<(Bound<'py, PyAny>, Made)> {
    Ok(match value {
        Value::Array(items) => {
            let list = PyList::empty(py);
            let mut made = Vec::with_capacity(items.len());
            for item in items {
                let (o, m) = to_py_made(py, item)?;
                list.append(o)?;
                made.push(m);
            }
            let record = Made::List(list.clone().unbind(), made);
            (list.into_any(), record)
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map {
                let key = PyString::new(py, k);
                let (o, m) = to_py_made(py, v)?;
                dict.set_item(&key, o)?;
                entries.push((key.unbind(), m));
            }
            let record = Made::Dict(dict.clone().unbind(), entries);
            (dict.into_any(), record)
        }
        leaf => {
            let o = to_py_bound(py, leaf)?;
            let record = Made::Leaf(o.clone().unbind());
            (o, record)
        }
    })
}

/// A value [`dict_matches`] expects.
enum Expect<'a> {
    Str(&'a str),
    Json(&'a Value),
}

/// Whether `d` holds exactly these keys (interned), in this order, with these values.
fn dict_matches<const N: usize>(
    d: &Bound<'_, PyDict>,
    expected: [(&Bound<'_, PyString>, Expect<'_>); N],
) -> bool {
    let items = d.iter();
    items.len() == N
        && items.zip(expected).all(|((k, v), (key, value))| {
            key_matches(&k, key)
                && match value {
                    Expect::Str(s) => str_matches(&v, s),
                    Expect::Json(value) => matches_json(&v, value),
                }
        })
}

/// Whether `k` is the interned string `key` (as a key the dict was built with is) or a `str`
/// of the same text.
fn key_matches(k: &Bound<'_, PyAny>, key: &Bound<'_, PyString>) -> bool {
    k.is(key) || key.to_str().is_ok_and(|key| str_matches(k, key))
}

/// Whether `obj` is a `str` (not a subclass) of this text.
fn str_matches(obj: &Bound<'_, PyAny>, text: &str) -> bool {
    obj.cast_exact::<PyString>()
        .is_ok_and(|s| s.to_str().is_ok_and(|s| s == text))
}

/// Whether `obj` is what [`to_py_bound`] makes of `value`: the same exact types (no
/// subclasses), equal text and numbers, lists of the same length, dicts with the same keys in
/// the same order. A dict handed to Python code earlier that still matches can be handed out
/// again: nothing Python code could have done to it shows.
pub(crate) fn matches_json(obj: &Bound<'_, PyAny>, value: &Value) -> bool {
    match value {
        Value::Null => obj.is_none(),
        Value::Bool(b) => obj.cast_exact::<PyBool>().is_ok_and(|o| o.is_true() == *b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                obj.is_exact_instance_of::<PyInt>() && obj.extract::<i64>().is_ok_and(|o| o == i)
            } else if let Some(u) = n.as_u64() {
                obj.is_exact_instance_of::<PyInt>() && obj.extract::<u64>().is_ok_and(|o| o == u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                obj.cast_exact::<PyFloat>()
                    .is_ok_and(|o| o.value().to_bits() == f.to_bits())
            }
        }
        Value::String(s) => str_matches(obj, s),
        Value::Array(items) => obj.cast_exact::<PyList>().is_ok_and(|list| {
            list.len() == items.len() && list.iter().zip(items).all(|(o, v)| matches_json(&o, v))
        }),
        Value::Object(map) => obj.cast_exact::<PyDict>().is_ok_and(|d| {
            let items = d.iter();
            items.len() == map.len()
                && items
                    .zip(map)
                    .all(|((k, v), (key, value))| str_matches(&k, key) && matches_json(&v, value))
        }),
    }
}

/// Messages as a list of dicts (see [`message_to_py`]).
pub(crate) fn messages_to_py<'py>(
    py: Python<'py>,
    messages: &[Message],
) -> PyResult<Bound<'py, PyList>> {
    let items = messages
        .iter()
        .map(|m| message_to_py(py, m))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// The settings of a chat request that an `llm` node sends the same on every call.
pub(crate) type RequestSettings = (
    Option<String>,
    Option<f64>,
    Option<u64>,
    Option<f64>,
    Option<ToolChoice>,
    bool,
);

/// The settings of `request` (see [`RequestSettings`]).
pub(crate) fn request_settings(request: &ChatRequest) -> RequestSettings {
    (
        request.model.clone(),
        request.temperature,
        request.max_tokens,
        request.top_p,
        request.tool_choice,
        request.json_mode,
    )
}

/// The dict of a chat request with these settings, its other keys `None`: what
/// [`request_to_py`] copies. Every value in it is a `str`, a number, a `bool` or `None`, which
/// the copies can share.
pub(crate) fn request_template<'py>(
    py: Python<'py>,
    settings: &RequestSettings,
) -> PyResult<Bound<'py, PyDict>> {
    let (model, temperature, max_tokens, top_p, tool_choice, json_mode) = settings;
    let none = py.None();
    let d = PyDict::new(py);
    d.set_item(intern!(py, "model"), model.as_deref())?;
    d.set_item(intern!(py, "messages"), &none)?;
    d.set_item(intern!(py, "temperature"), temperature)?;
    d.set_item(intern!(py, "max_tokens"), max_tokens)?;
    d.set_item(intern!(py, "top_p"), top_p)?;
    d.set_item(intern!(py, "stop"), &none)?;
    d.set_item(intern!(py, "tools"), &none)?;
    d.set_item(
        intern!(py, "tool_choice"),
        tool_choice.map(ToolChoice::as_str),
    )?;
    d.set_item(intern!(py, "json_mode"), json_mode)?;
    d.set_item(intern!(py, "idempotency_key"), &none)?;
    Ok(d)
}

/// A chat request as the dict `serde_json` would make of it: a copy of `template` (the
/// [`request_template`] of its settings; a copy costs a fraction of setting ten keys one by
/// one) with `messages` and `tools` (the lists to put under those keys), a new list of its stop
/// sequences and its idempotency key.
pub(crate) fn request_to_py<'py>(
    template: &Bound<'py, PyDict>,
    request: &ChatRequest,
    messages: Bound<'py, PyList>,
    tools: Bound<'py, PyList>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = template.py();
    let d = template.copy()?;
    d.set_item(intern!(py, "messages"), messages)?;
    d.set_item(intern!(py, "stop"), PyList::new(py, &request.stop)?)?;
    d.set_item(intern!(py, "tools"), tools)?;
    d.set_item(
        intern!(py, "idempotency_key"),
        request.idempotency_key.as_deref(),
    )?;
    Ok(d)
}

/// A Python object as JSON: dict (str keys), list, tuple, str, int, float, bool, None. Anything
/// else is a `TypeError` naming its type and where it was found (`$.a[2]`).
pub(crate) fn to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    // The common case (built-in types only) takes the fast path; anything else (a subclass, an
    // unconvertible value) is converted again by the path-tracking walk, which names where a
    // problem lies.
    match to_json_fast(obj, 0) {
        Some(value) => Ok(value),
        None => to_json_at(obj, &mut String::from("$"), 0),
    }
}

/// Converts exact built-in types (dict with str keys, list, tuple, str, int, float, bool,
/// None) without tracking where it is; `None` for anything else. `depth`: how deep `obj` is in
/// what is being converted.
pub(crate) fn to_json_fast(obj: &Bound<'_, PyAny>, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    if let Ok(s) = obj.cast_exact::<PyString>() {
        return s.to_str().ok().map(|s| Value::String(s.to_owned()));
    }
    if let Ok(dict) = obj.cast_exact::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in dict.iter() {
            let key = k.cast_exact::<PyString>().ok()?.to_str().ok()?.to_owned();
            map.insert(key, to_json_fast(&v, depth + 1)?);
        }
        return Some(Value::Object(map));
    }
    if obj.is_none() {
        return Some(Value::Null);
    }
    if let Ok(b) = obj.cast_exact::<PyBool>() {
        return Some(Value::Bool(b.is_true()));
    }
    if obj.is_exact_instance_of::<PyInt>() {
        return obj.extract::<i64>().ok().map(Value::from);
    }
    if let Ok(f) = obj.cast_exact::<PyFloat>() {
        return Number::from_f64(f.value()).map(Value::Number);
    }
    if let Ok(list) = obj.cast_exact::<PyList>() {
        let mut items = Vec::with_capacity(list.len());
        for item in list.iter() {
            items.push(to_json_fast(&item, depth + 1)?);
        }
        return Some(Value::Array(items));
    }
    if let Ok(tuple) = obj.cast_exact::<PyTuple>() {
        let mut items = Vec::with_capacity(tuple.len());
        for item in tuple.iter() {
            items.push(to_json_fast(&item, depth + 1)?);
        }
        return Some(Value::Array(items));
    }
    None
}

fn to_json_at(obj: &Bound<'_, PyAny>, path: &mut String, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "value at {path} is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.extract::<bool>()?));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(PyValueError::new_err(format!(
            "integer at {path} does not fit in 64 bits"
        )));
    }
    if obj.is_instance_of::<PyFloat>() {
        let f = obj.extract::<f64>()?;
        return Number::from_f64(f).map(Value::Number).ok_or_else(|| {
            PyValueError::new_err(format!("float at {path} is {f}, which JSON cannot hold"))
        });
    }
    if obj.is_instance_of::<PyString>() {
        return Ok(Value::String(obj.extract::<String>()?));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in dict.iter() {
            let Ok(key) = k.extract::<String>() else {
                return Err(PyTypeError::new_err(format!(
                    "dict at {path} has a key of type `{}`; JSON keys are strings",
                    type_name(&k)
                )));
            };
            let len = path.len();
            path.push('.');
            path.push_str(&key);
            let value = to_json_at(&v, path, depth + 1)?;
            path.truncate(len);
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in obj.try_iter()?.enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            items.push(to_json_at(&item?, path, depth + 1)?);
            path.truncate(len);
        }
        return Ok(Value::Array(items));
    }
    Err(PyTypeError::new_err(format!(
        "cannot convert a value of type `{}` at {path} to JSON (expected dict, list, tuple, str, \
         int, float, bool or None)",
        type_name(obj)
    )))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The text of a Python exception with its traceback, as `traceback.format_exception` prints it.
pub(crate) fn error_text(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let traceback = py.import("traceback")?;
        let lines = traceback.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        let text: Vec<String> = lines.extract()?;
        Ok(text.concat())
    })();
    formatted
        .map(|t| t.trim_end().to_owned())
        .unwrap_or_else(|_| err.to_string())
}

/// The one conversion of an engine error into a Python exception of `chatter.errors`:
///
/// * parse, definition, expression and validation errors → `ValidationError` (with `.issues`);
/// * template errors → `TemplateError`; model, tool and node errors → `NodeError`;
/// * timeouts → `TimeoutError`; cancellation → `Cancelled`; limits → `ExecutionError`;
/// * configuration → `ConfigError`; unknown names → `NotFoundError`; storage → `StorageError`;
///   the rest → `ChatterError`.
pub(crate) fn to_py_err(err: Error) -> PyErr {
    Python::attach(|py| match build_exception(py, &err) {
        Ok(exc) => exc,
        Err(e) => e,
    })
}

fn build_exception(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let (class, issues, node_id) = match err {
        Error::Invalid(report) => (
            "ValidationError",
            Some(serde_json::to_value(&report.issues).unwrap_or(Value::Null)),
            None,
        ),
        Error::Parse { .. }
        | Error::Definition { .. }
        | Error::Expression { .. }
        | Error::InvalidInput { .. } => ("ValidationError", Some(Value::Array(Vec::new())), None),
        Error::Template { .. } => ("TemplateError", None, None),
        Error::Model { .. } | Error::Tool { .. } => ("NodeError", None, None),
        Error::Node { node_id, .. } => ("NodeError", None, Some(node_id.clone())),
        Error::Timeout { .. } => ("TimeoutError", None, None),
        Error::Cancelled { .. } => ("Cancelled", None, None),
        Error::LimitExceeded { .. } => ("ExecutionError", None, None),
        Error::Config { .. } => ("ConfigError", None, None),
        Error::NotFound { .. } => ("NotFoundError", None, None),
        Error::Store { .. } => ("StorageError", None, None),
        _ => ("ChatterError", None, None),
    };
    let module = py.import("chatter.errors")?;
    let exc = module.getattr(class)?.call1((err.to_string(),))?;
    if let Some(issues) = issues {
        exc.setattr("issues", to_py(py, &issues)?)?;
    }
    exc.setattr("node_id", node_id)?;
    exc.setattr("error_class", err.class().map(|c| c.as_str()))?;
    Ok(PyErr::from_value(exc))
}
