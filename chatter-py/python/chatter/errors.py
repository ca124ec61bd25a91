"""The exceptions Chatter raises. Every one derives from :class:`ChatterError`."""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
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
]


class ChatterError(Exception):
    """Base class of every Chatter error.

    Attributes:
        node_id: the node concerned, when one is.
        error_class: the engine's error class (``"tool"``, ``"timeout"``, ...), when known.
        result: the :class:`chatter.ExecutionResult` of a run that ended with this error, if any.
    """

    node_id: str | None = None
    error_class: str | None = None
    result: Any = None


class ValidationError(ChatterError, ValueError):
    """A definition that does not parse or does not validate.

    ``issues`` lists every issue found (:class:`chatter.ValidationIssue`, or dicts with
    ``code``, ``severity``, ``node_id``, ``edge_id``, ``path``, ``message``).

    Also raised, with no issues, for a request about a stored execution that cannot be done:
    a decision its approval does not allow, an execution that has ended, a fork step out of
    range. Nothing was changed then.
    """

    issues: list[Any] = []


class ConfigError(ChatterError, ValueError):
    """A configuration that cannot be used (a bad model script, a bad provider setting)."""


class NotFoundError(ChatterError, KeyError):
    """An unknown model, tool, retriever, node kind or stored execution."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ExecutionError(ChatterError):
    """An execution that failed (a limit was exceeded, a node stopped it, ...)."""


class NodeError(ExecutionError):
    """An execution that failed because a node failed (a tool raised, a model failed, ...).

    The message carries the node's error, with a Python traceback when Python code raised.
    """


class TemplateError(ChatterError):
    """An unknown template, or parameters a template refuses."""


class StorageError(ChatterError):
    """A store that cannot be reached or used."""


class Cancelled(ExecutionError):
    """An execution that was cancelled."""


class TimeoutError(ExecutionError, builtins.TimeoutError):  # noqa: A001 - deliberate shadowing
    """An execution or node that ran out of time."""
