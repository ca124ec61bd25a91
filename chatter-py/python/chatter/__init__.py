"""Chatter: an embeddable Rust engine for LLM chat workflows, from Python.

>>> import chatter
>>> engine = chatter.Engine()
>>> engine.register_scripted("scripted", {"default": {"content": "Hello!"}})
>>> wf = (chatter.Workflow.builder()
...       .node("start", "start").node("chat", "llm").node("end", "end")
...       .edge("start", "chat").edge("chat", "end").build())
>>> engine.run(wf, "hi").response
'Hello!'
"""

from __future__ import annotations

import inspect
import json
import os
import typing
from dataclasses import dataclass, field, fields
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Union

# The extension allocates with mimalloc, which by default commits its memory arenas eagerly;
# with transparent huge pages on (the usual Linux setting) that made a process running durable
# executions hold 130 MiB instead of 50, for no measurable speed. mimalloc reads its options
# from the environment when the extension is loaded, so unless the user chose a value, eager
# commit is off for that moment and the environment is then put back as it was.
_EAGER_COMMIT = "MIMALLOC_ARENA_EAGER_COMMIT"
_set_eager_commit = _EAGER_COMMIT not in os.environ
if _set_eager_commit:
    os.environ[_EAGER_COMMIT] = "0"
try:
    from . import _native
finally:
    if _set_eager_commit:
        del os.environ[_EAGER_COMMIT]
del _EAGER_COMMIT, _set_eager_commit
from .errors import (
    Cancelled,
    ChatterError,
    ConfigError,
    ExecutionError,
    NodeError,
    NotFoundError,
    StorageError,
    TemplateError,
    TimeoutError,
    ValidationError,
)

__version__: str = _native.__version__

__all__ = [
    "Workflow",
    "WorkflowBuilder",
    "ValidationIssue",
    "ValidationReport",
    "Engine",
    "Limits",
    "ExecutionResult",
    "NodeRun",
    "Usage",
    "Message",
    "Failure",
    "Event",
    "ExecutionStartedEvent",
    "NodeStartedEvent",
    "TokenEvent",
    "ToolCallStartedEvent",
    "ToolCallFinishedEvent",
    "NodeCompletedEvent",
    "NodeFailedEvent",
    "NodeRetryingEvent",
    "NodeSkippedEvent",
    "InterruptedEvent",
    "ExecutionCompletedEvent",
    "ExecutionFailedEvent",
    "ExecutionCancelledEvent",
    "EventStream",
    "AsyncEventStream",
    "Template",
    "list_templates",
    "get_template",
    "infer_schema",
    "ChatterError",
    "ValidationError",
    "ConfigError",
    "NotFoundError",
    "ExecutionError",
    "NodeError",
    "TemplateError",
    "StorageError",
    "Cancelled",
    "TimeoutError",
    "__version__",
]

PathLike = Union[str, "os.PathLike[str]"]

# ---------------------------------------------------------------------------------------------
# Workflows and validation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationIssue:
    """One problem of a definition, with a stable code (``CHT-V001``...) and its location."""

    code: str
    severity: str
    node_id: str | None
    edge_id: str | None
    path: str
    message: str

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> "ValidationIssue":
        return cls(
            code=d["code"],
            severity=d["severity"],
            node_id=d.get("node_id"),
            edge_id=d.get("edge_id"),
            path=d.get("path", ""),
            message=d["message"],
        )


@dataclass(frozen=True)
class ValidationReport:
    """Every issue of a definition, found at once."""

    issues: list[ValidationIssue]

    @property
    def is_valid(self) -> bool:
        """True when no issue is an error (warnings allowed)."""
        return not self.errors

    @property
    def errors(self) -> list[ValidationIssue]:
        """The issues of severity ``error``."""
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[ValidationIssue]:
        """The issues of severity ``warning``."""
        return [i for i in self.issues if i.severity == "warning"]

    def raise_for_errors(self) -> None:
        """Raises :class:`ValidationError` carrying the issues when there is an error."""
        if not self.is_valid:
            summary = "; ".join(f"{i.code} at {i.path}: {i.message}" for i in self.errors)
            err = ValidationError(f"definition is invalid: {summary}")
            err.issues = list(self.issues)
            raise err


def _issues_to_objects(err: BaseException) -> BaseException:
    issues = getattr(err, "issues", None)
    if isinstance(issues, list):
        err.issues = [ValidationIssue._from(i) if isinstance(i, dict) else i for i in issues]  # type: ignore[attr-defined]
    return err


