//! The memo: a cache of model calls, and record/replay of calls to a JSONL file.
//!
//! A call is keyed by the SHA-256 of a canonical JSON text (object keys sorted, no spaces) of:
//! the scope (the provider the call was pinned to, or the router's name), the model asked for
//! (`None` when routed), the sampling parameters (temperature, max tokens, top-p, stop
//! sequences, tool choice, JSON mode), the messages and the tools. The idempotency key is not
//! part of it. Keying the call *as asked* (before routing) means a replay never depends on which
//! model answered during the recording, nor on the state of circuit breakers.
//!
//! # The recording
//!
//! A JSONL file: a header line `{"format":"chatter-memo","version":1,"key":"sha256"}`, then one
//! line per call `{"key", "request", "response", "recorded_ms"}` where `request` is the keyed
//! material. Loading checks the header, parses every line, and recomputes every key from its
//! `request`: a file edited by hand or written under another key scheme is refused at load.
//! When a recording holds the same key several times (a loop asking the same question), replay
//! serves them in recorded order and then repeats the last.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::model::{ChatRequest, ChatResponse};

use super::config::MemoConfig;

/// The format name in a recording's header.
pub const RECORDING_FORMAT: &str = "chatter-memo";
/// The recording format version this build reads and writes.
pub const RECORDING_VERSION: u64 = 1;
/// The key scheme of this build.
pub const KEY_SCHEME: &str = "sha256";

/// How the memo is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MemoMode {
    /// No caching.
    #[default]
    Off,
    /// Serve repeated calls from memory; store answers.
    ReadWrite,
    /// Call the model every time and append every call to the recording.
    Record,
    /// Serve only from the recording; a call not in it fails.
    Replay,
}

impl MemoMode {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoMode::Off => "off",
            MemoMode::ReadWrite => "read_write",
            MemoMode::Record => "record",
            MemoMode::Replay => "replay",
        }
    }
}

/// Memo statistics.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemoStats {
    /// Calls served from the memo.
    pub hits: u64,
    /// Calls not found in it.
    pub misses: u64,
    /// Entries dropped (expired or beyond `max_entries`).
    pub evictions: u64,
    /// Entries held now (for replay: distinct recorded keys).
    pub entries: u64,
    /// Calls appended to the recording.
    pub recorded: u64,
    /// `hits / (hits + misses)`, 0 when there was no lookup.
    pub hit_rate: f64,
}

/// The key of one call, with the material it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoKey {
    /// Hex SHA-256 of the canonical material.
    pub hash: String,
    /// The keyed material (stored in recordings).
    pub material: Value,
}

impl MemoKey {
    /// The key of `request` asked in `scope` (a provider name, or the router's name).
    pub fn new(scope: &str, request: &ChatRequest) -> MemoKey {
        let material = json!({
            "scope": scope,
            "model": request.model,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "top_p": request.top_p,
            "stop": request.stop,
            "tool_choice": request.tool_choice,
            "json_mode": request.json_mode,
            "messages": request.messages,
            "tools": request.tools,
        });
        MemoKey::from_material(material)
    }

    fn from_material(material: Value) -> MemoKey {
        let digest = Sha256::digest(canonical_json(&material).as_bytes());
        let hash = digest.iter().map(|b| format!("{b:02x}")).collect();
        MemoKey { hash, material }
    }
}

