//! The whole-build ETA of `nb build`, for the wrapper: what Nix is about to build, with
//! each derivation's expected profile from the ledger, simulated under the settings in
//! effect; then simulated again from the current state as builds finish ([`super::eta`]).
//!
//! What Nix will build: newer Nix prints it ("these 27 derivations will be built:", one
//! path a line) before building; Nix 2.8's `nix build` does not, and then the list of
//! .drv files the Nix process holds as temporary GC roots (everything its evaluation
//! wrote) gives the graph: its tops (the .drv files no other one needs), and of their
//! closures what has an output missing from the store. Substitutions are not told apart
//! from builds there: a derivation Nix then downloads stays "to build" in the plan, and
//! the ETA runs long by its time.
//!
//! Cost on the wrapper's loop: the plan is made on a thread of its own at the lowest
//! priority (the ledger's measurements of the build's names, the .drv files, the store
//! database: ~20 ms of CPU for 200 derivations), started with the first build; the
//! simulation runs again only when builds have finished, at most every
//! [`RESIMULATE_EVERY`], never per log line.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::eta::EtaTracker;
use super::host::Host;
use super::inputs;
use super::sim::{JobState, SimParams};
use crate::ledger::model::Scope;
use crate::ledger::Ledger;
use crate::nix::graph::Loader;
use crate::nix::graph::StoreFiles;
use crate::store::db::StoreDb;
use crate::store::temproots;
use crate::Result;

/// The simulation runs again at most this often while builds finish.
pub const RESIMULATE_EVERY: Duration = Duration::from_millis(200);

/// How many plans one build may make: a build that starts outside the plan (after an
/// import-from-derivation build, Nix evaluates on and writes more .drv files) makes a
/// new one, a few times at most.
const MAX_PLANS: u32 = 3;

/// What the plan is made from.
#[derive(Debug, Clone)]
pub struct Context {
    /// The ledger to read the history from (on the plan's own connection).
    pub ledger: PathBuf,
    /// Where Nix's settings are cached.
    pub state_dir: PathBuf,
    /// The `nix` process running the build.
    pub nix_pid: u32,
    /// `-j`/`--cores` from the command line, if given.
    pub max_jobs: Option<i64>,
    pub cores: Option<i64>,
    pub started: SystemTime,
}

/// The build's derivations and their simulation.
pub struct Plan {
    tracker: EtaTracker,
    index: HashMap<String, usize>,
}

