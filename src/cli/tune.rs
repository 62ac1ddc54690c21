//! `nix-ledger tune`: its options and the call into `tune`.

use anyhow::Result;

use nix_ledger::paths::Layout;
use nix_ledger::tune::grid::Candidate;
use nix_ledger::why;

use super::{open_and_ingest, pairs, print_json, print_text};

/// `nix-ledger tune`: what to simulate, on which machine.
#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    /// Tune on what building this would build: a .drv, an output path, a .nix file
    /// (with -A) or a flake reference. Default: the last --sessions sessions.
    target: Option<String>,
    /// The attribute of a .nix TARGET to instantiate.
    #[arg(short = 'A', long = "attr")]
    attr: Option<String>,
    /// An argument of a .nix TARGET's function, as a Nix expression (repeatable).
    #[arg(long = "arg", num_args = 2, value_names = ["NAME", "EXPR"], action = clap::ArgAction::Append)]
    arg: Vec<String>,
    /// An argument of a .nix TARGET's function, as a string (repeatable).
    #[arg(long = "argstr", num_args = 2, value_names = ["NAME", "STRING"], action = clap::ArgAction::Append)]
    argstr: Vec<String>,
    /// Without a TARGET: tune on the last N sessions that built something.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "target")]
    sessions: u32,
    /// Tune for a machine with this many cores (default: this one's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    host_cores: Option<u32>,
    /// Tune for this much memory (512M, 16G…), e.g. a memory cap or another machine's RAM.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Also predict this setting, MAX_JOBS:CORES (repeatable), e.g. one tuned by hand.
    #[arg(long, value_name = "MAX_JOBS:CORES", value_parser = parse_setting, action = clap::ArgAction::Append)]
    compare: Vec<Candidate>,
    /// Cores other work keeps busy while Nix builds (a shared machine): simulated as taken.
    #[arg(long, value_name = "CORES")]
    outside_load: Option<f64>,
    /// Remote builders to tune for, as nix.conf's `builders` (machines separated by `;`,
    /// or @FILE), instead of Nix's own; "" for none.
    #[arg(long, value_name = "SPEC")]
    builders: Option<String>,
    /// Tune another fleet machine on its sessions and builds, as `nb sync` pulled them
    /// (its cores, memory and setting as its last session recorded them).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["target", "builders"])]
    machine: Option<String>,
    /// Print JSON: recommended, current, candidates and the rest of the report.
    #[arg(long)]
    json: bool,
}

/// A size on the command line (`16G`), as `size::parse_size` reads it.
fn parse_size(value: &str) -> std::result::Result<u64, String> {
    nix_ledger::size::parse_size(value).map_err(|e| e.to_string())
}

/// `MAX_JOBS:CORES`, e.g. `4:8`.
fn parse_setting(value: &str) -> std::result::Result<Candidate, String> {
    let bad = || format!("{value}: not MAX_JOBS:CORES (e.g. 4:8)");
    let (jobs, cores) = value.split_once(':').ok_or_else(bad)?;
    let max_jobs: u32 = jobs.trim().parse().map_err(|_| bad())?;
    let cores: u32 = cores.trim().parse().map_err(|_| bad())?;
    if max_jobs == 0 {
        return Err(format!("{value}: max-jobs 0 builds nothing here"));
    }
    Ok(Candidate { max_jobs, cores })
}

/// Runs the sweep `a` asks for and prints its report.
pub fn tune(layout: &Layout, a: TuneArgs) -> Result<()> {
    let ledger = open_and_ingest(layout)?;
    let settings = nix_ledger::nix::config::settings(&layout.state_dir);
    let request = nix_ledger::tune::Request {
        target: a.target,
        how: why::resolve::Instantiation {
            attr: a.attr,
            args: pairs(a.arg),
            argstrs: pairs(a.argstr),
        },
        sessions: a.sessions as usize,
        host_cores: a.host_cores,
        memory_bytes: a.memory,
        compare: a.compare,
        outside_load: a.outside_load,
        builders: a.builders,
        machine: a.machine,
    };
    let report = nix_ledger::tune::tune(&ledger, &settings, &request)?;
    if a.json {
        print_json(&report)?;
    } else {
        print_text(&nix_ledger::tune::render::report(&report))?;
    }
    Ok(())
}
