//! A workflow's graph, drawn on the server as inline SVG (no script): steps
//! in layers by dependency depth (a step's layer is one more than the
//! deepest of its dependencies'), one edge per dependency, dashed for a
//! `Settled` one, each step coloured by its state with the stylesheet's
//! state colours and linking to its operation's page.
//!
//! A large workflow stays readable and the page small: at most
//! [`PER_LAYER`] steps are drawn per layer (the ones an operator looks for
//! first: stalled, dead, running… before succeeded), the rest of the layer
//! as one "+k more" node, and at most [`MAX_LAYERS`] layers. The edges of
//! the steps not drawn are bundled into one edge per pair of nodes drawn.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;

use maud::{Markup, html};

use crate::admin::StepNode;
use crate::definition::OperationId;
use crate::state::Status;

/// The most steps drawn in one layer; the others are one "+k more" node.
pub(super) const PER_LAYER: usize = 8;
/// The most layers drawn.
pub(super) const MAX_LAYERS: usize = 30;

const NODE_W: f64 = 176.0;
const NODE_H: f64 = 46.0;
const GAP_X: f64 = 18.0;
const GAP_Y: f64 = 46.0;
const MARGIN: f64 = 10.0;

/// What a drawn node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The step at this index of the workflow's steps.
    Step(usize),
    /// This many steps of the layer, not drawn one by one.
    More(usize),
}

/// A node as drawn: its layer and its place in it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub(super) kind: Kind,
    pub(super) layer: usize,
    pub(super) x: f64,
    pub(super) y: f64,
}

/// An edge between two drawn nodes (indices into [`Layout::nodes`]), from
/// the dependency to the dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Edge {
    pub(super) from: usize,
    pub(super) to: usize,
    /// How many dependencies it stands for (more than one: a bundle, to or
    /// from a "+k more" node).
    pub(super) count: usize,
    /// Whether one of them needs the dependency's success (`Dep`); `false`:
    /// all are `Settled`, drawn dashed.
    pub(super) required: bool,
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Layout {
    /// Each step's layer (by index into the steps).
    pub(super) layer_of: Vec<usize>,
    pub(super) nodes: Vec<Node>,
    pub(super) edges: Vec<Edge>,
    /// Layers deeper than [`MAX_LAYERS`], not drawn, and their steps.
    pub(super) hidden_layers: usize,
    pub(super) hidden_steps: usize,
    pub(super) width: f64,
    pub(super) height: f64,
}

/// Which steps of a crowded layer are drawn first: those an operator acts
/// on, then those in flight, succeeded last.
fn interest(status: Status) -> u8 {
    match status {
        Status::Stalled => 0,
        Status::Dead => 1,
        Status::Running => 2,
        Status::Retrying => 3,
        Status::Cancelled => 4,
        Status::Pending => 5,
        Status::Waiting => 6,
        Status::Succeeded => 7,
    }
}

