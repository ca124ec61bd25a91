//! Content rules: node configs against their kind's schema, expressions, prompt templates, and
//! variables set but never read (`CHT-V012`..`V018`, `V022`).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{At, Ctx, Issue, codes, paths};
use crate::error::Error;
use crate::expr::{Expression, PromptTemplate};
use crate::registry::ConfigIssueKind;

/// The message of a compile error, without the wrapper text.
fn describe(err: &Error) -> String {
    match err {
        Error::Expression { message, .. } | Error::Template { message } => message.clone(),
        other => other.to_string(),
    }
}

/// Compiles expressions and templates, each distinct source text once per validation run (a
/// condition such as `has_tool_calls` often sits on many edges), and gathers the variables
/// they read.
struct Compiler<'s> {
    exprs: Vec<Expression>,
    expr_by_source: HashMap<&'s str, Result<usize, String>>,
    template_by_source: HashMap<&'s str, Result<(), String>>,
    reads: HashSet<String>,
}

impl<'s> Compiler<'s> {
    /// The position of the compiled expression in `exprs`, or the compile error.
    fn expression(&mut self, source: &'s str) -> Result<usize, String> {
        if let Some(known) = self.expr_by_source.get(source) {
            return known.clone();
        }
        let result = match Expression::compile(source) {
            Ok(expr) => {
                self.reads.extend(expr.variable_reads());
                self.exprs.push(expr);
                Ok(self.exprs.len() - 1)
            }
            Err(err) => Err(describe(&err)),
        };
        self.expr_by_source.insert(source, result.clone());
        result
    }

    fn template(&mut self, source: &'s str) -> Result<(), String> {
        if let Some(known) = self.template_by_source.get(source) {
            return known.clone();
        }
        let result = match PromptTemplate::compile(source) {
            Ok(template) => {
                self.reads.extend(template.variable_reads());
                Ok(())
            }
            Err(err) => Err(describe(&err)),
        };
        self.template_by_source.insert(source, result.clone());
        result
    }
}

/// Variable operations that give a variable a value.
const SETTING_OPERATIONS: &[&str] = &["set", "append", "increment", "decrement"];

