//! The benchmark program of pgoutbox.
//!
//! Run it with `cargo run --release -p pgoutbox-bench -- all` (or one of
//! `w1`, `w1-idem`, `w1-tx`, `w2`, `w3`, `w4`, `w5`, `w6`, `w7`, `dashboard`; `--json` for machine-readable output).
//! W6 (the relay to NATS JetStream) needs `nats-server`, which it starts
//! itself; `all` leaves it out, saying so, where it is not installed.
//! It starts a private PostgreSQL (or, with `DATABASE_URL`, uses a server
//! as it is configured), creates a fresh database per run, and measures
//! every workload beside a *baseline*: the minimal raw SQL the workload
//! must execute, through sqlx, in the same run and on the same server.
//! Figures are reported as ratios to that baseline, because the machines
//! are shared and noisy; results are appended to a history file.
//!
//! Every workload runs twice on its private server: at PostgreSQL's
//! default durability (`fsync`, `full_page_writes`, `synchronous_commit`
//! on), the headline, and with `fsync = off`, the second column; both sides
//! of a ratio always at the same durability.

mod relay;
mod workloads;

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use workloads::Durability;

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
    /// Which durability columns (a server named by `DATABASE_URL` is
    /// measured as it is, once).
    #[arg(long, value_enum, default_value = "both")]
    durability: Columns,
    /// The history file results are appended to (JSON lines).
    #[arg(long, default_value = "target/bench-history.jsonl")]
    history: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Columns {
    Both,
    Production,
    FsyncOff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    All,
    W1,
    /// Only W1-idem's lines (and their claim-100 baseline).
    W1Idem,
    W1Tx,
    W2,
    W3,
    W4,
    W5,
    /// The relay to NATS JetStream.
    W6,
    /// Workflows: 2,000 diamonds against 8,000 independent operations,
    /// and a 1,000-way fan-in's release.
    W7,
    /// The dashboard's pages on 1,000,000 operations.
    Dashboard,
}

/// One measured figure beside its baseline.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Figure {
    workload: String,
    /// The server's durability when it was measured.
    durability: &'static str,
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
            durability: "",
            unit,
            higher_is_better,
            target: format!("≥ {target_ratio}×"),
            met: ratio >= target_ratio,
            pgoutbox,
            baseline,
            ratio,
        }
    }

    /// A ratio reported for reference, with no target (what a raw baseline
    /// costs beside another, say).
    pub(crate) fn reference(
        workload: &str,
        unit: &'static str,
        values: Vec<f64>,
        reference: Vec<f64>,
    ) -> Self {
        let mut figure = Figure::new(workload, unit, true, values, reference, 0.0);
        "—".clone_into(&mut figure.target);
        figure
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
            durability: "",
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
    let which = [
        Which::W1,
        Which::W1Idem,
        Which::W1Tx,
        Which::W2,
        Which::W3,
        Which::W4,
        Which::W5,
        Which::W6,
        Which::W7,
        Which::Dashboard,
    ];
    let w6_available = relay::available();
    if args.which == Which::All && !w6_available {
        eprintln!("W6 left out: it needs `nats-server` (apt-get install nats-server)");
    }
    let w = |x| w(x) && (x != Which::W6 || args.which == Which::W6 || w6_available);
    let cluster = workloads::server().await?;
    let columns: Vec<Option<Durability>> = match (&cluster, args.durability) {
        (None, _) => vec![None],
        (Some(_), Columns::Both) => vec![Some(Durability::Production), Some(Durability::FsyncOff)],
        (Some(_), Columns::Production) => vec![Some(Durability::Production)],
        (Some(_), Columns::FsyncOff) => vec![Some(Durability::FsyncOff)],
    };
    let steps = which.iter().filter(|x| w(**x)).count() * columns.len();
    let bar = indicatif::ProgressBar::new(steps as u64);
    let mut figures = Vec::new();
    let mut environments = Vec::new();
    for durability in &columns {
        let label = durability.map_or("as configured", Durability::label);
        if let Some(d) = durability {
            workloads::set_durability(*d).await?;
        }
        environments.push(format!("{label}: {}", workloads::environment().await?));
        for x in which.into_iter().filter(|x| w(*x)) {
            bar.set_message(format!("{x:?} ({label})"));
            let mut measured = match x {
                Which::W1 => workloads::w1(args.runs).await?,
                Which::W1Idem => workloads::w1_idem(args.runs).await?,
                Which::W1Tx => workloads::w1_tx(args.runs).await?,
                Which::W2 => workloads::w2(args.runs).await?,
                Which::W3 => workloads::w3(args.runs).await?,
                Which::W4 => workloads::w4(args.runs).await?,
                Which::W5 => workloads::w5(args.runs).await?,
                Which::W6 => relay::w6(args.runs).await?,
                Which::W7 => workloads::w7(args.runs).await?,
                Which::Dashboard => workloads::dashboard(args.runs).await?,
                Which::All => unreachable!("not a workload"),
            };
            for figure in &mut measured {
                figure.durability = label;
            }
            figures.extend(measured);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    drop(cluster);
    let report = serde_json::json!({
        "at": chrono::Utc::now().to_rfc3339(),
        "environment": environments,
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
    for environment in &environments {
        println!("{environment}");
    }
    print_table(&figures);
    println!("(results appended to {})", args.history.display());
    Ok(())
}

/// One row per workload: the first durability's figures in full, each
/// other durability's ratio and verdict beside them.
fn print_table(figures: &[Figure]) {
    let mut durabilities: Vec<&str> = Vec::new();
    for f in figures {
        if !durabilities.contains(&f.durability) {
            durabilities.push(f.durability);
        }
    }
    let Some((first, others)) = durabilities.split_first() else {
        return;
    };
    print!(
        "{:<46} {:>24} {:>24} {:>7} {:>10} met",
        format!("workload [{first}]"),
        "pgoutbox median [range]",
        "baseline median [range]",
        "ratio",
        "target"
    );
    for other in others {
        print!(" | {other:>10} met");
    }
    println!();
    for f in figures.iter().filter(|f| f.durability == *first) {
        print!(
            "{:<46} {:>24} {:>24} {:>6.2}× {:>10} {:>3}",
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
            verdict(f)
        );
        for other in others {
            match figures
                .iter()
                .find(|o| o.durability == *other && o.workload == f.workload)
            {
                Some(o) => print!(" | {:>9.2}× {:>3}", o.ratio, verdict(o)),
                None => print!(" | {:>10} {:>3}", "", ""),
            }
        }
        println!();
    }
}

fn verdict(f: &Figure) -> &'static str {
    match (f.target.as_str(), f.met) {
        ("—", _) => "",
        (_, true) => "yes",
        (_, false) => "NO",
    }
}