impl Plan {
    /// How many derivations the plan expects to build.
    pub fn len(&self) -> usize {
        self.tracker.workload().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The ETA of one wrapped build.
pub struct Live {
    context: Context,
    /// Plans started so far.
    plans: u32,
    loading: Option<JoinHandle<Result<Option<Plan>>>>,
    plan: Option<Plan>,
    /// Derivations Nix said it will build (newer Nix), while its list goes on.
    listed: Vec<String>,
    collecting: bool,
    /// Every build that ended: its .drv and real duration.
    ended: Vec<(String, f64)>,
    dirty: bool,
    last_update: Option<Instant>,
    /// The last simulated remaining time, and when it was simulated.
    estimate: Option<(f64, Instant)>,
}

impl Live {
    pub fn new(context: Context) -> Live {
        Live {
            context,
            plans: 0,
            loading: None,
            plan: None,
            listed: Vec::new(),
            collecting: false,
            ended: Vec::new(),
            dirty: false,
            last_update: None,
            estimate: None,
        }
    }

    /// One of Nix's messages: collects the list of what it will build, if it prints one.
    pub fn message(&mut self, text: &str) {
        if self.plans > 0 {
            return;
        }
        let text = text.trim();
        if text.ends_with("will be built:")
            && (text.starts_with("these ") || text.starts_with("this derivation"))
        {
            self.collecting = true;
        } else if self.collecting {
            if text.starts_with('/') && text.ends_with(".drv") {
                self.listed.push(text.to_string());
            } else {
                self.collecting = false;
            }
        }
    }

    /// A build started: the first one starts making the plan, as does one the plan
    /// does not know (up to [`MAX_PLANS`]).
    pub fn started(&mut self, drv: &str) {
        let outside_plan = match &self.plan {
            Some(plan) => !plan.index.contains_key(drv),
            None => self.plans == 0,
        };
        if !outside_plan || self.loading.is_some() || self.plans >= MAX_PLANS {
            return;
        }
        self.plans += 1;
        let context = self.context.clone();
        let listed = std::mem::take(&mut self.listed);
        let first = drv.to_string();
        self.loading = std::thread::Builder::new()
            .name("nix-ledger-eta".into())
            .spawn(move || {
                // The plan must not slow the build down: it runs on CPU time Nix and
                // the builders leave.
                crate::sys::lower_this_thread();
                make_plan(&context, listed, &first)
            })
            .ok();
    }

    /// A build ended after `duration_ms`.
    pub fn finished(&mut self, drv: &str, duration_ms: i64) {
        self.ended
            .push((drv.to_string(), duration_ms.max(0) as f64));
        self.dirty = true;
    }

    /// Takes the plan once it is made, and simulates again if builds ended since the
    /// last time (at most every [`RESIMULATE_EVERY`]). `running`: the builds running,
    /// with when each started; `outside`: the load, in cores, the rest of the host puts
    /// on it (the sampler's reading).
    pub fn tick<'a>(
        &mut self,
        running: impl Iterator<Item = (&'a str, Instant)>,
        outside: Option<f64>,
        now: Instant,
    ) {
        if self.loading.as_ref().is_some_and(|h| h.is_finished()) {
            let made = self
                .loading
                .take()
                .and_then(|h| h.join().ok())
                .and_then(Result::ok)
                .flatten();
            // A failed new plan keeps the old one.
            if made.is_some() {
                self.plan = made;
            }
            self.dirty = true;
        }
        let Some(plan) = &mut self.plan else { return };
        if !self.dirty || self.last_update.is_some_and(|t| now - t < RESIMULATE_EVERY) {
            return;
        }
        if let Some(cores) = outside {
            if plan.tracker.set_outside_load(cores).is_err() {
                self.plan = None;
                return;
            }
        }
        let mut state = vec![JobState::Pending; plan.len()];
        let mut finished = Vec::with_capacity(self.ended.len());
        for (drv, ms) in &self.ended {
            if let Some(&i) = plan.index.get(drv) {
                if state[i] != JobState::Done {
                    state[i] = JobState::Done;
                    finished.push((i, *ms));
                }
            }
        }
        for (drv, started) in running {
            if let Some(&i) = plan.index.get(drv) {
                if state[i] == JobState::Pending {
                    let elapsed_ms = now.saturating_duration_since(started).as_secs_f64() * 1e3;
                    state[i] = JobState::Running { elapsed_ms };
                }
            }
        }
        self.estimate = match plan.tracker.update(&state, &finished) {
            Ok(e) => Some((e.remaining_ms, now)),
            Err(_) => None,
        };
        self.dirty = false;
        self.last_update = Some(now);
    }

    /// The expected time to the end of the whole build, as of `now`; `None` until the
    /// plan is made (or when it could not be).
    pub fn remaining_ms(&self, now: Instant) -> Option<i64> {
        let (remaining, at) = self.estimate?;
        let since = now.saturating_duration_since(at).as_secs_f64() * 1e3;
        Some((remaining - since).max(0.0).round() as i64)
    }

    /// The plan, once made.
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }
}

/// The plan of the build whose first started derivation is `first`: from Nix's own
/// list when it printed one, else from the temporary roots of the Nix process.
fn make_plan(cx: &Context, listed: Vec<String>, first: &str) -> Result<Option<Plan>> {
    let mut loader = Loader::new(&StoreFiles);
    let drvs = if listed.is_empty() {
        let held = match temproots::drvs_of_process(cx.nix_pid)? {
            Some(held) if held.iter().any(|d| d == first) => Some(held),
            _ => temproots::drvs_of_holder(first, cx.started)?,
        };
        let Some(held) = held else { return Ok(None) };
        let store = StoreDb::open_default()?;
        let since_ms = cx
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        to_build_of(&mut loader, &store, &held, since_ms)?
    } else {
        listed
    };
    if !drvs.iter().any(|d| d == first) {
        // Not the graph of this build: no ETA rather than a wrong one.
        return Ok(None);
    }
    let here = Host::new(None, None);
    let named = inputs::named(&mut loader, drvs)?;
    let ledger = Ledger::open_read_only(&cx.ledger)?;
    let knowledge = inputs::knowledge(
        &ledger,
        Scope::Here,
        &inputs::names(&named),
        inputs::ETA,
        here.cores,
    )?;
    let prepared = inputs::prepare(&mut loader, &named, &knowledge)?;
    let settings = crate::nix::config::settings(&cx.state_dir);
    let max_jobs = cx.max_jobs.or(settings.max_jobs).unwrap_or(1).max(1);
    let cores = cx.cores.or(settings.cores).unwrap_or(0).max(0);
    let mut params = SimParams::new(
        max_jobs.min(u32::MAX as i64) as u32,
        cores.min(u32::MAX as i64) as u32,
        here.cores,
    );
    params.loop_ms_per_build = super::LOOP_MS_PER_BUILD;
    if settings
        .post_build_hook
        .as_deref()
        .is_some_and(|h| !h.trim().is_empty())
    {
        params.hook_ms = super::HOOK_MS;
    }
    let index = prepared
        .drvs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), i))
        .collect();
    let unknown = prepared
        .bases
        .iter()
        .map(|b| matches!(b, super::model::Basis::Default))
        .collect();
    let tracker = EtaTracker::new(prepared.workload, params)
        .map_err(|e| e.into_error())?
        .with_unknown(unknown);
    Ok(Some(Plan { tracker, index }))
}

