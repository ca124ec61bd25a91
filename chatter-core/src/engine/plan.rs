//! The per-definition precomputation the scheduler runs on: nodes built, conditions compiled,
//! adjacency by index, back-edges, cyclic SCCs, loop bodies and join in-degrees.
//!
//! Everything here is computed once per definition ([`PreparedWorkflow`]), so a step costs the
//! scheduler only index look-ups.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::node::Node;
use super::policy::NodePolicy;
use crate::definition::{JoinMode, NodeSpec, WorkflowDefinition};
use crate::error::{Error, Result};
use crate::expr::Expression;

/// The kind name of error-handler nodes: edges into them are error routes.
pub(crate) const ERROR_HANDLER_KIND: &str = "error_handler";

/// How an out-edge is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeRole {
    /// Followed on success, by the routing rules.
    Normal,
    /// `sourceHandle: "error"`: taken when the source fails.
    ErrorBranch,
    /// Into an `error_handler` node: taken when the source fails (and it has no error branch).
    Handler,
}

/// How a node waits for its forward in-edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Join {
    /// Once per wave, when every forward in-edge is resolved and one was taken.
    All,
    /// At the first taken in-edge of a wave.
    Any,
    /// Error handlers: activated directly by each failure; the wave only decides skipping.
    Handler,
}

pub(crate) struct PlanEdge {
    pub(crate) source: u32,
    pub(crate) target: u32,
    pub(crate) condition: Option<Expression>,
    pub(crate) handle: Option<String>,
    pub(crate) role: EdgeRole,
    /// Closes a cycle (found by depth-first search from the entry nodes): taking it starts a
    /// new iteration of its target; it is not counted by the target's join.
    pub(crate) back: bool,
    /// Leaves a loop (the outermost one it leaves): not taking it is decided only when that
    /// loop is at rest, since a later pass may still take it.
    pub(crate) exit_of: Option<u32>,
}

pub(crate) struct PlanNode {
    pub(crate) spec: Arc<NodeSpec>,
    pub(crate) node: Arc<dyn Node>,
    pub(crate) join: Join,
    pub(crate) policy: Arc<NodePolicy>,
    /// All out-edges, in document order.
    pub(crate) out: Vec<u32>,
    /// Forward (non-back) in-edges.
    pub(crate) fwd_in: Vec<u32>,
    /// The loops (cycles) the node belongs to, innermost and outermost alike.
    pub(crate) loops: Vec<u32>,
    /// For a loop header (target of a back-edge): the nodes of its loop, whose iteration
    /// counters restart when the header is entered afresh.
    pub(crate) loop_body: Vec<u32>,
    /// Loop nodes inside `loop_body` (their `loop.<id>` state restarts too).
    pub(crate) loop_nodes_in_body: Vec<String>,
    /// `max_iterations` of a `loop` node.
    pub(crate) max_iterations: Option<u32>,
    pub(crate) has_error_branch: bool,
    pub(crate) has_handler: bool,
    /// Whether any normal out-edge names a `sourceHandle`. A node whose out-edges name none
    /// (the old platform's conditional with conditions on its edges) routes a
    /// [`Route::Branch`](super::Route::Branch) by the edges' conditions instead.
    pub(crate) branches_by_handle: bool,
}

pub(crate) struct Plan {
    pub(crate) nodes: Vec<PlanNode>,
    pub(crate) edges: Vec<PlanEdge>,
    pub(crate) entries: Vec<u32>,
    /// Exit edges of each loop.
    pub(crate) loop_exits: Vec<Vec<u32>>,
    /// Number of nodes of each loop (inner loops are smaller).
    pub(crate) loop_sizes: Vec<u32>,
    /// How many events and node runs the last execution of this plan recorded: the next one
    /// sizes its event log and node-run list from them, so a loop does not regrow them.
    pub(crate) last_sizes: RunSizes,
    /// Per node: the state variables its out-edges' conditions read (built once, for routing).
    pub(crate) condition_reads: Vec<Vec<&'static str>>,
}

/// The sizes the last execution of a plan reached (a hint, updated without locking).
#[derive(Debug, Default)]
pub(crate) struct RunSizes {
    pub(crate) events: std::sync::atomic::AtomicUsize,
    pub(crate) node_runs: std::sync::atomic::AtomicUsize,
}

