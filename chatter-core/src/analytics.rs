//! Static analytics of a definition (the old `/analytics` endpoint): complexity, depth,
//! branching, execution paths, bottlenecks, risk factors and optimisation suggestions.
//!
//! Everything is computed on the real graph (the same for the editor and the flat shape),
//! deterministically, in time near-linear in the size of the definition, with iterative
//! algorithms. The shapes follow the v1 contract's `WorkflowAnalyticsResponse`,
//! `ComplexityMetrics`, `BottleneckInfo` and `OptimizationSuggestion`, without the timing
//! fields (`total_execution_time_ms`, `started_at`, ...) that the HTTP layer adds.
//!
//! ## Definitions
//!
//! * **The graph**: one vertex per node with a distinct non-empty id (the first such node);
//!   the edges whose source and target are such nodes.
//! * **Entry**: the `start` nodes; when there is none, the nodes without in-edges; when there is
//!   none of those either, the first node.
//! * **The DAG**: the nodes reachable from the entry, with the *back-edges* of a depth-first
//!   search from the entry (out-edges in document order) removed.
//! * **Exits**: nodes of the DAG without out-edges in the whole graph, and `end` nodes.
//!
//! ```
//! use chatter_core::{WorkflowBuilder, analytics};
//!
//! let def = WorkflowBuilder::new()
//!     .node("start", "start")
//!     .node("chat", "llm")
//!     .node("end", "end")
//!     .edge("start", "chat")
//!     .edge("chat", "end")
//!     .build()?;
//! let report = analytics::analyze(&def);
//! assert_eq!(report.complexity.depth, 2);
//! assert_eq!(report.execution_paths, 1);
//! assert_eq!(report.estimated_execution_time_ms, Some(2000));
//! # Ok::<(), chatter_core::Error>(())
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::definition::{Branch, NodeSpec, WorkflowDefinition};
use crate::graph::{GraphIndex, NONE};

/// Complexity metrics (`ComplexityMetrics` of the v1 contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComplexityMetrics {
    /// Overall score: `node_count + edge_count + depth + 2 × conditional_complexity +
    /// 3 × loop_complexity`.
    pub score: u64,
    /// Number of nodes in the definition (all of them, as written).
    pub node_count: u64,
    /// Number of edges in the definition (all of them, as written).
    pub edge_count: u64,
    /// Number of edges on the longest path from the entry in the DAG (0 for a lone node).
    pub depth: u64,
    /// Mean out-degree of the nodes that have out-edges (graph edges, back-edges included),
    /// rounded to two decimals; 0 when no node has an out-edge.
    pub branching_factor: f64,
    /// `2 ×` the number of back-edges, plus, for each `loop` node, `⌈max_iterations / 10⌉`
    /// (`max_iterations` defaulting to 10).
    pub loop_complexity: u64,
    /// The number of `conditional` nodes plus the number of conditional edges (a condition,
    /// or a `true`/`false` branch).
    pub conditional_complexity: u64,
}

/// A node that slows or endangers executions (`BottleneckInfo` of the v1 contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BottleneckInfo {
    /// The node.
    pub node_id: String,
    /// Its canonical kind.
    pub node_type: String,
    /// Why it is a bottleneck.
    pub reason: String,
    /// `low`, `medium` or `high`.
    pub severity: String,
    /// What to do about it.
    pub suggestions: Vec<String>,
}

/// An optimisation suggestion (`OptimizationSuggestion` of the v1 contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptimizationSuggestion {
    /// Suggestion type: `parallelize`, `error_handling`, `reduce_iterations`,
    /// `reduce_max_tokens`, `hoist_retrieval`, `relax_join`, `split_workflow`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What to do.
    pub description: String,
    /// Expected impact: `low`, `medium` or `high`.
    pub impact: String,
    /// The nodes concerned.
    pub node_ids: Option<Vec<String>>,
}

