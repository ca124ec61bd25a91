//! The workflow validator: every issue of a definition at once, with stable codes.
//!
//! [`WorkflowValidator::validate`] never fails and never panics: whatever the definition (no
//! nodes, 100 000 nodes, self-loops, edges to nowhere, unknown kinds), it returns a
//! [`ValidationReport`]. Every graph algorithm is iterative and runs on adjacency lists built
//! once, so validation takes time near-linear in the size of the definition.
//!
//! Each issue has a stable code (see [`codes`]; one page per code under `docs/errors/`), a
//! severity, the node and/or edge concerned, the JSON path of the offending value in the
//! document as it was written (`$.nodes[3].data.config.maxTokens` for an editor-shape node
//! whose key was camelCase, `$.nodes[3].config.max_tokens` for a flat one), and a message.
//!
//! **Order.** Issues are sorted by code, then by document position (top-level issues first,
//! then nodes in document order, then edges in document order, then `metadata`), then by path
//! and message. The same definition always gives the same report, whatever shape it is read in.
//!
//! ```
//! use chatter_core::{WorkflowDefinition, WorkflowValidator};
//! use chatter_core::validate::codes;
//!
//! let def = WorkflowDefinition::from_json(r#"{
//!   "nodes": [{"id": "start", "type": "start"}, {"id": "end", "type": "end"}],
//!   "edges": [{"source": "start", "target": "nowhere"}]
//! }"#)?;
//! let report = WorkflowValidator::default().validate(&def);
//! assert!(!report.is_valid());
//! assert_eq!(report.issues[0].code, codes::EDGE_TARGET_UNKNOWN);
//! assert_eq!(report.issues[0].path, "$.edges[0].target");
//! # Ok::<(), chatter_core::Error>(())
//! ```

mod content;
mod flow;
mod kinds;
mod paths;
mod report;
pub(crate) mod secrets;
mod structure;

#[cfg(test)]
mod tests;

pub use report::{
    ContractIssue, ContractReport, LocStep, Severity, ValidationIssue, ValidationReport, suggestion,
};

use crate::definition::WorkflowDefinition;
use crate::expr::Expression;
use crate::graph::GraphIndex;
use crate::registry::NodeRegistry;
use kinds::Kinds;

/// The stable issue codes. Each has a page `docs/errors/<code>.md`.
pub mod codes {
    /// A node has no id, or an empty one (error).
    pub const NODE_ID_MISSING: &str = "CHT-V001";
    /// Two nodes share an id (error).
    pub const DUPLICATE_NODE_ID: &str = "CHT-V002";
    /// Two edges share an id (error).
    pub const DUPLICATE_EDGE_ID: &str = "CHT-V003";
    /// An edge's source is empty or names no node (error).
    pub const EDGE_SOURCE_UNKNOWN: &str = "CHT-V004";
    /// An edge's target is empty or names no node (error).
    pub const EDGE_TARGET_UNKNOWN: &str = "CHT-V005";
    /// A node's kind is missing or unknown (error).
    pub const UNKNOWN_KIND: &str = "CHT-V006";
    /// No single entry: several `start` nodes, or no `start` node and not exactly one node
    /// without in-edges (error).
    pub const NO_SINGLE_ENTRY: &str = "CHT-V007";
    /// A node cannot be reached from the entry (error).
    pub const UNREACHABLE: &str = "CHT-V008";
    /// A node cannot reach an end (error).
    pub const CANNOT_REACH_END: &str = "CHT-V009";
    /// A cycle has no node that can leave it (error).
    pub const CYCLE_WITHOUT_EXIT: &str = "CHT-V010";
    /// A conditional node lacks its branches (error; warning when only one is missing).
    pub const MISSING_BRANCHES: &str = "CHT-V011";
    /// A config value has the wrong type (error).
    pub const CONFIG_WRONG_TYPE: &str = "CHT-V012";
    /// A config value is out of range (error).
    pub const CONFIG_OUT_OF_RANGE: &str = "CHT-V013";
    /// A config value is not one of the allowed values (error).
    pub const CONFIG_NOT_ALLOWED: &str = "CHT-V014";
    /// A required config key is missing (error).
    pub const CONFIG_MISSING_KEY: &str = "CHT-V015";
    /// A config key the kind does not know (warning).
    pub const CONFIG_UNKNOWN_KEY: &str = "CHT-V016";
    /// An expression does not compile (error).
    pub const EXPRESSION_INVALID: &str = "CHT-V017";
    /// A prompt template does not compile (error).
    pub const TEMPLATE_INVALID: &str = "CHT-V018";
    /// More nodes than the limit (error).
    pub const TOO_MANY_NODES: &str = "CHT-V019";
    /// More edges than the limit (error).
    pub const TOO_MANY_EDGES: &str = "CHT-V020";
    /// A value that looks like a secret (warning).
    pub const POSSIBLE_SECRET: &str = "CHT-V021";
    /// A variable is set but never read (warning).
    pub const UNUSED_VARIABLE: &str = "CHT-V022";
    /// An edge that can never be taken (warning).
    pub const DEAD_BRANCH: &str = "CHT-V023";
    /// The definition has no nodes (error).
    pub const EMPTY_DEFINITION: &str = "CHT-V024";
    /// Conditional out-edges with more than one unconditional default (warning).
    pub const AMBIGUOUS_DEFAULT: &str = "CHT-V025";

