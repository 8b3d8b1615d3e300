//! The live view of a deploy or destroy: one line per finished change, what is in flight right
//! now, and the summary at the end.
//!
//! On a terminal, finished changes scroll as lines and a block below them, redrawn with plain
//! ANSI (cursor up, clear line), shows every change in flight and how long it has been going.
//! Anywhere else (CI, pipes, tests) there are no escape codes: the finished lines, and every
//! 10 s one `still creating ...` line per change still in flight, as Terraform prints.
//! A [`Ticker`] refreshes either about once a second while a run goes; it stops with the run.

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use infra::{Action, Change, Event, Plan, Progress};

/// How often the ticker refreshes the view.
const TICK: Duration = Duration::from_secs(1);
/// How often, off a terminal, a change still in flight is reported.
const STILL_EVERY: Duration = Duration::from_secs(10);
/// The ticker's bound: a run longer than this (a day) is no longer refreshed.
const MAX_TICKS: u32 = 24 * 60 * 60;
/// A wait reported without a change in flight (the network's wait for every NAT gateway) that
/// is not reported again within this long is over (waits are polled at least every 10 s).
const WAIT_STALE: Duration = Duration::from_secs(15);
/// Width the in-flight lines are cut to when neither the terminal nor `$COLUMNS` says: a longer
/// line would wrap and the redraw would then move up too few lines.
const DEFAULT_WIDTH: usize = 80;

/// The width to cut redrawn lines to: the terminal's own (asked with `TIOCGWINSZ`), else
/// `$COLUMNS`, else [`DEFAULT_WIDTH`]; at least 20.
fn terminal_width() -> usize {
    let asked = rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .map(|size| usize::from(size.ws_col));
    let columns = || {
        std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok())
    };
    asked
        .filter(|w| *w >= 20)
        .or_else(|| columns().filter(|w| *w >= 20))
        .unwrap_or(DEFAULT_WIDTH)
}

/// Whether to redraw the in-flight block with escape codes: stdout is a terminal that is not
/// `TERM=dumb`, and `NO_COLOR` is not set (whoever asks for no colour asks for plain lines).
pub(crate) fn redraws() -> bool {
    std::io::stdout().is_terminal()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Where the time comes from (injected by the tests).
pub(crate) trait Clock: fmt::Debug + Send + Sync {
    /// Now.
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Clone, Copy)]
struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A resource by what names it: module, kind, logical name.
type Key = (String, String, String);

fn key(change: &Change) -> Key {
    (
        change.module.clone(),
        change.kind.clone(),
        change.name.clone(),
    )
}

/// One change in flight.
#[derive(Debug)]
struct Flight {
    action: Action,
    key: Key,
    started: Instant,
    /// Only seen in `Waiting` events (no `Started`): it ends when it is not reported again.
    wait_only: bool,
    /// The last event about it.
    seen: Instant,
    /// How many `still ...` lines were printed for it (one per 10 s).
    reported: u32,
}

impl Flight {
    fn what(&self) -> String {
        let (module, kind, name) = &self.key;
        let verb = if self.wait_only {
            "waiting for"
        } else {
            match self.action {
                Action::Create => "creating",
                Action::Update => "updating",
                Action::Delete => "deleting",
                Action::Keep => "keeping",
            }
        };
        if name == "*" {
            format!("{verb} {module} {kind} (all)")
        } else {
            format!("{verb} {module} {kind} {name:?}")
        }
    }
}

/// What finished during the run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Finished creates.
    created: usize,
    /// Finished updates.
    updated: usize,
    /// Finished deletes.
    deleted: usize,
    /// Resources both deleted and created in the run (counted here, not in the two above).
    replaced: usize,
    /// Every resource a finished change touched.
    touched: HashSet<Key>,
}

/// The summary line of a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ApplySummary {
    created: usize,
    updated: usize,
    replaced: usize,
    deleted: usize,
    /// Resources that existed before the apply and that it did not touch.
    unchanged: usize,
    elapsed: Duration,
}

impl ApplySummary {
    /// `tally` of the apply; `existing` is the stack's `plan_destroy` read before it (its
    /// deletes are every resource that existed).
    pub(crate) fn new(tally: &Tally, existing: &Plan, elapsed: Duration) -> Self {
        let existing: HashSet<Key> = existing
            .changes
            .iter()
            .filter(|c| matches!(c.action, Action::Delete | Action::Keep))
            .map(key)
            .collect();
        Self {
            created: tally.created,
            updated: tally.updated,
            replaced: tally.replaced,
            deleted: tally.deleted,
            unchanged: existing.difference(&tally.touched).count(),
            elapsed,
        }
    }
}