/// What building the tops of `held` (the .drv files none of the others needs) builds,
/// counting what it built since `since_ms` (the first builds may be done before the
/// plan looks).
fn to_build_of(
    loader: &mut Loader<'_>,
    store: &StoreDb,
    held: &[String],
    since_ms: i64,
) -> Result<Vec<String>> {
    let mut needed: HashSet<String> = HashSet::new();
    for drv in held {
        if let Some(d) = loader.get(drv)? {
            needed.extend(d.input_drvs.keys().cloned());
        }
    }
    let tops: Vec<&str> = held
        .iter()
        .filter(|d| !needed.contains(*d))
        .map(String::as_str)
        .collect();
    inputs::to_build(loader, store, &tops, Some(since_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Live {
        Live::new(Context {
            ledger: PathBuf::from("/nonexistent/ledger.sqlite"),
            state_dir: PathBuf::from("/nonexistent"),
            nix_pid: u32::MAX,
            max_jobs: Some(2),
            cores: Some(1),
            started: SystemTime::now(),
        })
    }

    #[test]
    fn nix_s_own_list_of_what_it_will_build_is_collected() {
        let mut l = live();
        l.message("evaluating derivation 'x'");
        l.message("these 2 derivations will be built:");
        l.message("  /nix/store/aaaa-a.drv");
        l.message("  /nix/store/bbbb-b.drv");
        l.message("these 3 paths will be fetched (1.00 MiB download):");
        l.message("  /nix/store/cccc-c");
        assert_eq!(l.listed, ["/nix/store/aaaa-a.drv", "/nix/store/bbbb-b.drv"]);
        l.message("this derivation will be built:");
        l.message("  /nix/store/dddd-d.drv");
        assert_eq!(l.listed.len(), 3);
    }

    #[test]
    fn plans_are_made_once_and_again_only_for_builds_outside_them() {
        let mut l = live();
        l.started("/nix/store/aaaa-a.drv");
        l.started("/nix/store/bbbb-b.drv");
        assert_eq!(l.plans, 1, "one plan at a time");
        l.loading = None;
        l.started("/nix/store/cccc-c.drv");
        assert_eq!(l.plans, 1, "no plan came of the first: no other is made");
        l.plans = 1;
        l.plan = Some(Plan {
            tracker: EtaTracker::new(
                super::super::workload::Workload::new(vec![]).unwrap(),
                SimParams::new(1, 1, 1),
            )
            .unwrap(),
            index: HashMap::from([("/nix/store/aaaa-a.drv".to_string(), 0)]),
        });
        l.started("/nix/store/aaaa-a.drv");
        assert_eq!(l.plans, 1, "in the plan");
        for _ in 0..5 {
            l.loading = None;
            l.started("/nix/store/dddd-d.drv");
        }
        assert_eq!(l.plans, MAX_PLANS);
    }

    #[test]
    fn without_a_plan_there_is_no_eta() {
        let mut l = live();
        // Neither the list nor temporary roots of a process that does not exist.
        l.started("/nix/store/aaaa-a.drv");
        let deadline = Instant::now() + Duration::from_secs(10);
        while l.plan.is_none() && l.loading.is_some() && Instant::now() < deadline {
            l.tick(std::iter::empty(), None, Instant::now());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(l.plan().is_none());
        assert_eq!(l.remaining_ms(Instant::now()), None);
    }
}