/// Static analytics of a definition (`WorkflowAnalyticsResponse` of the v1 contract, without
/// the timing fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowAnalytics {
    /// Complexity metrics.
    pub complexity: ComplexityMetrics,
    /// Bottlenecks, by node document order, then by rule (join, every path, loop).
    pub bottlenecks: Vec<BottleneckInfo>,
    /// Suggestions, by type in the order listed on [`OptimizationSuggestion::kind`], then by
    /// node document order.
    pub optimization_suggestions: Vec<OptimizationSuggestion>,
    /// Number of distinct entry→exit paths in the DAG (dynamic programming in topological
    /// order, saturating at `u64::MAX`). Parallel edges between the same nodes count twice.
    pub execution_paths: u64,
    /// The critical path: the largest sum of per-kind typical latencies
    /// ([`typical_latency_ms`]) along a path of the DAG from the entry (each node counted
    /// once, so a loop counts as one pass). `None` for a definition without nodes.
    pub estimated_execution_time_ms: Option<u64>,
    /// Risk factors, one sentence each, in a fixed order of rules.
    pub risk_factors: Vec<String>,
}

/// Kinds whose nodes call something slow or fallible: a model, a tool, a retriever, a remote
/// service or another workflow.
const CALL_KINDS: &[&str] = &["llm", "tool", "http", "retrieval", "subworkflow", "map"];

/// `max_tokens` above which an `llm` node inside a loop is a bottleneck.
const HIGH_MAX_TOKENS: u64 = 4000;

/// `max_iterations` above which a loop looks unbounded.
const HIGH_MAX_ITERATIONS: u64 = 100;

/// Tool-call limit above which a tool node inside a loop is a risk.
const HIGH_TOOL_CALLS: u64 = 20;

/// In-degree from which a join is a bottleneck.
const JOIN_FAN_IN: usize = 3;

/// The typical latency of a node in milliseconds, used for the estimate: `llm` 2000,
/// `subworkflow` 3000, `map` 2000, `tool` 1000, `memory` 500 (a summarising call), `http` 500,
/// `retrieval` 300, `delay` its `delay_ms` (else `base_delay_ms`, else the mean of
/// `min_delay_ms` and `max_delay_ms`, else 1000), `approval` 0 (a person's time is not
/// estimated), `start`/`end` 0, other built-in kinds 1, unknown kinds 100.
pub fn typical_latency_ms(node: &NodeSpec) -> u64 {
    let num = |key: &str| node.config.get(key).and_then(Value::as_u64);
    match node.kind.as_str() {
        "llm" => 2000,
        "subworkflow" => 3000,
        "map" => 2000,
        "tool" => 1000,
        "memory" | "http" => 500,
        "retrieval" => 300,
        "delay" => num("delay_ms")
            .or_else(|| num("base_delay_ms"))
            .or_else(|| Some((num("min_delay_ms")? + num("max_delay_ms")?) / 2))
            .unwrap_or(1000),
        "approval" | "start" | "end" => 0,
        "conditional" | "loop" | "variable" | "error_handler" => 1,
        _ => 100,
    }
}

fn config_u64(node: &NodeSpec, key: &str) -> Option<u64> {
    let value = node.config.get(key)?;
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// Computes the analytics of a definition. Never fails: any definition, however broken, gets
/// numbers (run the validator to learn what is wrong with it).
pub fn analyze(def: &WorkflowDefinition) -> WorkflowAnalytics {
    Analysis::new(def).run()
}

struct Analysis<'a> {
    def: &'a WorkflowDefinition,
    g: GraphIndex<'a>,
    /// Which graph edges are back-edges.
    back: Vec<bool>,
    /// Reached vertices in topological order of the DAG.
    topo: Vec<usize>,
    roots: Vec<usize>,
    /// Whether each vertex lies on a cycle.
    cyclic: Vec<bool>,
}

impl<'a> Analysis<'a> {
    fn new(def: &'a WorkflowDefinition) -> Analysis<'a> {
        let g = GraphIndex::new(def);
        let n = g.len();
        let mut roots: Vec<usize> = (0..n)
            .filter(|&v| g.node(v).kind.as_str() == "start")
            .collect();
        if roots.is_empty() {
            roots = (0..n).filter(|&v| g.in_edges(v).is_empty()).collect();
        }
        if roots.is_empty() && n > 0 {
            roots.push(0);
        }
        let (back, topo) = g.back_edges(&roots);
        let sccs = g.sccs(|_| true, |_| true);
        let mut cyclic = vec![false; n];
        for comp in &sccs.comps {
            let self_loop = comp.len() == 1
                && g.out_edges(comp[0])
                    .iter()
                    .any(|&e| g.edges[e].target == comp[0]);
            if comp.len() > 1 || self_loop {
                for &v in comp {
                    cyclic[v] = true;
                }
            }
        }
        Analysis {
            def,
            g,
            back,
            topo,
            roots,
            cyclic,
        }
    }

    fn kind(&self, v: usize) -> &'a str {
        self.g.node(v).kind.as_str()
    }