/// A definition validated and compiled for running: build it once with
/// [`Engine::prepare`](super::Engine::prepare) and run it many times. Cheap to clone.
#[derive(Clone)]
pub struct PreparedWorkflow {
    pub(crate) plan: Arc<Plan>,
    pub(crate) definition: Arc<WorkflowDefinition>,
    /// The definition's digest, taken once (by the tracker, which records it with each
    /// execution of a stored definition).
    pub(crate) digest: Arc<std::sync::OnceLock<String>>,
    /// The definition as JSON, made once (by the tracker, which stores it with each execution
    /// that has no stored source, so that it can be resumed) and shared by every execution.
    pub(crate) graph: Arc<std::sync::OnceLock<Arc<serde_json::Value>>>,
}

impl std::fmt::Debug for PreparedWorkflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedWorkflow")
            .field("nodes", &self.plan.nodes.len())
            .field("edges", &self.plan.edges.len())
            .finish_non_exhaustive()
    }
}

impl PreparedWorkflow {
    /// The definition it was compiled from.
    pub fn definition(&self) -> &WorkflowDefinition {
        &self.definition
    }

    /// Ids of the nodes an execution starts at (the `start` nodes, or else the nodes without
    /// in-edges).
    pub fn entry_nodes(&self) -> Vec<&str> {
        self.plan
            .entries
            .iter()
            .map(|&i| self.plan.nodes[i as usize].spec.id.as_str())
            .collect()
    }

    /// Ids of the edges that close a cycle (each pass through one is a new iteration).
    pub fn back_edges(&self) -> Vec<&str> {
        self.plan
            .edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.back)
            .map(|(i, _)| self.definition.edges[i].id.as_str())
            .collect()
    }
}

/// Compiles a definition. `build` makes the node for a spec.
pub(crate) fn compile(
    def: &WorkflowDefinition,
    build: &dyn Fn(&NodeSpec) -> Result<Arc<dyn Node>>,
) -> Result<Plan> {
    let n = def.nodes.len();
    let mut index = HashMap::with_capacity(n);
    for (i, node) in def.nodes.iter().enumerate() {
        if index.insert(node.id.as_str(), i as u32).is_some() {
            return Err(Error::Definition {
                path: format!("$.nodes[{i}].id"),
                message: format!("duplicate node id `{}`", node.id),
            });
        }
    }
    let lookup = |id: &str, path: String| {
        index.get(id).copied().ok_or_else(|| Error::Definition {
            path,
            message: format!("edge names unknown node `{id}`"),
        })
    };
    let mut edges = Vec::with_capacity(def.edges.len());
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut all_in: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (i, e) in def.edges.iter().enumerate() {
        let source = lookup(e.source.as_str(), format!("$.edges[{i}].source"))?;
        let target = lookup(e.target.as_str(), format!("$.edges[{i}].target"))?;
        let condition = e.condition().map(Expression::compile).transpose()?;
        let to_handler = def.nodes[target as usize].kind.as_str() == ERROR_HANDLER_KIND;
        let role = if to_handler {
            EdgeRole::Handler
        } else if e.source_handle.as_deref() == Some("error") {
            EdgeRole::ErrorBranch
        } else {
            EdgeRole::Normal
        };
        edges.push(PlanEdge {
            source,
            target,
            condition,
            handle: e.source_handle.clone(),
            role,
            back: false,
            exit_of: None,
        });
        out[source as usize].push(i as u32);
        all_in[target as usize].push(i as u32);
    }

    let entries = entry_nodes(def, &all_in);
    mark_back_edges(n, &entries, &out, &mut edges);
    let (scc_of, scc_count) = cyclic_sccs(n, &out, &edges);

    let mut nodes = Vec::with_capacity(n);
    for (i, spec) in def.nodes.iter().enumerate() {
        let node = build(spec)?;
        let is_handler = spec.kind.as_str() == ERROR_HANDLER_KIND;
        let join = if is_handler {
            Join::Handler
        } else {
            match spec.join() {
                JoinMode::Any => Join::Any,
                _ => Join::All,
            }
        };
        let fwd_in: Vec<u32> = all_in[i]
            .iter()
            .copied()
            .filter(|&e| !edges[e as usize].back)
            .collect();
        let max_iterations = (spec.kind.as_str() == "loop").then(|| {
            spec.config_value("max_iterations")
                .and_then(Value::as_u64)
                .map_or(10, |m| u32::try_from(m).unwrap_or(u32::MAX))
        });
        let out_i = &out[i];
        nodes.push(PlanNode {
            policy: Arc::new(NodePolicy::from_spec(spec)),
            spec: Arc::new(spec.clone()),
            node,
            join,
            has_error_branch: out_i
                .iter()
                .any(|&e| edges[e as usize].role == EdgeRole::ErrorBranch),
            has_handler: out_i
                .iter()
                .any(|&e| edges[e as usize].role == EdgeRole::Handler),
            branches_by_handle: out_i.iter().any(|&e| {
                let edge = &edges[e as usize];
                edge.role == EdgeRole::Normal && edge.handle.is_some()
            }),
            out: out_i.clone(),
            fwd_in,
            loops: Vec::new(),
            loop_body: Vec::new(),
            loop_nodes_in_body: Vec::new(),
            max_iterations,
        });
    }
    compute_loop_bodies(&mut nodes, &edges, &out, &all_in);
    let (loop_exits, loop_sizes) = compute_loops(&mut nodes, &mut edges, &scc_of, scc_count);
    let condition_reads = nodes
        .iter()
        .map(|node| {
            let mut keys: Vec<&'static str> = Vec::new();
            for &e in &node.out {
                if let Some(c) = &edges[e as usize].condition {
                    for &key in c.state_reads() {
                        if !keys.contains(&key) {
                            keys.push(key);
                        }
                    }
                }
            }
            keys
        })
        .collect();
    Ok(Plan {
        nodes,
        edges,
        entries,
        loop_exits,
        loop_sizes,
        last_sizes: RunSizes::default(),
        condition_reads,
    })
}

