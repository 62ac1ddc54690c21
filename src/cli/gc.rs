//! `nix-ledger store`, `gc` and `maintain`: argument handling, the prompt, printing.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use nix_ledger::gc::execute::{self, ExecOptions};
use nix_ledger::gc::plan::{self, Plan};
use nix_ledger::gc::policy::{Policy, PolicyArgs};
use nix_ledger::gc::report::{self, StoreOptions};
use nix_ledger::gc::{render, snapshot::Snapshot};
use nix_ledger::maintenance;
use nix_ledger::nix::config;
use nix_ledger::paths::Layout;
use nix_ledger::time::now_ms;

use super::{open_and_ingest, print_json, print_text};

/// The retention policy's flags, shared by `store`, `gc` and `maintain`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PolicyFlags {
    /// Per profile, keep this many generations (the current one counts; newer ones
    /// after a rollback stay too), as `nh clean --keep`.
    #[arg(long, value_name = "N")]
    pub keep_generations: Option<u32>,
    /// Per profile, keep the generations made in this period (7d, 24h, "2 weeks").
    #[arg(long, value_name = "DURATION")]
    pub keep_since: Option<String>,
    /// Stop once this much is freed (40M, 2G), cheapest to get back per byte first.
    #[arg(long, value_name = "SIZE")]
    pub max_freed: Option<String>,
    /// Stop once the store's file system has this much free space.
    #[arg(long, value_name = "SIZE")]
    pub free_until: Option<String>,
    /// Never delete a build that no cache has and that took longer than this to build
    /// (or whose cost is unknown).
    #[arg(long, value_name = "DURATION")]
    pub keep_costlier_than: Option<String>,
}

impl PolicyFlags {
    pub fn policy(&self) -> Result<Policy> {
        Ok(Policy::from_args(&PolicyArgs {
            keep_generations: self.keep_generations,
            keep_since: self.keep_since.as_deref(),
            max_freed: self.max_freed.as_deref(),
            free_until: self.free_until.as_deref(),
            keep_costlier_than: self.keep_costlier_than.as_deref(),
        })?)
    }

    fn is_empty(&self) -> bool {
        self.keep_generations.is_none()
            && self.keep_since.is_none()
            && self.max_freed.is_none()
            && self.free_until.is_none()
            && self.keep_costlier_than.is_none()
    }
}

/// Which paths `store --list` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Which {
    Live,
    Dead,
}

