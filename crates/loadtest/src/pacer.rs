//! A worker's pacing: its share of the intended send times, released on time on the worker's own
//! reactor to its idle connections.
//!
//! Nothing crosses threads per request: the pacer is a future on the worker's own runtime (a
//! timerfd for sub-millisecond wake-ups, or tokio's millisecond timer), its queue of due slots and
//! its list of idle connections are plain `RefCell`s, and waking a connection is a local task
//! wake-up. Worker `w` of `n` takes slots `w, w + n, w + 2n, ...` of the schedule.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::record::{micros, new_histogram};
use crate::schedule::Schedule;

/// The longest single wait of a pacer, so `stop` is noticed.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// The shortest time between two wake-ups of the precise pacer.
const MIN_WAKE_GAP: Duration = Duration::from_micros(100);

/// One worker's due intended send times and its idle connections (one thread: no lock).
#[derive(Debug, Default)]
pub(crate) struct Slots {
    queue: RefCell<VecDeque<Instant>>,
    /// Idle connections (worker-local index), woken first idle first, so that traffic spreads
    /// over every connection (and so over every address).
    idle: RefCell<VecDeque<usize>>,
    /// The waker of each connection while it is in `idle`.
    wakers: RefCell<Vec<Option<Waker>>>,
    /// The schedule is over: connections exit once the queue is empty.
    pub(crate) done: Cell<bool>,
    /// The drain deadline passed: connections exit even if the queue is not empty.
    pub(crate) abandon: Cell<bool>,
}

impl Slots {
    pub(crate) fn new(connections: usize) -> Self {
        Self {
            wakers: RefCell::new(vec![None; connections]),
            ..Self::default()
        }
    }

    /// The next due slot for connection `conn`, or `None` when it must exit.
    fn poll_next(&self, conn: usize, cx: &mut Context<'_>) -> Poll<Option<Instant>> {
        if self.abandon.get() {
            return Poll::Ready(None);
        }
        if let Some(t) = self.queue.borrow_mut().pop_front() {
            self.leave_idle(conn);
            return Poll::Ready(Some(t));
        }
        if self.done.get() {
            return Poll::Ready(None);
        }
        let mut wakers = self.wakers.borrow_mut();
        match wakers.get_mut(conn) {
            Some(Some(w)) => w.clone_from(cx.waker()),
            Some(slot) => {
                *slot = Some(cx.waker().clone());
                self.idle.borrow_mut().push_back(conn);
            }
            None => return Poll::Ready(None),
        }
        Poll::Pending
    }

    /// A connection polled while in the idle line (a wake-up that was not for a slot, such as
    /// its request timer firing) that takes a slot leaves the line, so that the next slot wakes
    /// a connection that is really idle.
    fn leave_idle(&self, conn: usize) {
        let was_idle = self
            .wakers
            .borrow_mut()
            .get_mut(conn)
            .and_then(Option::take)
            .is_some();
        if was_idle {
            self.idle.borrow_mut().retain(|&c| c != conn);
        }
    }

    pub(crate) async fn next(&self, conn: usize) -> Option<Instant> {
        poll_fn(|cx| self.poll_next(conn, cx)).await
    }

    /// Wakes the connection idle the longest; false when none is idle.
    fn wake_one(&self) -> bool {
        let Some(conn) = self.idle.borrow_mut().pop_front() else {
            return false;
        };
        let waker = self
            .wakers
            .borrow_mut()
            .get_mut(conn)
            .and_then(Option::take);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    pub(crate) fn finish(&self, flag: &Cell<bool>) {
        flag.set(true);
        while self.wake_one() {}
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.borrow().len()
    }
}

/// The schedule as seen by one worker's pacer: its next due instant and the release of every
/// due slot.
#[derive(Debug)]
pub(crate) struct Pacing {
    schedule: Schedule,
    start: Instant,
    /// This worker takes every `stride`-th slot.
    stride: usize,
    next: Option<Instant>,
    lateness: Histogram<u64>,
}

impl Pacing {
    /// Worker `first` of `stride` workers: slots `first`, `first + stride`, ...
    pub(crate) fn new(mut schedule: Schedule, start: Instant, first: usize, stride: usize) -> Self {
        for _ in 0..first {
            schedule.next_offset();
        }
        let next = schedule.next_offset().map(|o| start + o);
        Self {
            schedule,
            start,
            stride: stride.max(1),
            next,
            lateness: new_histogram(),
        }
    }