/// The `start` nodes; else the nodes without in-edges; else the first node.
fn entry_nodes(def: &WorkflowDefinition, all_in: &[Vec<u32>]) -> Vec<u32> {
    let starts: Vec<u32> = def
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind.as_str() == "start")
        .map(|(i, _)| i as u32)
        .collect();
    if !starts.is_empty() {
        return starts;
    }
    let roots: Vec<u32> = (0..def.nodes.len())
        .filter(|&i| all_in[i].is_empty())
        .map(|i| i as u32)
        .collect();
    if !roots.is_empty() || def.nodes.is_empty() {
        return roots;
    }
    vec![0]
}

/// Iterative depth-first search from the entries (then from every unvisited node): an edge to a
/// node still on the stack closes a cycle.
fn mark_back_edges(n: usize, entries: &[u32], out: &[Vec<u32>], edges: &mut [PlanEdge]) {
    const WHITE: u8 = 0;
    const GREY: u8 = 1;
    const BLACK: u8 = 2;
    let mut colour = vec![WHITE; n];
    let mut stack: Vec<(u32, usize)> = Vec::new();
    let roots = entries.iter().copied().chain(0..n as u32);
    for root in roots {
        if colour[root as usize] != WHITE {
            continue;
        }
        colour[root as usize] = GREY;
        stack.push((root, 0));
        while let Some(top) = stack.last_mut() {
            let (v, next) = *top;
            if let Some(&e) = out[v as usize].get(next) {
                top.1 += 1;
                let w = edges[e as usize].target as usize;
                match colour[w] {
                    WHITE => {
                        colour[w] = GREY;
                        stack.push((w as u32, 0));
                    }
                    GREY => edges[e as usize].back = true,
                    _ => {}
                }
            } else {
                colour[v as usize] = BLACK;
                stack.pop();
            }
        }
    }
}

/// Tarjan's algorithm, iteratively; returns each node's cyclic SCC (a component with more than
/// one node, or a self-loop) and the number of such components.
fn cyclic_sccs(n: usize, out: &[Vec<u32>], edges: &[PlanEdge]) -> (Vec<Option<u32>>, usize) {
    const UNSEEN: u32 = u32::MAX;
    let mut idx = vec![UNSEEN; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<u32> = Vec::new();
    let mut call: Vec<(u32, usize)> = Vec::new();
    let mut counter = 0u32;
    let mut scc_of = vec![None; n];
    let mut count = 0usize;
    for root in 0..n as u32 {
        if idx[root as usize] != UNSEEN {
            continue;
        }
        call.push((root, 0));
        idx[root as usize] = counter;
        low[root as usize] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root as usize] = true;
        while let Some(top) = call.last_mut() {
            let (v, next) = *top;
            let vu = v as usize;
            if let Some(&e) = out[vu].get(next) {
                top.1 += 1;
                let w = edges[e as usize].target as usize;
                if idx[w] == UNSEEN {
                    idx[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w as u32);
                    on_stack[w] = true;
                    call.push((w as u32, 0));
                } else if on_stack[w] {
                    low[vu] = low[vu].min(idx[w]);
                }
            } else {
                call.pop();
                if let Some(&(parent, _)) = call.last() {
                    let p = parent as usize;
                    low[p] = low[p].min(low[vu]);
                }
                if low[vu] == idx[vu] {
                    let mut members = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w as usize] = false;
                        members.push(w);
                        if w == v {
                            break;
                        }
                    }
                    let self_loop = out[vu].iter().any(|&e| edges[e as usize].target == v);
                    if members.len() > 1 || self_loop {
                        for w in members {
                            scc_of[w as usize] = Some(count as u32);
                        }
                        count += 1;
                    }
                }
            }
        }
    }
    (scc_of, count)
}

