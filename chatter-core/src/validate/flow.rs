//! Graph rules: a single entry, reachability both ways, cycles that can be left, conditional
//! branches, dead branches and ambiguous defaults (`CHT-V007`..`V011`, `V023`, `V025`).
//!
//! All of them run on the graph index of the definition (vertices: nodes with a distinct
//! non-empty id; edges: those whose ends are such nodes), with iterative algorithms.

use std::collections::HashMap;

use super::kinds::Kinds;
use super::{At, Ctx, Issue, codes, name_list, paths};
use crate::definition::{Branch, Edge};
use crate::graph::{GraphIndex, Sccs};

/// Longest cycle or list spelled out in a message.
const LIST_LIMIT: usize = 20;

pub(super) fn check(ctx: &mut Ctx<'_>) {
    let mut out: Vec<(At, Issue<'_>)> = Vec::new();
    let g = &ctx.graph;
    if g.len() > 0 {
        let roots = entry(g, ctx.kinds, &mut out);
        reachability(g, ctx.kinds, &roots, &mut out);
        cycles(g, ctx.kinds, &mut out);
        branches(ctx, &mut out);
    }
    for (at, issue) in out {
        ctx.push(at, issue);
    }
}

fn node_at(g: &GraphIndex<'_>, v: usize) -> At {
    At::Node(g.node_doc[v])
}

fn id<'a>(g: &GraphIndex<'a>, v: usize) -> &'a str {
    g.node(v).id.as_str()
}

/// `CHT-V007`: finds the entry; returns the roots reachability is measured from (the `start`
/// nodes, else the nodes without in-edges).
fn entry<'a>(g: &GraphIndex<'a>, kinds: Kinds<'_>, out: &mut Vec<(At, Issue<'a>)>) -> Vec<usize> {
    let n = g.len();
    let starts: Vec<usize> = (0..n)
        .filter(|&v| kinds.is_start(g.node(v).kind.as_str()))
        .collect();
    match starts.len() {
        1 => starts,
        0 => {
            let sources: Vec<usize> = (0..n).filter(|&v| g.in_edges(v).is_empty()).collect();
            if sources.len() != 1 {
                let message = if sources.is_empty() {
                    "no entry: there is no `start` node and every node has an in-edge; \
                     add a `start` node"
                        .to_owned()
                } else {
                    format!(
                        "no single entry: there is no `start` node and {} nodes have no \
                         in-edges ({}); add a `start` node",
                        sources.len(),
                        name_list(sources.iter().map(|&v| id(g, v)), LIST_LIMIT)
                    )
                };
                out.push((
                    At::Top,
                    Issue::error(codes::NO_SINGLE_ENTRY, "$.nodes".into(), message),
                ));
            }
            sources
        }
        count => {
            let all = name_list(starts.iter().map(|&v| id(g, v)), LIST_LIMIT);
            for &v in &starts[1..] {
                out.push((
                    node_at(g, v),
                    Issue::error(
                        codes::NO_SINGLE_ENTRY,
                        paths::node(g.node_doc[v]),
                        format!(
                            "`{}` is one of {count} `start` nodes ({all}); a workflow has \
                             exactly one entry",
                            id(g, v)
                        ),
                    )
                    .node(id(g, v)),
                ));
            }
            starts
        }
    }
}

/// `CHT-V008` and `CHT-V009`.
fn reachability<'a>(
    g: &GraphIndex<'a>,
    kinds: Kinds<'_>,
    roots: &[usize],
    out: &mut Vec<(At, Issue<'a>)>,
) {
    let n = g.len();
    if !roots.is_empty() {
        let reached = g.reachable(roots, true);
        let from = if roots.len() == 1 {
            format!("the entry `{}`", id(g, roots[0]))
        } else {
            format!(
                "any entry ({})",
                name_list(roots.iter().map(|&v| id(g, v)), LIST_LIMIT)
            )
        };
        for v in (0..n).filter(|&v| !reached[v]) {
            out.push((
                node_at(g, v),
                Issue::error(
                    codes::UNREACHABLE,
                    paths::node(g.node_doc[v]),
                    format!("node `{}` cannot be reached from {from}", id(g, v)),
                )
                .node(id(g, v)),
            ));
        }
    }
    let ends: Vec<usize> = (0..n)
        .filter(|&v| kinds.is_end(g.node(v).kind.as_str()))
        .collect();
    let (targets, what) = if ends.is_empty() {
        (
            (0..n).filter(|&v| g.out_edges(v).is_empty()).collect(),
            "a node without out-edges (the graph has no `end` node)",
        )
    } else {
        (ends, "an `end` node")
    };
    let reaches = g.reachable(&targets, false);
    for v in (0..n).filter(|&v| !reaches[v]) {
        out.push((
            node_at(g, v),
            Issue::error(
                codes::CANNOT_REACH_END,
                paths::node(g.node_doc[v]),
                format!("node `{}` cannot reach {what}", id(g, v)),
            )
            .node(id(g, v)),
        ));
    }
}

