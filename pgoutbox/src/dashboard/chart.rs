//! The throughput chart: stacked bars per minute (succeeded, failed, lost),
//! drawn on the server as inline SVG, colours from the stylesheet.

use maud::{Markup, html};

use crate::admin::Throughput;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;

/// The chart of `minutes` (oldest first).
pub(super) fn throughput(minutes: &[Throughput]) -> Markup {
    let max = minutes
        .iter()
        .map(|m| m.succeeded + m.failed + m.lost)
        .max()
        .unwrap_or(0)
        .max(1);
    #[allow(clippy::cast_precision_loss)] // Counts per minute are far below 2^52.
    let scale = (HEIGHT - BOTTOM - TOP) / max as f64;
    #[allow(clippy::cast_precision_loss)]
    let slot = (WIDTH - LEFT - 4.0) / minutes.len().max(1) as f64;
    let base = HEIGHT - BOTTOM;
    let total: i64 = minutes.iter().map(|m| m.succeeded).sum();
    let failed: i64 = minutes.iter().map(|m| m.failed).sum();
    let lost: i64 = minutes.iter().map(|m| m.lost).sum();
    let label = format!(
        "Attempts per minute over the last {} minutes: {total} succeeded, {failed} failed, {lost} lost",
        minutes.len()
    );
    html! {
        svg.chart viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(label) {
            title { (label) }
            line.axis x1=(LEFT) y1=(base) x2=(WIDTH - 2.0) y2=(base) {}
            line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(base) {}
            text x=(LEFT - 4.0) y=(TOP + 10.0) text-anchor="end" { (max) }
            text x=(LEFT - 4.0) y=(base) text-anchor="end" { "0" }
            text x=(LEFT) y=(HEIGHT - 4.0) { (minutes.len()) " min ago" }
            text x=(WIDTH - 4.0) y=(HEIGHT - 4.0) text-anchor="end" { "now" }
            @for (i, m) in minutes.iter().enumerate() {
                @let x = LEFT + 1.0 + slot * f64::from(u32::try_from(i).unwrap_or(u32::MAX));
                @let w = (slot - 1.0).max(1.0);
                @let hs = to_f64(m.succeeded) * scale;
                @let hf = to_f64(m.failed) * scale;
                @let hl = to_f64(m.lost) * scale;
                g {
                    title {
                        (m.minute.format("%H:%M")) ": " (m.succeeded) " succeeded, "
                        (m.failed) " failed, " (m.lost) " lost"
                    }
                    @if m.succeeded > 0 {
                        rect.s x=(fmt(x)) y=(fmt(base - hs)) width=(fmt(w)) height=(fmt(hs)) {}
                    }
                    @if m.failed > 0 {
                        rect.f x=(fmt(x)) y=(fmt(base - hs - hf)) width=(fmt(w)) height=(fmt(hf)) {}
                    }
                    @if m.lost > 0 {
                        rect.l x=(fmt(x)) y=(fmt(base - hs - hf - hl)) width=(fmt(w)) height=(fmt(hl)) {}
                    }
                }
            }
        }
        p.legend {
            span.s #succeeded-last-hour { "■ succeeded " (total) }
            span.f { "■ failed " (failed) }
            span.l { "■ lost " (lost) }
        }
    }
}

#[allow(clippy::cast_precision_loss)] // Counts per minute are far below 2^52.
fn to_f64(n: i64) -> f64 {
    n as f64
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}