    /// Queues every slot due at `now` and wakes as many idle connections.
    fn release(&mut self, now: Instant, slots: &Slots) {
        let mut n = 0;
        {
            let mut q = slots.queue.borrow_mut();
            while let Some(t) = self.next {
                if t > now {
                    break;
                }
                q.push_back(t);
                n += 1;
                self.lateness.saturating_record(micros(now - t));
                for _ in 1..self.stride {
                    self.schedule.next_offset();
                }
                self.next = self.schedule.next_offset().map(|o| self.start + o);
            }
        }
        for _ in 0..n {
            if !slots.wake_one() {
                break;
            }
        }
    }
}

/// Sub-millisecond sleeps on the worker's own reactor: a one-shot timerfd (hrtimer precision, no
/// timer slack), armed for each wait; its readiness wakes the pacer like a socket's would.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub(crate) struct PreciseTimer(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>);

#[cfg(target_os = "linux")]
impl PreciseTimer {
    fn new() -> std::io::Result<Self> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // `with_interest` is deprecated in favour of the `unsafe` `register_with_interest`, whose
        // safety condition (the fd stays open and the same while registered) an `OwnedFd` that
        // the `AsyncFd` owns and never hands out meets by construction.
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
        Ok(Self(fd))
    }

    /// Sleeps for `d` (at least 1 ns: a zero value would disarm the timer).
    async fn sleep(&self, d: Duration) -> std::io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let d = d.max(Duration::from_nanos(1));
        let value = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            },
        };
        // Arming resets the expiration count, so the edge-triggered readiness fires anew.
        timerfd_settime(self.0.get_ref(), TimerfdTimerFlags::empty(), &value)?;
        self.0.readable().await?.clear_ready();
        Ok(())
    }
}

/// The precise timer when the platform has one (Linux); an error when it has one that cannot
/// be made (no file descriptor left, ...).
#[cfg(target_os = "linux")]
pub(crate) fn precise_timer() -> std::io::Result<Option<PreciseTimer>> {
    PreciseTimer::new().map(Some)
}

#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub(crate) struct PreciseTimer;