    fn id(&self, v: usize) -> &'a str {
        self.g.node(v).id.as_str()
    }

    /// DAG edges leaving `v`.
    fn dag_out(&self, v: usize) -> impl Iterator<Item = usize> + '_ {
        self.g
            .out_edges(v)
            .iter()
            .copied()
            .filter(move |&e| !self.back[e])
    }

    fn is_exit(&self, v: usize) -> bool {
        self.g.out_edges(v).is_empty() || self.kind(v) == "end"
    }

    fn run(self) -> WorkflowAnalytics {
        let n = self.g.len();
        let mut reached = vec![false; n];
        for &v in &self.topo {
            reached[v] = true;
        }

        // Depth, critical path and path counts, in one pass in topological order.
        let mut depth = vec![0u64; n];
        let mut time = vec![0u64; n];
        let mut paths = vec![0u64; n];
        for &r in &self.roots {
            paths[r] = 1;
        }
        for &v in &self.topo {
            time[v] = time[v].saturating_add(typical_latency_ms(self.g.node(v)));
            for e in self.dag_out(v) {
                let w = self.g.edges[e].target;
                depth[w] = depth[w].max(depth[v] + 1);
                time[w] = time[w].max(time[v]);
                paths[w] = paths[w].saturating_add(paths[v]);
            }
        }
        // `time[w]` holds the best predecessor total until `w` is visited; every predecessor
        // comes first in topological order, so adding `w`'s own latency on visit is right.
        let max_depth = self.topo.iter().map(|&v| depth[v]).max().unwrap_or(0);
        let estimated = self.topo.iter().map(|&v| time[v]).max();
        let execution_paths = self
            .topo
            .iter()
            .filter(|&&v| self.is_exit(v))
            .fold(0u64, |acc, &v| acc.saturating_add(paths[v]));

        let complexity = self.complexity(max_depth);
        let bottlenecks = self.bottlenecks(execution_paths, &reached);
        let (risk_factors, unprotected) = self.risks();
        let optimization_suggestions = self.suggestions(&unprotected, &bottlenecks, &complexity);
        WorkflowAnalytics {
            complexity,
            bottlenecks,
            optimization_suggestions,
            execution_paths,
            estimated_execution_time_ms: if self.def.nodes.is_empty() {
                None
            } else {
                Some(estimated.unwrap_or(0))
            },
            risk_factors,
        }
    }

    fn complexity(&self, depth: u64) -> ComplexityMetrics {
        let g = &self.g;
        let with_out: Vec<usize> = (0..g.len())
            .map(|v| g.out_edges(v).len())
            .filter(|&d| d > 0)
            .collect();
        let branching_factor = if with_out.is_empty() {
            0.0
        } else {
            let mean = with_out.iter().sum::<usize>() as f64 / with_out.len() as f64;
            (mean * 100.0).round() / 100.0
        };
        let back_edges = self.back.iter().filter(|b| **b).count() as u64;
        let loop_iterations: u64 = (0..g.len())
            .filter(|&v| self.kind(v) == "loop")
            .map(|v| {
                config_u64(g.node(v), "max_iterations")
                    .unwrap_or(10)
                    .div_ceil(10)
            })
            .sum();
        let loop_complexity = 2 * back_edges + loop_iterations;
        let conditional_nodes = (0..g.len())
            .filter(|&v| self.kind(v) == "conditional")
            .count() as u64;
        let conditional_edges = self.def.edges.iter().filter(|e| e.is_conditional()).count() as u64;
        let conditional_complexity = conditional_nodes + conditional_edges;
        let node_count = self.def.nodes.len() as u64;
        let edge_count = self.def.edges.len() as u64;
        ComplexityMetrics {
            score: node_count
                + edge_count
                + depth
                + 2 * conditional_complexity
                + 3 * loop_complexity,
            node_count,
            edge_count,
            depth,
            branching_factor,
            loop_complexity,
            conditional_complexity,
        }
    }

    /// Nodes on every entry→exit path of the DAG (other than the entry and the exits): the
    /// dominators of a virtual exit joined to every exit (Cooper–Harvey–Kennedy, one pass in
    /// topological order, which suffices on a DAG).
    fn on_every_path(&self) -> Vec<bool> {
        let n = self.g.len();
        let root = n; // virtual entry
        let exit = n + 1; // virtual exit
        let mut order = vec![NONE; n + 2];
        order[root] = 0;
        for (i, &v) in self.topo.iter().enumerate() {
            order[v] = i + 1;
        }
        order[exit] = self.topo.len() + 1;
        let mut idom = vec![NONE; n + 2];
        idom[root] = root;
        let intersect = |idom: &[usize], mut a: usize, mut b: usize| {
            while a != b {
                while order[a] > order[b] {
                    a = idom[a];
                }
                while order[b] > order[a] {
                    b = idom[b];
                }
            }
            a
        };
        let mut is_root = vec![false; n];
        for &r in &self.roots {
            is_root[r] = true;
        }
        for &v in &self.topo {
            let mut dom = if is_root[v] { Some(root) } else { None };
            for &e in self.g.in_edges(v) {
                let u = self.g.edges[e].source;
                if self.back[e] || idom[u] == NONE {
                    continue;
                }
                dom = Some(match dom {
                    None => u,
                    Some(d) => intersect(&idom, d, u),
                });
            }
            idom[v] = dom.unwrap_or(root);
        }
        let mut dom: Option<usize> = None;
        for &v in self.topo.iter().filter(|&&v| self.is_exit(v)) {
            dom = Some(match dom {
                None => v,
                Some(d) => intersect(&idom, d, v),
            });
        }
        let mut on_all = vec![false; n];
        let mut cursor = dom.unwrap_or(root);
        while cursor != root {
            on_all[cursor] = true;
            cursor = idom[cursor];
        }
        on_all
    }

    fn bottlenecks(&self, execution_paths: u64, reached: &[bool]) -> Vec<BottleneckInfo> {
        let g = &self.g;
        let on_all = if execution_paths >= 2 {
            self.on_every_path()
        } else {
            vec![false; g.len()]
        };
        let mut out = Vec::new();
        for v in 0..g.len() {
            let node = g.node(v);
            let kind = self.kind(v);
            let info = |reason: String, severity: &str, suggestions: &[&str]| BottleneckInfo {
                node_id: node.id.to_string(),
                node_type: kind.to_owned(),
                reason,
                severity: severity.to_owned(),
                suggestions: suggestions.iter().map(|s| (*s).to_owned()).collect(),
            };
            let fan_in = g.in_edges(v).iter().filter(|&&e| !self.back[e]).count();
            if fan_in >= JOIN_FAN_IN && node.join() == crate::JoinMode::All {
                out.push(info(
                    format!(
                        "join of {fan_in} in-edges: waits for every branch that can still arrive"
                    ),
                    if fan_in >= 5 { "high" } else { "medium" },
                    &[
                        "Set `join: any` if the first arriving branch suffices.",
                        "Reduce the number of branches joined here.",
                    ],
                ));
            }
            let is_marker = matches!(kind, "start" | "end") || self.roots.contains(&v);
            if on_all[v] && reached[v] && !is_marker && CALL_KINDS.contains(&kind) {
                out.push(info(
                    format!(
                        "on every path from the entry to an exit: a slow or failing `{kind}` call here holds up every execution"
                    ),
                    "medium",
                    &[
                        "Give the node a retry policy or an `error` branch.",
                        "Set a `timeout_ms` that fits the call.",
                    ],
                ));
            }
            if kind == "llm" && self.cyclic[v] {
                let max_tokens = config_u64(node, "max_tokens");
                let high_tokens = max_tokens.filter(|t| *t > HIGH_MAX_TOKENS);
                let no_timeout = !node.config.contains_key("timeout_ms");
                if high_tokens.is_some() || no_timeout {
                    let mut why = Vec::new();
                    if let Some(t) = high_tokens {
                        why.push(format!("max_tokens {t}"));
                    }
                    if no_timeout {
                        why.push("no timeout_ms".to_owned());
                    }
                    out.push(info(
                        format!("model call inside a loop with {}", why.join(" and ")),
                        if high_tokens.is_some() && no_timeout {
                            "high"
                        } else {
                            "medium"
                        },
                        &[
                            "Lower max_tokens for calls that repeat.",
                            "Set timeout_ms so one slow iteration cannot stall the loop.",
                        ],
                    ));
                }
            }
        }
        out
    }

    /// Risk sentences, and the call nodes without any error handling.
    fn risks(&self) -> (Vec<String>, Vec<usize>) {
        let g = &self.g;
        let mut risks = Vec::new();
        for v in 0..g.len() {
            let node = g.node(v);
            if self.kind(v) == "loop" {
                let max = config_u64(node, "max_iterations").unwrap_or(10);
                if max > HIGH_MAX_ITERATIONS {
                    risks.push(format!(
                        "Loop `{}` allows up to {max} iterations, which looks unbounded",
                        node.id
                    ));
                }
            }
        }
        // Cycles with no loop node: bounded only by conditions and the execution's max_steps.
        let sccs = g.sccs(|_| true, |_| true);
        let mut comps: Vec<&Vec<usize>> = sccs
            .comps
            .iter()
            .filter(|c| c.iter().all(|&v| self.cyclic[v]))
            .filter(|c| !c.iter().any(|&v| self.kind(v) == "loop"))
            .collect();
        comps.sort_by_key(|c| c[0]);
        for comp in comps {
            risks.push(format!(
                "Cycle through {} has no loop node: only its conditions and the execution's max_steps bound it",
                crate::validate::name_list(comp.iter().map(|&v| self.id(v)), 10)
            ));
        }
        for v in 0..g.len() {
            let node = g.node(v);
            if self.kind(v) == "tool" && self.cyclic[v] {
                let limit = config_u64(node, "max_total_calls")
                    .or_else(|| config_u64(node, "max_tool_calls"))
                    .unwrap_or(10);
                if limit > HIGH_TOOL_CALLS {
                    risks.push(format!(
                        "Tool node `{}` in a loop allows up to {limit} tool calls",
                        node.id
                    ));
                }
            }
        }
        let unprotected: Vec<usize> = (0..g.len())
            .filter(|&v| CALL_KINDS.contains(&self.kind(v)) && !self.protected(v))
            .collect();
        if !unprotected.is_empty() {
            risks.push(format!(
                "No error handling around {} model/tool/HTTP call(s) ({}): one failure fails the execution",
                unprotected.len(),
                crate::validate::name_list(unprotected.iter().map(|&v| self.id(v)), 10)
            ));
        }
        let secrets = crate::validate::secrets::find(self.def);
        if !secrets.is_empty() {
            risks.push(format!(
                "{} value(s) look like pasted secrets ({})",
                secrets.len(),
                crate::validate::name_list(secrets.iter().map(|s| s.path.as_str()), 10)
            ));
        }
        (risks, unprotected)
    }

    /// Whether a node's failure is handled: an `error` branch, an edge to an `error_handler`,
    /// `on_error: continue`, or a retry policy with more than one attempt.
    fn protected(&self, v: usize) -> bool {
        let node = self.g.node(v);
        let routed = self.g.out_edges(v).iter().any(|&e| {
            self.g.edge(e).branch() == Some(Branch::Error)
                || self.kind(self.g.edges[e].target) == "error_handler"
        });
        let continues = node.config.get("on_error").and_then(Value::as_str) == Some("continue");
        let retries = node
            .config
            .get("retry")
            .and_then(|r| r.get("max_attempts"))
            .and_then(Value::as_u64)
            .is_some_and(|a| a > 1);
        routed || continues || retries
    }

    /// Two `llm` nodes in sequence (the first's only out-edge leads to the second, whose only
    /// in-edge it is, neither on a cycle) that each ask their own `prompt`, where the second's
    /// templates mention neither the conversation (`messages`, `last_message`) nor the first's
    /// `output_variable`: they do not depend on each other.
    fn independent_pairs(&self) -> Vec<(usize, usize)> {
        let g = &self.g;
        let mut pairs = Vec::new();
        for v in 0..g.len() {
            if self.kind(v) != "llm" || self.cyclic[v] || g.out_edges(v).len() != 1 {
                continue;
            }
            let w = g.edges[g.out_edges(v)[0]].target;
            if self.kind(w) != "llm" || self.cyclic[w] || g.in_edges(w).len() != 1 {
                continue;
            }
            let (a, b) = (g.node(v), g.node(w));
            let prompt = |n: &NodeSpec| n.config.get("prompt").and_then(Value::as_str).is_some();
            if !prompt(a) || !prompt(b) {
                continue;
            }
            let texts: String = ["prompt", "system_prompt", "system_message"]
                .iter()
                .filter_map(|k| b.config.get(*k).and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n");
            let reads_conversation = texts.contains("messages") || texts.contains("last_message");
            let reads_output = a
                .config
                .get("output_variable")
                .and_then(Value::as_str)
                .is_some_and(|name| texts.contains(name));
            if !reads_conversation && !reads_output {
                pairs.push((v, w));
            }
        }
        pairs
    }

    fn suggestions(
        &self,
        unprotected: &[usize],
        bottlenecks: &[BottleneckInfo],
        complexity: &ComplexityMetrics,
    ) -> Vec<OptimizationSuggestion> {
        let g = &self.g;
        let ids = |vs: &[usize]| Some(vs.iter().map(|&v| self.id(v).to_owned()).collect());
        let suggestion =
            |kind: &str, description: String, impact: &str, node_ids| OptimizationSuggestion {
                kind: kind.to_owned(),
                description,
                impact: impact.to_owned(),
                node_ids,
            };
        let mut out = Vec::new();
        for (a, b) in self.independent_pairs() {
            out.push(suggestion(
                "parallelize",
                format!(
                    "Run `{}` and `{}` in parallel: the second does not use the first's answer",
                    self.id(a),
                    self.id(b)
                ),
                "medium",
                ids(&[a, b]),
            ));
        }
        if !unprotected.is_empty() {
            out.push(suggestion(
                "error_handling",
                "Add a retry policy, an `error` branch or an error_handler node around model, tool and HTTP calls".to_owned(),
                "high",
                ids(unprotected),
            ));
        }
        for v in 0..g.len() {
            let node = g.node(v);
            if self.kind(v) == "loop" {
                let max = config_u64(node, "max_iterations").unwrap_or(10);
                if max > HIGH_MAX_ITERATIONS {
                    out.push(suggestion(
                        "reduce_iterations",
                        format!("Lower max_iterations of `{}` from {max}", node.id),
                        "medium",
                        ids(&[v]),
                    ));
                }
            }
        }
        for v in 0..g.len() {
            let node = g.node(v);
            if self.kind(v) == "llm"
                && self.cyclic[v]
                && config_u64(node, "max_tokens").is_some_and(|t| t > HIGH_MAX_TOKENS)
            {
                out.push(suggestion(
                    "reduce_max_tokens",
                    format!(
                        "Lower max_tokens of `{}`: it runs on every pass of a loop",
                        node.id
                    ),
                    "medium",
                    ids(&[v]),
                ));
            }
        }
        for v in 0..g.len() {
            if self.kind(v) == "retrieval" && self.cyclic[v] {
                out.push(suggestion(
                    "hoist_retrieval",
                    format!(
                        "Move retrieval `{}` out of the loop, or cache its results: it repeats on every pass",
                        self.id(v)
                    ),
                    "medium",
                    ids(&[v]),
                ));
            }
        }
        for b in bottlenecks
            .iter()
            .filter(|b| b.reason.starts_with("join of"))
        {
            out.push(suggestion(
                "relax_join",
                format!(
                    "Consider `join: any` on `{}` if one branch suffices",
                    b.node_id
                ),
                "low",
                Some(vec![b.node_id.clone()]),
            ));
        }
        if complexity.score > 150 {
            out.push(suggestion(
                "split_workflow",
                format!(
                    "Split the workflow into sub-workflows: its complexity score is {}",
                    complexity.score
                ),
                "low",
                None,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests;
