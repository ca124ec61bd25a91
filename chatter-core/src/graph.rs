//! Graph helpers shared by the validator and the analytics: an index of a definition built once
//! (adjacency lists in compressed form), and iterative algorithms over it, so that no algorithm
//! recurses on user-controlled depth and none scans the edge list once per node.

use std::collections::HashMap;

use crate::definition::{Edge, NodeSpec, WorkflowDefinition};

/// Marker for "not yet visited" / "not in any component".
pub(crate) const NONE: usize = usize::MAX;

/// An edge of the graph whose endpoints both resolve to a vertex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GraphEdge {
    /// Position of the edge in `definition.edges`.
    pub(crate) doc: usize,
    /// Source vertex.
    pub(crate) source: usize,
    /// Target vertex.
    pub(crate) target: usize,
}

/// The graph of a definition: one vertex per distinct non-empty node id (the first node with
/// that id; later duplicates and nodes without an id take no part), and every edge whose source
/// and target name such nodes.
#[derive(Debug)]
pub(crate) struct GraphIndex<'a> {
    pub(crate) def: &'a WorkflowDefinition,
    /// Vertex → position of its node in `definition.nodes`.
    pub(crate) node_doc: Vec<usize>,
    /// Node id → vertex.
    pub(crate) by_id: HashMap<&'a str, usize>,
    /// The resolvable edges, in document order.
    pub(crate) edges: Vec<GraphEdge>,
    out_offsets: Vec<usize>,
    out_list: Vec<usize>,
    in_offsets: Vec<usize>,
    in_list: Vec<usize>,
}

/// Compressed adjacency: `offsets[v]..offsets[v + 1]` indexes `list`.
fn compress(
    n: usize,
    items: impl Iterator<Item = (usize, usize)> + Clone,
) -> (Vec<usize>, Vec<usize>) {
    let mut offsets = vec![0usize; n + 1];
    for (vertex, _) in items.clone() {
        offsets[vertex + 1] += 1;
    }
    for v in 0..n {
        offsets[v + 1] += offsets[v];
    }
    let mut fill = offsets.clone();
    let mut list = vec![0usize; offsets[n]];
    for (vertex, item) in items {
        list[fill[vertex]] = item;
        fill[vertex] += 1;
    }
    (offsets, list)
}

impl<'a> GraphIndex<'a> {
    /// Indexes a definition in time linear in its size.
    pub(crate) fn new(def: &'a WorkflowDefinition) -> GraphIndex<'a> {
        let mut by_id = HashMap::with_capacity(def.nodes.len());
        let mut node_doc = Vec::with_capacity(def.nodes.len());
        for (doc, node) in def.nodes.iter().enumerate() {
            let id = node.id.as_str();
            if id.trim().is_empty() || by_id.contains_key(id) {
                continue;
            }
            by_id.insert(id, node_doc.len());
            node_doc.push(doc);
        }
        let edges: Vec<GraphEdge> = def
            .edges
            .iter()
            .enumerate()
            .filter_map(|(doc, e)| {
                Some(GraphEdge {
                    doc,
                    source: *by_id.get(e.source.as_str())?,
                    target: *by_id.get(e.target.as_str())?,
                })
            })
            .collect();
        let n = node_doc.len();
        let (out_offsets, out_list) =
            compress(n, edges.iter().enumerate().map(|(i, e)| (e.source, i)));
        let (in_offsets, in_list) =
            compress(n, edges.iter().enumerate().map(|(i, e)| (e.target, i)));
        GraphIndex {
            def,
            node_doc,
            by_id,
            edges,
            out_offsets,
            out_list,
            in_offsets,
            in_list,
        }
    }

    /// Number of vertices.
    pub(crate) fn len(&self) -> usize {
        self.node_doc.len()
    }

    /// The node of a vertex.
    pub(crate) fn node(&self, v: usize) -> &'a NodeSpec {
        &self.def.nodes[self.node_doc[v]]
    }