    /// Every code with its title, in order.
    pub const ALL: &[(&str, &str)] = &[
        (NODE_ID_MISSING, "Node id missing or empty"),
        (DUPLICATE_NODE_ID, "Duplicate node id"),
        (DUPLICATE_EDGE_ID, "Duplicate edge id"),
        (EDGE_SOURCE_UNKNOWN, "Edge source unknown or empty"),
        (EDGE_TARGET_UNKNOWN, "Edge target unknown or empty"),
        (UNKNOWN_KIND, "Unknown or missing node kind"),
        (NO_SINGLE_ENTRY, "No single entry"),
        (UNREACHABLE, "Node unreachable from the entry"),
        (CANNOT_REACH_END, "Node cannot reach an end"),
        (CYCLE_WITHOUT_EXIT, "Cycle without exit"),
        (MISSING_BRANCHES, "Conditional node without its branches"),
        (CONFIG_WRONG_TYPE, "Config value of the wrong type"),
        (CONFIG_OUT_OF_RANGE, "Config value out of range"),
        (CONFIG_NOT_ALLOWED, "Config value not allowed"),
        (CONFIG_MISSING_KEY, "Required config key missing"),
        (CONFIG_UNKNOWN_KEY, "Unknown config key"),
        (EXPRESSION_INVALID, "Expression does not compile"),
        (TEMPLATE_INVALID, "Prompt template does not compile"),
        (TOO_MANY_NODES, "Too many nodes"),
        (TOO_MANY_EDGES, "Too many edges"),
        (POSSIBLE_SECRET, "Possible secret in the definition"),
        (UNUSED_VARIABLE, "Variable set but never read"),
        (DEAD_BRANCH, "Branch that can never be taken"),
        (EMPTY_DEFINITION, "Empty definition"),
        (AMBIGUOUS_DEFAULT, "Ambiguous default edge"),
    ];
}

/// Limits and switches of the validator.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ValidatorConfig {
    /// Most nodes a definition may have (default 100).
    pub max_nodes: usize,
    /// Most edges a definition may have (default 200).
    pub max_edges: usize,
    /// Whether to look for pasted secrets (`CHT-V021`; default on).
    pub detect_secrets: bool,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        ValidatorConfig {
            max_nodes: 100,
            max_edges: 200,
            detect_secrets: true,
        }
    }
}

impl ValidatorConfig {
    /// The default limits with another node limit.
    #[must_use]
    pub fn with_max_nodes(mut self, max_nodes: usize) -> ValidatorConfig {
        self.max_nodes = max_nodes;
        self
    }

    /// The default limits with another edge limit.
    #[must_use]
    pub fn with_max_edges(mut self, max_edges: usize) -> ValidatorConfig {
        self.max_edges = max_edges;
        self
    }

    /// Turns secret detection on or off.
    #[must_use]
    pub fn with_secret_detection(mut self, on: bool) -> ValidatorConfig {
        self.detect_secrets = on;
        self
    }
}