class Workflow:
    """A workflow definition: nodes, edges and metadata. Immutable; build one with
    :meth:`from_dict`, :meth:`from_json`, :meth:`from_yaml`, :meth:`load` or :meth:`builder`."""

    __slots__ = ("_native",)

    def __init__(self, native: "_native.NativeWorkflow") -> None:
        if not isinstance(native, _native.NativeWorkflow):
            raise TypeError("use Workflow.from_dict / from_json / from_yaml / load / builder")
        self._native = native

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Workflow":
        """Reads a definition from a dict (the editor shape or the flat shape).

        Raises:
            ValidationError: the dict is not a definition.
            TypeError: ``data`` is not a dict of JSON values.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"Workflow.from_dict expects a dict, not {type(data).__name__}")
        try:
            return cls(_native.NativeWorkflow.from_value(dict(data)))
        except ValidationError as e:
            raise _issues_to_objects(e) from None

    @classmethod
    def from_json(cls, text: str) -> "Workflow":
        """Parses JSON text. Raises :class:`ValidationError` naming line and column."""
        if not isinstance(text, str):
            raise TypeError(f"Workflow.from_json expects a str, not {type(text).__name__}")
        return cls(_native.NativeWorkflow.parse(text, "json"))

    @classmethod
    def from_yaml(cls, text: str) -> "Workflow":
        """Parses YAML text. Raises :class:`ValidationError` naming line and column."""
        if not isinstance(text, str):
            raise TypeError(f"Workflow.from_yaml expects a str, not {type(text).__name__}")
        return cls(_native.NativeWorkflow.parse(text, "yaml"))

    @classmethod
    def load(cls, path: PathLike) -> "Workflow":
        """Reads a ``.json``, ``.yaml`` or ``.yml`` file."""
        return cls(_native.NativeWorkflow.load(os.fspath(path)))

    @classmethod
    def from_template(cls, name: str, params: Mapping[str, Any] | None = None) -> "Workflow":
        """The workflow a built-in template generates. Raises :class:`TemplateError`."""
        return cls(_native.template_generate(name, dict(params or {})))

    @staticmethod
    def builder(name: str | None = None) -> "WorkflowBuilder":
        """A builder for a graph in code."""
        return WorkflowBuilder(name)

    @property
    def name(self) -> str | None:
        """The name in the definition's metadata."""
        return self._native.name

    def validate(self) -> ValidationReport:
        """Every issue of the definition (it does not raise)."""
        return ValidationReport([ValidationIssue._from(i) for i in self._native.validate()])

    def to_dict(self) -> dict[str, Any]:
        """The definition as a dict (editor fields kept)."""
        return self._native.to_value()

    def to_json(self) -> str:
        """The definition as pretty JSON."""
        return self._native.to_json()

    def to_yaml(self) -> str:
        """The definition as YAML."""
        return self._native.to_yaml()

    def __repr__(self) -> str:
        n = len(self.to_dict().get("nodes", []))
        return f"<Workflow {self.name or ''!s} nodes={n}>"


class WorkflowBuilder:
    """Builds a workflow in code::

        wf = (Workflow.builder("greet")
              .node("start", "start").node("chat", "llm", system_prompt="Be brief.")
              .node("end", "end").edge("start", "chat").edge("chat", "end").build())
    """

    def __init__(self, name: str | None = None) -> None:
        self._nodes: list[dict[str, Any]] = []
        self._edges: list[dict[str, Any]] = []
        self._metadata: dict[str, Any] = {}
        self._name = name

    def node(self, node_id: str, kind: str, **config: Any) -> "WorkflowBuilder":
        """Adds a node of a kind (``llm``, ``tool``, ``conditional``, a registered kind...)."""
        self._nodes.append({"id": node_id, "type": kind, "config": config})
        return self

    def edge(
        self,
        source: str,
        target: str,
        *,
        condition: str | None = None,
        branch: str | None = None,
    ) -> "WorkflowBuilder":
        """Adds an edge, optionally with a condition or a branch (``true``/``false``/``error``)."""
        edge: dict[str, Any] = {"source": source, "target": target}
        if condition is not None:
            edge["condition"] = condition
        if branch is not None:
            edge["sourceHandle"] = branch
        self._edges.append(edge)
        return self

    def metadata(self, key: str, value: Any) -> "WorkflowBuilder":
        """Sets a metadata entry."""
        self._metadata[key] = value
        return self

    def to_dict(self) -> dict[str, Any]:
        """The definition built so far, as a dict."""
        d: dict[str, Any] = {"nodes": list(self._nodes), "edges": list(self._edges)}
        if self._metadata:
            d["metadata"] = dict(self._metadata)
        if self._name is not None:
            d["name"] = self._name
        return d

    def build(self) -> Workflow:
        """The workflow. Raises :class:`ValidationError` for a malformed graph."""
        return Workflow.from_dict(self.to_dict())


# ---------------------------------------------------------------------------------------------
# Results and events
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Tokens and cost, summed over every model call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0

    @classmethod
    def _from(cls, d: Mapping[str, Any] | None) -> "Usage":
        d = d or {}
        return cls(
            prompt_tokens=int(d.get("prompt_tokens", 0)),
            completion_tokens=int(d.get("completion_tokens", 0)),
            total_tokens=int(d.get("total_tokens", 0)),
            cost=float(d.get("cost", 0.0)),
        )