impl fmt::Display for ApplySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Apply complete: {} created, {} updated, {} replaced, {} deleted, {} unchanged, in {:.2} s",
            self.created,
            self.updated,
            self.replaced,
            self.deleted,
            self.unchanged,
            self.elapsed.as_secs_f64()
        )
    }
}

/// The summary line of a destroy.
pub(crate) fn destroy_summary(tally: &Tally, elapsed: Duration) -> String {
    format!(
        "Destroy complete: {} deleted in {:.2} s",
        tally.deleted + tally.replaced,
        elapsed.as_secs_f64()
    )
}

#[derive(Debug, Default)]
struct Finished {
    creates: HashSet<Key>,
    updates: HashSet<Key>,
    deletes: HashSet<Key>,
    created: usize,
    updated: usize,
    deleted: usize,
}

struct State {
    out: Box<dyn Write + Send>,
    flights: Vec<Flight>,
    /// Lines of the in-flight block on the screen now (terminal only).
    drawn: usize,
    finished: Finished,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("flights", &self.flights)
            .field("drawn", &self.drawn)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The progress sink of deploy and destroy (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Live {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    /// A terminal: redraw the in-flight block with escape codes.
    terminal: bool,
    width: usize,
}

impl Live {
    /// A sink printing to stdout, redrawing only when stdout is a terminal.
    pub(crate) fn stdout() -> Self {
        Self::new(
            Box::new(std::io::stdout()),
            redraws(),
            terminal_width(),
            Arc::new(SystemClock),
        )
    }

    fn new(
        out: Box<dyn Write + Send>,
        terminal: bool,
        width: usize,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                out,
                flights: Vec::new(),
                drawn: 0,
                finished: Finished::default(),
            }),
            clock,
            terminal,
            width,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while printing leaves nothing half-updated that matters: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What finished so far.
    pub(crate) fn tally(&self) -> Tally {
        let state = self.lock();
        let f = &state.finished;
        let replaced = f.creates.intersection(&f.deletes).count();
        Tally {
            created: f.created.saturating_sub(replaced),
            updated: f.updated,
            deleted: f.deleted.saturating_sub(replaced),
            replaced,
            touched: f
                .creates
                .iter()
                .chain(&f.updates)
                .chain(&f.deletes)
                .cloned()
                .collect(),
        }
    }

    /// Refreshes the view: the terminal's block, or the `still ...` lines that are due.
    pub(crate) fn tick(&self) {
        let now = self.clock.now();
        let mut state = self.lock();
        state
            .flights
            .retain(|f| !f.wait_only || now.saturating_duration_since(f.seen) < WAIT_STALE);
        let mut lines = String::new();
        if !self.terminal {
            for flight in &mut state.flights {
                let going = now.saturating_duration_since(flight.started);
                let due =
                    u32::try_from(going.as_secs() / STILL_EVERY.as_secs()).unwrap_or(u32::MAX);
                if due > flight.reported {
                    flight.reported = due;
                    let _ = writeln!(
                        lines,
                        "  still {} ({} s elapsed)",
                        flight.what(),
                        going.as_secs()
                    );
                }
            }
        }
        self.show(&mut state, &lines, now);
    }

    /// Erases the in-flight block (a terminal), so that what is printed next is not mixed with
    /// it; it is drawn again by the next event or tick.
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        if self.terminal && state.drawn > 0 {
            let mut frame = String::new();
            erase(&mut frame, state.drawn);
            state.drawn = 0;
            let _ = state.out.write_all(frame.as_bytes());
            let _ = state.out.flush();
        }
    }

    /// Prints `lines` (finished lines, whole lines) and, on a terminal, the block below them.
    fn show(&self, state: &mut State, lines: &str, now: Instant) {
        let mut frame = String::new();
        if self.terminal {
            erase(&mut frame, state.drawn);
            frame.push_str(lines);
            for flight in &state.flights {
                let going = now.saturating_duration_since(flight.started).as_secs();
                let line = format!("  {} … {going} s", flight.what());
                frame.push_str(&cut(&line, self.width));
                frame.push('\n');
            }
            state.drawn = state.flights.len();
        } else {
            frame.push_str(lines);
        }
        if !frame.is_empty() {
            let _ = state.out.write_all(frame.as_bytes());
            let _ = state.out.flush();
        }
    }