/// Lays `steps` out (see the module's documentation).
#[allow(clippy::too_many_lines)] // One pass per stage: layers, cap, places, edges.
pub(super) fn layout(steps: &[StepNode]) -> Layout {
    let index: HashMap<OperationId, usize> =
        steps.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    // Dependencies outside the list (purged by retention) are left out.
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    let mut unmet: Vec<usize> = vec![0; steps.len()];
    for (i, step) in steps.iter().enumerate() {
        for (dep, _) in &step.depends_on {
            if let Some(&d) = index.get(dep)
                && d != i
            {
                dependents[d].push(i);
                unmet[i] += 1;
            }
        }
    }
    // Kahn's order: a step's layer is settled once all its dependencies'
    // are, whatever order the steps come in.
    let mut layer_of = vec![0usize; steps.len()];
    let mut done = vec![false; steps.len()];
    let mut ready: VecDeque<usize> = (0..steps.len()).filter(|&i| unmet[i] == 0).collect();
    while let Some(d) = ready.pop_front() {
        done[d] = true;
        for &i in &dependents[d] {
            layer_of[i] = layer_of[i].max(layer_of[d] + 1);
            unmet[i] -= 1;
            if unmet[i] == 0 {
                ready.push_back(i);
            }
        }
    }
    // A cycle cannot be written (a step refers only to steps added before
    // it); were one stored anyway, its steps go below all others.
    let deepest = layer_of.iter().copied().max().unwrap_or(0);
    for (i, finished) in done.iter().enumerate() {
        if !finished {
            layer_of[i] = deepest + 1;
        }
    }

    let layers_in_all = layer_of.iter().copied().max().map_or(0, |m| m + 1);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); layers_in_all.min(MAX_LAYERS)];
    let mut hidden_steps = 0;
    for (i, &l) in layer_of.iter().enumerate() {
        match layers.get_mut(l) {
            Some(layer) => layer.push(i),
            None => hidden_steps += 1,
        }
    }

    // Which node stands for each step: its own, its layer's "+k more", or
    // none (a layer not drawn).
    let mut node_of: Vec<Option<usize>> = vec![None; steps.len()];
    let mut nodes = Vec::new();
    let mut per_layer = Vec::with_capacity(layers.len());
    for (l, members) in layers.iter_mut().enumerate() {
        members.sort_by_key(|&i| steps[i].id);
        let (mut shown, more): (Vec<usize>, Vec<usize>) = if members.len() > PER_LAYER {
            let mut ranked = members.clone();
            ranked.sort_by_key(|&i| (interest(steps[i].status), steps[i].id));
            let more = ranked.split_off(PER_LAYER);
            (ranked, more)
        } else {
            (members.clone(), Vec::new())
        };
        shown.sort_by_key(|&i| steps[i].id);
        for &i in &shown {
            node_of[i] = Some(nodes.len());
            nodes.push(Node {
                kind: Kind::Step(i),
                layer: l,
                x: 0.0,
                y: 0.0,
            });
        }
        if !more.is_empty() {
            for &i in &more {
                node_of[i] = Some(nodes.len());
            }
            nodes.push(Node {
                kind: Kind::More(more.len()),
                layer: l,
                x: 0.0,
                y: 0.0,
            });
        }
        per_layer.push(shown.len() + usize::from(!more.is_empty()));
    }

    let widest = per_layer.iter().copied().max().unwrap_or(0);
    let width = MARGIN * 2.0 + extent(widest, NODE_W, GAP_X);
    let height = MARGIN * 2.0 + extent(per_layer.len(), NODE_H, GAP_Y);
    let mut slot = vec![0usize; per_layer.len()];
    for node in &mut nodes {
        let left = (width - extent(per_layer[node.layer], NODE_W, GAP_X)) / 2.0;
        node.x = left + (NODE_W + GAP_X) * count(slot[node.layer]);
        node.y = MARGIN + (NODE_H + GAP_Y) * count(node.layer);
        slot[node.layer] += 1;
    }

    // One edge per dependency between drawn steps; the others bundled.
    let mut bundles: BTreeMap<(usize, usize), (usize, bool)> = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        for (dep, required) in &step.depends_on {
            let Some(&d) = index.get(dep) else { continue };
            if let (Some(from), Some(to)) = (node_of[d], node_of[i])
                && from != to
            {
                let entry = bundles.entry((from, to)).or_insert((0, false));
                entry.0 += 1;
                entry.1 |= *required;
            }
        }
    }
    let edges = bundles
        .into_iter()
        .map(|((from, to), (count, required))| Edge {
            from,
            to,
            count,
            required,
        })
        .collect();

    Layout {
        layer_of,
        nodes,
        edges,
        hidden_layers: layers_in_all.saturating_sub(MAX_LAYERS),
        hidden_steps,
        width: width.max(NODE_W + MARGIN * 2.0),
        height: height.max(NODE_H + MARGIN * 2.0),
    }
}

/// The length of `n` boxes of `size` in a row, `gap` apart.
fn extent(n: usize, size: f64, gap: f64) -> f64 {
    if n == 0 {
        0.0
    } else {
        (size + gap) * count(n) - gap
    }
}