#[cfg(not(target_os = "linux"))]
impl PreciseTimer {
    async fn sleep(&self, _d: Duration) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// No precise timer off Linux: the pacer uses tokio's millisecond timer (documented on
/// [`Pacer::Precise`]).
#[cfg(not(target_os = "linux"))]
pub(crate) fn precise_timer() -> std::io::Result<Option<PreciseTimer>> {
    Ok(None)
}

/// A worker's pacer: waits for the next slot (with `precise`, else tokio's millisecond timer),
/// then releases every slot due; records its own lateness (release time minus intended time).
/// Fails only when the precise timer cannot be armed: a run paced otherwise than asked would
/// measure something else.
pub(crate) async fn pace(
    mut p: Pacing,
    slots: &Slots,
    stop: &AtomicBool,
    precise: Option<PreciseTimer>,
) -> std::io::Result<Histogram<u64>> {
    let mut released: Option<Instant> = None;
    while let Some(due) = p.next {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if due > now {
            // At most one wake-up per MIN_WAKE_GAP: above 1 / MIN_WAKE_GAP requests per second,
            // slots are released in small batches (each at most MIN_WAKE_GAP late), below it
            // each on time.
            let at = released.map_or(due, |r| due.max(r + MIN_WAKE_GAP));
            let wait = (at - now).min(MAX_WAIT);
            if let Some(t) = &precise {
                t.sleep(wait).await?;
            } else {
                tokio::time::sleep_until(tokio::time::Instant::from_std(now + wait)).await;
            }
            continue;
        }
        p.release(now, slots);
        released = Some(now);
    }
    Ok(p.lateness)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    #[test]
    fn workers_pace_disjoint_shares_that_cover_the_schedule() {
        let start = Instant::now();
        let whole: Vec<Instant> = Schedule::constant(1000.0, Duration::from_secs(1))
            .map(|o| start + o)
            .collect();
        let mut shares: Vec<Instant> = Vec::new();
        for w in 0..3 {
            let mut p = Pacing::new(
                Schedule::constant(1000.0, Duration::from_secs(1)),
                start,
                w,
                3,
            );
            let slots = Slots::new(0);
            p.release(start + Duration::from_secs(2), &slots);
            assert!(p.next.is_none());
            let q: Vec<Instant> = slots.queue.borrow().iter().copied().collect();
            assert!(q.windows(2).all(|w| w[0] < w[1]));
            shares.extend(q);
        }
        shares.sort();
        assert_eq!(shares, whole);
    }

    /// Counts how often it is woken.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counters(n: usize) -> Vec<Arc<Count>> {
        (0..n)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect()
    }

    #[test]
    fn due_slots_wake_the_connections_idle_longest_one_each() {
        let slots = Slots::new(3);
        let counts = counters(3);
        for (conn, c) in counts.iter().enumerate().rev() {
            let waker = Waker::from(Arc::clone(c));
            let mut cx = Context::from_waker(&waker);
            assert!(slots.poll_next(conn, &mut cx).is_pending());
            // Polled again while idle: still one place in the line.
            assert!(slots.poll_next(conn, &mut cx).is_pending());
        }
        let start = Instant::now();
        let mut p = Pacing::new(Schedule::constant(2.0, Duration::from_secs(1)), start, 0, 1);
        p.release(start + Duration::from_secs(1), &slots);
        let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::Relaxed)).collect();
        // Connections went idle in the order 2, 1, 0: the two slots wake 2 and 1.
        assert_eq!(woken, vec![0, 1, 1]);
        let waker = Waker::from(Arc::clone(&counts[2]));
        let mut cx = Context::from_waker(&waker);
        assert_eq!(slots.poll_next(2, &mut cx), Poll::Ready(Some(start)));
        slots.finish(&slots.done);
        assert_eq!(counts[0].0.load(Ordering::Relaxed), 1);
        assert!(matches!(slots.poll_next(1, &mut cx), Poll::Ready(Some(_))));
        assert_eq!(slots.poll_next(0, &mut cx), Poll::Ready(None));
    }

    #[test]
    fn a_connection_woken_for_something_else_that_takes_a_slot_leaves_the_idle_line() {
        let slots = Slots::new(2);
        let counts = counters(2);
        let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(Arc::clone(c))).collect();
        // Connection 1 goes idle first, then 0.
        for conn in [1, 0] {
            let mut cx = Context::from_waker(&wakers[conn]);
            assert!(slots.poll_next(conn, &mut cx).is_pending());
        }
        // A slot is queued and connection 1, woken by its request timer, polls first and takes it.
        let start = Instant::now();
        slots.queue.borrow_mut().push_back(start);
        let mut cx = Context::from_waker(&wakers[1]);
        assert_eq!(slots.poll_next(1, &mut cx), Poll::Ready(Some(start)));
        // The next slot wakes connection 0, the one still idle, not the busy connection 1.
        slots.queue.borrow_mut().push_back(start);
        assert!(slots.wake_one());
        assert_eq!(counts[0].0.load(Ordering::Relaxed), 1);
        assert_eq!(counts[1].0.load(Ordering::Relaxed), 0);
        assert!(!slots.wake_one(), "nobody else is idle");
    }
}