/// Whether vertex `v` has an edge to itself.
fn has_self_loop(g: &GraphIndex<'_>, v: usize) -> bool {
    g.out_edges(v).iter().any(|&e| g.edges[e].target == v)
}

/// Whether a vertex of the cyclic component `c` can leave it in normal (non-error) flow: a
/// kind that leaves cycles by itself (`loop`); or a node with a conditional out-edge (a
/// condition, a `true`/`false` or other named branch) leaving the component; or a node whose
/// unconditional out-edges (its default, or its fan-out) all leave the component; or a node
/// whose only out-edges are `error` edges (normal completion ends the path). A node whose
/// conditions all stay inside and that has no default is not an exit: "no condition holds"
/// ending the path is not counted as a way out.
fn can_leave(g: &GraphIndex<'_>, kinds: Kinds<'_>, sccs: &Sccs, c: usize, v: usize) -> bool {
    let kind = g.node(v).kind.as_str();
    if kinds.exits_cycle_by_itself(kind) {
        return true;
    }
    let branches = kinds.branches(kind);
    let is_choice = |edge: &Edge| {
        edge.is_conditional()
            || edge
                .source_handle
                .as_deref()
                .is_some_and(|h| h != "error" && branches.contains(&h))
    };
    let (mut normal, mut choice_leaves) = (0usize, false);
    let (mut defaults, mut default_stays) = (0usize, false);
    for &e in g.out_edges(v) {
        let edge = g.edge(e);
        if edge.branch() == Some(Branch::Error) {
            continue;
        }
        normal += 1;
        let leaves = sccs.comp_of[g.edges[e].target] != c;
        if is_choice(edge) {
            choice_leaves |= leaves;
        } else {
            defaults += 1;
            default_stays |= !leaves;
        }
    }
    normal == 0 || choice_leaves || (defaults > 0 && !default_stays)
}

/// `CHT-V010`: within every strongly connected component, the nodes that cannot leave it must
/// not form a cycle by themselves. One issue per strongly connected group of such nodes, naming
/// one cycle in it, starting at its first node in document order.
fn cycles<'a>(g: &GraphIndex<'a>, kinds: Kinds<'_>, out: &mut Vec<(At, Issue<'a>)>) {
    let n = g.len();
    let sccs = g.sccs(|_| true, |_| true);
    let mut stuck = vec![false; n];
    for (c, comp) in sccs.comps.iter().enumerate() {
        if comp.len() == 1 && !has_self_loop(g, comp[0]) {
            continue;
        }
        for &v in comp {
            stuck[v] = !can_leave(g, kinds, &sccs, c, v);
        }
    }
    let sub = g.sccs(|v| stuck[v], |_| true);
    for (sc, comp) in sub.comps.iter().enumerate() {
        if comp.len() == 1 && !has_self_loop(g, comp[0]) {
            continue;
        }
        let Some((cycle, closing)) = find_cycle(g, &sub, sc, comp[0]) else {
            continue;
        };
        let first = cycle[0];
        let mut chain: Vec<String> = cycle
            .iter()
            .take(LIST_LIMIT)
            .map(|&v| format!("`{}`", id(g, v)))
            .collect();
        if cycle.len() > LIST_LIMIT {
            chain.push(format!("… ({} nodes in all)", cycle.len()));
        }
        chain.push(format!("`{}`", id(g, first)));
        out.push((
            node_at(g, first),
            Issue::error(
                codes::CYCLE_WITHOUT_EXIT,
                paths::node(g.node_doc[first]),
                format!(
                    "cycle without exit: {}; no node in it can leave the cycle (add a `loop` \
                     node, or a conditional edge that leaves it)",
                    chain.join(" → ")
                ),
            )
            .node(id(g, first))
            .edge(g.edge(closing).id.as_str()),
        ));
    }
}