/// For each back-edge `u -> h`: the natural loop, every node that reaches `u` without passing
/// through `h` (over all edges, so inner loops are inside), and is reachable from `h`.
fn compute_loop_bodies(
    nodes: &mut [PlanNode],
    edges: &[PlanEdge],
    out: &[Vec<u32>],
    all_in: &[Vec<u32>],
) {
    let n = nodes.len();
    let mut from_header: HashMap<usize, Vec<bool>> = HashMap::new();
    for back in edges.iter().filter(|e| e.back) {
        let h = back.target as usize;
        let u = back.source as usize;
        let from_h = from_header.entry(h).or_insert_with(|| {
            reach(n, h, |v| {
                out[v]
                    .iter()
                    .map(|&e| edges[e as usize].target as usize)
                    .collect()
            })
        });
        let mut in_body = vec![false; n];
        in_body[h] = true;
        let mut stack = Vec::new();
        if !in_body[u] {
            in_body[u] = true;
            stack.push(u);
        }
        while let Some(v) = stack.pop() {
            for &e in &all_in[v] {
                let w = edges[e as usize].source as usize;
                if !in_body[w] && from_h[w] {
                    in_body[w] = true;
                    stack.push(w);
                }
            }
        }
        for (v, &inside) in in_body.iter().enumerate() {
            if inside && !nodes[h].loop_body.contains(&(v as u32)) {
                nodes[h].loop_body.push(v as u32);
            }
        }
    }
    for h in 0..n {
        nodes[h].loop_body.sort_unstable();
        let body = nodes[h].loop_body.clone();
        nodes[h].loop_nodes_in_body = body
            .iter()
            .filter(|&&v| nodes[v as usize].max_iterations.is_some())
            .map(|&v| nodes[v as usize].spec.id.0.clone())
            .collect();
    }
}

/// The loops of the graph: each header's loop body, and each cyclic SCC (which covers cycles
/// of irreducible graphs too). Each node learns its loops; each edge that leaves a loop
/// learns the outermost loop it leaves. Returns the exit edges and the size of each loop.
fn compute_loops(
    nodes: &mut [PlanNode],
    edges: &mut [PlanEdge],
    scc_of: &[Option<u32>],
    scc_count: usize,
) -> (Vec<Vec<u32>>, Vec<u32>) {
    let mut sets: Vec<Vec<u32>> = nodes
        .iter()
        .filter(|n| !n.loop_body.is_empty())
        .map(|n| n.loop_body.clone())
        .collect();
    let mut members = vec![Vec::new(); scc_count];
    for (v, s) in scc_of.iter().enumerate() {
        if let Some(s) = s {
            members[*s as usize].push(v as u32);
        }
    }
    for m in members {
        if !sets.contains(&m) {
            sets.push(m);
        }
    }
    for (l, set) in sets.iter().enumerate() {
        for &v in set {
            nodes[v as usize].loops.push(l as u32);
        }
    }
    let mut exits = vec![Vec::new(); sets.len()];
    for (i, e) in edges.iter_mut().enumerate() {
        if e.back {
            continue;
        }
        let mut outermost: Option<(usize, u32)> = None;
        for &l in &nodes[e.source as usize].loops {
            let set = &sets[l as usize];
            if set.binary_search(&e.target).is_err()
                && outermost.is_none_or(|(size, _)| set.len() > size)
            {
                outermost = Some((set.len(), l));
            }
        }
        if let Some((_, l)) = outermost {
            e.exit_of = Some(l);
            exits[l as usize].push(i as u32);
        }
    }
    let sizes = sets.iter().map(|s| s.len() as u32).collect();
    (exits, sizes)
}

fn reach(n: usize, from: usize, next: impl Fn(usize) -> Vec<usize>) -> Vec<bool> {
    let mut seen = vec![false; n];
    seen[from] = true;
    let mut work = vec![from];
    while let Some(v) = work.pop() {
        for w in next(v) {
            if !seen[w] {
                seen[w] = true;
                work.push(w);
            }
        }
    }
    seen
}