/// Validates definitions against the rules of DESIGN §3–§6.
///
/// Kind behaviour (which kinds exist, their config schemas, which keys hold expressions and
/// templates, which branches they route by, whether they can leave a cycle) comes from a
/// [`NodeRegistry`] ([`NodeRegistry::builtin`] by default). With an empty registry, the
/// built-in kinds of DESIGN §4 are known by name and no config schema is checked.
#[derive(Debug, Clone)]
pub struct WorkflowValidator {
    config: ValidatorConfig,
    registry: NodeRegistry,
}

impl Default for WorkflowValidator {
    fn default() -> Self {
        WorkflowValidator::new(ValidatorConfig::default())
    }
}

impl WorkflowValidator {
    /// A validator with the given limits and the built-in node kinds.
    pub fn new(config: ValidatorConfig) -> WorkflowValidator {
        WorkflowValidator {
            config,
            registry: NodeRegistry::builtin(),
        }
    }

    /// A validator with the given limits and node kinds.
    pub fn with_registry(config: ValidatorConfig, registry: NodeRegistry) -> WorkflowValidator {
        WorkflowValidator { config, registry }
    }

    /// The limits in force.
    pub fn config(&self) -> &ValidatorConfig {
        &self.config
    }

    /// The node kinds in force.
    pub fn registry(&self) -> &NodeRegistry {
        &self.registry
    }

    /// Every issue of `def`, errors and warnings, in the order described in the module docs.
    ///
    /// The sub-graph of a `map` node (`config.body`) is validated too, with the same rules:
    /// its issues carry paths into the body (`$.nodes[2].config.body.edges[0].target`), the
    /// ids of the body's nodes and edges, and messages starting with "in the body of map node
    /// `<id>`". Bodies nested in bodies are handled the same way, without recursion.
    pub fn validate(&self, def: &WorkflowDefinition) -> ValidationReport {
        let mut found = Vec::new();
        let mut bodies = Vec::new();
        self.collect(def, self.config.detect_secrets, &mut found, &mut bodies);
        while let Some(body) = bodies.pop() {
            let sub = match WorkflowDefinition::from_value(&body.value) {
                Ok(sub) => sub,
                Err(err) => {
                    let (path, message) = match err {
                        crate::Error::Definition { path, message } => (path, message),
                        other => ("$".to_owned(), other.to_string()),
                    };
                    found.push(Found {
                        at: body.at,
                        issue: ValidationIssue {
                            code: codes::CONFIG_WRONG_TYPE.to_owned(),
                            severity: Severity::Error,
                            node_id: Some(body.node_id.clone()),
                            edge_id: None,
                            path: nest(&body.prefix, &path),
                            message: format!(
                                "in the body of map node `{}`: {message}",
                                body.node_id
                            ),
                        },
                    });
                    continue;
                }
            };
            let mut sub_found = Vec::new();
            let mut sub_bodies = Vec::new();
            // Secrets in a body were already found by the scan of the map node's config.
            self.collect(&sub, false, &mut sub_found, &mut sub_bodies);
            for mut f in sub_found {
                f.at = body.at;
                f.issue.path = nest(&body.prefix, &f.issue.path);
                f.issue.message = format!(
                    "in the body of map node `{}`: {}",
                    body.node_id, f.issue.message
                );
                found.push(f);
            }
            for mut inner in sub_bodies {
                inner.prefix = nest(&body.prefix, &inner.prefix);
                inner.at = body.at;
                bodies.push(inner);
            }
        }
        found.sort_by(|a, b| {
            (
                a.issue.code.as_str(),
                a.at,
                a.issue.path.as_str(),
                a.issue.message.as_str(),
            )
                .cmp(&(
                    b.issue.code.as_str(),
                    b.at,
                    b.issue.path.as_str(),
                    b.issue.message.as_str(),
                ))
        });
        ValidationReport {
            issues: found.into_iter().map(|f| f.issue).collect(),
        }
    }

    /// Validates `def` and fails when it has errors: the engine's check before a run.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) with the whole report when an issue is an
    /// error; the report (warnings only) otherwise.
    pub fn check(&self, def: &WorkflowDefinition) -> crate::Result<ValidationReport> {
        self.validate(def).into_result()
    }