/// A cycle inside the strongly connected component `sc` of `sub`, found by walking first
/// in-component out-edges from `start` until a vertex repeats (every vertex of a non-trivial
/// component has such an edge). Returns its vertices, rotated to start at the first in
/// document order, and the edge closing it (from the last vertex back to the first).
fn find_cycle(
    g: &GraphIndex<'_>,
    sub: &Sccs,
    sc: usize,
    start: usize,
) -> Option<(Vec<usize>, usize)> {
    let mut position: HashMap<usize, usize> = HashMap::new();
    let mut walk: Vec<usize> = Vec::new();
    let mut via: Vec<usize> = Vec::new();
    let mut v = start;
    loop {
        if let Some(&p) = position.get(&v) {
            let mut cycle = walk.split_off(p);
            let mut edges = via.split_off(p);
            let min_at = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| **w)
                .map_or(0, |(i, _)| i);
            cycle.rotate_left(min_at);
            edges.rotate_left(min_at);
            let closing = *edges.last()?;
            return Some((cycle, closing));
        }
        position.insert(v, walk.len());
        walk.push(v);
        let e = *g
            .out_edges(v)
            .iter()
            .find(|&&e| sub.comp_of[g.edges[e].target] == sc)?;
        via.push(e);
        v = g.edges[e].target;
    }
}

