//! Command-line definitions (clap) and dispatch to the library's features.

mod gc;
mod output;
mod shell;
mod tune;

use output::{exit_code, print_json, print_text};
use shell::{asks_for_help, build_help, completions, man};

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use nix_ledger::ledger::{enrich, ingest, Ledger};
use nix_ledger::paths::Layout;
use nix_ledger::report::{self, HistoryFilter};
use nix_ledger::switch;
use nix_ledger::trends;
use nix_ledger::why;

/// Records every Nix build: timing, memory, why it rebuilt, what to keep.
#[derive(Debug, Parser)]
#[command(name = "nix-ledger", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// `nix build ARGS…` with live progress, recorded in the ledger (exit status is Nix's).
    #[command(disable_help_flag = true)]
    Build {
        /// Passed to `nix build` unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
    /// Build the NixOS/nix-darwin system (recorded) and switch to it, as nixos-rebuild does.
    Switch(SystemArgs),
    /// Build the system and make it the boot default (NixOS).
    Boot(SystemArgs),
    /// Build the system and activate it without making it the boot default (NixOS).
    Test(SystemArgs),
    /// Build the system only (./result), recorded.
    BuildSystem(SystemArgs),
    /// Recent builds, newest first (the last 50 unless told otherwise).
    History {
        /// At most this many builds.
        #[arg(long, short = 'n', default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "all")]
        limit: u32,
        /// Every build, however many.
        #[arg(long)]
        all: bool,
        /// Only derivations whose name contains this (case-insensitive).
        #[arg(long, value_parser = non_empty)]
        name: Option<String>,
        /// Only builds that ran on MACHINE: a remote builder (its host or store URI) or a
        /// fleet machine (its name, see `nix-ledger sync`).
        #[arg(long)]
        machine: Option<String>,
        /// Print JSON (an array of builds).
        #[arg(long)]
        json: bool,
    },
    /// Per builder (this machine and each remote builder): builds, time, transfer
    /// overhead and speed relative to this machine.
    Builders {
        /// Only builds in this period before now (7d, 24h, 90m, "2 weeks").
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// All that is known of one .drv or output path.
    Show {
        /// A /nix/store/…drv or an output path.
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// Read-only SQL over the ledger (see docs/schema.md).
    Query {
        /// One SELECT (or other read-only) statement.
        sql: String,
        /// Print JSON (an array of objects keyed by column).
        #[arg(long)]
        json: bool,
    },
    /// Move new hook records from the spools into the ledger (every command does this first).
    Ingest {
        #[arg(long)]
        json: bool,
    },
    /// Why TARGET rebuilt: the root causes against an earlier build (see docs/why.md).
    Why {
        /// A .drv, an output path, a .nix file (with -A) or a flake reference.
        target: String,
        /// The attribute of a .nix TARGET to instantiate.
        #[arg(short = 'A', long = "attr")]
        attr: Option<String>,
        /// An argument of a .nix TARGET's function, as a Nix expression (repeatable).
        #[arg(long = "arg", num_args = 2, value_names = ["NAME", "EXPR"], action = clap::ArgAction::Append)]
        arg: Vec<String>,
        /// An argument of a .nix TARGET's function, as a string (repeatable).
        #[arg(long = "argstr", num_args = 2, value_names = ["NAME", "STRING"], action = clap::ArgAction::Append)]
        argstr: Vec<String>,
        /// Compare with this .drv or output path instead of the closest earlier recorded
        /// build of a different derivation of the same name.
        #[arg(long)]
        against: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// max-jobs and cores for this machine (or another), from the recorded builds.
    Tune(tune::TuneArgs),
    /// Avoidable and no-op rebuilds, and the time they wasted.
    Rebuilds {
        /// Only rebuilds in this period before now (7d, 24h, 90m, "2 weeks").
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Shell completions for nix-ledger and its alias nb (source them, or install them).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
        /// Only for this command name (e.g. `nb`), as a file to install; default: both.
        #[arg(long)]
        name: Option<String>,
    },
    /// The man page (roff), or with --dir every page, one per command, written there.
    Man {
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Push this ledger's sessions and builds to a fleet hub on PostgreSQL and pull the
    /// other machines' (docs/sync.md). Exit code 4: the hub could not be reached or refused.
    Sync {
        /// The hub: postgres://USER@HOST:PORT/DB?sslmode=… or "host=… dbname=…"; default:
        /// NIX_LEDGER_SYNC_URL, else libpq's PG* variables. Passwords are never printed.
        #[arg(env = "NIX_LEDGER_SYNC_URL", hide_env_values = true)]
        url: Option<String>,
        /// A file whose first line is the password (else the URL's, PGPASSWORD, ~/.pgpass).
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
        /// Also push and pull the .drv snapshots and manifests `why` needs.
        #[arg(long)]
        with_why: bool,
        /// Seconds any one statement or batch may take.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// Build time, peak memory and output size of each derivation name over time, and
    /// their regressions (see docs/trends.md).
    Trends {
        /// Series (a derivation name without its version, e.g. `hello`) or derivation
        /// names (`hello-2.12`); default: every series built in the period.
        names: Vec<String>,
        /// Only series built in this period before now (7d, 24h, "2 weeks"); their
        /// statistics are over it. Default: all history.
        #[arg(long)]
        since: Option<String>,
        /// Only the series built in this session: `latest`, or a session id.
        #[arg(long)]
        session: Option<String>,
        /// Exit with status 5 when a regression is found (for CI).
        #[arg(long)]
        fail_on_regression: bool,
        /// Another fleet machine's builds, as pulled by `nb sync` (default: this machine's).
        #[arg(long, value_name = "NAME", conflicts_with = "session")]
        machine: Option<String>,
        /// List every series (default: the 25 that took the most build time).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// One report of a period: regressions, the slowest derivations, sessions over time
    /// (evaluation time, cache hit ratio), time lost to wasted rebuilds.
    Report {
        /// The period before now (7d, 24h, 90m, "2 weeks").
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        /// Write the report to FILE instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// Another fleet machine's report, from what `nb sync` pulled of it (its builds,
        /// sessions and tuning; its rebuilds, builders and GC runs stay on it).
        #[arg(long, value_name = "NAME")]
        machine: Option<String>,
    },
    /// Check the installation: nix, the hook, the spools, the ledger, lost records.
    Doctor {
        /// Also mark sessions left `running` by a wrapper that died as interrupted.
        #[arg(long)]
        fix: bool,
        #[arg(long)]
        json: bool,
    },
    /// The store at a glance: size, roots and what each keeps, live and dead paths (as
    /// Nix's GC sees them), and what each retention policy would free and cost.
    Store {
        #[arg(long)]
        json: bool,
        /// With --json: list every live and dead path.
        #[arg(long)]
        paths: bool,
        /// Print the live or dead paths, one per line (as nix-store --gc --print-live
        /// and --print-dead, without their side effects).
        #[arg(long, value_enum, conflicts_with = "json")]
        list: Option<gc::Which>,
        /// Also price this policy (the gc flags).
        #[command(flatten)]
        policy: gc::PolicyFlags,
    },
    /// Garbage collection that keeps what is costly to get back: deletes dead builds
    /// (whole builds, through nix-store --delete), cheapest to get back per byte first.
    Gc(gc::GcFlags),
    /// The periodic job (run as root): ingest the system spool into the system's ledger,
    /// rotate the spool, and apply the retention policy when it is due.
    Maintain(gc::MaintainFlags),
}

/// How `report` is written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Text,
    /// GitHub-flavoured Markdown (fits `$GITHUB_STEP_SUMMARY`).
    Markdown,
    /// One self-contained page with charts.
    Html,
    Json,
}

/// Pairs of values of an option that takes two (`--arg NAME EXPR`).
fn pairs(flat: Vec<String>) -> Vec<(String, String)> {
    flat.chunks(2)
        .filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone())))
        .collect()
}

/// The options `switch`, `boot`, `test` and `build-system` share.
#[derive(Debug, clap::Args)]
struct SystemArgs {
    /// The flake, `REF` or `REF#NAME` (default NAME: the hostname).
    #[arg(long)]
    flake: Option<String>,
    /// Build, then print the activation commands instead of running them.
    #[arg(long)]
    dry_run: bool,
    /// Treat this machine as NixOS (default: detected).
    #[arg(long, conflicts_with = "darwin")]
    nixos: bool,
    /// Treat this machine as nix-darwin (default: detected).
    #[arg(long)]
    darwin: bool,
    /// Use the profile /nix/var/nix/profiles/system-profiles/NAME.
    #[arg(long, short = 'p')]
    profile_name: Option<String>,
    /// Extra arguments for `nix build`, after `--`.
    #[arg(last = true)]
    build_args: Vec<std::ffi::OsString>,
}

fn run_system(layout: &Layout, action: switch::Action, a: SystemArgs) -> Result<ExitCode> {
    let platform = match (a.nixos, a.darwin) {
        (true, _) => Some(switch::Platform::NixOs),
        (_, true) => Some(switch::Platform::Darwin),
        _ => None,
    };
    let outcome = switch::run(
        layout,
        &switch::SwitchRequest {
            action,
            flake: a.flake,
            platform,
            dry_run: a.dry_run,
            profile_name: a.profile_name,
            build_args: a.build_args,
        },
    )?;
    eprint!("{}", outcome.build.summary.render());
    print_rebuild_causes(&outcome.build.rebuild_causes);
    if a.dry_run {
        let mut text = String::new();
        for cmd in &outcome.commands {
            text.push_str(&switch::shell_words(cmd));
            text.push('\n');
        }
        print_text(&text)?;
    }
    if let Some(cmd) = &outcome.failed_command {
        eprintln!("nix-ledger: activation failed: {cmd}");
    }
    Ok(exit_code(outcome.exit_code))
}

/// After a build: why what was built before rebuilt, on one screen. The build itself is
/// over and recorded, so a failure here is a warning, never the command's outcome.
fn print_rebuild_causes(causes: &nix_ledger::Result<Option<String>>) {
    match causes {
        Ok(Some(text)) => eprint!("{text}"),
        Ok(None) => {}
        Err(e) => eprintln!("nix-ledger: warning: cannot tell why things rebuilt: {e}"),
    }
}

/// Parses the command line and runs it.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell, name } => return completions(shell, name.as_deref()),
        Command::Man { dir } => return man(dir.as_deref()),
        _ => {}
    }
    let layout = Layout::from_env()?;
    match cli.command {
        // Handled above: they read no ledger.
        Command::Completions { .. } | Command::Man { .. } => {}
        Command::Build { args } => {
            if asks_for_help(&args) {
                return build_help();
            }
            let outcome = nix_ledger::wrapper::run(
                &layout,
                &nix_ledger::wrapper::Request {
                    kind: nix_ledger::ledger::model::SessionKind::Build,
                    args,
                },
            )?;
            eprint!("{}", outcome.summary.render());
            print_rebuild_causes(&outcome.rebuild_causes);
            return Ok(exit_code(outcome.exit_code));
        }
        Command::Switch(a) => return run_system(&layout, switch::Action::Switch, a),
        Command::Boot(a) => return run_system(&layout, switch::Action::Boot, a),
        Command::Test(a) => return run_system(&layout, switch::Action::Test, a),
        Command::BuildSystem(a) => return run_system(&layout, switch::Action::BuildSystem, a),
        Command::History {
            limit,
            all,
            name,
            machine,
            json,
        } => {
            let ledger = open_and_ingest(&layout)?;
            // One more than shown, to tell whether there are more.
            let shown = (!all).then_some(limit);
            let filter = HistoryFilter {
                limit: shown.map(|n| n.saturating_add(1)),
                name,
                machine,
            };
            let mut builds = report::history(&ledger, &filter)?;
            let more = shown.is_some_and(|n| builds.len() > n as usize);
            builds.truncate(shown.map_or(builds.len(), |n| n as usize));
            if json {
                print_json(&builds)?;
            } else {
                let mut text = report::render_history(&builds, filter.name.as_deref());
                if more {
                    text.push_str(&format!(
                        "(the newest {limit} shown; --limit N or --all for more)\n"
                    ));
                }
                print_text(&text)?;
            }
        }
        Command::Builders { since, json } => {
            let since_ms = nix_ledger::time::since_ms(since.as_deref())?;
            let ledger = open_and_ingest(&layout)?;
            let listed = report::builders(&ledger, since_ms)?;
            if json {
                print_json(&listed)?;
            } else {
                print_text(&report::render_builders(&listed))?;
            }
        }
        Command::Show { path, json } => {
            let ledger = open_and_ingest(&layout)?;
            let shown = report::show(&ledger, &path)?;
            if json {
                print_json(&shown)?;
            } else {
                print_text(&report::render_show(&shown))?;
            }
        }
        Command::Query { sql, json } => {
            drop(open_and_ingest(&layout)?);
            let ledger = Ledger::open_read_only(&layout.ledger)?;
            let format = if json {
                report::query::Format::Json
            } else {
                report::query::Format::Text
            };
            let mut out = std::io::stdout().lock();
            match report::query::stream(&ledger, &sql, format, &mut out) {
                // `nix-ledger query … | head` closes the pipe early; that is not an error.
                Err(nix_ledger::Error::Write { source, .. })
                    if source.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
        }
        Command::Ingest { json } => {
            let mut ledger = Ledger::open(&layout.ledger)?;
            let mut done = ingest::ingest_all(&mut ledger, &layout.spools)?;
            done.enriched = enrich::enrich_pending(&mut ledger)?;
            if json {
                print_json(&done)?;
            } else {
                print_text(&format!(
                    "ingested: {} new, {} merged with wrapper records, {} already present, {} skipped; {} builds enriched\n",
                    done.recorded, done.merged, done.already_present, done.skipped, done.enriched
                ))?;
            }
        }
        Command::Why {
            target,
            attr,
            arg,
            argstr,
            against,
            json,
        } => {
            let ledger = open_and_ingest(&layout)?;
            let how = why::resolve::Instantiation {
                attr,
                args: pairs(arg),
                argstrs: pairs(argstr),
            };
            let new = why::resolve_target(&ledger, &target, &how)?;
            let old = against
                .map(|a| why::resolve_target(&ledger, &a, &Default::default()))
                .transpose()?;
            let answer = why::why(&ledger, &new, old.as_deref())?;
            if json {
                print_json(&answer)?;
            } else {
                print_text(&why::render::report(&answer))?;
            }
        }
        Command::Tune(a) => tune::tune(&layout, a)?,
        Command::Rebuilds { since, json } => {
            let since_ms = nix_ledger::time::since_ms(since.as_deref())?;
            let ledger = open_and_ingest(&layout)?;
            let listed = why::rebuilds::rebuilds(&ledger, since_ms)?;
            if json {
                print_json(&listed)?;
            } else {
                print_text(&why::render::rebuilds(&listed))?;
            }
        }
        Command::Store {
            json,
            paths,
            list,
            policy,
        } => return gc::store(&layout, json, paths, list, &policy),
        Command::Gc(flags) => return gc::gc(&layout, &flags),
        Command::Maintain(flags) => return gc::maintain(&flags),
        Command::Sync {
            url,
            password_file,
            with_why,
            timeout,
            json,
        } => {
            // Smaller batches only for tests that cut a sync off mid-way.
            let batch = std::env::var("NIX_LEDGER_SYNC_BATCH")
                .ok()
                .and_then(|b| b.parse().ok())
                .unwrap_or(nix_ledger::sync::BATCH);
            let request = nix_ledger::sync::SyncRequest {
                url,
                password_file,
                with_why,
                timeout: std::time::Duration::from_secs(timeout.max(1)),
                batch,
            };
            let report = nix_ledger::sync::sync(&layout, &request)?;
            if json {
                print_json(&report)?;
            } else {
                print_text(&nix_ledger::sync::render(&report))?;
            }
        }
        Command::Trends {
            names,
            since,
            session,
            fail_on_regression,
            machine,
            all,
            json,
        } => {
            let since_ms = nix_ledger::time::since_ms(since.as_deref())?;
            let ledger = open_and_ingest(&layout)?;
            let session = session.map(|s| resolve_session(&ledger, &s)).transpose()?;
            let request = trends::Request {
                names,
                since_ms,
                session,
                machine,
            };
            let found = trends::compute(&ledger, &request)?;
            if json {
                print_json(&found)?;
            } else {
                print_text(&trends::render::render(&found, all))?;
            }
            if fail_on_regression && !found.regressions.is_empty() {
                return Ok(exit_code(nix_ledger::exit::REGRESSION));
            }
        }
        Command::Report {
            since,
            format,
            output,
            machine,
        } => {
            let since_ms = nix_ledger::time::since_ms(Some(&since))?;
            let mut ledger = open_and_ingest(&layout)?;
            let request = report::full::Request {
                since_ms,
                period: format!("last {since}"),
                settings: nix_ledger::nix::config::settings(&layout.state_dir),
                machine,
            };
            let computed = report::full::compute(&mut ledger, &request)?;
            let text = match format {
                ReportFormat::Text => report::text::render(&computed),
                ReportFormat::Markdown => report::markdown::render(&computed),
                ReportFormat::Html => report::html::render(&computed)?,
                ReportFormat::Json => {
                    let mut json = serde_json::to_string_pretty(&computed)?;
                    json.push('\n');
                    json
                }
            };
            match output {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|source| nix_ledger::Error::Write { path, source })?,
                None => print_text(&text)?,
            }
        }
        Command::Doctor { fix, json } => {
            let checks = nix_ledger::doctor::run(&layout, fix);
            if json {
                print_json(&checks)?;
            } else {
                print_text(&nix_ledger::doctor::render(&checks))?;
            }
            if checks.has_failures() {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A command-line value that must not be empty.
fn non_empty(value: &str) -> std::result::Result<String, String> {
    if value.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(value.to_string())
    }
}

/// `--session latest` or `--session ID`: a session id.
fn resolve_session(ledger: &Ledger, given: &str) -> Result<i64> {
    if given == "latest" {
        return Ok(ledger
            .latest_session()?
            .ok_or_else(|| nix_ledger::Error::NotFound("a finished session".into()))?);
    }
    given.parse().map_err(|_| {
        nix_ledger::Error::Usage(format!(
            "{}: not a session (give `latest` or a session id)",
            nix_ledger::error::shorten(given)
        ))
        .into()
    })
}

/// Opens the ledger for a command that reads it, caught up with the spools; when it
/// cannot be, says why once and goes on with what the ledger holds.
fn open_and_ingest(layout: &Layout) -> Result<Ledger> {
    let caught_up = nix_ledger::ledger::open_caught_up(layout)?;
    if let Some(why) = caught_up.not_caught_up {
        eprintln!(
            "nix-ledger: warning: new records not ingested ({why}); showing what the ledger holds"
        );
    }
    Ok(caught_up.ledger)
}
