//! Structural rules: an empty definition, size limits, ids, edge endpoints, kinds
//! (`CHT-V001`..`V006`, `V019`, `V020`, `V024`).

use super::{At, Ctx, Issue, codes, paths};

pub(super) fn check(ctx: &mut Ctx<'_>) {
    let def = ctx.def;
    if def.nodes.is_empty() {
        ctx.push(
            At::Top,
            Issue::error(
                codes::EMPTY_DEFINITION,
                "$.nodes".into(),
                "the definition has no nodes; add at least a `start` and an `end` node".into(),
            ),
        );
    }
    if def.nodes.len() > ctx.config.max_nodes {
        ctx.push(
            At::Top,
            Issue::error(
                codes::TOO_MANY_NODES,
                "$.nodes".into(),
                format!(
                    "the definition has {} nodes; the limit is {}",
                    def.nodes.len(),
                    ctx.config.max_nodes
                ),
            ),
        );
    }
    if def.edges.len() > ctx.config.max_edges {
        ctx.push(
            At::Top,
            Issue::error(
                codes::TOO_MANY_EDGES,
                "$.edges".into(),
                format!(
                    "the definition has {} edges; the limit is {}",
                    def.edges.len(),
                    ctx.config.max_edges
                ),
            ),
        );
    }

    // Node ids and kinds. The graph index maps each id to the first node that has it.
    let first_at = |id: &str| ctx.graph.by_id.get(id).map(|&v| ctx.graph.node_doc[v]);
    let mut found = Vec::new();
    for (i, node) in def.nodes.iter().enumerate() {
        let id = node.id.as_str();
        if id.trim().is_empty() {
            let message = if id.is_empty() {
                format!("node {} has no id", paths::node(i))
            } else {
                format!("node {} has a blank id", paths::node(i))
            };
            found.push((
                At::Node(i),
                Issue::error(
                    codes::NODE_ID_MISSING,
                    format!("{}.id", paths::node(i)),
                    message,
                ),
            ));
        } else if let Some(first) = first_at(id).filter(|&first| first != i) {
            found.push((
                At::Node(i),
                Issue::error(
                    codes::DUPLICATE_NODE_ID,
                    format!("{}.id", paths::node(i)),
                    format!(
                        "duplicate node id `{id}` (first used by {})",
                        paths::node(first)
                    ),
                )
                .node(id),
            ));
        }
        let kind = node.kind.as_str();
        if kind.trim().is_empty() {
            found.push((
                At::Node(i),
                Issue::error(
                    codes::UNKNOWN_KIND,
                    paths::node_kind(i, node),
                    format!("node `{}` has no kind (`type`)", node.display_name()),
                )
                .node(id),
            ));
        } else if !ctx.kinds.is_known(kind) {
            found.push((
                At::Node(i),
                Issue::error(
                    codes::UNKNOWN_KIND,
                    paths::node_kind(i, node),
                    format!(
                        "node `{}` has unknown kind `{}`",
                        node.display_name(),
                        node.kind_as_written()
                    ),
                )
                .node(id),
            ));
        }
    }

    // Edge ids and endpoints.
    let mut edge_first_at: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(def.edges.len());
    for (j, edge) in def.edges.iter().enumerate() {
        let id = edge.id.as_str();
        if !edge.source_info.id_generated {
            if let Some(&first) = edge_first_at.get(id) {
                found.push((
                    At::Edge(j),
                    Issue::error(
                        codes::DUPLICATE_EDGE_ID,
                        format!("{}.id", paths::edge(j)),
                        format!(
                            "duplicate edge id `{id}` (first used by {})",
                            paths::edge(first)
                        ),
                    )
                    .edge(id),
                ));
            } else {
                edge_first_at.insert(id, j);
            }
        }
        for (end, code, name) in [
            (edge.source.as_str(), codes::EDGE_SOURCE_UNKNOWN, "source"),
            (edge.target.as_str(), codes::EDGE_TARGET_UNKNOWN, "target"),
        ] {
            let message = if end.is_empty() {
                format!("edge `{id}` has no {name}")
            } else if first_at(end).is_some() {
                continue;
            } else {
                format!("edge `{id}` {name} `{end}` is not a node of this definition")
            };
            found.push((
                At::Edge(j),
                Issue::error(code, format!("{}.{name}", paths::edge(j)), message).edge(id),
            ));
        }
    }
    for (at, issue) in found {
        ctx.push(at, issue);
    }
}