@dataclass(frozen=True)
class Message:
    """A chat message."""

    role: str
    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class NodeRun:
    """One run of one node."""

    node_id: str
    kind: str
    iteration: int
    attempt: int
    status: str
    started_at_ms: int
    duration_ms: int
    error: str | None = None
    output: Any = None


@dataclass(frozen=True)
class Failure:
    """Why an execution did not complete: its class (``tool``, ``timeout``, ``max_steps``,
    ``cancelled``...), message and node."""

    error_class: str
    message: str
    node_id: str | None = None


def _pick(cls: type, d: Mapping[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Event:
    """An event of an execution. Subclasses carry each type's fields; ``data`` holds them all."""

    type: str
    seq: int
    ts_ms: int
    execution_id: str
    data: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


@dataclass(frozen=True)
class ExecutionStartedEvent(Event):
    """The execution began."""

    input: Any = None


@dataclass(frozen=True)
class NodeStartedEvent(Event):
    """A node run began."""

    node_id: str = ""
    kind: str = ""
    iteration: int = 0
    attempt: int = 1


@dataclass(frozen=True)
class TokenEvent(Event):
    """A chunk of streamed model text."""

    node_id: str = ""
    text: str = ""


@dataclass(frozen=True)
class ToolCallStartedEvent(Event):
    """A tool call began."""

    node_id: str = ""
    call_id: str = ""
    tool: str = ""
    arguments: Any = None


@dataclass(frozen=True)
class ToolCallFinishedEvent(Event):
    """A tool call ended."""

    node_id: str = ""
    call_id: str = ""
    tool: str = ""
    ok: bool = True
    result: Any = None
    duration_ms: int = 0


@dataclass(frozen=True)
class NodeCompletedEvent(Event):
    """A node run completed."""

    node_id: str = ""
    iteration: int = 0
    duration_ms: int = 0
    output: Any = None


@dataclass(frozen=True)
class NodeFailedEvent(Event):
    """A node run failed (after its retries)."""

    node_id: str = ""
    iteration: int = 0
    error: str = ""
    error_class: str = ""


@dataclass(frozen=True)
class NodeRetryingEvent(Event):
    """A node run failed and will be tried again."""

    node_id: str = ""
    attempt: int = 0
    delay_ms: int = 0
    error: str = ""


@dataclass(frozen=True)
class NodeSkippedEvent(Event):
    """A node lies on a dead path."""

    node_id: str = ""


@dataclass(frozen=True)
class InterruptedEvent(Event):
    """The execution paused for input."""

    node_id: str = ""
    question: str = ""
    allowed_decisions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExecutionCompletedEvent(Event):
    """The execution completed."""

    response: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ExecutionFailedEvent(Event):
    """The execution failed."""

    error: str = ""
    error_class: str = ""


@dataclass(frozen=True)
class ExecutionCancelledEvent(Event):
    """The execution was cancelled."""

    reason: str = ""


_EVENT_TYPES: dict[str, type[Event]] = {
    "execution_started": ExecutionStartedEvent,
    "node_started": NodeStartedEvent,
    "token": TokenEvent,
    "tool_call_started": ToolCallStartedEvent,
    "tool_call_finished": ToolCallFinishedEvent,
    "node_completed": NodeCompletedEvent,
    "node_failed": NodeFailedEvent,
    "node_retrying": NodeRetryingEvent,
    "node_skipped": NodeSkippedEvent,
    "interrupted": InterruptedEvent,
    "execution_completed": ExecutionCompletedEvent,
    "execution_failed": ExecutionFailedEvent,
    "execution_cancelled": ExecutionCancelledEvent,
}


def _event(d: dict[str, Any]) -> Event:
    cls = _EVENT_TYPES.get(d["type"], Event)
    payload = {k: v for k, v in d.items() if k not in ("type", "seq", "ts_ms", "execution_id")}
    kwargs = dict(payload)
    if "class" in kwargs:
        kwargs["error_class"] = kwargs.pop("class")
    if "usage" in kwargs:
        kwargs["usage"] = Usage._from(kwargs["usage"])
    names = {f.name for f in fields(cls)} - {"type", "seq", "ts_ms", "execution_id", "data"}
    return cls(  # type: ignore[call-arg]
        type=d["type"],
        seq=d["seq"],
        ts_ms=d["ts_ms"],
        execution_id=d["execution_id"],
        data=payload,
        **{k: v for k, v in kwargs.items() if k in names},
    )


class ExecutionResult:
    """The outcome of an execution. Kept in Rust; each attribute is converted when first read,
    so a caller pays only for what it looks at."""

    __slots__ = ("_native", "_cache")

    def __init__(self, native: "_native.NativeResult") -> None:
        self._native = native
        self._cache: dict[str, Any] = {}

    def _get(self, name: str, convert: Callable[[Any], Any]) -> Any:
        try:
            return self._cache[name]
        except KeyError:
            value = self._cache[name] = convert(getattr(self._native, name))
            return value

    @property
    def execution_id(self) -> str:
        """The execution's id (a ULID unless given)."""
        return self._native.execution_id

    @property
    def status(self) -> str:
        """``completed``, ``failed``, ``cancelled`` (or ``waiting``)."""
        return self._native.status

    @property
    def response(self) -> str | None:
        """The final response: what an ``end`` node set, else the last assistant message."""
        return self._native.response

    @property
    def started_at_ms(self) -> int:
        """When it started, in milliseconds since the Unix epoch."""
        return self._native.started_at_ms

    @property
    def duration_ms(self) -> int:
        """How long it took."""
        return self._native.duration_ms

    @property
    def variables(self) -> dict[str, Any]:
        """The final workflow variables."""
        return self._get("variables", lambda v: v)

    @property
    def usage(self) -> Usage:
        """Tokens and cost, summed over every model call."""
        return self._get("usage", Usage._from)

    @property
    def messages(self) -> list[Message]:
        """The final messages."""
        return self._get("messages", lambda ms: [_pick(Message, m) for m in ms])

    @property
    def node_runs(self) -> list[NodeRun]:
        """Every node run, in the order their changes were applied."""
        return self._get("node_runs", lambda rs: [_pick(NodeRun, r) for r in rs])

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The errors recorded in the state (nodes that failed with ``on_error: continue``...)."""
        return self._get("errors", lambda v: v)

    @property
    def events(self) -> list[Event]:
        """Every event, in sequence order (empty when run with ``events=False``)."""
        return self._get("events", lambda es: [_event(e) for e in es])

    @property
    def error(self) -> Failure | None:
        """Why it failed or was cancelled."""
        return self._get(
            "error",
            lambda e: None
            if e is None
            else Failure(error_class=e["class"], message=e["message"], node_id=e.get("node_id")),
        )

    @property
    def ok(self) -> bool:
        """True when the execution completed."""
        return self.status == "completed"

    def to_dict(self) -> dict[str, Any]:
        """The whole result as plain JSON values."""
        return self._native.to_dict()

    def __repr__(self) -> str:
        return f"<ExecutionResult {self.execution_id} {self.status} response={self.response!r}>"

    def raise_for_status(self) -> "ExecutionResult":
        """Returns self when completed; else raises the matching :class:`ChatterError`:
        :class:`Cancelled`, :class:`TimeoutError`, :class:`NodeError` (a node failed) or
        :class:`ExecutionError` (a limit or a stop), with ``.result`` set to this result."""
        if self.status == "completed" or self.status == "waiting":
            return self
        failure = self.error or Failure(error_class=self.status, message=self.status)
        exc: ChatterError
        if self.status == "cancelled" or failure.error_class == "cancelled":
            exc = Cancelled(f"execution {self.execution_id} was cancelled: {failure.message}")
        elif failure.error_class == "timeout":
            exc = TimeoutError(f"execution {self.execution_id} timed out: {failure.message}")
        elif failure.node_id is not None and failure.error_class not in _LIMIT_CLASSES:
            prefix = f"node `{failure.node_id}` failed"
            msg = failure.message
            exc = NodeError(msg if msg.startswith(prefix) else f"{prefix}: {msg}")
        else:
            exc = ExecutionError(
                f"execution {self.execution_id} failed ({failure.error_class}): {failure.message}"
            )
        exc.node_id = failure.node_id
        exc.error_class = failure.error_class
        exc.result = self
        raise exc


_LIMIT_CLASSES = {"budget_exceeded", "max_steps", "max_iterations", "subgraph_depth", "stopped"}


# ---------------------------------------------------------------------------------------------
# Tools: schema inference
# ---------------------------------------------------------------------------------------------

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    tuple: "array",
    dict: "object",
}


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _type_schema(non_none[0])
        return {"anyOf": [_type_schema(a) for a in non_none]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        schema: dict[str, Any] = {"type": "array"}
        if args and origin is not tuple:
            schema["items"] = _type_schema(args[0])
        return schema
    if origin is dict or tp is dict:
        return {"type": "object"}
    if tp in _JSON_TYPES:
        return {"type": _JSON_TYPES[tp]}
    return {}


def infer_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """A JSON Schema for a function's keyword arguments, from its type hints and defaults."""
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to untyped
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in sig.parameters.items():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        properties[name] = _type_schema(hints.get(name, param.annotation))
        if param.default is inspect.Parameter.empty:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


# ---------------------------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Limits of an execution (``None`` keeps the engine's default)."""

    timeout_ms: int | None = None
    node_timeout_ms: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None
    max_steps: int | None = None
    max_concurrency: int | None = None

    def _to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


LimitsArg = Union[Limits, Mapping[str, Any], None]


def _limits(limits: LimitsArg) -> dict[str, Any] | None:
    if limits is None:
        return None
    if isinstance(limits, Limits):
        return limits._to_dict()
    if isinstance(limits, Mapping):
        return dict(limits)
    raise TypeError(f"limits must be a chatter.Limits or a dict, not {type(limits).__name__}")


def _input(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"message": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"input must be a str, a dict or None, not {type(value).__name__}")


def _opt_workflow(wf: Any) -> "_native.NativeWorkflow | None":
    return None if wf is None else _workflow(wf)


def _workflow(wf: Any) -> "_native.NativeWorkflow":
    if isinstance(wf, Workflow):
        return wf._native
    if isinstance(wf, Mapping):
        return Workflow.from_dict(wf)._native
    raise TypeError(f"workflow must be a chatter.Workflow or a dict, not {type(wf).__name__}")


class Engine:
    """Runs workflows. Register tools, models, retrievers and node kinds, then :meth:`run`,
    :meth:`arun`, :meth:`stream` or :meth:`astream` workflows.

    An engine is safe to share between threads and asyncio tasks.
    """

    def __init__(
        self,
        *,
        store: str | None = None,
        limits: LimitsArg = None,
        max_nodes: int | None = None,
        max_edges: int | None = None,
        pg_schema: str | None = None,
        durability: str | None = None,
    ) -> None:
        """``limits`` are the defaults of every run; ``max_nodes``/``max_edges`` raise the
        validator's size limits (100 nodes, 200 edges by default). With a ``store``
        (``"sqlite://chatter.db"``, ``"sqlite::memory:"``, ``"postgres://..."``) every
        :meth:`run`/:meth:`arun`/:meth:`stream` is durable: each step (node run, state delta,
        events) is committed as it happens, so an execution can be resumed (:meth:`resume`,
        :meth:`approve`, :meth:`resume_due`), listed step by step (:meth:`steps`) and forked
        (:meth:`fork`); read executions back with :meth:`list_executions` and
        :meth:`get_execution`. ``durability`` is ``"sync"`` (default: each step committed
        before the next node starts), ``"async"`` (steps committed in batches while the run goes
        on) or ``"exit"`` (everything written when the run ends or pauses). ``pg_schema`` puts a
        Postgres store's tables in that schema (created if missing; lower-case letters, digits
        and ``_``). Raises :class:`StorageError` when the store cannot be opened,
        :class:`ConfigError` for an unknown durability mode or a durability without a store."""
        if store is not None and not isinstance(store, str):
            raise TypeError(f"store must be a URL string, not {type(store).__name__}")
        if pg_schema is not None:
            if not isinstance(pg_schema, str):
                raise TypeError(f"pg_schema must be a str, not {type(pg_schema).__name__}")
            if store is None or not store.startswith(("postgres://", "postgresql://")):
                raise TypeError("pg_schema is only for a Postgres store (store=\"postgres://...\")")
        if durability is not None and not isinstance(durability, str):
            raise TypeError(f"durability must be a str, not {type(durability).__name__}")
        self._native = _native.NativeEngine(
            _limits(limits), max_nodes, max_edges, store, pg_schema, durability
        )

    # -- registration ---------------------------------------------------------------------

    def register_tool(
        self,
        name: str,
        fn: Callable[..., Any],
        schema: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> None:
        """Registers a function (plain or ``async def``) as a tool models can call. It is called
        with the model's arguments as keywords and must return JSON values (dict, list, str,
        int, float, bool, None). Its schema is inferred from its type hints unless given."""
        if not isinstance(name, str) or not name:
            raise TypeError("tool name must be a non-empty str")
        if not callable(fn):
            raise TypeError(f"tool `{name}` must be callable, not {type(fn).__name__}")
        if schema is None:
            schema = infer_schema(fn)
        if description is None:
            description = (inspect.getdoc(fn) or "").split("\n\n")[0].strip()
        self._native.register_tool(name, description, dict(schema), fn, _is_async(fn))

    def tool(
        self, name: str | None = None, *, description: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of :meth:`register_tool`."""

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.register_tool(name or fn.__name__, fn, description=description)
            return fn

        return decorate

    def register_model(self, name: str, model: Any, *, default: bool = False) -> None:
        """Registers a chat model: an object with ``chat(request) -> str | dict`` (plain or
        ``async def``) and optionally a generator ``stream(request)`` yielding text chunks.

        ``request`` is a dict (``messages``, ``tools``, ``temperature``, ...). ``chat`` returns
        the reply text, or a dict with ``content``, ``tool_calls`` (``[{"name", "arguments",
        "id"?}]``) and ``usage`` (``prompt_tokens``, ``completion_tokens``, ``cost``)."""
        chat = getattr(model, "chat", None)
        if not callable(chat):
            raise TypeError(f"model `{name}` must have a callable `chat` method")
        stream = getattr(model, "stream", None)
        has_stream = callable(stream) and inspect.isgeneratorfunction(stream)
        self._native.register_model(name, model, chat, _is_async(chat), has_stream)
        if default:
            self._native.set_default_model(name)

    def register_scripted(
        self, name: str = "scripted", script: Mapping[str, Any] | str | PathLike | None = None, *, default: bool = False
    ) -> None:
        """Registers the built-in deterministic scripted model from a dict, a JSON string or a
        path to a JSON file (see ``docs/scripted-model.md``)."""
        if script is None:
            raise TypeError("register_scripted needs a script (dict, JSON text or path)")
        if isinstance(script, Mapping):
            text = json.dumps(script)
        elif isinstance(script, os.PathLike) or (isinstance(script, str) and not script.lstrip().startswith("{")):
            with open(os.fspath(script), encoding="utf-8") as f:
                text = f.read()
        else:
            text = str(script)
        self._native.register_scripted(name, text)
        if default:
            self._native.set_default_model(name)

    def register_openai(
        self,
        name: str = "openai",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        default: bool = False,
    ) -> None:
        """Registers the built-in OpenAI-compatible provider (settings default to the
        ``OPENAI_*`` environment variables)."""
        self._native.register_openai(name, base_url, api_key, model)
        if default:
            self._native.set_default_model(name)

    def register_retriever(self, name: str, fn: Callable[..., Any]) -> None:
        """Registers ``fn(query: str, top_k: int)`` (plain or ``async def``) returning a list of
        strings or dicts (``content``, ``score``, ``source``, ``metadata``)."""
        if not callable(fn):
            raise TypeError(f"retriever `{name}` must be callable, not {type(fn).__name__}")
        self._native.register_retriever(name, fn, _is_async(fn))

    def register_node(self, kind: str, fn: Callable[[dict[str, Any]], Any]) -> None:
        """Registers a node kind run by ``fn(state)``: ``state`` is a dict (``input``,
        ``variables``, ``messages``, ``config``, ``node_id``, ``iteration``); a returned dict
        sets those workflow variables."""
        if not callable(fn):
            raise TypeError(f"node kind `{kind}` must be callable, not {type(fn).__name__}")
        self._native.register_node(kind, fn, _is_async(fn))

    # -- stored executions -------------------------------------------------------------------

    def list_executions(
        self, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Stored executions (``id``, ``status``, ``input``, ``response``, tokens, cost, times...),
        optionally of one status. Raises :class:`ConfigError` for an engine without a store."""
        return self._native.list_executions(status, limit, offset)

    def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        """One stored execution: ``{"execution": {...}, "node_runs": [...], "events": [...]}``,
        or None when there is no such execution."""
        return self._native.get_execution(execution_id)

    @property
    def durability(self) -> str | None:
        """The durability mode (``"sync"``, ``"async"``, ``"exit"``), or None without a store."""
        return self._native.durability

    # -- durable executions ------------------------------------------------------------------

    def resume(
        self,
        execution_id: str,
        workflow: Workflow | Mapping[str, Any] | None = None,
        *,
        raise_on_error: bool = True,
    ) -> ExecutionResult:
        """Resumes a stored execution from its last step, with the same id (its completed steps
        are replayed, not run again): one whose worker died, or one paused at an approval whose
        timeout passed. The graph is the one the store recorded unless ``workflow`` is given.

        Raises:
            NotFoundError: no such execution (or not one of this binding's).
            ValidationError: the execution has ended, or it waits for a decision
                (use :meth:`approve`).
            StorageError: another worker holds it, or the store failed.
        """
        return self._finish(self._native.resume(execution_id, _opt_workflow(workflow)), raise_on_error)

    async def aresume(
        self,
        execution_id: str,
        workflow: Workflow | Mapping[str, Any] | None = None,
        *,
        raise_on_error: bool = True,
    ) -> ExecutionResult:
        """As :meth:`resume`, awaited on asyncio."""
        raw = self._native.resume(execution_id, _opt_workflow(workflow), asynchronous=True)
        return self._finish(await raw, raise_on_error)

    def approve(
        self,
        execution_id: str,
        decision: str,
        input: Any = None,
        *,
        node_id: str | None = None,
        workflow: Workflow | Mapping[str, Any] | None = None,
        raise_on_error: bool = True,
    ) -> ExecutionResult:
        """Resumes an execution paused at an ``approval`` node (its result had status
        ``"waiting"`` and an :class:`InterruptedEvent` with the question) with ``decision``, one
        of the node's ``allowed_decisions``, and optional ``input`` (checked against its
        ``input_schema``). ``node_id`` names the approval when several wait.

        Raises:
            TypeError: ``decision`` is not a str.
            NotFoundError: no such execution (or not one of this binding's).
            ValidationError: a decision the approval does not allow, bad input, an execution
                that is not waiting; nothing is changed then.
        """
        raw = self._native.resume(execution_id, _opt_workflow(workflow), decision, input, node_id)
        return self._finish(raw, raise_on_error)

    async def aapprove(
        self,
        execution_id: str,
        decision: str,
        input: Any = None,
        *,
        node_id: str | None = None,
        workflow: Workflow | Mapping[str, Any] | None = None,
        raise_on_error: bool = True,
    ) -> ExecutionResult:
        """As :meth:`approve`, awaited on asyncio."""
        raw = self._native.resume(
            execution_id, _opt_workflow(workflow), decision, input, node_id, asynchronous=True
        )
        return self._finish(await raw, raise_on_error)

    def cancel(self, execution_id: str, *, reason: str = "cancelled from Python") -> None:
        """Cancels an execution by its id.

        An execution this engine is running (``run``/``arun``/``stream``/``resume`` called from
        another thread or task) stops: its running nodes are cancelled and it ends
        ``cancelled`` (its ``run`` raises :class:`Cancelled`). Otherwise a stored execution no
        process runs (waiting at an approval, pending, or abandoned by a dead process) ends
        ``cancelled`` with ``reason`` as its error and a final ``execution_cancelled`` event.

        Raises:
            NotFoundError: no such execution (or not one of this binding's).
            ValidationError: the execution has already ended.
            StorageError: another process is running it (its lease is live); cancel it there.
        """
        if not isinstance(execution_id, str) or not isinstance(reason, str):
            raise TypeError("execution_id and reason must be str")
        self._native.cancel(execution_id, reason)

    def steps(self, execution_id: str) -> list[dict[str, Any]]:
        """The steps of a stored execution in order: dicts with ``step`` (from 1), ``node_id``,
        ``iteration``, ``attempt``, ``status`` and ``state`` (the state after the step:
        ``variables``, ``messages``, ...). Raises :class:`NotFoundError` for an unknown
        execution."""
        return self._native.steps(execution_id)

    def fork(
        self,
        execution_id: str,
        step: int,
        variables: Mapping[str, Any] | None = None,
        *,
        workflow: Workflow | Mapping[str, Any] | None = None,
        raise_on_error: bool = True,
    ) -> ExecutionResult:
        """Starts a new execution from step ``step`` of a stored one: the steps up to it are
        copied (replayed, not run), ``variables`` are set, and the rest runs live. The original
        is not touched.

        Raises:
            NotFoundError: no such execution (or not one of this binding's).
            ValidationError: a step before 1 or past the execution's last step.
        """
        vars_ = dict(variables) if variables is not None else None
        raw = self._native.fork(execution_id, step, vars_, _opt_workflow(workflow))
        return self._finish(raw, raise_on_error)

    async def afork(
        self,
        execution_id: str,
        step: int,
        variables: Mapping[str, Any] | None = None,
        *,
        workflow: Workflow | Mapping[str, Any] | None = None,
        raise_on_error: bool = True,
    ) -> ExecutionResult:
        """As :meth:`fork`, awaited on asyncio."""
        vars_ = dict(variables) if variables is not None else None
        raw = self._native.fork(execution_id, step, vars_, _opt_workflow(workflow), asynchronous=True)
        return self._finish(await raw, raise_on_error)

    def resume_due(self) -> list[tuple[str, "ExecutionResult | ChatterError"]]:
        """Resumes every execution due now: running ones whose worker died (lease expired) and
        waiting ones whose approval timed out. Run it at start-up and periodically. Returns each
        one's id with its result, or the error that stopped it."""
        out: list[tuple[str, ExecutionResult | ChatterError]] = []
        for execution_id, value in self._native.resume_due():
            out.append((execution_id, value if isinstance(value, ChatterError) else ExecutionResult(value)))
        return out

    @staticmethod
    def _finish(raw: "_native.NativeResult", raise_on_error: bool) -> ExecutionResult:
        result = ExecutionResult(raw)
        return result.raise_for_status() if raise_on_error else result

    def registered(self) -> dict[str, list[str]]:
        """Names of the registered models, tools, retrievers and node kinds."""
        return self._native.registered()

    def check(self, workflow: Workflow | Mapping[str, Any]) -> None:
        """Raises :class:`ValidationError` (or another error) if this engine cannot run the
        workflow; registered node kinds are known to it."""
        try:
            self._native.check(_workflow(workflow))
        except ValidationError as e:
            raise _issues_to_objects(e) from None

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        workflow: Workflow | Mapping[str, Any],
        input: str | Mapping[str, Any] | None = None,
        *,
        limits: LimitsArg = None,
        execution_id: str | None = None,
        raise_on_error: bool = True,
        events: bool = True,
    ) -> ExecutionResult:
        """Runs a workflow to its end; blocks with the GIL released. ``input`` is a dict or a
        user message. Ctrl-C cancels the execution cleanly and raises KeyboardInterrupt.

        ``events=False`` leaves the result's ``events`` empty: an execution that is not stored
        does not build them at all (less work per step); a stored one still records them.

        Raises:
            ValidationError: the workflow cannot run.
            NodeError, ExecutionError, TimeoutError, Cancelled: the execution did not complete
                (unless ``raise_on_error=False``, which returns the result instead).
        """
        native = _workflow(workflow)
        try:
            raw = self._native.run(native, _input(input), _limits(limits), execution_id, events)
        except ValidationError as e:
            raise _issues_to_objects(e) from None
        result = ExecutionResult(raw)
        return result.raise_for_status() if raise_on_error else result

    async def arun(
        self,
        workflow: Workflow | Mapping[str, Any],
        input: str | Mapping[str, Any] | None = None,
        *,
        limits: LimitsArg = None,
        execution_id: str | None = None,
        raise_on_error: bool = True,
        events: bool = True,
    ) -> ExecutionResult:
        """As :meth:`run`, awaited on asyncio (no thread per run)."""
        native = _workflow(workflow)
        try:
            raw = await self._native.arun(native, _input(input), _limits(limits), execution_id, events)
        except ValidationError as e:
            raise _issues_to_objects(e) from None
        result = ExecutionResult(raw)
        return result.raise_for_status() if raise_on_error else result

    def stream(
        self,
        workflow: Workflow | Mapping[str, Any],
        input: str | Mapping[str, Any] | None = None,
        *,
        limits: LimitsArg = None,
        execution_id: str | None = None,
    ) -> "EventStream":
        """Starts a workflow; iterate the returned stream for its events as they happen."""
        native = _workflow(workflow)
        return EventStream(self._native.stream(native, _input(input), _limits(limits), execution_id))

    def astream(
        self,
        workflow: Workflow | Mapping[str, Any],
        input: str | Mapping[str, Any] | None = None,
        *,
        limits: LimitsArg = None,
        execution_id: str | None = None,
    ) -> "AsyncEventStream":
        """Starts a workflow; ``async for`` over the returned stream for its events."""
        native = _workflow(workflow)
        return AsyncEventStream(self._native.astream(native, _input(input), _limits(limits), execution_id))

    def run_template(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        input: str | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> ExecutionResult:
        """Generates a built-in template's workflow and runs it (see :meth:`run`)."""
        return self.run(Workflow.from_template(name, params), input, **kwargs)

    async def arun_template(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        input: str | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> ExecutionResult:
        """As :meth:`run_template`, on asyncio."""
        return await self.arun(Workflow.from_template(name, params), input, **kwargs)


class EventStream:
    """The events of a running execution (an iterator). :meth:`result` waits for the end."""

    def __init__(self, native: "_native.NativeStream") -> None:
        self._native = native

    @property
    def execution_id(self) -> str:
        """The execution's id."""
        return self._native.execution_id

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        raw = self._native.__next__()
        if raw is None:
            raise StopIteration
        return _event(raw)

    def cancel(self) -> None:
        """Asks the execution to stop; it ends as ``cancelled``."""
        self._native.cancel()

    def result(self, *, raise_on_error: bool = True) -> ExecutionResult:
        """Waits for the execution's result."""
        result = ExecutionResult(self._native.result())
        return result.raise_for_status() if raise_on_error else result


class AsyncEventStream:
    """The events of a running execution (an async iterator)."""

    def __init__(self, native: "_native.NativeAsyncStream") -> None:
        self._native = native

    @property
    def execution_id(self) -> str:
        """The execution's id."""
        return self._native.execution_id

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return _event(await self._native.__anext__())

    def cancel(self) -> None:
        """Asks the execution to stop; it ends as ``cancelled``."""
        self._native.cancel()

    async def result(self, *, raise_on_error: bool = True) -> ExecutionResult:
        """Awaits the execution's result."""
        result = ExecutionResult(await self._native.result())
        return result.raise_for_status() if raise_on_error else result


# ---------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A built-in template: a parameterised blueprint that generates a workflow."""

    name: str
    description: str
    category: str
    default_params: dict[str, Any]
    required_tools: list[str]
    required_retrievers: list[str]
    tags: list[str]
    version: int
    parameter_schema: dict[str, Any]

    def workflow(self, params: Mapping[str, Any] | None = None) -> Workflow:
        """The workflow this template generates with these parameters."""
        return Workflow.from_template(self.name, params)


def list_templates() -> list[Template]:
    """The built-in templates."""
    return [_pick(Template, t) for t in _native.templates_list()]


def get_template(name: str) -> Template:
    """A built-in template by name. Raises :class:`TemplateError` when there is none."""
    for t in list_templates():
        if t.name == name:
            return t
    raise TemplateError(f"unknown template `{name}`")