/// The condition text used to spot duplicates: the translated expression, whitespace collapsed.
fn normalised(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `CHT-V011`, `CHT-V023`, `CHT-V025`: per node, over its out-edges in document order.
fn branches<'a>(ctx: &Ctx<'a>, out: &mut Vec<(At, Issue<'a>)>) {
    let g = &ctx.graph;
    let kinds = ctx.kinds;
    for v in 0..g.len() {
        let node = g.node(v);
        let doc = g.node_doc[v];
        let kind = node.kind.as_str();
        let outs = g.out_edges(v);
        let true_false = kinds.has_true_false(kind);

        // V011: a conditional node needs its branches.
        if true_false {
            let count = |b: Branch| {
                outs.iter()
                    .filter(|&&e| g.edge(e).branch() == Some(b))
                    .count()
            };
            let (t, f) = (count(Branch::True), count(Branch::False));
            let conditioned = outs.iter().any(|&e| g.edge(e).condition().is_some());
            if !conditioned {
                let missing = match (t, f) {
                    (0, 0) => Some(None),
                    (0, _) => Some(Some("true")),
                    (_, 0) => Some(Some("false")),
                    _ => None,
                };
                match missing {
                    Some(None) => out.push((
                        At::Node(doc),
                        Issue::error(
                            codes::MISSING_BRANCHES,
                            paths::node(doc),
                            format!(
                                "conditional node `{}` has no `true`/`false` branches and no \
                                 conditional out-edges; add edges with `sourceHandle` `true` \
                                 and `false`",
                                node.id
                            ),
                        )
                        .node(node.id.as_str()),
                    )),
                    Some(Some(branch)) => out.push((
                        At::Node(doc),
                        Issue::warning(
                            codes::MISSING_BRANCHES,
                            paths::node(doc),
                            format!(
                                "conditional node `{}` has no `{branch}` branch: when its \
                                 condition is {branch}, the path ends here",
                                node.id
                            ),
                        )
                        .node(node.id.as_str()),
                    )),
                    None => {}
                }
            }
        }

        // V023: edges that can never be taken.
        let branch_names = kinds.branches(kind);
        let constant = ctx
            .node_conditions
            .get(doc)
            .and_then(|c| ctx.exprs.get((*c)?)?.constant());
        let mut always: Option<&Edge> = None;
        let mut seen: HashMap<String, &Edge> = HashMap::new();
        for &e in outs {
            let edge = g.edge(e);
            let j = g.edges[e].doc;
            let dead = |message: String, path: String| {
                (
                    At::Edge(j),
                    Issue::warning(codes::DEAD_BRANCH, path, message)
                        .node(node.id.as_str())
                        .edge(edge.id.as_str()),
                )
            };
            if let Some(handle @ (Branch::True | Branch::False)) = edge.branch() {
                let name = if handle == Branch::True {
                    "true"
                } else {
                    "false"
                };
                if kinds.is_known(kind) && !branch_names.contains(&name) {
                    out.push(dead(
                        format!(
                            "edge `{}` leaves `{}` by the `{name}` branch, but `{kind}` nodes \
                             have no `{name}` branch; it is never taken",
                            edge.id, node.id
                        ),
                        paths::edge_source_handle(j, edge),
                    ));
                    continue;
                }
                if true_false && constant == Some(name != "true") {
                    out.push(dead(
                        format!(
                            "edge `{}` is never taken: the condition of `{}` is always {}",
                            edge.id,
                            node.id,
                            name != "true"
                        ),
                        paths::edge_source_handle(j, edge),
                    ));
                    continue;
                }
            }
            let Some(condition) = edge.condition() else {
                continue;
            };
            if let Some(earlier) = always {
                out.push(dead(
                    format!(
                        "edge `{}` is never taken: the earlier edge `{}` of `{}` has a \
                         condition that is always true",
                        edge.id, earlier.id, node.id
                    ),
                    paths::edge_condition(j, edge),
                ));
                continue;
            }
            let compiled = ctx.edge_exprs.get(j).and_then(|c| ctx.exprs.get((*c)?));
            match compiled.and_then(|c| c.constant()) {
                Some(false) => {
                    out.push(dead(
                        format!(
                            "edge `{}` is never taken: its condition `{condition}` is always \
                             false",
                            edge.id
                        ),
                        paths::edge_condition(j, edge),
                    ));
                    continue;
                }
                Some(true) => always = Some(edge),
                None => {}
            }
            let key = normalised(compiled.map_or(condition, |c| c.translated()));
            if let Some(earlier) = seen.get(&key) {
                out.push(dead(
                    format!(
                        "edge `{}` is never taken: its condition `{condition}` repeats the \
                         condition of the earlier edge `{}` of `{}`, which is tried first",
                        edge.id, earlier.id, node.id
                    ),
                    paths::edge_condition(j, edge),
                ));
            } else {
                seen.insert(key, edge);
            }
        }
        if let Some(earlier) = always {
            for &e in outs {
                let edge = g.edge(e);
                if edge.is_conditional() || edge.branch() == Some(Branch::Error) {
                    continue;
                }
                let j = g.edges[e].doc;
                out.push((
                    At::Edge(j),
                    Issue::warning(
                        codes::DEAD_BRANCH,
                        paths::edge(j),
                        format!(
                            "edge `{}` is never taken: it is the default of `{}`, whose edge \
                             `{}` has a condition that is always true",
                            edge.id, node.id, earlier.id
                        ),
                    )
                    .node(node.id.as_str())
                    .edge(edge.id.as_str()),
                ));
            }
        }

        // V025: conditional out-edges and more than one unconditional default.
        let has_conditional = outs.iter().any(|&e| g.edge(e).is_conditional());
        let defaults: Vec<&str> = outs
            .iter()
            .map(|&e| g.edge(e))
            .filter(|edge| !edge.is_conditional() && edge.branch() != Some(Branch::Error))
            .map(|edge| edge.id.as_str())
            .collect();
        if has_conditional && defaults.len() > 1 {
            out.push((
                At::Node(doc),
                Issue::warning(
                    codes::AMBIGUOUS_DEFAULT,
                    paths::node(doc),
                    format!(
                        "node `{}` has conditional out-edges and {} unconditional ones ({}); \
                         when no condition holds, which default runs is ambiguous: keep one \
                         unconditional edge",
                        node.id,
                        defaults.len(),
                        name_list(defaults.iter().copied(), LIST_LIMIT)
                    ),
                )
                .node(node.id.as_str()),
            ));
        }
    }
}