    /// Starts the ticker: [`Live::tick`] about once a second until [`Ticker::stop`] (or the
    /// ticker is dropped).
    pub(crate) fn start_ticker(self: &Arc<Self>) -> Ticker {
        let live = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await; // The first tick is immediate.
            for _ in 0..MAX_TICKS {
                interval.tick().await;
                live.tick();
            }
        });
        Ticker {
            task: Some(task),
            live: Arc::clone(self),
        }
    }
}

/// Cursor up and clear the line, `n` times: the block drawn before is gone and the cursor is
/// where it began.
fn erase(frame: &mut String, n: usize) {
    for _ in 0..n {
        frame.push_str("\x1b[1A\x1b[2K");
    }
    if n > 0 {
        frame.push('\r');
    }
}

/// `line` cut to `width` characters.
fn cut(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

impl Progress for Live {
    fn on(&self, event: &Event<'_>) {
        let now = self.clock.now();
        let mut state = self.lock();
        let mut lines = String::new();
        match event {
            Event::Started(change) => {
                let k = key(change);
                // A wait of the same module is over once the module goes on with other work
                // (if it is not, its next report brings it back).
                state.flights.retain(|f| !(f.wait_only && f.key.0 == k.0));
                state.flights.push(Flight {
                    action: change.action,
                    key: k,
                    started: now,
                    wait_only: false,
                    seen: now,
                    reported: 0,
                });
            }
            Event::Waiting { change, waited } => {
                let k = key(change);
                match state.flights.iter_mut().find(|f| f.key == k) {
                    Some(flight) => flight.seen = now,
                    None => state.flights.push(Flight {
                        action: change.action,
                        key: k,
                        started: now.checked_sub(*waited).unwrap_or(now),
                        wait_only: true,
                        seen: now,
                        reported: u32::try_from(waited.as_secs() / STILL_EVERY.as_secs())
                            .unwrap_or(u32::MAX),
                    }),
                }
            }
            Event::Finished {
                change,
                id,
                elapsed,
            } => {
                let k = key(change);
                if let Some(at) = state
                    .flights
                    .iter()
                    .position(|f| !f.wait_only && f.key == k && f.action == change.action)
                {
                    state.flights.remove(at);
                }
                state.flights.retain(|f| !(f.wait_only && f.key.0 == k.0));
                let finished = &mut state.finished;
                match change.action {
                    Action::Create => {
                        finished.created += 1;
                        finished.creates.insert(k);
                    }
                    Action::Update => {
                        finished.updated += 1;
                        finished.updates.insert(k);
                    }
                    Action::Delete => {
                        finished.deleted += 1;
                        finished.deletes.insert(k);
                    }
                    // Nothing is done to a kept resource, so nothing reports one.
                    Action::Keep => {}
                }
                let id = id.map(|i| format!(" -> {i}")).unwrap_or_default();
                let _ = writeln!(
                    lines,
                    "  done {} {} {} {:?}{id} ({:.2}s)",
                    change.action.symbol(),
                    change.module,
                    change.kind,
                    change.name,
                    elapsed.as_secs_f64()
                );
            }
            _ => {}
        }
        self.show(&mut state, &lines, now);
    }
}

/// Calls [`Live::tick`] about once a second while a run goes. [`Ticker::stop`] ends it and
/// erases the in-flight block; dropped (the run interrupted), it ends too, and the block stays
/// on the screen as the last word on what was in flight.
#[derive(Debug)]
pub(crate) struct Ticker {
    task: Option<tokio::task::JoinHandle<()>>,
    live: Arc<Live>,
}

impl Ticker {
    /// Stops the ticker, waits until it has, and erases the in-flight block.
    pub(crate) async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.live.clear();
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test moves.
    #[derive(Debug)]
    struct Manual {
        base: Instant,
        offset: Mutex<Duration>,
    }

    impl Manual {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                base: Instant::now(),
                offset: Mutex::new(Duration::ZERO),
            })
        }

        fn advance(&self, secs: u64) {
            *self.offset.lock().unwrap() += Duration::from_secs(secs);
        }
    }

    impl Clock for Manual {
        fn now(&self) -> Instant {
            self.base + *self.offset.lock().unwrap()
        }
    }

    /// What the sink wrote.
    #[derive(Debug, Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Buf {
        /// Everything written since the last call.
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    impl Write for Buf {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn sink(terminal: bool) -> (Arc<Live>, Buf, Arc<Manual>) {
        let buf = Buf::default();
        let clock = Manual::new();
        let live = Live::new(Box::new(buf.clone()), terminal, 80, clock.clone());
        (Arc::new(live), buf, clock)
    }

    fn change(action: Action, module: &str, kind: &str, name: &str) -> Change {
        Change::new(action, module, kind, name)
    }

    fn finished(live: &Live, change: &Change, id: Option<&str>, millis: u64) {
        live.on(&Event::Finished {
            change,
            id,
            elapsed: Duration::from_millis(millis),
        });
    }

    #[test]
    fn on_a_terminal_finished_lines_scroll_above_the_block_in_flight() {
        let (live, buf, clock) = sink(true);
        let nat = change(Action::Create, "network", "nat-gateway", "nat-a");
        let bucket = change(Action::Create, "storage", "bucket", "log-bucket");
        live.on(&Event::Started(&nat));
        assert_eq!(
            buf.take(),
            "  creating network nat-gateway \"nat-a\" … 0 s\n"
        );
        clock.advance(2);
        live.on(&Event::Started(&bucket));
        assert_eq!(
            buf.take(),
            "\x1b[1A\x1b[2K\r\
             \x20 creating network nat-gateway \"nat-a\" … 2 s\n\
             \x20 creating storage bucket \"log-bucket\" … 0 s\n"
        );
        clock.advance(40);
        live.tick();
        assert_eq!(
            buf.take(),
            "\x1b[1A\x1b[2K\x1b[1A\x1b[2K\r\
             \x20 creating network nat-gateway \"nat-a\" … 42 s\n\
             \x20 creating storage bucket \"log-bucket\" … 40 s\n"
        );
        // The bucket is done: its line scrolls up, the block is what is left.
        finished(&live, &bucket, Some("b-1"), 410);
        assert_eq!(
            buf.take(),
            "\x1b[1A\x1b[2K\x1b[1A\x1b[2K\r\
             \x20 done + storage bucket \"log-bucket\" -> b-1 (0.41s)\n\
             \x20 creating network nat-gateway \"nat-a\" … 42 s\n"
        );
        finished(&live, &nat, Some("nat-1"), 42_000);
        assert_eq!(
            buf.take(),
            "\x1b[1A\x1b[2K\r  done + network nat-gateway \"nat-a\" -> nat-1 (42.00s)\n"
        );
        // Nothing in flight: a tick draws nothing, clear erases nothing.
        live.tick();
        live.clear();
        assert_eq!(buf.take(), "");
    }

    #[test]
    fn a_long_line_in_flight_is_cut_to_the_width() {
        let buf = Buf::default();
        let live = Live::new(Box::new(buf.clone()), true, 30, Manual::new());
        live.on(&Event::Started(&change(
            Action::Delete,
            "compute",
            "ecs-task-definition",
            "a-rather-long-name",
        )));
        assert_eq!(buf.take(), "  deleting compute ecs-task-d…\n");
        live.clear();
        assert_eq!(buf.take(), "\x1b[1A\x1b[2K\r");
    }

    #[test]
    fn off_a_terminal_every_10_s_a_still_line_per_change_in_flight() {
        let (live, buf, clock) = sink(false);
        let service = change(Action::Update, "compute", "ecs-service", "web");
        let role = change(Action::Delete, "compute", "iam-role", "task");
        live.on(&Event::Started(&service));
        clock.advance(4);
        live.on(&Event::Started(&role));
        assert_eq!(buf.take(), "");
        clock.advance(5);
        live.tick(); // 9 s and 5 s
        assert_eq!(buf.take(), "");
        clock.advance(1);
        live.tick(); // 10 s and 6 s
        assert_eq!(
            buf.take(),
            "  still updating compute ecs-service \"web\" (10 s elapsed)\n"
        );
        clock.advance(4);
        live.tick(); // 14 s and 10 s
        live.tick(); // the same second again: nothing new
        assert_eq!(
            buf.take(),
            "  still deleting compute iam-role \"task\" (10 s elapsed)\n"
        );
        finished(&live, &role, None, 10_500);
        clock.advance(6);
        live.tick(); // 20 s
        assert_eq!(
            buf.take(),
            "  done - compute iam-role \"task\" (10.50s)\n\
             \x20 still updating compute ecs-service \"web\" (20 s elapsed)\n"
        );
    }

    #[test]
    fn a_wait_without_a_change_in_flight_is_shown_until_the_module_goes_on() {
        let (live, buf, clock) = sink(false);
        let all = change(Action::Create, "network", "nat-gateway", "*");
        live.on(&Event::Waiting {
            change: &all,
            waited: Duration::from_secs(12),
        });
        live.tick(); // 12 s: the 10 s line would be late; the next is at 20 s.
        clock.advance(8);
        live.tick();
        assert_eq!(
            buf.take(),
            "  still waiting for network nat-gateway (all) (20 s elapsed)\n"
        );
        // Reported again: still there. Then the network goes on: the wait is over.
        live.on(&Event::Waiting {
            change: &all,
            waited: Duration::from_secs(21),
        });
        live.on(&Event::Started(&change(
            Action::Create,
            "network",
            "route",
            "private-a 0.0.0.0/0",
        )));
        clock.advance(10);
        live.tick();
        assert_eq!(
            buf.take(),
            "  still creating network route \"private-a 0.0.0.0/0\" (10 s elapsed)\n"
        );

        // A wait not reported again for 15 s is over too.
        let (live, buf, clock) = live_terminal_wait(&all);
        clock.advance(15);
        live.tick();
        assert_eq!(buf.take(), "\x1b[1A\x1b[2K\r");
    }

    fn live_terminal_wait(all: &Change) -> (Arc<Live>, Buf, Arc<Manual>) {
        let (live, buf, clock) = sink(true);
        live.on(&Event::Waiting {
            change: all,
            waited: Duration::from_secs(3),
        });
        assert_eq!(
            buf.take(),
            "  waiting for network nat-gateway (all) … 3 s\n"
        );
        (live, buf, clock)
    }

    #[test]
    fn the_summary_counts_what_finished_and_what_existed_untouched() {
        let (live, _buf, _clock) = sink(false);
        let vpc = change(Action::Create, "network", "vpc", "vpc");
        let rule = change(Action::Create, "network", "security-group-rule", "tasks");
        let sg = change(Action::Update, "network", "security-group", "tasks");
        let old_td = change(Action::Delete, "compute", "ecs-task-definition", "web");
        let new_td = change(Action::Create, "compute", "ecs-task-definition", "web");
        let alarm = change(Action::Delete, "observability", "alarm", "old");
        for c in [&vpc, &rule, &sg, &old_td, &new_td, &alarm] {
            live.on(&Event::Started(c));
            finished(&live, c, None, 10);
        }
        // What existed before: the group, the task definition, the alarm, and two resources
        // the apply left alone (destroy's update of the service is no resource of its own).
        let mut existing = Plan::default();
        for (action, module, kind, name) in [
            (Action::Update, "compute", "ecs-service", "web"),
            (Action::Delete, "compute", "ecs-service", "web"),
            (Action::Delete, "compute", "ecs-task-definition", "web"),
            (Action::Delete, "observability", "alarm", "old"),
            (Action::Delete, "network", "security-group", "tasks"),
            (Action::Delete, "storage", "bucket", "log-bucket"),
        ] {
            existing.push(change(action, module, kind, name));
        }
        let tally = live.tally();
        let summary = ApplySummary::new(&tally, &existing, Duration::from_millis(1234));
        assert_eq!(
            summary.to_string(),
            "Apply complete: 2 created, 1 updated, 1 replaced, 1 deleted, 2 unchanged, in 1.23 s"
        );
        // Nothing finished, everything existed: all unchanged.
        let (idle, _, _) = sink(false);
        assert_eq!(
            ApplySummary::new(&idle.tally(), &existing, Duration::from_secs(2)).to_string(),
            "Apply complete: 0 created, 0 updated, 0 replaced, 0 deleted, 5 unchanged, in 2.00 s"
        );
        assert_eq!(
            destroy_summary(&tally, Duration::from_millis(2500)),
            "Destroy complete: 2 deleted in 2.50 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticker_refreshes_each_second_and_ends_when_stopped() {
        let (live, buf, clock) = sink(false);
        live.on(&Event::Started(&change(
            Action::Create,
            "network",
            "vpc",
            "vpc",
        )));
        let ticker = live.start_ticker();
        clock.advance(10);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            buf.take(),
            "  still creating network vpc \"vpc\" (10 s elapsed)\n"
        );
        ticker.stop().await;
        // The task is gone, and with it its handle on the sink.
        assert_eq!(Arc::strong_count(&live), 1);
        clock.advance(10);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(buf.take(), "");

        // Dropped (the run interrupted): the task ends too.
        let ticker = live.start_ticker();
        drop(ticker);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(Arc::strong_count(&live), 1);
    }
}
