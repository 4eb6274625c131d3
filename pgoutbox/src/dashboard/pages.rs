//! The pages, as maud templates: every `(value)` is escaped, and nothing
//! from the database is ever written with `PreEscaped`.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::{Draft, ListQuery, Overview, Request, WorkflowQuery, chart, graph};
use crate::admin::{
    Action, BulkPreview, OperationDetail, OperationRow, PlannedStep, SchemaVersion, StalledRow,
    StepNode, WorkflowAction, WorkflowActionRow, WorkflowGraph, WorkflowPlan, WorkflowRow,
    WorkflowStep,
};
use crate::definition::OperationId;
use crate::state::{Outcome, Status, WorkflowState};
use crate::workflow::WorkflowId;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Overview,
    Operations,
    Stalled,
    Workflows,
    Schemas,
    None,
}

/// The page around a body; `account` (the operator's name and the
/// session's CSRF token) adds the sign-out form.
fn layout(
    root: &str,
    home: &str,
    title: &str,
    nav: Nav,
    body: &Markup,
    account: Option<(&str, &str)>,
) -> Markup {
    let current = |n: Nav| if n == nav { Some("page") } else { None };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · pgoutbox" }
                link rel="stylesheet" href=(format!("{root}assets/app.css"));
                script src=(format!("{root}assets/app.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "pgoutbox" }
                    nav aria-label="Main" {
                        a href=(home) aria-current=[current(Nav::Overview)] { "Overview" }
                        a href=(format!("{root}operations")) aria-current=[current(Nav::Operations)] { "Operations" }
                        a href=(format!("{root}stalled")) aria-current=[current(Nav::Stalled)] { "Stalled" }
                        a href=(format!("{root}workflows")) aria-current=[current(Nav::Workflows)] { "Workflows" }
                        a href=(format!("{root}schemas")) aria-current=[current(Nav::Schemas)] { "Schemas" }
                    }
                    @if let Some((who, csrf)) = account {
                        form.who method="post" action=(format!("{root}logout")) {
                            span { "Signed in as " strong #operator { (who) } " " }
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" #sign-out { "Sign out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

fn state(status: Status) -> Markup {
    html! { span class=(format!("state state-{}", status.as_str())) { (status.as_str()) } }
}

fn outcome(o: Option<Outcome>) -> Markup {
    match o {
        None => html! { span.state { "running" } },
        Some(o) => html! { span class=(format!("state state-{}", o.as_str())) { (o.as_str()) } },
    }
}

fn op_link(root: &str, id: OperationId) -> Markup {
    html! { a href=(format!("{root}operations/{id}")) { "#" (id) } }
}

/// "3m 12s ago", from the dashboard's clock.
fn ago(t: DateTime<Utc>) -> String {
    let seconds = (Utc::now() - t).num_seconds().max(0);
    format!("{} ago", span(seconds))
}

fn span(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn time(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) title=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S")) } }
}

pub(super) fn failure(status: axum::http::StatusCode, message: &str) -> Markup {
    // A failure page does not know its depth: no relative links but the
    // browser's own back.
    let body = html! {
        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("error")) }
        p.error role="alert" { (message) }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "pgoutbox: " (status.as_u16()) } }
            body { main { (body) } }
        }
    }
}

pub(super) fn login(root: &str, home: &str, error: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form.act method="post" action=(format!("{root}login")) {
            label { "Access token" input type="password" name="token" autocomplete="current-password" required autofocus; }
            button type="submit" { "Sign in" }
        }
    };
    layout(root, home, "Sign in", Nav::None, &body, None)
}

pub(super) fn overview(request: &Request, data: &Overview, refresh_ms: u64) -> Markup {
    let root = &request.root;
    let body = html! {
        h1 { "Overview" }
        div #live data-src=(format!("{root}live")) data-refresh=(refresh_ms) aria-live="polite" {
            (overview_live(root, data))
        }
    };
    layout(
        root,
        &request.home,
        "Overview",
        Nav::Overview,
        &body,
        request.account(),
    )
}

/// The states counted exactly on the overview, stalled and dead first.
const EXACT: [Status; 6] = [
    Status::Stalled,
    Status::Dead,
    Status::Retrying,
    Status::Pending,
    Status::Running,
    Status::Waiting,
];

/// The finished states, counted exactly on the overview while few, estimated above.
const ESTIMATED: [Status; 2] = [Status::Succeeded, Status::Cancelled];

