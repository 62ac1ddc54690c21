//! The state machine against event sequences as Nix 2.8 writes them.
use super::super::events::{parse_line, Line};
use super::*;

fn feed(state: &mut State, line: &str, t: i64) {
    let Line::Event(event) = parse_line(line.as_bytes()) else {
        panic!("{line}")
    };
    state.apply(&event, Instant::now(), t);
}

const DRV: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-t-a.drv";

#[test]
fn a_build_is_timed_from_start_to_stop_and_counts_its_log() {
    let mut s = State::new(BuildRoots::default());
    feed(
        &mut s,
        r#"@nix {"action":"start","id":1,"type":104,"fields":[],"text":"","level":0,"parent":0}"#,
        0,
    );
    feed(
        &mut s,
        &format!(
            r#"@nix {{"action":"start","id":2,"type":105,"fields":["{DRV}","ssh://b",1,1],"text":"","level":3,"parent":1}}"#
        ),
        1_000,
    );
    for i in 0..30 {
        feed(
            &mut s,
            &format!(r#"@nix {{"action":"result","id":2,"type":101,"fields":["line {i}"]}}"#),
            1_500,
        );
    }
    feed(
        &mut s,
        r#"@nix {"action":"result","id":1,"type":105,"fields":[1,3,0,0]}"#,
        1_900,
    );
    feed(&mut s, r#"@nix {"action":"stop","id":2}"#, 3_000);
    assert_eq!(
        s.builds,
        Counts {
            done: 1,
            expected: 3,
            running: 0,
            failed: 0
        }
    );
    // Nix 2.8 stops the activity only at the very end: the done counter says when
    // the (remote, so directory-less) build ended.
    let b = &s.finished[0];
    assert_eq!(
        (b.name.as_str(), b.duration_ms(), b.log_lines),
        ("t-a", 900, 30)
    );
    assert_eq!(b.machine.as_deref(), Some("ssh://b"));
    assert_eq!(b.tail.lines().count(), TAIL_LINES);
    assert_eq!(b.tail.lines().last(), Some("line 29"));
    assert!(b.pending);
    assert_eq!(s.finished.len(), 1);
    s.settle(2_500, false);
    assert!(s.settled.is_empty());
    s.settle(2_900, false);
    assert_eq!(s.settled, vec![0]);
    assert_eq!(s.finished[0].status, BuildStatus::Built);
}

#[test]
fn a_build_whose_directory_still_exists_is_not_the_one_that_ended() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("nix-build-t-b.drv-0")).unwrap();
    let mut s = State::new(BuildRoots::new(vec![root.path().into()]));
    let b = DRV.replace("t-a", "t-b");
    feed(
        &mut s,
        r#"@nix {"action":"start","id":1,"type":104,"fields":[],"text":"","level":0,"parent":0}"#,
        0,
    );
    feed(
        &mut s,
        &format!(
            r#"@nix {{"action":"start","id":2,"type":105,"fields":["{DRV}","",1,1],"text":"","level":3,"parent":1}}"#
        ),
        0,
    );
    feed(
        &mut s,
        &format!(
            r#"@nix {{"action":"start","id":3,"type":105,"fields":["{b}","",1,1],"text":"","level":3,"parent":1}}"#
        ),
        0,
    );
    feed(
        &mut s,
        r#"@nix {"action":"result","id":1,"type":105,"fields":[1,2,1,0]}"#,
        500,
    );
    assert_eq!(s.finished.len(), 1);
    assert_eq!(s.finished[0].name, "t-a");
    assert_eq!(s.running.len(), 1);
    // The real stops at the end change nothing for the build already ended.
    feed(&mut s, r#"@nix {"action":"stop","id":2}"#, 9_000);
    feed(&mut s, r#"@nix {"action":"stop","id":3}"#, 9_000);
    assert_eq!(s.finished[0].finished_ms, 500);
    assert_eq!(s.finished[1].finished_ms, 9_000);
}

#[test]
fn an_error_message_naming_a_stopped_build_marks_it_failed() {
    let mut s = State::new(BuildRoots::default());
    feed(
        &mut s,
        &format!(
            r#"@nix {{"action":"start","id":2,"type":105,"fields":["{DRV}","",1,1],"text":"","level":3,"parent":0}}"#
        ),
        0,
    );
    feed(&mut s, r#"@nix {"action":"stop","id":2}"#, 100);
    feed(
        &mut s,
        &format!(
            r#"@nix {{"action":"msg","level":0,"msg":"\u001b[31;1merror:\u001b[0m builder for '\u001b[35;1m{DRV}\u001b[0m' failed with exit code 3"}}"#
        ),
        120,
    );
    assert_eq!(s.finished[0].status, BuildStatus::Failed);
    assert_eq!(s.settled, vec![0]);
    s.settle(10_000, true);
    assert_eq!(s.settled, vec![0]);
}

#[test]
fn substitutions_and_download_bytes_are_counted() {
    let mut s = State::new(BuildRoots::default());
    feed(
        &mut s,
        r#"@nix {"action":"start","id":7,"type":108,"fields":["/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-x","file:///c"],"text":"","level":4,"parent":0}"#,
        0,
    );
    feed(
        &mut s,
        r#"@nix {"action":"start","id":8,"type":100,"fields":["/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-x","file:///c","local"],"text":"","level":4,"parent":7}"#,
        0,
    );
    feed(
        &mut s,
        r#"@nix {"action":"result","id":8,"type":105,"fields":[4096,4096,0,0]}"#,
        5,
    );
    feed(&mut s, r#"@nix {"action":"stop","id":8}"#, 6);
    feed(&mut s, r#"@nix {"action":"stop","id":7}"#, 7);
    assert_eq!(s.substituted.len(), 1);
    assert_eq!(s.downloaded_bytes(), 4096);
}

/// `@nix` start of an activity.
fn start(id: u64, ty: u64, fields: &str, text: &str) -> String {
    format!(
        r#"@nix {{"action":"start","fields":[{fields}],"id":{id},"level":3,"text":"{text}","type":{ty}}}"#
    )
}

fn stop(id: u64) -> String {
    format!(r#"@nix {{"action":"stop","id":{id}}}"#)
}

const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-t-b.drv";
const MACHINE: &str = "ssh-ng://nlb?remote-store=local?root=/tmp/x&remote-program=/tmp/d";

/// The events of one remote build of `drv` as Nix 2.8 writes them (ssh-ng), from
/// `t` on, with ids from `id`; the builder's activities arrive `late` ms after the
/// acceptance. Returns the time after its post-build-hook.
fn remote_build(s: &mut State, drv: &str, id: u64, t: i64, late: i64, fail: bool) -> i64 {
    let out = drv.replace(".drv", "").replace("/bbbb", "/cccc");
    feed(s, &start(id, 0, "", "connecting to 'ssh-ng://nlb'"), t);
    feed(s, &stop(id), t + 40);
    feed(
        s,
        &start(id + 1, 105, &format!(r#""{drv}","{MACHINE}",1,1"#), ""),
        t + 40,
    );
    if late > 0 {
        // Nix dispatched another derivation before reading the builder's output.
        feed(
            s,
            &start(id + 20, 0, "", "connecting to 'ssh-ng://nlb'"),
            t + 50,
        );
        feed(s, &stop(id + 20), t + 40 + late);
    }
    let t = t + 40 + late;
    feed(
        s,
        &start(
            id + 2,
            100,
            r#""/nix/store/dddddddddddddddddddddddddddddddd-src","local","ssh-ng://nlb""#,
            "",
        ),
        t,
    );
    feed(s, &stop(id + 2), t + 10);
    // The builder's worker: its own 102/104/103 and progress, then its build.
    feed(s, &start(id + 3, 104, "", ""), t + 10);
    feed(
        s,
        &format!(
            r#"@nix {{"action":"result","fields":[0,1,1,0],"id":{},"type":105}}"#,
            id + 3
        ),
        t + 10,
    );
    feed(
        s,
        &start(id + 4, 105, &format!(r#""{drv}","",1,1"#), ""),
        t + 12,
    );
    feed(
        s,
        &format!(
            r#"@nix {{"action":"result","fields":["hello from the builder"],"id":{},"type":101}}"#,
            id + 4
        ),
        t + 20,
    );
    let end = t + 12 + 1_000;
    let done = if fail { "[0,1,0,1]" } else { "[1,1,0,0]" };
    feed(
        s,
        &format!(
            r#"@nix {{"action":"result","fields":{done},"id":{},"type":105}}"#,
            id + 3
        ),
        end,
    );
    feed(s, &stop(id + 4), end);
    feed(s, &stop(id + 3), end);
    if fail {
        let msg = format!("error: build of '{drv}' on '{MACHINE}' failed: builder for '{drv}' failed with exit code 3");
        feed(
            s,
            &format!(r#"@nix {{"action":"msg","level":0,"msg":"{msg}"}}"#),
            end + 5,
        );
        feed(s, &stop(id + 1), end + 10);
        return end + 10;
    }
    feed(
        s,
        &start(
            id + 5,
            100,
            &format!(r#""{out}","ssh-ng://nlb","local""#),
            "",
        ),
        end,
    );
    feed(s, &stop(id + 5), end + 30);
    feed(s, &start(id + 6, 110, &format!(r#""{drv}""#), ""), end + 40);
    feed(s, &stop(id + 6), end + 50);
    feed(s, &stop(id + 1), end + 50);
    end + 50
}

#[test]
fn a_remote_build_is_one_build_timed_on_its_builder_with_its_copies_apart() {
    let mut s = State::new(BuildRoots::default());
    feed(&mut s, &start(1, 104, "", ""), 0);
    feed(
        &mut s,
        r#"@nix {"action":"result","fields":[0,1,0,0],"id":1,"type":105}"#,
        0,
    );
    remote_build(&mut s, DRV, 10, 100, 0, false);
    // Nix's own counters are ours; the builder's trio said [1,1,0,0] and changed nothing.
    assert_eq!(s.builds.expected, 1);
    assert_eq!(s.finished.len(), 1, "{:#?}", s.finished);
    let b = &s.finished[0];
    assert_eq!(b.machine.as_deref(), Some(MACHINE));
    // The builder's activity ran from 152 (accepted 140, uploaded 10 ms) to 1152.
    assert_eq!((b.started_ms, b.finished_ms), (152, 1_152));
    let r = b.remote.as_ref().unwrap();
    assert_eq!(
        (r.upload_ms, r.download_ms, r.connect_ms),
        (10, 30, Some(40))
    );
    assert_eq!(
        (b.log_lines, b.tail.lines().last()),
        (1, Some("hello from the builder"))
    );
}

#[test]
fn a_late_forwarded_start_and_a_local_build_beside_it_are_told_apart() {
    let mut s = State::new(BuildRoots::default());
    feed(&mut s, &start(1, 104, "", ""), 0);
    // A local build starts first; the remote build's output is read 400 ms late.
    feed(&mut s, &start(2, 105, &format!(r#""{B}","",1,1"#), ""), 0);
    remote_build(&mut s, DRV, 10, 100, 400, false);
    feed(&mut s, &stop(2), 2_000);
    assert_eq!(s.finished.len(), 2, "{:#?}", s.finished);
    let remote = s.finished.iter().find(|b| b.drv_path == DRV).unwrap();
    // Accepted at 140 plus the 10 ms upload, not the arrival at 552.
    assert_eq!((remote.started_ms, remote.finished_ms), (150, 1_552));
    let local = s.finished.iter().find(|b| b.drv_path == B).unwrap();
    assert_eq!(
        (local.machine.as_deref(), local.duration_ms()),
        (None, 2_000)
    );
}

#[test]
fn a_failed_remote_build_is_recorded_failed_with_its_machine() {
    let mut s = State::new(BuildRoots::default());
    feed(&mut s, &start(1, 104, "", ""), 0);
    remote_build(&mut s, DRV, 10, 0, 0, true);
    s.settle(10_000, true);
    assert_eq!(s.finished.len(), 1);
    let b = &s.finished[0];
    assert_eq!(b.status, BuildStatus::Failed);
    assert_eq!(b.machine.as_deref(), Some(MACHINE));
    assert_eq!(b.duration_ms(), 1_000);
    // The builder's failed counter is not ours.
    assert_eq!(s.builds.failed, 0);
}