/// JSON text with object keys sorted and no whitespace, written without recursion.
pub fn canonical_json(root: &Value) -> String {
    enum Work<'a> {
        Value(&'a Value),
        Text(&'static str),
        Key(&'a str),
    }
    let mut out = String::new();
    let mut stack = vec![Work::Value(root)];
    while let Some(work) = stack.pop() {
        match work {
            Work::Text(s) => out.push_str(s),
            Work::Key(k) => {
                out.push_str(&Value::String(k.to_owned()).to_string());
                out.push(':');
            }
            Work::Value(Value::Array(items)) => {
                out.push('[');
                stack.push(Work::Text("]"));
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push(Work::Value(item));
                    if i > 0 {
                        stack.push(Work::Text(","));
                    }
                }
            }
            Work::Value(Value::Object(map)) => {
                out.push('{');
                stack.push(Work::Text("}"));
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_by(|a, b| a.0.cmp(b.0));
                for (i, (k, v)) in members.into_iter().enumerate().rev() {
                    stack.push(Work::Value(v));
                    stack.push(Work::Key(k));
                    if i > 0 {
                        stack.push(Work::Text(","));
                    }
                }
            }
            Work::Value(scalar) => out.push_str(&scalar.to_string()),
        }
    }
    out
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u64,
    key: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recorded {
    key: String,
    request: Value,
    response: ChatResponse,
    recorded_ms: i64,
}

struct Cached {
    response: ChatResponse,
    stored: Instant,
    generation: u64,
}

struct ReplaySlot {
    responses: Vec<ChatResponse>,
    next: usize,
}

#[derive(Default)]
struct Inner {
    cache: HashMap<String, Cached>,
    order: VecDeque<(String, u64)>,
    generation: u64,
    replay: HashMap<String, ReplaySlot>,
    file: Option<File>,
    hits: u64,
    misses: u64,
    evictions: u64,
    recorded: u64,
}

/// The memo of an orchestrator.
pub struct Memo {
    mode: MemoMode,
    ttl: Option<Duration>,
    max_entries: usize,
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("mode", &self.mode)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Memo {
    /// A memo as configured: `replay` loads and checks the recording, `record` opens it for
    /// appending (writing the header to a new or empty file, checking it otherwise).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the mode needs a path and has none, or the recording does not
    /// parse, has no or a foreign header, or holds a key that does not match its request;
    /// [`Error::Io`] when the file cannot be read or written.
    pub fn new(config: &MemoConfig) -> Result<Memo> {
        let path = config.path.as_ref().map(PathBuf::from);
        let mut inner = Inner::default();
        match config.mode {
            MemoMode::Off | MemoMode::ReadWrite => {}
            MemoMode::Record | MemoMode::Replay => {
                let Some(p) = &path else {
                    return Err(Error::Config {
                        message: format!("memo mode `{}` needs a path", config.mode.as_str()),
                    });
                };
                if config.mode == MemoMode::Replay {
                    inner.replay = load_recording(p)?;
                } else {
                    inner.file = Some(open_recording(p)?);
                }
            }
        }
        Ok(Memo {
            mode: config.mode,
            ttl: config.ttl_ms.map(Duration::from_millis),
            max_entries: config.max_entries.max(1),
            path,
            inner: Mutex::new(inner),
        })
    }

    /// The mode.
    pub fn mode(&self) -> MemoMode {
        self.mode
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached answer to `key`, counting a hit or a miss (`None` in `off` and `record`).
    pub fn lookup(&self, key: &MemoKey) -> Option<ChatResponse> {
        let mut inner = self.lock();
        match self.mode {
            MemoMode::Off | MemoMode::Record => None,
            MemoMode::Replay => {
                let found = inner.replay.get_mut(&key.hash).map(|slot| {
                    let i = slot.next.min(slot.responses.len().saturating_sub(1));
                    slot.next = slot.next.saturating_add(1);
                    slot.responses.get(i).cloned()
                });
                match found.flatten() {
                    Some(r) => {
                        inner.hits += 1;
                        Some(r)
                    }
                    None => {
                        inner.misses += 1;
                        None
                    }
                }
            }
            MemoMode::ReadWrite => {
                let expired = match (inner.cache.get(&key.hash), self.ttl) {
                    (Some(c), Some(ttl)) => c.stored.elapsed() >= ttl,
                    _ => false,
                };
                if expired {
                    inner.cache.remove(&key.hash);
                    inner.evictions += 1;
                }
                match inner.cache.get(&key.hash).map(|c| c.response.clone()) {
                    Some(r) => {
                        inner.hits += 1;
                        Some(r)
                    }
                    None => {
                        inner.misses += 1;
                        None
                    }
                }
            }
        }
    }

    /// Stores the answer to `key` (`read_write`: in memory; `record`: appended to the file).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the recording cannot be written.
    pub fn store(&self, key: &MemoKey, response: &ChatResponse, now_ms: i64) -> Result<()> {
        let mut inner = self.lock();
        match self.mode {
            MemoMode::Off | MemoMode::Replay => Ok(()),
            MemoMode::ReadWrite => {
                inner.generation += 1;
                let generation = inner.generation;
                inner.cache.insert(
                    key.hash.clone(),
                    Cached {
                        response: response.clone(),
                        stored: Instant::now(),
                        generation,
                    },
                );
                inner.order.push_back((key.hash.clone(), generation));
                self.evict(&mut inner);
                Ok(())
            }
            MemoMode::Record => {
                let line = serde_json::to_string(&Recorded {
                    key: key.hash.clone(),
                    request: key.material.clone(),
                    response: response.clone(),
                    recorded_ms: now_ms,
                })
                .map_err(|e| self.io_error(&e.to_string()))?;
                let written = match inner.file.as_mut() {
                    Some(f) => writeln!(f, "{line}").and_then(|()| f.flush()),
                    None => Ok(()),
                };
                written.map_err(|e| self.io_error(&e.to_string()))?;
                inner.recorded += 1;
                Ok(())
            }
        }
    }

    fn io_error(&self, message: &str) -> Error {
        Error::Io {
            path: self
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            message: message.to_owned(),
        }
    }

    /// Drops expired entries, then the oldest beyond `max_entries`.
    fn evict(&self, inner: &mut Inner) {
        if let Some(ttl) = self.ttl {
            let before = inner.cache.len();
            inner.cache.retain(|_, c| c.stored.elapsed() < ttl);
            inner.evictions += (before - inner.cache.len()) as u64;
        }
        while inner.cache.len() > self.max_entries {
            let Some((key, generation)) = inner.order.pop_front() else {
                break;
            };
            if inner
                .cache
                .get(&key)
                .is_some_and(|c| c.generation == generation)
            {
                inner.cache.remove(&key);
                inner.evictions += 1;
            }
        }
        // Drop stale order records so the queue stays bounded.
        if inner.order.len() > self.max_entries.saturating_mul(2) {
            let cache = &inner.cache;
            let live: VecDeque<(String, u64)> = inner
                .order
                .drain(..)
                .filter(|(k, g)| cache.get(k).is_some_and(|c| c.generation == *g))
                .collect();
            inner.order = live;
        }
    }

    /// The statistics so far.
    pub fn stats(&self) -> MemoStats {
        let inner = self.lock();
        let lookups = inner.hits + inner.misses;
        #[allow(clippy::cast_precision_loss)]
        let hit_rate = if lookups == 0 {
            0.0
        } else {
            inner.hits as f64 / lookups as f64
        };
        let entries = match self.mode {
            MemoMode::Replay => inner.replay.len(),
            _ => inner.cache.len(),
        } as u64;
        MemoStats {
            hits: inner.hits,
            misses: inner.misses,
            evictions: inner.evictions,
            entries,
            recorded: inner.recorded,
            hit_rate,
        }
    }
}

fn recording_error(path: &Path, line: usize, message: &str) -> Error {
    Error::Config {
        message: format!("memo recording `{}` line {line}: {message}", path.display()),
    }
}

fn check_header(path: &Path, text: &str) -> Result<()> {
    let header: Header = serde_json::from_str(text)
        .map_err(|e| recording_error(path, 1, &format!("not a chatter-memo header ({e})")))?;
    if header.format != RECORDING_FORMAT
        || header.version != RECORDING_VERSION
        || header.key != KEY_SCHEME
    {
        return Err(recording_error(
            path,
            1,
            &format!(
                "header says format `{}` version {} key `{}`; this build reads `{RECORDING_FORMAT}` version {RECORDING_VERSION} key `{KEY_SCHEME}`",
                header.format, header.version, header.key
            ),
        ));
    }
    Ok(())
}

fn header_line() -> String {
    json!({"format": RECORDING_FORMAT, "version": RECORDING_VERSION, "key": KEY_SCHEME}).to_string()
}

fn io(path: &Path, e: &std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn load_recording(path: &Path) -> Result<HashMap<String, ReplaySlot>> {
    let file = File::open(path).map_err(|e| io(path, &e))?;
    let mut slots: HashMap<String, ReplaySlot> = HashMap::new();
    let mut saw_header = false;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| io(path, &e))?;
        let number = i + 1;
        if !saw_header {
            check_header(path, &line)?;
            saw_header = true;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let entry: Recorded = serde_json::from_str(&line)
            .map_err(|e| recording_error(path, number, &format!("not a recorded call ({e})")))?;
        let recomputed = MemoKey::from_material(entry.request);
        if recomputed.hash != entry.key {
            return Err(recording_error(
                path,
                number,
                "the key does not match the recorded request (edited, or another key scheme)",
            ));
        }
        slots
            .entry(entry.key)
            .or_insert_with(|| ReplaySlot {
                responses: Vec::new(),
                next: 0,
            })
            .responses
            .push(entry.response);
    }
    if !saw_header {
        return Err(recording_error(path, 1, "empty file (no header)"));
    }
    Ok(slots)
}

fn open_recording(path: &Path) -> Result<File> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(path, &e)),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io(path, &e))?;
    match existing.as_deref().and_then(|t| t.lines().next()) {
        Some(first) => check_header(path, first)?,
        None => {
            writeln!(file, "{}", header_line()).map_err(|e| io(path, &e))?;
        }
    }
    Ok(file)
}
