//! # chatter-py
//!
//! The Python binding of Chatter, built by maturin into the `chatter` wheel (module
//! `chatter._native`). The Python package `chatter` (in `python/chatter/`) wraps these low-level
//! classes in the public API; users never import `_native` themselves.
//!
//! * Python callables become [`chatter_core::Tool`]s, [`chatter_core::ChatModel`]s,
//!   [`chatter_core::Retriever`]s and node kinds (module `py`).
//! * Runs block with the GIL released (`NativeEngine.run`), or are awaited on asyncio
//!   without a thread per run (`NativeEngine.arun`).
//! * Every `chatter_core::Error` becomes a Python exception in one place (`convert::to_py_err`).

mod convert;
mod engine;
mod py;
mod store;

use pyo3::prelude::*;

/// The extension's own allocations (the engine's state, events, node runs) go to mimalloc:
/// a run allocates and frees many small objects per step, which glibc's allocator serves
/// markedly slower. Python objects are still allocated by Python.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use engine::{NativeAsyncStream, NativeEngine, NativeResult, NativeStream, NativeWorkflow};

/// The `chatter._native` extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeEngine>()?;
    m.add_class::<NativeWorkflow>()?;
    m.add_class::<NativeStream>()?;
    m.add_class::<NativeAsyncStream>()?;
    m.add_class::<NativeResult>()?;
    m.add_function(wrap_pyfunction!(engine::templates_list, m)?)?;
    m.add_function(wrap_pyfunction!(engine::template_generate, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
