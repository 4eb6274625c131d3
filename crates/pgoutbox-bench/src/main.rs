//! The benchmark program of pgoutbox.
//!
//! A placeholder until the workloads land (see the benchmark issue): it
//! says so and exits with a failure, so nobody mistakes it for a result.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("error: pgoutbox-bench has no workloads yet");
    ExitCode::FAILURE
}
