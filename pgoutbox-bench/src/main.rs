//! The benchmark program of pgoutbox.
//!
//! Run it with `cargo run --release -p pgoutbox-bench -- all` (or one of
//! `w1`, `w1-tx`, `w2`, `w3`, `w4`, `w5`; `--json` for machine-readable output).
//! It starts (or, with `DATABASE_URL`, uses) a PostgreSQL, creates a fresh
//! database per run, and measures every workload beside a *baseline*: the
//! minimal raw SQL the workload must execute, through sqlx, in the same run.
//! Figures are reported as ratios to that baseline, because the machines
//! are shared and noisy; results are appended to a history file.

mod workloads;

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Measure pgoutbox against the raw SQL it must run.
#[derive(Debug, Parser)]
#[command(name = "pgoutbox-bench", about)]
struct Args {
    /// Which workloads.
    #[arg(value_enum, default_value = "all")]
    which: Which,
    /// Runs per workload (the median is reported, with the range).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The history file results are appended to (JSON lines).
    #[arg(long, default_value = "target/bench-history.jsonl")]
    history: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    All,
    W1,
    W1Tx,
    W2,
    W3,
    W4,
    W5,
}

/// One measured figure beside its baseline.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Figure {
    workload: String,
    unit: &'static str,
    /// Higher is better for throughput; for latency the ratio is inverted.
    higher_is_better: bool,
    pgoutbox: Summary,
    baseline: Summary,
    ratio: f64,
    target: String,
    met: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

pub(crate) fn summarize(mut values: Vec<f64>) -> Summary {
    values.sort_by(f64::total_cmp);
    Summary {
        median: values[values.len() / 2],
        min: values[0],
        max: values[values.len() - 1],
    }
}

impl Figure {
    pub(crate) fn new(
        workload: &str,
        unit: &'static str,
        higher_is_better: bool,
        pgoutbox: Vec<f64>,
        baseline: Vec<f64>,
        target_ratio: f64,
    ) -> Self {
        let (pgoutbox, baseline) = (summarize(pgoutbox), summarize(baseline));
        let ratio = if higher_is_better {
            pgoutbox.median / baseline.median
        } else {
            baseline.median / pgoutbox.median
        };
        Figure {
            workload: workload.to_owned(),
            unit,
            higher_is_better,
            target: format!("≥ {target_ratio}×"),
            met: ratio >= target_ratio,
            pgoutbox,
            baseline,
            ratio,
        }
    }

    /// A figure checked against an absolute bound (latency targets).
    pub(crate) fn absolute(
        workload: &str,
        unit: &'static str,
        values: Vec<f64>,
        reference: Vec<f64>,
        bound: f64,
    ) -> Self {
        let (pgoutbox, baseline) = (summarize(values), summarize(reference));
        Figure {
            workload: workload.to_owned(),
            unit,
            higher_is_better: false,
            ratio: pgoutbox.median / baseline.median,
            target: format!("< {bound} {unit}"),
            met: pgoutbox.median < bound,
            pgoutbox,
            baseline,
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let w = |x| args.which == Which::All || args.which == x;
    let steps = [
        w(Which::W1),
        w(Which::W1Tx),
        w(Which::W2),
        w(Which::W3),
        w(Which::W4),
        w(Which::W5),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    let bar = indicatif::ProgressBar::new(steps as u64);
    let env = workloads::environment().await?;
    let mut figures = Vec::new();
    if w(Which::W1) {
        bar.set_message("W1 drain");
        figures.extend(workloads::w1(args.runs, false).await?);
        bar.inc(1);
    }
    if w(Which::W1Tx) {
        bar.set_message("W1-tx drain");
        figures.extend(workloads::w1(args.runs, true).await?);
        bar.inc(1);
    }
    if w(Which::W2) {
        bar.set_message("W2 publish");
        figures.extend(workloads::w2(args.runs).await?);
        bar.inc(1);
    }
    if w(Which::W3) {
        bar.set_message("W3 pickup latency");
        figures.extend(workloads::w3(args.runs).await?);
        bar.inc(1);
    }
    if w(Which::W4) {
        bar.set_message("W4 growth");
        figures.extend(workloads::w4(args.runs).await?);
        bar.inc(1);
    }
    if w(Which::W5) {
        bar.set_message("W5 other backlog");
        figures.extend(workloads::w5(args.runs).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = serde_json::json!({
        "at": chrono::Utc::now().to_rfc3339(),
        "environment": env,
        "runs": args.runs,
        "figures": figures,
    });
    if let Some(dir) = args.history.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut history = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.history)?;
    writeln!(history, "{report}")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{env}");
    println!(
        "{:<28} {:>24} {:>24} {:>7} {:>10} met",
        "workload", "pgoutbox median [range]", "baseline median [range]", "ratio", "target"
    );
    for f in &figures {
        println!(
            "{:<28} {:>24} {:>24} {:>6.2}× {:>10} {}",
            format!("{} ({})", f.workload, f.unit),
            format!(
                "{:.1} [{:.1}–{:.1}]",
                f.pgoutbox.median, f.pgoutbox.min, f.pgoutbox.max
            ),
            format!(
                "{:.1} [{:.1}–{:.1}]",
                f.baseline.median, f.baseline.min, f.baseline.max
            ),
            f.ratio,
            f.target,
            if f.met { "yes" } else { "NO" }
        );
    }
    println!("(results appended to {})", args.history.display());
    Ok(())
}