    /// Runs every rule on one graph.
    fn collect(
        &self,
        def: &WorkflowDefinition,
        detect_secrets: bool,
        found: &mut Vec<Found>,
        bodies: &mut Vec<Body>,
    ) {
        let mut ctx = Ctx {
            def,
            config: &self.config,
            kinds: Kinds::new(&self.registry),
            graph: GraphIndex::new(def),
            found: Vec::new(),
            exprs: Vec::new(),
            edge_exprs: Vec::new(),
            node_conditions: Vec::new(),
            bodies: Vec::new(),
        };
        structure::check(&mut ctx);
        content::check(&mut ctx);
        flow::check(&mut ctx);
        if detect_secrets {
            secrets::check(&mut ctx);
        }
        found.append(&mut ctx.found);
        bodies.append(&mut ctx.bodies);
    }
}

/// `prefix` (a path) followed by `inner` (a path from `$`).
fn nest(prefix: &str, inner: &str) -> String {
    format!("{prefix}{}", inner.strip_prefix('$').unwrap_or(inner))
}

/// The sub-graph of a `map` node, waiting to be validated.
pub(crate) struct Body {
    /// Path of the body object.
    prefix: String,
    /// Where the map node sits, for ordering.
    at: At,
    /// The map node's id.
    node_id: String,
    /// The body as written.
    value: serde_json::Value,
}

/// Where an issue sits in the document, for ordering: top level, a node, an edge, metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum At {
    Top,
    Node(usize),
    Edge(usize),
    Metadata,
}

struct Found {
    at: At,
    issue: ValidationIssue,
}

/// The state of one validation run.
pub(crate) struct Ctx<'a> {
    def: &'a WorkflowDefinition,
    config: &'a ValidatorConfig,
    kinds: Kinds<'a>,
    graph: GraphIndex<'a>,
    found: Vec<Found>,
    /// The compiled expressions, each distinct source once.
    exprs: Vec<Expression>,
    /// The compiled condition of each edge (by document position; an index into `exprs`),
    /// when it compiles.
    edge_exprs: Vec<Option<usize>>,
    /// The compiled `condition` of each node (by document position; an index into `exprs`)
    /// whose kind routes by `true`/`false` branches, when it compiles.
    node_conditions: Vec<Option<usize>>,
    /// Sub-graphs of `map` nodes, validated after this graph.
    bodies: Vec<Body>,
}

/// The fields of one issue, before it is placed.
pub(crate) struct Issue<'s> {
    code: &'static str,
    severity: Severity,
    node_id: Option<&'s str>,
    edge_id: Option<&'s str>,
    path: String,
    message: String,
}

impl<'s> Issue<'s> {
    fn error(code: &'static str, path: String, message: String) -> Issue<'s> {
        Issue {
            code,
            severity: Severity::Error,
            node_id: None,
            edge_id: None,
            path,
            message,
        }
    }

    fn warning(code: &'static str, path: String, message: String) -> Issue<'s> {
        Issue {
            severity: Severity::Warning,
            ..Issue::error(code, path, message)
        }
    }

    fn node(mut self, id: &'s str) -> Issue<'s> {
        self.node_id = Some(id).filter(|id| !id.is_empty());
        self
    }

    fn edge(mut self, id: &'s str) -> Issue<'s> {
        self.edge_id = Some(id).filter(|id| !id.is_empty());
        self
    }
}

impl Ctx<'_> {
    fn push(&mut self, at: At, issue: Issue<'_>) {
        self.found.push(Found {
            at,
            issue: ValidationIssue {
                code: issue.code.to_owned(),
                severity: issue.severity,
                node_id: issue.node_id.map(str::to_owned),
                edge_id: issue.edge_id.map(str::to_owned),
                path: issue.path,
                message: issue.message,
            },
        });
    }
}

/// Backticked, comma-separated names, at most `limit` of them, then "and N more".
pub(crate) fn name_list<'a>(names: impl IntoIterator<Item = &'a str>, limit: usize) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    let mut out = names
        .iter()
        .take(limit)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > limit {
        out.push_str(&format!(" and {} more", names.len() - limit));
    }
    out
}
