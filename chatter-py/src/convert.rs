//! Conversions between Python and Rust: JSON values both ways, and the one conversion of
//! `chatter_core::Error` into the Python exception hierarchy of `chatter.errors`.

use chatter_core::Error;
use pyo3::exceptions::{PyTypeError, PyValueError};
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

fn to_py_bound<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
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
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_py_bound(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// A Python object as JSON: dict (str keys), list, tuple, str, int, float, bool, None. Anything
/// else is a `TypeError` naming its type and where it was found (`$.a[2]`).
pub(crate) fn to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    to_json_at(obj, &mut String::from("$"), 0)
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
        Error::Parse { .. } | Error::Definition { .. } | Error::Expression { .. } => {
            ("ValidationError", Some(Value::Array(Vec::new())), None)
        }
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