    /// The definition edge of a graph edge (by its index in `self.edges`).
    pub(crate) fn edge(&self, e: usize) -> &'a Edge {
        &self.def.edges[self.edges[e].doc]
    }

    /// Graph edges leaving `v`, in document order.
    pub(crate) fn out_edges(&self, v: usize) -> &[usize] {
        &self.out_list[self.out_offsets[v]..self.out_offsets[v + 1]]
    }

    /// Graph edges entering `v`, in document order.
    pub(crate) fn in_edges(&self, v: usize) -> &[usize] {
        &self.in_list[self.in_offsets[v]..self.in_offsets[v + 1]]
    }

    /// The vertices reachable from `roots` (roots included), following edges forwards or, with
    /// `forward == false`, backwards.
    pub(crate) fn reachable(&self, roots: &[usize], forward: bool) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        let mut stack: Vec<usize> = Vec::with_capacity(roots.len());
        for &r in roots {
            if !seen[r] {
                seen[r] = true;
                stack.push(r);
            }
        }
        while let Some(v) = stack.pop() {
            let (list, far): (&[usize], fn(&GraphEdge) -> usize) = if forward {
                (self.out_edges(v), |e| e.target)
            } else {
                (self.in_edges(v), |e| e.source)
            };
            for &e in list {
                let w = far(&self.edges[e]);
                if !seen[w] {
                    seen[w] = true;
                    stack.push(w);
                }
            }
        }
        seen
    }

    /// Strongly connected components (iterative Tarjan) of the sub-graph of the vertices for
    /// which `include` holds and the edges for which `edge_ok` holds. Components come out in
    /// reverse topological order; each lists its vertices in ascending order.
    pub(crate) fn sccs(
        &self,
        include: impl Fn(usize) -> bool,
        edge_ok: impl Fn(usize) -> bool,
    ) -> Sccs {
        let n = self.len();
        let mut index = vec![NONE; n];
        let mut low = vec![0usize; n];
        let mut on_stack = vec![false; n];
        let mut stack: Vec<usize> = Vec::new();
        let mut call: Vec<(usize, usize)> = Vec::new();
        let mut counter = 0usize;
        let mut comp_of = vec![NONE; n];
        let mut comps: Vec<Vec<usize>> = Vec::new();
        for s in 0..n {
            if index[s] != NONE || !include(s) {
                continue;
            }
            index[s] = counter;
            low[s] = counter;
            counter += 1;
            stack.push(s);
            on_stack[s] = true;
            call.push((s, 0));
            while let Some(&(v, i)) = call.last() {
                let outs = self.out_edges(v);
                if i < outs.len() {
                    if let Some(top) = call.last_mut() {
                        top.1 += 1;
                    }
                    let e = outs[i];
                    if !edge_ok(e) {
                        continue;
                    }
                    let w = self.edges[e].target;
                    if !include(w) {
                        continue;
                    }
                    if index[w] == NONE {
                        index[w] = counter;
                        low[w] = counter;
                        counter += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        call.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                } else {
                    call.pop();
                    if let Some(&(u, _)) = call.last() {
                        low[u] = low[u].min(low[v]);
                    }
                    if low[v] == index[v] {
                        let id = comps.len();
                        let mut comp = Vec::new();
                        while let Some(w) = stack.pop() {
                            on_stack[w] = false;
                            comp_of[w] = id;
                            comp.push(w);
                            if w == v {
                                break;
                            }
                        }
                        comp.sort_unstable();
                        comps.push(comp);
                    }
                }
            }
        }
        Sccs { comp_of, comps }
    }

    /// Depth-first search from `roots` (iterative, out-edges in document order): which graph
    /// edges are back-edges (they close a cycle on the current search path), and the reached
    /// vertices in a topological order of the graph without those back-edges.
    pub(crate) fn back_edges(&self, roots: &[usize]) -> (Vec<bool>, Vec<usize>) {
        const WHITE: u8 = 0;
        const GREY: u8 = 1;
        const BLACK: u8 = 2;
        let mut colour = vec![WHITE; self.len()];
        let mut back = vec![false; self.edges.len()];
        let mut post = Vec::with_capacity(self.len());
        let mut call: Vec<(usize, usize)> = Vec::new();
        for &r in roots {
            if colour[r] != WHITE {
                continue;
            }
            colour[r] = GREY;
            call.push((r, 0));
            while let Some(&(v, i)) = call.last() {
                let outs = self.out_edges(v);
                if i < outs.len() {
                    if let Some(top) = call.last_mut() {
                        top.1 += 1;
                    }
                    let e = outs[i];
                    let w = self.edges[e].target;
                    match colour[w] {
                        WHITE => {
                            colour[w] = GREY;
                            call.push((w, 0));
                        }
                        GREY => back[e] = true,
                        _ => {}
                    }
                } else {
                    colour[v] = BLACK;
                    post.push(v);
                    call.pop();
                }
            }
        }
        post.reverse();
        (back, post)
    }
}

/// Strongly connected components of a (sub-)graph.
#[derive(Debug)]
pub(crate) struct Sccs {
    /// Vertex → component, or [`NONE`] for excluded vertices.
    pub(crate) comp_of: Vec<usize>,
    /// The components, each in ascending vertex order.
    pub(crate) comps: Vec<Vec<usize>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::WorkflowBuilder;

    fn chain(n: usize) -> WorkflowDefinition {
        let mut b = WorkflowBuilder::new();
        for i in 0..n {
            b = b.node(format!("n{i}"), "llm");
        }
        for i in 1..n {
            b = b.edge(format!("n{}", i - 1), format!("n{i}"));
        }
        b.build().unwrap()
    }

    #[test]
    fn adjacency_keeps_document_order_and_skips_dangling_edges() {
        let def = WorkflowBuilder::new()
            .node("a", "llm")
            .node("b", "llm")
            .node("a", "llm")
            .edge("a", "b")
            .edge("a", "nowhere")
            .edge("b", "a")
            .edge("a", "a")
            .build()
            .unwrap();
        let g = GraphIndex::new(&def);
        assert_eq!(g.len(), 2, "the duplicate `a` is not a vertex");
        assert_eq!(g.edges.len(), 3);
        let a_out: Vec<usize> = g.out_edges(0).iter().map(|&e| g.edges[e].doc).collect();
        assert_eq!(a_out, vec![0, 3]);
        let a_in: Vec<usize> = g.in_edges(0).iter().map(|&e| g.edges[e].doc).collect();
        assert_eq!(a_in, vec![2, 3]);
    }

    #[test]
    fn sccs_of_a_long_cycle_do_not_recurse() {
        let n = 50_000;
        let mut def = chain(n);
        def.edges.push(crate::definition::Edge::new(
            "back",
            format!("n{}", n - 1),
            "n0",
        ));
        let g = GraphIndex::new(&def);
        let sccs = g.sccs(|_| true, |_| true);
        assert_eq!(sccs.comps.len(), 1);
        assert_eq!(sccs.comps[0].len(), n);
        let (back, topo) = g.back_edges(&[0]);
        assert_eq!(back.iter().filter(|b| **b).count(), 1);
        assert!(back[n - 1]);
        assert_eq!(topo.len(), n);
        assert_eq!(topo[0], 0);
    }

    #[test]
    fn reachability_both_ways() {
        let def = chain(4);
        let g = GraphIndex::new(&def);
        assert_eq!(g.reachable(&[1], true), vec![false, true, true, true]);
        assert_eq!(g.reachable(&[1], false), vec![true, true, false, false]);
    }
}