#[allow(clippy::cast_precision_loss)] // Node counts are far below 2^52.
fn count(n: usize) -> f64 {
    n as f64
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The tooltip of a step: what the table under the graph says of it.
fn tooltip(step: &StepNode) -> String {
    let mut text = format!(
        "{} #{} — {}\nattempts: {}",
        step.name, step.id, step.status, step.attempts
    );
    if let Some(n) = step.waiting_for {
        let _ = write!(
            text,
            "\nwaits for {n} dependenc{}",
            if n == 1 { "y" } else { "ies" }
        );
    }
    if let Some(result) = step.result_summary(120) {
        let _ = write!(text, "\nresult: {result}");
    }
    if let Some(error) = &step.last_error {
        let _ = write!(text, "\nlast error: {}", cut(error, 300));
    }
    if let Some(of) = step.compensates {
        let _ = write!(text, "\n↩ compensates step #{of}");
    }
    text
}

/// The graph of `steps` as SVG; links are relative to `root`.
pub(super) fn svg(root: &str, steps: &[StepNode], layout: &Layout) -> Markup {
    let label = format!(
        "The workflow's {} steps in {} layers, coloured by state",
        steps.len(),
        layout.layer_of.iter().copied().max().map_or(0, |m| m + 1)
    );
    let centre = |n: &Node| n.x + NODE_W / 2.0;
    html! {
        div.scroll {
            svg.graph #graph xmlns="http://www.w3.org/2000/svg"
                width=(fmt(layout.width)) height=(fmt(layout.height))
                viewBox=(format!("0 0 {} {}", fmt(layout.width), fmt(layout.height)))
                // Not `role="img"`, which would hide the steps' links.
                role="group" aria-label=(label) {
                defs {
                    marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto" {
                        path d="M0,0 L10,5 L0,10 z" {}
                    }
                }
                @for e in &layout.edges {
                    @let (from, to) = (&layout.nodes[e.from], &layout.nodes[e.to]);
                    @let (x1, y1, x2, y2) = (centre(from), from.y + NODE_H, centre(to), to.y);
                    @let mid = f64::midpoint(y1, y2);
                    @let class = match (e.required, e.count > 1) {
                        (true, false) => "edge",
                        (false, false) => "edge settled",
                        (true, true) => "edge bundle",
                        (false, true) => "edge bundle settled",
                    };
                    path class=(class) marker-end="url(#arrow)"
                        data-from=(node_id(steps, from)) data-to=(node_id(steps, to))
                        d=(format!("M{} {} C{} {} {} {} {} {}", fmt(x1), fmt(y1), fmt(x1), fmt(mid), fmt(x2), fmt(mid), fmt(x2), fmt(y2))) {
                        title {
                            @if e.count > 1 { (e.count) " dependencies" } @else if e.required { "needs its success" } @else { "runs whatever way it ends (settled)" }
                        }
                    }
                }
                @for n in &layout.nodes {
                    @match n.kind {
                        Kind::Step(i) => {
                            @let step = &steps[i];
                            a href=(format!("{root}operations/{}", step.id)) {
                                g class=(format!("node state-{}{}", step.status.as_str(), if step.compensates.is_some() { " compensation" } else { "" }))
                                    data-id=(step.id) data-state=(step.status.as_str()) data-compensates=[step.compensates] {
                                    title { (tooltip(step)) }
                                    rect x=(fmt(n.x)) y=(fmt(n.y)) width=(fmt(NODE_W)) height=(fmt(NODE_H)) rx="6" {}
                                    text.name x=(fmt(n.x + 8.0)) y=(fmt(n.y + 18.0)) { (cut(&step.name, 22)) }
                                    text.sub x=(fmt(n.x + 8.0)) y=(fmt(n.y + 36.0)) {
                                        @if let Some(of) = step.compensates { "↩ " (of) " · " }
                                        "#" (step.id) " · " (step.status.as_str())
                                    }
                                }
                            }
                        }
                        Kind::More(k) => {
                            g.more data-more=(k) {
                                title { (k) " more steps in this layer: see the table below" }
                                rect x=(fmt(n.x)) y=(fmt(n.y)) width=(fmt(NODE_W)) height=(fmt(NODE_H)) rx="6" {}
                                text x=(fmt(n.x + NODE_W / 2.0)) y=(fmt(n.y + 28.0)) text-anchor="middle" { "+" (k) " more" }
                            }
                        }
                    }
                }
            }
        }
        @if layout.hidden_layers > 0 {
            p.muted #graph-cut { (layout.hidden_steps) " steps in " (layout.hidden_layers) " deeper layers are not drawn: they are in the table below." }
        }
    }
}