/// The part of the overview that refreshes itself.
#[allow(clippy::too_many_lines)] // One template.
pub(super) fn overview_live(root: &str, data: &Overview) -> Markup {
    let now = &data.now;
    let per_state = |s: Status| -> i64 {
        now.counts
            .iter()
            .filter(|(st, _, _)| *st == s)
            .map(|(_, _, n)| n)
            .sum()
    };
    let mut names: Vec<&str> = now.counts.iter().map(|(_, n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let count = |name: &str, s: Status| -> i64 {
        now.counts
            .iter()
            .find(|(st, n, _)| *st == s && n == name)
            .map_or(0, |(_, _, c)| *c)
    };
    html! {
        @for (name, n) in &now.unhandled {
            p.warn role="status" { (n) " ready " code { (name) } " operation(s): no live worker handles this name." }
        }
        @for (queue, name, n) in &now.unserved {
            p.warn role="status" { (n) " ready " code { (name) } " operation(s) in queue " code { (queue) } ": no live worker serves it." }
        }
        @for s in &now.undeclared_schedules {
            p.warn role="status" { "schedule " code { (s.name) } ": no live worker declares it; its missed ticks count from " (s.next_tick.format("%Y-%m-%d %H:%M:%S UTC")) ". Retired? " code { "pgoutbox schedules remove " (s.name) " --reason …" } }
        }
        section aria-labelledby="states" {
            h2 #states { "By state" }
            div.grid {
                @for s in EXACT {
                    @let n = per_state(s);
                    @let alert = matches!(s, Status::Stalled | Status::Dead) && n > 0;
                    a class=(if alert { "tile alert" } else { "tile" })
                        href=(format!("{root}operations?status={}", s.as_str())) data-state=(s.as_str()) {
                        span.n { (n) }
                        (s.as_str())
                    }
                }
                @for s in ESTIMATED {
                    @if let Some(finished) = &now.finished {
                        @let n = finished.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n);
                        a.tile href=(format!("{root}operations?status={}", s.as_str())) data-state=(s.as_str()) {
                            span.n { (n) }
                            (s.as_str())
                        }
                    } @else {
                        @let estimate = now.estimated.iter().find(|(st, _)| *st == s).map(|(_, n)| *n);
                        a.tile href=(format!("{root}operations?status={}", s.as_str())) data-state=(s.as_str())
                            title="an estimate from PostgreSQL's statistics (as of the table's last ANALYZE): counting this many finished operations exactly would read them all" {
                            span.n {
                                @match (estimate, now.estimated.is_empty()) {
                                    (Some(n), _) => { "≈ " (n) }
                                    // Statistics exist, and this state is not among their common values.
                                    (None, false) => { "≈ 0" }
                                    (None, true) => { "?" }
                                }
                            }
                            (s.as_str()) " " span.muted { "(estimate)" }
                        }
                    }
                }
                div.tile {
                    span.n { (now.oldest_ready_seconds.map_or_else(|| "—".to_owned(), |s| span(seconds_of(s)))) }
                    "oldest ready waits"
                }
            }
            @if now.finished.is_none() {
                p.muted { "Stalled, dead, retrying, pending and running are counted exactly; succeeded and cancelled, too many to count on every refresh, are estimates from PostgreSQL's statistics." }
            }
        }
        section aria-labelledby="pace" {
            h2 #pace { "Throughput, last hour" }
            (chart::throughput(&data.throughput))
        }
        section aria-labelledby="workers" {
            h2 #workers { "Live workers (" (now.workers.len()) ")" }
            @if now.workers.is_empty() {
                p.muted { "No live worker." }
            } @else {
                div.scroll { table {
                    thead { tr { th { "Host" } th.num { "Pid" } th { "Version" } th { "Heartbeat" } th { "Queues" } th.num { "In flight" } th.num { "Slots" } th { "Names" } } }
                    tbody {
                        @for w in &now.workers {
                            @let running = now.in_flight.iter().find(|(id, _)| *id == w.id).map_or(0, |(_, n)| *n);
                            tr {
                                td { (w.host) }
                                td.num { (w.pid) }
                                td { (w.version) }
                                td { (ago(w.heartbeat_at)) }
                                td { @if w.queues.is_empty() { span.muted { "all" } } @else { (w.queues.join(", ")) } }
                                td.num data-in-flight=(running) { (running) }
                                td.num { (w.n_workers) }
                                td { (w.names.join(", ")) }
                            }
                        }
                    }
                } }
            }
        }
        section aria-labelledby="names" {
            h2 #names { "By name (not finished, or waiting for an operator)" }
            @if names.is_empty() {
                p.muted { "None." }
            } @else {
                div.scroll { table {
                    thead { tr { th { "Name" } @for s in EXACT { th.num { (s.as_str()) } } } }
                    tbody {
                        @for name in &names {
                            tr {
                                td { a href=(format!("{root}operations?{}", serde_urlencoded::to_string([("name", *name)]).unwrap_or_default())) { (name) } }
                                @for s in EXACT {
                                    @let n = count(name, s);
                                    td.num { @if n > 0 { (n) } @else { span.muted { "·" } } }
                                }
                            }
                        }
                    }
                } }
            }
        }
    }
}

#[allow(clippy::cast_possible_truncation)] // Ages in seconds fit an i64.
fn seconds_of(s: f64) -> i64 {
    s.max(0.0).round() as i64
}

fn filters(root: &str, query: &ListQuery) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let selected = query.status.clone().unwrap_or_default();
    html! {
        form.filters method="get" action=(format!("{root}operations")) role="search" {
            label { "State"
                select name="status" {
                    option value="" { "any" }
                    @for s in Status::ALL {
                        option value=(s.as_str()) selected[selected == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            label { "Name" input name="name" value=(v(&query.name)); }
            label { "Queue" input name="queue" value=(v(&query.queue)) size="10"; }
            label { "Published within" input name="age" value=(v(&query.age)) placeholder="e.g. 2h" size="8"; }
            label { "Last error contains" input name="error" value=(v(&query.error)); }
            label { "Root id" input name="root" value=(v(&query.root)) size="8" inputmode="numeric"; }
            button type="submit" { "Filter" }
            a href=(format!("{root}operations")) { "Clear" }
        }
    }
}

fn operation_rows(root: &str, rows: &[OperationRow]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr { th { "Id" } th { "Name" } th { "State" } th { "Queue" } th.num { "Attempts" } th { "Published" } th { "Last error" } } }
            tbody {
                @for op in rows {
                    tr data-id=(op.id) {
                        td { (op_link(root, op.id)) }
                        td { (op.name) }
                        td { (state(op.status)) }
                        td { (op.queue) }
                        td.num { (op.attempt - op.snoozes) "/" (op.max_attempts) }
                        td { (ago(op.created_at)) }
                        td { @if let Some(e) = &op.last_error { (truncate(e, 160)) } }
                    }
                }
            }
        } }
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn csrf(request: &Request) -> Markup {
    html! { input type="hidden" name="csrf" value=(request.csrf); }
}

/// The list's filters as hidden fields, for the bulk forms.
fn hidden_filters(query: &ListQuery) -> Markup {
    let fields = [
        ("status", &query.status),
        ("name", &query.name),
        ("queue", &query.queue),
        ("age", &query.age),
        ("error", &query.error),
        ("root", &query.root),
    ];
    html! {
        @for (name, value) in fields {
            @if let Some(value) = value { input type="hidden" name=(name) value=(value); }
        }
    }
}

pub(super) fn operations(
    request: &Request,
    query: &ListQuery,
    rows: &[OperationRow],
    next: Option<OperationId>,
) -> Markup {
    let root = &request.root;
    let list = query.query_string();
    let amp = if list.is_empty() { "" } else { "&" };
    let body = html! {
        h1 { "Operations" }
        (filters(root, query))
        @if rows.is_empty() {
            p.muted { "No operation matches." }
        } @else {
            (operation_rows(root, rows))
        }
        nav.pager aria-label="Pages" {
            @if query.before.is_some() { a href=(format!("{root}operations?{list}")) { "← Newest" } }
            @if let Some(next) = next { a rel="next" href=(format!("{root}operations?{list}{amp}before={next}")) { "Older →" } }
        }
        @if request.can_act && query.is_filtered() {
            h2 { "Act on every operation that matches" }
            form.act method="post" action=(format!("{root}bulk")) {
                (csrf(request))
                (hidden_filters(query))
                label { "Action"
                    select name="action" { option value="retry" { "retry" } option value="cancel" { "cancel" } }
                }
                label { "Reason" input name="reason" required; }
                button type="submit" { "Preview…" }
            }
        }
    };
    layout(
        root,
        &request.home,
        "Operations",
        Nav::Operations,
        &body,
        request.account(),
    )
}

pub(super) fn bulk_confirm(
    request: &Request,
    action: Action,
    reason: &str,
    query: &ListQuery,
    preview: &BulkPreview,
) -> Markup {
    let root = &request.root;
    let body = html! {
        h1 { "Confirm: " (action) " " (preview.count) " operation(s)" }
        @if preview.count == 0 {
            p.muted { "Nothing matches (in a state " (action) " is allowed from)." }
        } @else {
            p { "This will " strong { (action) } " " strong #bulk-count { (preview.count) } " operation(s) matching the filter, recorded as "
                code { (reason) } ". Operations that change meanwhile are skipped. The first ones:" }
            div.scroll { table {
                thead { tr { th { "Id" } th { "Name" } th { "State" } th { "Queue" } th { "Published" } } }
                tbody { @for t in &preview.sample {
                    tr { td { (op_link(root, t.id)) } td { (t.name) } td { (state(t.status)) } td { (t.queue) } td { (ago(t.created_at)) } }
                } }
            } }
            form.act method="post" action=(format!("{root}bulk/run")) {
                (csrf(request))
                (hidden_filters(query))
                input type="hidden" name="action" value=(action.to_string());
                input type="hidden" name="reason" value=(reason);
                @if let Some(upto) = preview.upto { input type="hidden" name="upto" value=(upto); }
                button type="submit" { (action) " " (preview.count) " operation(s)" }
            }
        }
        p { a href=(format!("{root}operations?{}", query.query_string())) { "Back to the list" } }
    };
    layout(
        root,
        &request.home,
        "Confirm",
        Nav::Operations,
        &body,
        request.account(),
    )
}

#[allow(clippy::too_many_arguments, clippy::too_many_lines)] // One template, one argument per part.
pub(super) fn operation(
    request: &Request,
    detail: &OperationDetail,
    tree: &[OperationRow],
    tree_shown: usize,
    children_shown: usize,
    history: &[SchemaVersion],
    step: Option<&WorkflowStep>,
    notice: Option<&str>,
    refusal: Option<&str>,
    draft: Option<&Draft>,
) -> Markup {
    let root = &request.root;
    let op = &detail.operation;
    let payload = serde_json::to_string_pretty(&op.payload).unwrap_or_default();
    let version = history.iter().position(|v| v.schema_hash == op.schema_hash);
    let actions: Vec<(&str, &str)> = [
        ("retry", "Retry", Action::Retry),
        ("cancel", "Cancel", Action::Cancel),
        (
            "resolve-succeeded",
            "Resolve as succeeded",
            Action::Resolve(crate::admin::Resolution::Succeeded),
        ),
        (
            "resolve-dead",
            "Resolve as dead",
            Action::Resolve(crate::admin::Resolution::Dead),
        ),
        ("replay", "Replay", Action::Replay),
    ]
    .into_iter()
    .filter(|(_, _, a)| a.allowed_from().contains(&op.status))
    .map(|(v, l, _)| (v, l))
    .collect();
    let body = html! {
        h1 { "Operation " (op.id) " " small.muted { (op.name) } }
        @if let Some(n) = notice { p.notice role="status" #notice { (n) } }
        @if let Some(r) = refusal { p.error role="alert" #refusal { (r) } }
        dl.facts {
            dt { "State" } dd #state { (state(op.status)) }
            dt { "Queue" } dd { (op.queue) }
            dt { "Priority" } dd { (op.priority) }
            dt { "Attempts" } dd { (op.attempt - op.snoozes) " of " (op.max_attempts) @if op.snoozes > 0 { " (and " (op.snoozes) " snoozed)" } }
            dt { "Idempotent" } dd { @if op.idempotent { "yes: retried after an unknown outcome" } @else { "no: an unknown outcome stalls it" } }
            dt { "Published" } dd { (time(op.created_at)) " (" (ago(op.created_at)) ")" }
            dt { "Run at" } dd { (time(op.run_at)) }
            @if let Some(f) = op.finished_at { dt { "Finished" } dd { (time(f)) } }
            dt { "Idempotency key" } dd { code { (op.external_key) } }
            dt { "Parent" } dd { @if let Some(p) = op.parent_id { (op_link(root, p)) } @else { span.muted { "none" } } }
            dt { "Root" } dd { @if let Some(r) = op.root_id { (op_link(root, r)) } @else { "itself" } }
            @if let Some(step) = step { (step_facts(root, step, 20)) }
            @if let Some(e) = &op.last_error { dt { "Last error" } dd { pre { (e) } } }
        }
        @if request.can_act && !actions.is_empty() {
            @let chosen = draft.map_or("", |d| d.action.as_str());
            @let with_result = op.status == Status::Stalled
                && actions.iter().any(|(value, _)| *value == "resolve-succeeded");
            h2 { "Act" }
            form.act method="post" action=(format!("{root}operations/{}/act", op.id)) {
                (csrf(request))
                label { "Action"
                    select name="action" #action { @for (value, label) in &actions { option value=(value) selected[*value == chosen] { (label) } } }
                }
                label { "Reason" input name="reason" #reason required placeholder="why (recorded)" value=(draft.map_or("", |d| d.reason.as_str())); }
                @if with_result {
                    label.result { "Result, for “Resolve as succeeded” (JSON matching the "
                        a href=(format!("{root}schemas/{}", op.name)) { "output schema" }
                        "; empty: none)"
                        textarea name="result" #result rows="4" spellcheck="false" placeholder="e.g. {\"charge_id\": \"ch_123\"}" { (draft.map_or("", |d| d.result.as_str())) }
                    }
                }
                button type="submit" #act { "Apply" }
            }
        }
        h2 { "Payload" }
        p.muted {
            "Schema " code { (op.schema_hash.get(..12).unwrap_or(&op.schema_hash)) }
            @if let Some(v) = version { " — version " (v + 1) " of " (history.len()) } @else { " — not in the recorded history" }
            " · " a href=(format!("{root}schemas/{}", op.name)) { "schema history" }
        }
        pre #payload { (payload) }
        h2 { "Attempts (" (detail.attempts.len()) ")" }
        @if detail.attempts.is_empty() { p.muted { "Not attempted yet." } }
        ol.timeline #attempts {
            @for a in &detail.attempts {
                li {
                    strong { "#" (a.number) " " } (outcome(a.outcome))
                    " on worker " code { (a.worker_id.simple().to_string().get(..8).unwrap_or_default()) }
                    " · started " (time(a.started_at))
                    @if let Some(f) = a.finished_at { " · ended " (time(f)) " (" (span((f - a.started_at).num_seconds())) ")" }
                    @if matches!(a.outcome, Some(Outcome::Lost | Outcome::TimedOut | Outcome::Aborted)) {
                        br; span.state.state-stalled { "outcome unknown: the handler may or may not have done its work" }
                    }
                    @if let Some(e) = &a.error { pre { (e) } }
                    @if let Some(result) = &a.result {
                        details.result { summary { "result" } pre { (serde_json::to_string_pretty(result).unwrap_or_default()) } }
                    }
                    @if let Some(serde_json::Value::Array(chain)) = &a.error_chain {
                        @if chain.len() > 1 {
                            details { summary { "error chain (" (chain.len()) ")" }
                                ol { @for c in chain { li { @if let Some(s) = c.as_str() { (s) } @else { (c.to_string()) } } } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Operator actions (" (detail.actions.len()) ")" }
        @if detail.actions.is_empty() { p.muted { "None." } } @else {
            div.scroll { table #actions {
                thead { tr { th { "When" } th { "Action" } th { "Outcome" } th { "Actor" } th { "Reason" } th { "From" } th { "To" } } }
                tbody { @for a in &detail.actions {
                    tr {
                        td { (time(a.created_at)) }
                        td { (a.action) @if let Some(n) = a.new_operation_id { " → " (op_link(root, n)) } }
                        td { (a.outcome) }
                        td { (a.actor) }
                        td { (a.reason) }
                        td { (state(a.from_status)) }
                        td { @if let Some(t) = a.to_status { (state(t)) } }
                    }
                } }
            } }
        }
        h2 { "Children (" (detail.children.len()) ")" }
        @if detail.children.is_empty() { p.muted { "None." } } @else {
            p { @for c in detail.children.iter().take(children_shown) { (op_link(root, *c)) " " } }
            @if detail.children.len() > children_shown {
                p.muted { "and " (detail.children.len() - children_shown) " more: "
                    a href=(format!("{root}operations?root={}", op.root_id.unwrap_or(op.id))) { "the whole workflow" } }
            }
        }
        h2 { "Workflow" }
        @if let Some(step) = step {
            p { "A step of workflow " (workflow_link(root, step.workflow_id)) " " (step.workflow_name) ": "
                a href=(format!("{root}workflows/{}", step.workflow_id)) { "its graph" } }
        }
        (workflow_tree(root, op.id, tree, tree_shown))
    };
    layout(
        root,
        &request.home,
        &format!("Operation {}", op.id),
        Nav::None,
        &body,
        request.account(),
    )
}

/// The workflow as nested lists, from the root.
fn workflow_tree(root: &str, here: OperationId, tree: &[OperationRow], shown: usize) -> Markup {
    fn node(
        root: &str,
        here: OperationId,
        tree: &[OperationRow],
        id: OperationId,
        depth: usize,
    ) -> Markup {
        let Some(op) = tree.iter().find(|o| o.id == id) else {
            return html! {};
        };
        let children: Vec<OperationId> = tree
            .iter()
            .filter(|o| o.parent_id == Some(id) && o.id != id)
            .map(|o| o.id)
            .collect();
        html! {
            li class=[(id == here).then_some("here")] {
                (op_link(root, op.id)) " " (op.name) " " (state(op.status))
                @if !children.is_empty() && depth < 32 {
                    ul { @for c in children { (node(root, here, tree, c, depth + 1)) } }
                }
            }
        }
    }
    let truncated = tree.len() > shown;
    let tree = &tree[..tree.len().min(shown)];
    let Some(first) = tree.first() else {
        return html! { p.muted { "—" } };
    };
    html! {
        ul.tree #tree { (node(root, here, tree, first.id, 0)) }
        @if truncated {
            p.muted { "Only the first " (shown) " operations of this workflow are drawn: "
                a href=(format!("{root}operations?root={}", first.id)) { "list them all" } }
        }
    }
}

pub(super) fn stalled(
    request: &Request,
    rows: &[StalledRow],
    total: i64,
    next: Option<OperationId>,
) -> Markup {
    let root = &request.root;
    let body = html! {
        h1 { "Stalled: " (total) " in doubt" }
        p.muted { "Their last attempt's outcome is unknown (the worker was lost, or timed out mid-call). Find out at the other side, then resolve them as succeeded or dead, or retry them." }
        @if rows.is_empty() { p.muted { "Nothing is in doubt." } } @else {
            div.scroll { table #stalled {
                thead { tr { th { "Id" } th { "Name" } th { "Stalled" } th { "Last attempt" } th { "Worker" } th { "Error" } } }
                tbody { @for op in rows {
                    tr data-id=(op.id) {
                        td { (op_link(root, op.id)) }
                        td { (op.name) br; span.muted { "queue " (op.queue) } }
                        td { (ago(op.updated_at)) }
                        td { @if let Some(a) = &op.last_attempt {
                            "#" (a.number) " " (outcome(a.outcome)) br;
                            span.muted { "started " (ago(a.started_at)) }
                        } @else { span.muted { "none recorded" } } }
                        td { @if let Some(a) = &op.last_attempt {
                            @if let Some(host) = &a.worker_host { (host) @if let Some(pid) = a.worker_pid { " pid " (pid) } br; }
                            @if let Some(h) = a.worker_heartbeat_at { span.muted { "last heartbeat " (ago(h)) } }
                            @if a.worker_stopped_at.is_some() { br; span.muted { "stopped" } }
                        } }
                        td { @if let Some(e) = op.last_attempt.as_ref().and_then(|a| a.error.as_ref()).or(op.last_error.as_ref()) { (truncate(e, 200)) } }
                    }
                } }
            } }
        }
        @if let Some(next) = next { nav.pager aria-label="Pages" { a rel="next" href=(format!("{root}stalled?after={next}")) { "Next →" } } }
    };
    layout(
        root,
        &request.home,
        "Stalled",
        Nav::Stalled,
        &body,
        request.account(),
    )
}

pub(super) fn schemas(request: &Request, latest: &[SchemaVersion]) -> Markup {
    let root = &request.root;
    let body = html! {
        h1 { "Schemas" }
        @if latest.is_empty() { p.muted { "No operation type recorded yet." } } @else {
            div.scroll { table {
                thead { tr { th { "Operation" } th { "Current schema" } th { "First seen" } th { "Last seen" } } }
                tbody { @for v in latest {
                    tr {
                        td { a href=(format!("{root}schemas/{}", v.name)) { (v.name) } }
                        td { code { (v.schema_hash.get(..12).unwrap_or(&v.schema_hash)) } }
                        td { (ago(v.first_seen_at)) }
                        td { (ago(v.last_seen_at)) }
                    }
                } }
            } }
        }
    };
    layout(
        root,
        &request.home,
        "Schemas",
        Nav::Schemas,
        &body,
        request.account(),
    )
}

pub(super) fn schema(
    request: &Request,
    name: &str,
    history: &[SchemaVersion],
    outputs: &[SchemaVersion],
    from: usize,
    to: usize,
) -> Markup {
    let root = &request.root;
    let short = |v: &SchemaVersion| v.schema_hash.get(..12).unwrap_or(&v.schema_hash).to_owned();
    let text = |v: &SchemaVersion| serde_json::to_string_pretty(&v.json_schema).unwrap_or_default();
    let (a, b) = (text(&history[from]), text(&history[to]));
    let diff = similar::TextDiff::from_lines(&a, &b);
    let body = html! {
        h1 { "Schema of " code { (name) } }
        h2 { "History (" (history.len()) " version(s))" }
        div.scroll { table {
            thead { tr { th { "Version" } th { "Hash" } th { "First seen" } th { "Last seen" } th { "Compare" } } }
            tbody { @for (i, v) in history.iter().enumerate() {
                tr {
                    td { (i + 1) }
                    td { code { (short(v)) } }
                    td { (time(v.first_seen_at)) }
                    td { (time(v.last_seen_at)) }
                    td { @if i > 0 {
                        a href=(format!("{root}schemas/{name}?from={}&to={}", short(&history[i - 1]), short(v))) { "diff with " (i) }
                    } }
                }
            } }
        } }
        h2 { "Diff: version " (from + 1) " → " (to + 1) }
        @if from == to { p.muted { "One version only: its schema below." } }
        pre.diff #diff {
            @for change in diff.iter_all_changes() {
                @match change.tag() {
                    similar::ChangeTag::Delete => span.del { "- " (change.value()) },
                    similar::ChangeTag::Insert => span.add { "+ " (change.value()) },
                    similar::ChangeTag::Equal => span { "  " (change.value()) },
                }
            }
        }
        h2 { "Output (" (outputs.len()) " version(s))" }
        @if outputs.is_empty() { p.muted { "No output type recorded: no worker handling it has started since results were recorded." } }
        @for (i, v) in outputs.iter().enumerate() {
            details.output open[i + 1 == outputs.len()] {
                summary { "Version " (i + 1) " " code { (short(v)) } " · first seen " (time(v.first_seen_at)) " · last seen " (time(v.last_seen_at)) }
                pre { (text(v)) }
            }
        }
    };
    layout(
        root,
        &request.home,
        &format!("Schema {name}"),
        Nav::Schemas,
        &body,
        request.account(),
    )
}

fn workflow_state(state: WorkflowState) -> Markup {
    html! { span class=(format!("state state-{}", state.as_str())) { (state.as_str()) } }
}

fn workflow_link(root: &str, id: WorkflowId) -> Markup {
    html! { a href=(format!("{root}workflows/{id}")) { "#" (id) } }
}

/// Steps by state, in the states' order, each in its colour.
fn step_counts(counts: &std::collections::BTreeMap<Status, i64>) -> Markup {
    html! {
        span.counts {
            @for s in Status::ALL {
                @if let Some(n) = counts.get(&s).filter(|n| **n > 0) {
                    span class=(format!("state state-{}", s.as_str())) data-state=(s.as_str()) { (n) " " (s.as_str()) } " "
                }
            }
        }
    }
}

fn workflow_filters(root: &str, query: &WorkflowQuery) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let selected = query.state.clone().unwrap_or_default();
    html! {
        form.filters method="get" action=(format!("{root}workflows")) role="search" {
            label { "State"
                select name="state" {
                    option value="" { "any" }
                    @for s in WorkflowState::ALL {
                        option value=(s.as_str()) selected[selected == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            label { "Name" input name="name" value=(v(&query.name)); }
            label { "Created within" input name="age" value=(v(&query.age)) placeholder="e.g. 2h" size="8"; }
            button type="submit" { "Filter" }
            a href=(format!("{root}workflows")) { "Clear" }
        }
    }
}

pub(super) fn workflows(
    request: &Request,
    query: &WorkflowQuery,
    rows: &[WorkflowRow],
    next: Option<WorkflowId>,
) -> Markup {
    let root = &request.root;
    let list = query.query_string();
    let amp = if list.is_empty() { "" } else { "&" };
    let body = html! {
        h1 { "Workflows" }
        (workflow_filters(root, query))
        @if rows.is_empty() {
            p.muted { "No workflow matches." }
        } @else {
            div.scroll { table #workflows {
                thead { tr { th { "Id" } th { "Name" } th { "State" } th.num { "Steps" } th { "Steps by state" } th { "Created" } th { "Finished" } } }
                tbody {
                    @for wf in rows {
                        tr data-id=(wf.id) data-state=(wf.state.as_str()) {
                            td { (workflow_link(root, wf.id)) }
                            td { (wf.name) }
                            td { (workflow_state(wf.state)) }
                            td.num { (wf.steps) }
                            td { (step_counts(&wf.counts)) }
                            td { (ago(wf.created_at)) }
                            td { @if let Some(f) = wf.finished_at { (time(f)) } @else { span.muted { "—" } } }
                        }
                    }
                }
            } }
        }
        nav.pager aria-label="Pages" {
            @if query.before.is_some() { a href=(format!("{root}workflows?{list}")) { "← Newest" } }
            @if let Some(next) = next { a rel="next" href=(format!("{root}workflows?{list}{amp}before={next}")) { "Older →" } }
        }
    };
    layout(
        root,
        &request.home,
        "Workflows",
        Nav::Workflows,
        &body,
        request.account(),
    )
}

/// The dependencies of a step, as links (at most `max`).
fn depends_on(root: &str, step: &StepNode, max: usize) -> Markup {
    html! {
        @if let Some(n) = step.waiting_for { strong { (n) " left" } ": " }
        @for (id, required) in step.depends_on.iter().take(max) {
            (op_link(root, *id)) @if !*required { span.muted { " (settled)" } } " "
        }
        @if step.depends_on.len() > max { span.muted { "and " (step.depends_on.len() - max) " more" } }
    }
}

/// A compensation's mark: the step it answers.
fn compensates(root: &str, step: &StepNode) -> Markup {
    html! {
        @if let Some(of) = step.compensates {
            " " span.comp-mark title="a compensation: published because its workflow failed or was cancelled after that step succeeded" {
                "↩ compensates " (op_link(root, of))
            }
        }
    }
}

#[allow(clippy::too_many_lines)] // One template.
pub(super) fn workflow(
    request: &Request,
    graph_data: &WorkflowGraph,
    actions: &[WorkflowActionRow],
    steps_shown: usize,
    notice: Option<&str>,
    refusal: Option<&str>,
) -> Markup {
    let root = &request.root;
    let wf = &graph_data.workflow;
    let steps = &graph_data.steps;
    let layout_ = graph::layout(steps);
    let body = html! {
        h1 { "Workflow " (wf.id) " " small.muted { (wf.name) } }
        @if let Some(n) = notice { p.notice role="status" #notice { (n) } }
        @if let Some(r) = refusal { p.error role="alert" #refusal { (r) } }
        dl.facts {
            dt { "State" } dd #state { (workflow_state(wf.state)) }
            dt { "Steps" } dd { (wf.steps) " · " (step_counts(&wf.counts)) }
            dt { "Created" } dd { (time(wf.created_at)) " (" (ago(wf.created_at)) ")" }
            dt { "Changed" } dd { (time(wf.updated_at)) }
            dt { "Finished" } dd { @if let Some(f) = wf.finished_at { (time(f)) } @else { span.muted { "not yet" } } }
            @if wf.failure.is_some() || wf.failed_at.is_some() {
                dt { "Failure" } dd #failure {
                    @if let Some(at) = wf.failed_at { (time(at)) " (" (ago(at)) "): " }
                    @if let Some(why) = &wf.failure { (why) }
                }
            }
            dt { "First step" } dd { (op_link(root, wf.root_id)) " · " a href=(format!("{root}operations?root={}", wf.root_id)) { "its operations in the list" } }
        }
        @if request.can_act && wf.state != WorkflowState::Succeeded {
            h2 { "Act on the workflow" }
            p.muted { "Each action shows what it will change first, and changes nothing until confirmed." }
            @if wf.failed_at.is_none() {
                form.act #cancel-workflow method="post" action=(format!("{root}workflows/{}/confirm", wf.id)) {
                    (csrf(request))
                    input type="hidden" name="action" value="cancel";
                    fieldset.choice {
                        legend { "What succeeded" }
                        label.inline { input type="radio" name="compensate" value="yes" required; " compensate it" }
                        label.inline { input type="radio" name="compensate" value="no" required; " leave it done" }
                    }
                    label { "Reason" input name="reason" required placeholder="why (recorded)"; }
                    button type="submit" { "Cancel workflow…" }
                }
            }
            form.act #retry-workflow method="post" action=(format!("{root}workflows/{}/confirm", wf.id)) {
                (csrf(request))
                input type="hidden" name="action" value="retry";
                label { "Reason" input name="reason" required placeholder="why (recorded)"; }
                button type="submit" { "Retry workflow…" }
            }
        }
        h2 { "Graph" }
        p.legend.muted { "Each step links to its operation; a dashed edge is a " code { "Settled" } " dependency (the step runs whatever way it ends); a dashed box marked ↩ is a compensation. Hover a step for its attempts, result and last error." }
        (graph::svg(root, steps, &layout_))
        h2 { "Steps (" (steps.len()) ")" }
        div.scroll { table #steps {
            thead { tr { th { "Id" } th { "Name" } th.num { "Layer" } th { "State" } th.num { "Attempts" } th { "Result" } th { "Waits for" } th { "Last error" } } }
            tbody {
                @for (i, step) in steps.iter().enumerate().take(steps_shown) {
                    tr data-id=(step.id) data-state=(step.status.as_str()) {
                        td { (op_link(root, step.id)) }
                        td { (step.name) (compensates(root, step)) }
                        td.num { (layout_.layer_of[i] + 1) }
                        td { (state(step.status)) }
                        td.num { (step.attempts) }
                        td { @if let Some(r) = step.result_summary(80) { code { (r) } } }
                        td { (depends_on(root, step, 10)) }
                        td { @if let Some(e) = &step.last_error { (truncate(e, 160)) } }
                    }
                }
            }
        } }
        @if steps.len() > steps_shown {
            p.muted { "Only the first " (steps_shown) " steps are listed: "
                a href=(format!("{root}operations?root={}", wf.root_id)) { "list them all" } }
        }
        h2 { "Operator actions on the workflow (" (actions.len()) ")" }
        @if actions.is_empty() { p.muted { "None." } } @else {
            div.scroll { table #workflow-actions {
                thead { tr { th { "When" } th { "Action" } th { "Outcome" } th { "Actor" } th { "Reason" } th { "From" } th { "To" } } }
                tbody { @for a in actions {
                    tr {
                        td { (time(a.created_at)) }
                        td { (a.action) }
                        td { (a.outcome) }
                        td { (a.actor) }
                        td { (a.reason) }
                        td { (workflow_state(a.from_state)) }
                        td { @if let Some(t) = a.to_state { (workflow_state(t)) } }
                    }
                } }
            } }
            p.muted { "Each step an action changed has its own row on its operation's page." }
        }
    };
    layout(
        root,
        &request.home,
        &format!("Workflow {}", wf.id),
        Nav::Workflows,
        &body,
        request.account(),
    )
}

/// The steps of one part of a plan, under a heading (the first `shown`).
fn planned(root: &str, id: &str, title: &str, steps: &[PlannedStep], shown: usize) -> Markup {
    html! {
        @if !steps.is_empty() {
            h2 { (title) " (" (steps.len()) ")" }
            div.scroll { table id=(id) {
                thead { tr { th { "Id" } th { "Name" } th { "State now" } } }
                tbody { @for s in steps.iter().take(shown) {
                    tr data-id=(s.id) { td { (op_link(root, s.id)) } td { (s.name) } td { (state(s.status)) } }
                } }
            } }
            @if steps.len() > shown { p.muted { "and " (steps.len() - shown) " more, not listed." } }
        }
    }
}

/// The confirmation of an action on a workflow: what it changes, or why
/// it does not apply; the form that applies it.
pub(super) fn workflow_confirm(
    request: &Request,
    plan: &WorkflowPlan,
    reason: &str,
    warning: Option<&str>,
    shown: usize,
) -> Markup {
    let root = &request.root;
    let id = plan.workflow;
    let (what, compensate) = match plan.action {
        WorkflowAction::Cancel { compensate: true } => {
            ("cancel, compensating what succeeded", Some("yes"))
        }
        WorkflowAction::Cancel { compensate: false } => {
            ("cancel, compensating nothing", Some("no"))
        }
        WorkflowAction::Retry => ("retry", None),
    };
    let nothing = plan.cancel.is_empty()
        && plan.compensate.is_empty()
        && plan.retry.is_empty()
        && plan.drop_compensations.is_empty();
    let body = html! {
        h1 { "Confirm: " (what) " — workflow " (id) }
        @if let Some(w) = warning { p.warn role="alert" #changed { (w) } }
        p { "Workflow " (workflow_link(root, id)) " is " (workflow_state(plan.state)) "." }
        @if let Some(why) = &plan.refused {
            p.error role="alert" #refusal { "Refused: " (why) }
        } @else {
            p #plan-summary { "This will " strong { (plan.action.name()) } " workflow " (id) ", recorded as " code { (reason) } ":" }
            @if nothing { p.muted { "It changes no step." } }
            (planned(root, "plan-cancel", "Steps cancelled: they have not started", &plan.cancel, shown))
            (planned(root, "plan-compensate", "Steps compensated: they succeeded, their compensations are published", &plan.compensate, shown))
            (planned(root, "plan-retry", "Steps run again", &plan.retry, shown))
            (planned(root, "plan-drop", "Compensations cancelled: they have not started", &plan.drop_compensations, shown))
            p.muted { "If the workflow changes before you confirm, nothing is done and the new plan is shown to confirm instead." }
            form.act #confirm method="post" action=(format!("{root}workflows/{id}/act")) {
                (csrf(request))
                input type="hidden" name="action" value=(plan.action.name());
                @if let Some(c) = compensate { input type="hidden" name="compensate" value=(c); }
                input type="hidden" name="reason" value=(reason);
                input type="hidden" name="plan" value=(super::plan_key(plan));
                button type="submit" { @if compensate.is_some() { "Cancel workflow " (id) } @else { "Retry workflow " (id) } }
            }
        }
        p { a href=(format!("{root}workflows/{id}")) { "Back to the workflow" } }
    };
    layout(
        root,
        &request.home,
        "Confirm",
        Nav::Workflows,
        &body,
        request.account(),
    )
}

/// On a step's operation page: its workflow and what it waits for.
fn step_facts(root: &str, step: &WorkflowStep, shown: usize) -> Markup {
    html! {
        dt { "Workflow" } dd #workflow {
            (workflow_link(root, step.workflow_id)) " " (step.workflow_name) " " (workflow_state(step.workflow_state))
        }
        dt { "Waits for" } dd #waits-for {
            @if step.dependencies.is_empty() {
                span.muted { "nothing: it has no dependency" }
            } @else {
                @if let Some(n) = step.waiting_for {
                    strong { (n) " of " (step.dependencies.len()) " not yet met" } br;
                }
                @for dep in step.dependencies.iter().take(shown) {
                    span.dep {
                        (op_link(root, dep.id)) " "
                        @if let Some(name) = &dep.name { (name) " " }
                        @match dep.status { Some(s) => (state(s)), None => span.muted { "purged" } }
                        @if !dep.required { span.muted { " (settled: runs whatever way it ends)" } }
                    }
                    br;
                }
                @if step.dependencies.len() > shown {
                    span.muted { "and " (step.dependencies.len() - shown) " more: "
                        a href=(format!("{root}workflows/{}", step.workflow_id)) { "see the workflow" } }
                }
            }
        }
    }
}