pub(super) fn check(ctx: &mut Ctx<'_>) {
    let def = ctx.def;
    let mut compiler = Compiler {
        exprs: Vec::new(),
        expr_by_source: HashMap::new(),
        template_by_source: HashMap::new(),
        reads: HashSet::new(),
    };
    // (node position, canonical key, variable name)
    let mut sets: Vec<(usize, &'static str, &str)> = Vec::new();

    let mut edge_exprs = Vec::with_capacity(def.edges.len());
    for (j, edge) in def.edges.iter().enumerate() {
        let Some(condition) = edge.condition() else {
            edge_exprs.push(None);
            continue;
        };
        match compiler.expression(condition) {
            Ok(expr) => edge_exprs.push(Some(expr)),
            Err(err) => {
                ctx.push(
                    At::Edge(j),
                    Issue::error(
                        codes::EXPRESSION_INVALID,
                        paths::edge_condition(j, edge),
                        format!(
                            "edge `{}` condition `{condition}` does not compile: {err}",
                            edge.id,
                        ),
                    )
                    .edge(edge.id.as_str()),
                );
                edge_exprs.push(None);
            }
        }
    }
    ctx.edge_exprs = edge_exprs;

    let mut node_conditions = vec![None; def.nodes.len()];
    for (i, node) in def.nodes.iter().enumerate() {
        let kind = node.kind.as_str();
        let id = node.id.as_str();
        // Whether the schema check found something inside a map body; such a body is not
        // validated further (its problem is already reported).
        let mut body_flagged = false;
        if let Some(info) = ctx.kinds.info(kind) {
            for found in info.check_config(&node.config) {
                body_flagged |= found.path == "body"
                    || found.path.starts_with("body.")
                    || found.path.starts_with("body[");
                let (code, warning) = match found.kind {
                    ConfigIssueKind::WrongType => (codes::CONFIG_WRONG_TYPE, false),
                    ConfigIssueKind::OutOfRange => (codes::CONFIG_OUT_OF_RANGE, false),
                    ConfigIssueKind::NotAllowed => (codes::CONFIG_NOT_ALLOWED, false),
                    ConfigIssueKind::Missing => (codes::CONFIG_MISSING_KEY, false),
                    ConfigIssueKind::Unknown => (codes::CONFIG_UNKNOWN_KEY, true),
                    // `ConfigIssueKind` is non-exhaustive: a kind added later reads as a type
                    // error until it gets its own code.
                    #[allow(unreachable_patterns)]
                    _ => (codes::CONFIG_WRONG_TYPE, false),
                };
                let path = paths::config_inner(i, node, &found.path);
                let written = path
                    .strip_prefix(&paths::node_config(i, node))
                    .unwrap_or(&found.path)
                    .trim_start_matches('.');
                let message = if written.is_empty() {
                    format!("node `{}` config: {}", node.display_name(), found.message)
                } else {
                    format!(
                        "node `{}` config `{written}`: {}",
                        node.display_name(),
                        found.message
                    )
                };
                let issue = if warning {
                    Issue::warning(code, path, message)
                } else {
                    Issue::error(code, path, message)
                };
                ctx.push(At::Node(i), issue.node(id));
            }
        }
        for key in ctx.kinds.expression_keys(kind) {
            let Some(source) = node.config.get(key).and_then(Value::as_str) else {
                continue;
            };
            match compiler.expression(source) {
                Ok(expr) => {
                    if key == "condition" && ctx.kinds.has_true_false(kind) {
                        node_conditions[i] = Some(expr);
                    }
                }
                Err(err) => ctx.push(
                    At::Node(i),
                    Issue::error(
                        codes::EXPRESSION_INVALID,
                        paths::config_key(i, node, key),
                        format!(
                            "node `{}` `{}` does not compile: {err}",
                            node.display_name(),
                            node.config_key_as_written(key),
                        ),
                    )
                    .node(id),
                ),
            }
        }
        for key in ctx.kinds.template_keys(kind) {
            let Some(source) = node.config.get(key).and_then(Value::as_str) else {
                continue;
            };
            match compiler.template(source) {
                Ok(()) => {}
                Err(err) => ctx.push(
                    At::Node(i),
                    Issue::error(
                        codes::TEMPLATE_INVALID,
                        paths::config_key(i, node, key),
                        format!(
                            "node `{}` template `{}` does not compile: {err}",
                            node.display_name(),
                            node.config_key_as_written(key),
                        ),
                    )
                    .node(id),
                ),
            }
        }
        if kind == "variable" {
            let name = node
                .config
                .get("variable_name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty());
            let operation = node.config.get("operation").and_then(Value::as_str);
            if let (Some(name), Some(operation)) = (name, operation) {
                if operation == "get" {
                    compiler.reads.insert(name.to_owned());
                } else if SETTING_OPERATIONS.contains(&operation) {
                    sets.push((i, "variable_name", name));
                }
            }
        }
        if kind == "map"
            && !body_flagged
            && let Some(body @ Value::Object(_)) = node.config.get("body")
        {
            ctx.bodies.push(super::Body {
                prefix: paths::config_key(i, node, "body"),
                at: At::Node(i),
                node_id: node.id.to_string(),
                value: body.clone(),
            });
        }
        if let Some(name) = node
            .config
            .get("output_variable")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            sets.push((i, "output_variable", name));
        }
    }
    ctx.node_conditions = node_conditions;
    ctx.exprs = compiler.exprs;
    let reads = compiler.reads;

    for (i, key, name) in sets {
        if reads.contains(name) {
            continue;
        }
        let node = &def.nodes[i];
        ctx.push(
            At::Node(i),
            Issue::warning(
                codes::UNUSED_VARIABLE,
                paths::config_key(i, node, key),
                format!(
                    "variable `{name}` is set by node `{}` but never read \
                     (no condition, template or `get` reads `variables.{name}`)",
                    node.display_name()
                ),
            )
            .node(node.id.as_str()),
        );
    }
}