/// `nix-ledger store`.
pub fn store(
    layout: &Layout,
    json: bool,
    paths: bool,
    list: Option<Which>,
    flags: &PolicyFlags,
) -> Result<ExitCode> {
    let mut ledger = open_and_ingest(layout)?;
    execute::reconcile(&mut ledger)?;
    let settings = config::settings(&layout.state_dir);
    let policy = if flags.is_empty() {
        None
    } else {
        Some(flags.policy()?)
    };
    let opts = StoreOptions {
        paths: paths || list.is_some(),
        policy,
    };
    let report = report::analyse(&mut ledger, &settings, &opts)?;
    match list {
        Some(which) => {
            let listed = match which {
                Which::Live => report.live.as_deref().unwrap_or_default(),
                Which::Dead => report.dead.as_deref().unwrap_or_default(),
            };
            let mut text = listed.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            print_text(&text)?;
        }
        None if json => print_json(&report)?,
        None => print_text(&render::store(&report))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// What `gc` is asked to do besides the policy.
#[derive(Debug, Clone, clap::Args)]
pub struct GcFlags {
    #[command(flatten)]
    pub policy: PolicyFlags,
    /// Print the plan (each build, its size, the cost to get it back, why it goes) and
    /// change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Carry out a plan printed earlier by `gc --dry-run --json` instead of planning.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["keep_generations", "keep_since", "max_freed", "free_until", "keep_costlier_than"])]
    pub plan: Option<std::path::PathBuf>,
    /// Do not ask (needed when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Paths per `nix-store --delete`; each batch is recorded as it completes.
    #[arg(long, value_name = "N", default_value_t = execute::DEFAULT_BATCH_PATHS)]
    pub batch_paths: usize,
    #[arg(long)]
    pub json: bool,
}

/// `nix-ledger gc`.
pub fn gc(layout: &Layout, flags: &GcFlags) -> Result<ExitCode> {
    let mut ledger = open_and_ingest(layout)?;
    execute::reconcile(&mut ledger)?;
    let settings = config::settings(&layout.state_dir);
    let plan: Plan = match &flags.plan {
        Some(file) => {
            let text =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let value: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("{}: not JSON", file.display()))?;
            // `gc --dry-run --json` wraps the plan; a bare plan is accepted too.
            let inner = value.get("plan").cloned().unwrap_or(value);
            serde_json::from_value(inner).with_context(|| {
                format!(
                    "{}: not a plan printed by nix-ledger gc --dry-run --json",
                    file.display()
                )
            })?
        }
        None => {
            let policy = flags.policy.policy()?;
            let snap = Snapshot::take(&settings)?;
            plan::plan(&mut ledger, &snap, &settings, &policy, true, now_ms())?
        }
    };
    if flags.dry_run {
        if flags.json {
            print_json(&serde_json::json!({
                "dry_run": true,
                "deleted": [],
                "deleted_paths": 0,
                "freed_bytes": 0,
                "cost_to_restore_ms": 0,
                "plan": plan,
            }))?;
        } else {
            print_text(&render::plan(&plan, true))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !flags.yes && (!plan.builds.is_empty() || !plan.generations.is_empty()) {
        if !std::io::stdin().is_terminal() {
            bail!(nix_ledger::Error::Usage(
                "nix-ledger gc deletes store paths: pass --yes when not on a terminal, or --dry-run to see the plan".into()
            ));
        }
        eprint!("{}", render::plan(&plan, false));
        eprint!("Go ahead? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing deleted");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let outcome = execute::execute(
        &mut ledger,
        &plan,
        &settings,
        &ExecOptions {
            batch_paths: flags.batch_paths,
            trigger: "command",
            // Even a plan read from a file goes straight to Nix, which refuses what has
            // become live since; nix-ledger then takes the roots again and goes on.
            revalidate: false,
        },
    )?;
    if flags.json {
        let mut value = serde_json::to_value(&outcome)?;
        if let Some(map) = value.as_object_mut() {
            map.insert("dry_run".into(), false.into());
            map.insert("plan".into(), serde_json::to_value(&plan)?);
        }
        print_json(&value)?;
    } else {
        print_text(&render::outcome(&outcome))?;
    }
    Ok(if outcome.status == "failed" {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `nix-ledger maintain`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct MaintainFlags {
    /// Rotate the system spool once it is this large.
    #[arg(long, value_name = "SIZE", default_value = "16M")]
    pub rotate_bytes: String,
    /// How many rotated spools to keep (a user's ledger that falls further behind loses
    /// records, and `doctor` says so).
    #[arg(long, value_name = "N", default_value_t = maintenance::DEFAULT_KEEP_ROTATED)]
    pub keep_rotated: usize,
    /// Apply a retention policy (the gc flags below).
    #[arg(long)]
    pub retention: bool,
    /// Apply it at most this often (it runs when the last one started this long ago).
    #[arg(long, value_name = "DURATION", default_value = "1d")]
    pub retention_every: String,
    #[command(flatten)]
    pub policy: PolicyFlags,
    #[arg(long, value_name = "N", default_value_t = execute::DEFAULT_BATCH_PATHS)]
    pub batch_paths: usize,
    #[arg(long)]
    pub json: bool,
}

/// `nix-ledger maintain`.
pub fn maintain(flags: &MaintainFlags) -> Result<ExitCode> {
    let retention = if flags.retention {
        Some(flags.policy.policy()?)
    } else if !flags.policy.is_empty() {
        bail!(nix_ledger::Error::Usage(
            "policy flags given without --retention: add --retention to apply them".into()
        ));
    } else {
        None
    };
    let opts = maintenance::Options {
        rotate_bytes: nix_ledger::size::parse_size(&flags.rotate_bytes)?,
        keep_rotated: flags.keep_rotated,
        retention,
        retention_every_ms: nix_ledger::time::parse_duration(&flags.retention_every)?,
        batch_paths: flags.batch_paths,
    };
    let report = maintenance::run(&Layout::system(), &opts)?;
    if flags.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "{}: ingested {} new records\n",
        report.ledger, report.ingested.recorded
    );
    if let Some(r) = &report.rotated {
        text.push_str(&format!(
            "rotated the spool ({} bytes) to {}\n",
            r.bytes, r.to
        ));
    }
    for run in &report.settled_runs {
        text.push_str(&format!("settled interrupted gc run #{run}\n"));
    }
    if let Some(why) = &report.retention_skipped {
        text.push_str(&format!("retention not due: {why}\n"));
    }
    if let Some(outcome) = &report.retention {
        text.push_str(&render::outcome(outcome));
    }
    print_text(&text)?;
    Ok(ExitCode::SUCCESS)
}
