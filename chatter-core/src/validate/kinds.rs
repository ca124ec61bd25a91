//! What the validator needs to know about node kinds: the registry's answer when it has one,
//! else the behaviour of the built-in kind of that canonical name (DESIGN §4).

use crate::registry::{NodeKindInfo, NodeRegistry};

/// Canonical names of the built-in kinds of DESIGN §4.
pub(crate) const BUILTIN_KINDS: &[&str] = &[
    "start",
    "end",
    "llm",
    "tool",
    "retrieval",
    "memory",
    "conditional",
    "loop",
    "variable",
    "error_handler",
    "delay",
    "approval",
    "map",
    "subworkflow",
    "http",
];

/// Kind knowledge for one validation run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kinds<'r> {
    registry: &'r NodeRegistry,
    /// Whether the registry knows no kind at all; the built-in names then stand in for it.
    empty: bool,
}

impl<'r> Kinds<'r> {
    pub(crate) fn new(registry: &'r NodeRegistry) -> Kinds<'r> {
        Kinds {
            registry,
            empty: registry.kinds().next().is_none(),
        }
    }

    /// The registry's metadata of a kind.
    pub(crate) fn info(&self, kind: &str) -> Option<&'r NodeKindInfo> {
        self.registry.get(kind)
    }

    /// Whether the kind is known: registered, or (with an empty registry) built in.
    pub(crate) fn is_known(&self, kind: &str) -> bool {
        self.info(kind).is_some() || (self.empty && BUILTIN_KINDS.contains(&kind))
    }

    /// The named branches a kind routes by (`true`/`false` for `conditional`).
    pub(crate) fn branches(&self, kind: &str) -> Vec<&'r str> {
        match self.info(kind) {
            Some(info) => info.branches.iter().map(String::as_str).collect(),
            None if kind == "conditional" => vec!["true", "false"],
            None => Vec::new(),
        }
    }

    /// Whether the kind routes by `true`/`false` branches (a conditional node).
    pub(crate) fn has_true_false(&self, kind: &str) -> bool {
        let branches = self.branches(kind);
        branches.contains(&"true") && branches.contains(&"false")
    }

    /// Whether a node of this kind can leave a cycle by itself, whatever its edges (a `loop`
    /// node stops after `max_iterations`). A kind that routes by `true`/`false` branches leaves
    /// a cycle only through an edge, so it does not count here.
    pub(crate) fn exits_cycle_by_itself(&self, kind: &str) -> bool {
        match self.info(kind) {
            Some(info) => info.can_exit_cycle && !self.has_true_false(kind),
            None => kind == "loop",
        }
    }

    /// Whether nodes of this kind are the entry marker.
    pub(crate) fn is_start(&self, kind: &str) -> bool {
        kind == "start"
    }

    /// Whether nodes of this kind are exit markers.
    pub(crate) fn is_end(&self, kind: &str) -> bool {
        kind == "end"
    }

    /// Config keys holding condition expressions.
    pub(crate) fn expression_keys(&self, kind: &str) -> Vec<&'r str> {
        match self.info(kind) {
            Some(info) => info.expression_keys.iter().map(String::as_str).collect(),
            None => match kind {
                "conditional" | "loop" => vec!["condition"],
                "map" => vec!["items"],
                _ => Vec::new(),
            },
        }
    }

    /// Config keys holding prompt templates.
    pub(crate) fn template_keys(&self, kind: &str) -> Vec<&'r str> {
        match self.info(kind) {
            Some(info) => info.template_keys.iter().map(String::as_str).collect(),
            None => match kind {
                "llm" => vec!["system_prompt", "system_message", "prompt"],
                "end" => vec!["output"],
                "retrieval" => vec!["query"],
                "memory" => vec!["summary_prompt"],
                "variable" => vec!["value_template"],
                "approval" => vec!["question"],
                "http" => vec!["url"],
                _ => Vec::new(),
            },
        }
    }
}