/// A node's id for the edges' `data-from`/`data-to`: the step's id, or
/// `more-<layer>`.
fn node_id(steps: &[StepNode], node: &Node) -> String {
    match node.kind {
        Kind::Step(i) => steps[i].id.to_string(),
        Kind::More(_) => format!("more-{}", node.layer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: i64, status: Status, deps: &[(i64, bool)]) -> StepNode {
        StepNode {
            id: OperationId::from_i64(id),
            name: format!("step.{id}"),
            status,
            attempts: 1,
            waiting_for: None,
            last_error: None,
            result: Some(serde_json::json!(id)),
            depends_on: deps
                .iter()
                .map(|&(d, r)| (OperationId::from_i64(d), r))
                .collect(),
            created_at: chrono::Utc::now(),
            finished_at: None,
            compensates: None,
        }
    }

    fn steps_of(layout: &Layout, steps: &[StepNode], layer: usize) -> Vec<i64> {
        layout
            .nodes
            .iter()
            .filter(|n| n.layer == layer)
            .filter_map(|n| match n.kind {
                Kind::Step(i) => Some(steps[i].id.as_i64()),
                Kind::More(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_diamond_has_three_layers_and_an_edge_per_dependency() {
        let steps = [
            step(1, Status::Succeeded, &[]),
            step(2, Status::Succeeded, &[(1, true)]),
            step(3, Status::Dead, &[(1, true)]),
            step(4, Status::Cancelled, &[(2, true), (3, false)]),
        ];
        let l = layout(&steps);
        assert_eq!(l.layer_of, [0, 1, 1, 2]);
        assert_eq!(l.nodes.len(), 4);
        assert_eq!(steps_of(&l, &steps, 1), [2, 3]);
        assert_eq!(l.edges.len(), 4);
        assert!(l.edges.iter().all(|e| e.count == 1));
        let settled: Vec<_> = l.edges.iter().filter(|e| !e.required).collect();
        assert_eq!(settled.len(), 1);
        assert_eq!(
            (settled[0].from, settled[0].to),
            (2, 3),
            "3 → 4 is the settled one"
        );
        // Layers go down, a layer's nodes side by side, centred.
        assert!(l.nodes[0].y < l.nodes[1].y && l.nodes[1].y < l.nodes[3].y);
        assert!((l.nodes[1].y - l.nodes[2].y).abs() < f64::EPSILON);
        assert!(l.nodes[1].x < l.nodes[2].x);
        assert!((l.nodes[0].x + NODE_W / 2.0 - l.width / 2.0).abs() < 0.01);
        assert_eq!((l.hidden_layers, l.hidden_steps), (0, 0));
    }

    #[test]
    fn the_layer_is_one_more_than_the_deepest_dependency_in_any_order() {
        // 5 depends on 1 (layer 0) and 4 (layer 2): layer 3. Listed out of
        // order, and with a dependency purged (99).
        let steps = [
            step(5, Status::Waiting, &[(1, true), (4, true), (99, true)]),
            step(4, Status::Pending, &[(2, true)]),
            step(2, Status::Succeeded, &[(1, true)]),
            step(1, Status::Succeeded, &[]),
        ];
        let l = layout(&steps);
        assert_eq!(l.layer_of, [3, 2, 1, 0]);
        assert_eq!(l.edges.len(), 4, "the purged dependency has no edge");
    }

    #[test]
    fn a_wide_layer_is_capped_with_a_more_node_that_keeps_the_interesting_steps() {
        // A fan-in of 1,000: one dead and one stalled among them.
        let mut steps: Vec<StepNode> = (1..=1000)
            .map(|i| {
                let status = match i {
                    500 => Status::Dead,
                    900 => Status::Stalled,
                    _ => Status::Succeeded,
                };
                step(i, status, &[])
            })
            .collect();
        let deps: Vec<(i64, bool)> = (1..=1000).map(|i| (i, true)).collect();
        steps.push(step(1001, Status::Cancelled, &deps));
        let l = layout(&steps);
        let first = steps_of(&l, &steps, 0);
        assert_eq!(first.len(), PER_LAYER);
        assert!(first.contains(&500) && first.contains(&900), "{first:?}");
        assert!(first.windows(2).all(|w| w[0] < w[1]), "drawn in id order");
        let more: Vec<_> = l
            .nodes
            .iter()
            .filter_map(|n| match n.kind {
                Kind::More(k) => Some((n.layer, k)),
                Kind::Step(_) => None,
            })
            .collect();
        assert_eq!(more, [(0, 1000 - PER_LAYER)]);
        assert_eq!(l.nodes.len(), PER_LAYER + 2);
        // One edge per drawn dependency, and one bundle for the rest.
        assert_eq!(l.edges.len(), PER_LAYER + 1);
        let bundle: Vec<_> = l.edges.iter().filter(|e| e.count > 1).collect();
        assert_eq!(bundle.len(), 1);
        assert_eq!(bundle[0].count, 1000 - PER_LAYER);
        // Small enough to draw.
        assert!(l.width < 2000.0, "{}", l.width);
        let page = svg("/", &steps, &l).into_string();
        assert!(page.len() < 20_000, "{} bytes", page.len());
        assert_eq!(page.matches("class=\"node ").count(), PER_LAYER + 1);
    }

    #[test]
    fn a_long_chain_draws_its_first_layers_and_says_how_many_are_not() {
        let steps: Vec<StepNode> = (1..=50)
            .map(|i| {
                let deps: &[(i64, bool)] = if i == 1 { &[] } else { &[(i - 1, true)] };
                step(i, Status::Succeeded, deps)
            })
            .collect();
        let l = layout(&steps);
        assert_eq!(l.layer_of[49], 49);
        assert_eq!(l.nodes.len(), MAX_LAYERS);
        assert_eq!(l.edges.len(), MAX_LAYERS - 1);
        assert_eq!(
            (l.hidden_layers, l.hidden_steps),
            (50 - MAX_LAYERS, 50 - MAX_LAYERS)
        );
        let page = svg("/", &steps, &l).into_string();
        assert!(page.contains("id=\"graph-cut\""));
    }

    #[test]
    fn labels_and_tooltips_are_escaped_and_link_to_the_operation() {
        let mut evil = step(7, Status::Dead, &[]);
        evil.name = "<script>x</script>".into();
        evil.last_error = Some("\"><b>boom</b>".into());
        let steps = [evil];
        let page = svg("../", &steps, &layout(&steps)).into_string();
        assert!(!page.contains("<script>") && !page.contains("<b>"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("href=\"../operations/7\""));
        assert!(page.contains("last error: &quot;&gt;&lt;b&gt;boom"));
        assert!(page.contains("class=\"node state-dead\""));
    }

    #[test]
    fn a_compensation_is_drawn_dashed_and_names_the_step_it_answers() {
        let charge = step(1, Status::Succeeded, &[]);
        let mut refund = step(2, Status::Pending, &[(1, false)]);
        refund.compensates = Some(OperationId::from_i64(1));
        let steps = [charge, refund];
        let page = svg("/", &steps, &layout(&steps)).into_string();
        assert!(page.contains(
            "class=\"node state-pending compensation\" data-id=\"2\" data-state=\"pending\" data-compensates=\"1\""
        ));
        assert!(page.contains("↩ 1 · #2 · pending"));
        assert!(page.contains("↩ compensates step #1"));
        assert!(
            page.contains("class=\"node state-succeeded\" data-id=\"1\" data-state=\"succeeded\">")
        );
    }

    #[test]
    fn an_empty_workflow_draws_nothing_without_panicking() {
        let l = layout(&[]);
        assert!(l.nodes.is_empty() && l.edges.is_empty());
        assert!(l.width > 0.0 && l.height > 0.0);
    }
}
