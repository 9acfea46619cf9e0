//! Balanced accept across workers that share one listening socket.
//!
//! Every worker waits on the same accept queue, and the one that happens to be awake takes a
//! whole burst (issue 16: 64 connections opened at once split 64/0 on two workers). The master
//! keeps a small table in shared memory (a memfd mapped by every worker): one slot per worker
//! *process* holding its open-connection count, how many connections it accepted so far,
//! whether it is accepting (ready and not draining, set by the master from its supervisor's
//! state), whether its accept loop is *parked* (waiting for a connection) and whether its
//! runtime is *idle* (nothing else to run). Before each `accept`, a worker asks
//! [`Balance::poll_admit`], and asks again when a connection wakes it from a wait
//! ([`Balance::parked`]: connections that arrive one at a time each find every worker parked,
//! and an answer given before the wait is stale by then):
//!
//! - within its share (`mine ≤ (total + 1) / live + 1`, the connection about to be accepted
//!   counted in), it accepts; woken from a wait, unless an idle worker parked in accept holds
//!   two or more fewer ([`Balance::poll_admit_woken`]);
//! - over it, it leaves the connection to a worker holding fewer that is **idle and parked in
//!   accept right now**: such a worker was woken by the same connection and will take it at
//!   once. It yields (the CPU and its runtime) until that worker has tried its accept, at most
//!   [`YIELD_CAP`]; if no worker below is idle, it accepts;
//! - far over it (`mine ≥ fair + max(2, fair / 3)`), it also yields while the workers holding
//!   fewer keep accepting, at most [`FAR_CAP`], so that workers that are runnable but waiting
//!   for a core (more workers than cores) catch up on a burst.
//!
//! A worker never sleeps on a timer and never waits for a worker that is busy: under steady
//! churn (a new connection per request) the others are rarely idle, and a deferral lasts as
//! long as the idle worker takes to wake up. Counting is one atomic add on the worker's own slot
//! (its own cache line), and a check reads one line per live slot. Connections are counted by
//! the worker's [`Counters`](crate::Counters) ([`Counters::connection`](crate::Counters::connection)
//! guards), so every adapter that counts its connections feeds the table; an accept loop marks
//! itself parked with [`Balance::parked`] (or [`Balance::park`]) and a runtime reports its idle
//! threads through [`Balance::runtime_idle`]. A worker that reports neither is never waited for.
//!
//! The table exists only in the shared-socket mode (in `SO_REUSEPORT` mode the kernel picks the
//! socket, and a worker that defers only delays its own queue); [`Balance`] is disabled in a
//! [`Worker::standalone`](crate::Worker::standalone) context, with
//! [`Prefork::balance(false)`](crate::Prefork::balance), when the master runs with
//! `PREFORK_BALANCE=off` in its environment, and off Linux.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Slots in the table: worker processes alive at once (a reload runs two per worker id).
pub(crate) const SLOTS: usize = 1024;

/// How long a worker over its share yields to an idle worker (holding fewer connections) that
/// has not yet tried its accept, before it accepts anyway.
pub const YIELD_CAP: Duration = Duration::from_millis(1);

/// How long a worker far over its share yields while the workers holding fewer keep accepting,
/// before it accepts anyway.
pub const FAR_CAP: Duration = Duration::from_millis(2);

/// The workers holding fewer "keep accepting" while one of them accepted within this long.
const PROGRESS: Duration = Duration::from_micros(300);

/// How many connections above the average a worker may hold and still accept.
const SLACK: u64 = 1;

/// A worker within its share that a connection woke from its wait still leaves that
/// connection to an idle worker parked in accept that holds this many fewer.
const GAP: u64 = 2;

const MAGIC: u32 = 0x5052_4246; // "PRBF"

/// One worker process's line of the table.
#[repr(C, align(64))]
struct Slot {
    /// Connections open now.
    open: AtomicU32,
    /// 1 while the master counts this worker as accepting (ready and not draining).
    accepting: AtomicU32,
    /// Connections accepted so far (only grows while the slot is in use).
    accepted: AtomicU64,
    /// How many of the worker's accept loops are parked: waiting for a connection.
    parked: AtomicU32,
    /// 1 while the worker's runtime is running something; 0 when all its threads are idle, or
    /// when it does not report them (see [`Balance::runtime_idle`]).
    busy: AtomicU32,
    /// How many times one of the worker's parked accept loops woke up and tried its accept.
    wakes: AtomicU32,
}

#[repr(C, align(64))]
struct Header {
    magic: AtomicU32,
    /// One past the highest slot in use: workers scan `0..high`.
    high: AtomicU32,
}

#[repr(C)]
struct Layout {
    header: Header,
    slots: [Slot; SLOTS],
}

const SIZE: usize = std::mem::size_of::<Layout>();

/// A shared mapping of the table.
struct Mapping {
    ptr: NonNull<Layout>,
}

// SAFETY: the mapping is only ever accessed through atomics (`Layout` holds nothing else), so
// sharing it between threads is as safe as sharing the atomics themselves.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(fd: BorrowedFd<'_>) -> io::Result<Mapping> {
        let size = nix::sys::stat::fstat(fd)?.st_size;
        if usize::try_from(size).ok() != Some(SIZE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the balance table is {size} bytes, not {SIZE}"),
            ));
        }
        // The memory is zero-filled (a fresh memfd) or written only through `Layout`'s atomics,
        // for which every bit pattern is valid; it stays mapped until `Drop` unmaps it.
        // SAFETY: maps a borrowed descriptor of exactly SIZE bytes (checked above), shared and
        // read-write, at an address the kernel picks; no reference outlives `self`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<Layout>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { ptr })
    }

    fn layout(&self) -> &Layout {
        // SAFETY: `ptr` is a live mapping of SIZE bytes (see `map`), page-aligned, valid for
        // the lifetime of `self`, and only accessed through atomics.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region `map` mapped; no reference into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), SIZE);
        }
    }
}

#[cfg(target_os = "linux")]
fn memfd() -> io::Result<OwnedFd> {
    let fd =
        nix::sys::memfd::memfd_create(c"prefork-balance", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    nix::unistd::ftruncate(&fd, SIZE as libc::off_t)?;
    Ok(fd)
}

#[cfg(not(target_os = "linux"))]
fn memfd() -> io::Result<OwnedFd> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the balance table needs memfd (Linux)",
    ))
}

/// The master's side of the table: it allocates a slot per worker process, marks it accepting
/// while the worker is ready and not draining, and clears it when the process is reaped.
pub(crate) struct Table {
    fd: OwnedFd,
    map: Mapping,
    used: Vec<bool>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("in_use", &self.used.iter().filter(|u| **u).count())
            .finish()
    }
}

impl Table {
    /// A new, empty table (close-on-exec; each spawn places a copy for its worker).
    pub(crate) fn create() -> io::Result<Table> {
        let fd = memfd()?;
        let map = Mapping::map(fd.as_fd())?;
        map.layout().header.magic.store(MAGIC, Ordering::Release);
        Ok(Table {
            fd,
            map,
            used: vec![false; SLOTS],
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn slot(&self, i: usize) -> &Slot {
        &self.map.layout().slots[i]
    }

    /// A free slot for a new worker process, cleared; `None` if all are in use (that worker
    /// then accepts without balancing).
    pub(crate) fn alloc(&mut self) -> Option<usize> {
        let i = self.used.iter().position(|u| !u)?;
        self.used[i] = true;
        let s = self.slot(i);
        s.accepting.store(0, Ordering::Release);
        s.open.store(0, Ordering::Release);
        s.accepted.store(0, Ordering::Release);
        s.parked.store(0, Ordering::Release);
        s.busy.store(0, Ordering::Release);
        self.update_high();
        Some(i)
    }

    /// Counts the slot's worker in the averages (it is ready and not draining), or not.
    pub(crate) fn set_accepting(&self, i: usize, accepting: bool) {
        self.slot(i)
            .accepting
            .store(u32::from(accepting), Ordering::Release);
    }

    /// Frees the slot of a reaped process: its connections are gone with it.
    pub(crate) fn free(&mut self, i: usize) {
        if !std::mem::replace(&mut self.used[i], false) {
            return;
        }
        let s = self.slot(i);
        s.accepting.store(0, Ordering::Release);
        s.open.store(0, Ordering::Release);
        s.parked.store(0, Ordering::Release);
        s.busy.store(0, Ordering::Release);
        self.update_high();
    }

    fn update_high(&self) {
        let high = self.used.iter().rposition(|u| *u).map_or(0, |i| i + 1);
        self.map
            .layout()
            .header
            .high
            .store(high as u32, Ordering::Release);
    }

    /// The worker's handle on slot `i` (for tests: workers map the table from their fd).
    #[cfg(test)]
    fn worker(&self, i: usize) -> Balance {
        Balance::map(self.fd(), i).unwrap()
    }
}

/// What [`Balance::poll_admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Accept a connection now.
    Now,
    /// Do not accept yet: yield (the CPU, then the runtime) and ask again.
    Yield,
}

/// The state of one deferral, kept by the accept loop between calls of
/// [`Balance::poll_admit`].
#[derive(Debug, Default, Clone)]
pub struct AdmitWait {
    /// Since when this worker has been yielding.
    since: Option<Instant>,
    /// The idle worker it yields to, and that worker's wake count then.
    target: Option<(usize, u32)>,
    /// The accepted total of the workers holding fewer, and since when it has not changed.
    progress: Option<(u64, Instant)>,
}

struct Inner {
    map: Mapping,
    slot: usize,
    /// Runtime threads idle now (see [`Balance::runtime_idle`]).
    idle_threads: AtomicUsize,
}

/// A worker's handle on the balance table (see the [module](self) docs): whether it may accept
/// now. Cheap to clone. Get it from [`Worker::balance`](crate::Worker::balance).
///
/// Use it in an accept loop: mark the wait for a connection with [`Balance::parked`], and ask
/// [`Balance::admit`] before each `accept`:
///
/// ```no_run
/// # async fn yield_now() {}
/// # async fn accept() {}
/// # async fn example(child: &prefork_core::Worker) {
/// let balance = child.balance();
/// loop {
///     // Yields while this worker holds more than its share and an idle worker holds fewer.
///     balance.admit(yield_now).await;
///     // Parked while it waits: a worker over its share leaves the next connection to this one.
///     let accepted = balance.parked(accept()).await;
///     // count it: let conn = drain.connection(); (or child.counters().connection())
/// }
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Balance {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("Balance(disabled)"),
            Some(inner) => {
                let (mine, total, live) = self.share();
                f.debug_struct("Balance")
                    .field("slot", &inner.slot)
                    .field("mine", &mine)
                    .field("total", &total)
                    .field("live", &live)
                    .finish()
            }
        }
    }
}

impl Balance {
    /// A handle that always admits (no master, `SO_REUSEPORT` mode, or balancing turned off).
    pub fn disabled() -> Balance {
        Balance { inner: None }
    }

    /// Maps the table the master passed on `fd`, as slot `slot`.
    pub(crate) fn map(fd: BorrowedFd<'_>, slot: usize) -> io::Result<Balance> {
        if slot >= SLOTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("balance slot {slot} is out of range"),
            ));
        }
        let map = Mapping::map(fd)?;
        if map.layout().header.magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a prefork balance table",
            ));
        }
        Ok(Balance {
            inner: Some(Arc::new(Inner {
                map,
                slot,
                idle_threads: AtomicUsize::new(0),
            })),
        })
    }

    /// Whether this worker balances its accepts with the others.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn slot(&self) -> Option<&Slot> {
        let inner = self.inner.as_deref()?;
        Some(&inner.map.layout().slots[inner.slot])
    }

    /// The slots in use, with their index, this worker's own excepted.
    fn others(&self) -> impl Iterator<Item = (usize, &Slot)> {
        let (slots, me): (&[Slot], usize) = match self.inner.as_deref() {
            Some(inner) => {
                let layout = inner.map.layout();
                let high = (layout.header.high.load(Ordering::Acquire) as usize).min(SLOTS);
                (&layout.slots[..high], inner.slot)
            }
            None => (&[], 0),
        };
        slots.iter().enumerate().filter(move |(i, _)| *i != me)
    }

    /// Counts one more open connection (and one more accepted).
    pub(crate) fn opened(&self) {
        if let Some(s) = self.slot() {
            s.open.fetch_add(1, Ordering::Relaxed);
            s.accepted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one connection less.
    pub(crate) fn closed(&self) {
        if let Some(s) = self.slot() {
            // Never below zero, even if the master cleared the slot meanwhile.
            let _ = s
                .open
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// (this worker's open connections, the accepting workers' total, how many accept), or
    /// `(0, 0, 0)` when disabled. This worker counts in the total and the live count only while
    /// the master has it accepting.
    pub fn share(&self) -> (u64, u64, u64) {
        let Some(Inner { map, slot: me, .. }) = self.inner.as_deref() else {
            return (0, 0, 0);
        };
        let layout = map.layout();
        let high = (layout.header.high.load(Ordering::Acquire) as usize).min(SLOTS);
        let (mut total, mut live) = (0u64, 0u64);
        for s in &layout.slots[..high] {
            if s.accepting.load(Ordering::Relaxed) != 0 {
                total += u64::from(s.open.load(Ordering::Relaxed));
                live += 1;
            }
        }
        let mine = u64::from(layout.slots[*me].open.load(Ordering::Relaxed));
        (mine, total, live)
    }

    /// [`Balance::share`], with this worker counted in even while the master does not (yet)
    /// count it as accepting (its ready is still on its way, or its heartbeats look late): it
    /// is balanced against the others all the same.
    fn view(&self) -> (u64, u64, u64) {
        let (mine, mut total, mut live) = self.share();
        if self
            .slot()
            .is_some_and(|s| s.accepting.load(Ordering::Relaxed) == 0)
        {
            total += mine;
            live += 1;
        }
        (mine, total, live)
    }

    /// Whether this worker is within its share: `mine ≤ (total + 1) / live + 1` (the
    /// connection about to be accepted counted in). Always `true` when disabled.
    pub fn may_accept(&self) -> bool {
        self.within(false)
    }

    /// [`Balance::may_accept`]; `woken`: also no idle worker parked in accept holds two or more
    /// fewer.
    fn within(&self, woken: bool) -> bool {
        if !self.is_enabled() {
            return true;
        }
        let (mine, total, live) = self.view();
        mine * live <= total + 1 + SLACK * live && !(woken && self.idle_parked_at_most(mine, GAP))
    }

    /// Whether another accepting worker parked in accept, with an idle runtime, holds at most
    /// `mine - gap`.
    fn idle_parked_at_most(&self, mine: u64, gap: u64) -> bool {
        let Some(limit) = mine.checked_sub(gap) else {
            return false;
        };
        self.others().any(|(_, s)| {
            s.accepting.load(Ordering::Relaxed) != 0
                && s.parked.load(Ordering::Relaxed) != 0
                && s.busy.load(Ordering::Relaxed) == 0
                && u64::from(s.open.load(Ordering::Relaxed)) <= limit
        })
    }

    /// The fair share: the average with the connection about to be accepted, rounded up.
    fn fair(&self) -> u64 {
        let (_, total, live) = self.view();
        (total + 1).div_ceil(live.max(1))
    }

    /// Whether this worker holds at least `fair + max(2, fair / 3)`.
    fn far_over(&self) -> bool {
        let fair = self.fair();
        self.share().0 >= fair + (fair / 3).max(2)
    }

    /// Another accepting worker holding fewer than `mine` whose accept loop is parked, and
    /// that is idle, or starved (holds at most half the fair share), or any if `any` (a busy
    /// worker parked in accept gets to it once it has run what it is running): (its slot, its
    /// wake count).
    fn parked_below(&self, mine: u64, any: bool) -> Option<(usize, u32)> {
        let starved = self.fair() / 2;
        self.others()
            .find(|(_, s)| {
                let open = u64::from(s.open.load(Ordering::Relaxed));
                s.accepting.load(Ordering::Relaxed) != 0
                    && s.parked.load(Ordering::Relaxed) != 0
                    && (any || s.busy.load(Ordering::Relaxed) == 0 || open <= starved)
                    && open < mine
            })
            .map(|(i, s)| (i, s.wakes.load(Ordering::Relaxed)))
    }

    /// Whether worker `t` has not tried its accept since its wake count was `wakes`, and still
    /// holds fewer than `mine`.
    fn still_waking(&self, (t, wakes): (usize, u32), mine: u64) -> bool {
        self.others().any(|(i, s)| {
            i == t
                && s.accepting.load(Ordering::Relaxed) != 0
                && s.wakes.load(Ordering::Relaxed) == wakes
                && u64::from(s.open.load(Ordering::Relaxed)) < mine
        })
    }

    /// The connections accepted so far by the accepting workers holding fewer than `mine`.
    fn accepted_below(&self, mine: u64) -> u64 {
        self.others()
            .filter(|(_, s)| {
                s.accepting.load(Ordering::Relaxed) != 0
                    && u64::from(s.open.load(Ordering::Relaxed)) < mine
            })
            .map(|(_, s)| s.accepted.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }

    /// Decides whether to accept now, without blocking; `wait` carries the deferral between
    /// calls (keep one per accept loop). On [`Admit::Yield`], yield and ask again.
    ///
    /// Within its share, a worker accepts. Over it, it yields to an idle worker parked in
    /// accept that holds fewer, until that worker has tried its accept (at most [`YIELD_CAP`]);
    /// far over it, also while the workers holding fewer keep accepting (at most
    /// [`FAR_CAP`]). Otherwise it accepts.
    pub fn poll_admit(&self, wait: &mut AdmitWait) -> Admit {
        self.admit_now(wait, false)
    }

    /// [`Balance::poll_admit`] for an accept loop that a connection just woke from its wait for
    /// one (as [`Balance::parked`] does): that connection woke every worker parked in accept,
    /// so within its share this worker also leaves it to an idle one holding two or more fewer
    /// (with many workers, the average plus one would let the others leave one with none).
    pub fn poll_admit_woken(&self, wait: &mut AdmitWait) -> Admit {
        self.admit_now(wait, true)
    }

    fn admit_now(&self, wait: &mut AdmitWait, woken: bool) -> Admit {
        if self.within(woken) {
            *wait = AdmitWait::default();
            return Admit::Now;
        }
        let mine = self.share().0;
        let far = self.far_over();
        let now = Instant::now();
        let waited = now.duration_since(*wait.since.get_or_insert(now));
        let defer = waited < if far { FAR_CAP } else { YIELD_CAP }
            && (wait.target.is_some_and(|t| self.still_waking(t, mine))
                || {
                    wait.target = self.parked_below(mine, far);
                    wait.target.is_some()
                }
                || far && {
                    // Far over: also while the workers below keep accepting.
                    let below = self.accepted_below(mine);
                    let last = match wait.progress {
                        Some((seen, at)) if seen == below => at,
                        _ => now,
                    };
                    wait.progress = Some((below, last));
                    now.duration_since(last) < PROGRESS
                });
        if defer {
            Admit::Yield
        } else {
            *wait = AdmitWait::default();
            Admit::Now
        }
    }

    /// Whether this worker, over its share, should leave new connections to the others for
    /// now: another accepting worker holding fewer is parked in accept (idle, or any when this
    /// one is far over its share). For an accept loop that cannot be asked before each
    /// `accept` (actix-server's accept thread): pause it while this is `true`, and resume it
    /// once it turns `false`. Always `false` when disabled.
    pub fn should_pause(&self) -> bool {
        if self.may_accept() {
            return false;
        }
        let mine = self.share().0;
        self.parked_below(mine, self.far_over()).is_some()
    }

    /// Completes once this worker may accept (see [`Balance::poll_admit`]); `yield_now` is the
    /// runtime's yield (`tokio::task::yield_now`, `smol::future::yield_now`, ...). Each time
    /// it defers, it first yields the CPU to a worker waking up (`sched_yield`, which returns
    /// at once when no other process waits for this core), then lets this worker's own tasks
    /// run. Completes at once when disabled or within the share.
    pub async fn admit<T: Future>(&self, mut yield_now: impl FnMut() -> T) {
        let mut wait = AdmitWait::default();
        while self.poll_admit(&mut wait) == Admit::Yield {
            std::thread::yield_now();
            yield_now().await;
        }
    }

    /// Marks one of this worker's accept loops parked (waiting for a connection) until the
    /// guard drops; the drop counts as a wake (drop it once the accept was tried).
    pub fn park(&self) -> Parked {
        if let Some(s) = self.slot() {
            s.parked.fetch_add(1, Ordering::Relaxed);
        }
        Parked(self.clone())
    }

    /// `accept` (a future that waits for a connection), with this worker marked parked
    /// whenever it waits: a worker over its share then leaves the next connection to this one
    /// while this worker's runtime is idle.
    ///
    /// Woken from a wait, it asks [`Balance::poll_admit_woken`] before it polls `accept`: the
    /// share it was admitted on is as old as the wait, and connections that arrive one at a
    /// time each find every worker parked. While the answer is [`Admit::Yield`] it yields (the
    /// CPU, then its runtime, by waking itself) and stays marked parked, as the connection that
    /// woke it is not taken yet.
    pub fn parked<F: Future>(&self, accept: F) -> ParkedWhile<F> {
        ParkedWhile {
            fut: accept,
            balance: self.clone(),
            parked: None,
            wait: AdmitWait::default(),
        }
    }

    /// Hooks for the worker's runtime, which has `threads` threads: call [`RuntimeIdle::park`]
    /// just before a thread blocks for lack of work and [`RuntimeIdle::unpark`] when it
    /// wakes (tokio's `on_thread_park`/`on_thread_unpark`). The worker counts as idle while
    /// every thread is parked. A runtime that does not report counts as idle whenever its
    /// accept loop is parked.
    pub fn runtime_idle(&self, threads: usize) -> RuntimeIdle {
        if let Some(s) = self.slot() {
            s.busy.store(1, Ordering::Relaxed);
        }
        RuntimeIdle {
            balance: self.clone(),
            threads: threads.max(1),
        }
    }
}

/// One of this worker's accept loops parked; see [`Balance::park`].
#[derive(Debug)]
pub struct Parked(Balance);

impl Drop for Parked {
    fn drop(&mut self) {
        if let Some(s) = self.0.slot() {
            s.wakes.fetch_add(1, Ordering::Relaxed);
            let _ = s
                .parked
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

pin_project_lite::pin_project! {
    /// An accept with this worker marked parked while it waits; see [`Balance::parked`].
    #[derive(Debug)]
    pub struct ParkedWhile<F> {
        #[pin]
        fut: F,
        balance: Balance,
        parked: Option<Parked>,
        wait: AdmitWait,
    }
}

impl<F: Future> Future for ParkedWhile<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Woken from a wait (a connection arrived, most likely): over its share, or within it
        // while an idle parked worker holds two fewer, this worker leaves the connection to
        // that worker, which the same connection woke.
        if this.parked.is_some() && this.balance.poll_admit_woken(this.wait) == Admit::Yield {
            std::thread::yield_now();
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // The wake counts once the accept was tried, so that a worker yielding to this one
        // resumes only then.
        let woke = this.parked.take();
        let r = this.fut.poll(cx);
        drop(woke);
        if r.is_pending() {
            *this.parked = Some(this.balance.park());
        }
        r
    }
}

/// A runtime's park and unpark hooks; see [`Balance::runtime_idle`].
#[derive(Debug, Clone)]
pub struct RuntimeIdle {
    balance: Balance,
    threads: usize,
}

impl RuntimeIdle {
    /// A runtime thread is about to block for lack of work.
    pub fn park(&self) {
        let Some(inner) = self.balance.inner.as_deref() else {
            return;
        };
        let idle = inner.idle_threads.fetch_add(1, Ordering::AcqRel) + 1;
        if idle >= self.threads {
            inner.map.layout().slots[inner.slot]
                .busy
                .store(0, Ordering::Relaxed);
        }
    }

    /// A runtime thread woke up.
    pub fn unpark(&self) {
        let Some(inner) = self.balance.inner.as_deref() else {
            return;
        };
        let _ = inner
            .idle_threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        inner.map.layout().slots[inner.slot]
            .busy
            .store(1, Ordering::Relaxed);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn ready(table: &mut Table, n: usize) -> Vec<(usize, Balance)> {
        (0..n)
            .map(|_| {
                let i = table.alloc().unwrap();
                table.set_accepting(i, true);
                (i, table.worker(i))
            })
            .collect()
    }

    #[test]
    fn a_worker_over_its_share_defers_and_one_under_it_accepts() {
        let mut table = Table::create().unwrap();
        let w = ready(&mut table, 4);
        let (a, b) = (&w[0].1, &w[1].1);
        assert!(a.may_accept() && b.may_accept());
        a.opened();
        assert_eq!(a.share(), (1, 1, 4));
        assert!(a.may_accept(), "1 <= (1 + 1) / 4 + 1: within the slack");
        a.opened();
        assert!(
            !a.may_accept(),
            "2 > (2 + 1) / 4 + 1 while the others hold none"
        );
        assert!(b.may_accept());
        for (_, o) in &w[1..] {
            o.opened();
        }
        assert!(a.may_accept(), "the others caught up");
        a.closed();
        assert_eq!(a.share(), (1, 4, 4));
    }

    #[test]
    fn an_over_share_worker_yields_to_an_idle_parked_one_until_it_tried_its_accept() {
        let mut table = Table::create().unwrap();
        let w = ready(&mut table, 2);
        let (a, b) = (&w[0].1, &w[1].1);
        for _ in 0..9 {
            a.opened();
        }
        for _ in 0..5 {
            b.opened();
        }
        assert!(!a.may_accept(), "9 > (14 + 1) / 2 + 1");
        assert!(!a.far_over(), "9 < 8 + 2");
        let mut wait = AdmitWait::default();
        assert_eq!(
            a.poll_admit(&mut wait),
            Admit::Now,
            "nobody is parked: accept"
        );
        // b's runtime is idle and its accept loop waits for a connection.
        let hooks = b.runtime_idle(1);
        hooks.park();
        let parked = b.park();
        assert_eq!(a.poll_admit(&mut wait), Admit::Yield);
        // b wakes up (the same connection woke it): a still waits until b tried its accept.
        hooks.unpark();
        assert_eq!(a.poll_admit(&mut wait), Admit::Yield);
        drop(parked);
        assert_eq!(
            a.poll_admit(&mut wait),
            Admit::Now,
            "b tried: a accepts too"
        );
        // b parked again, but its runtime is busy (serving) and b is not starved (it holds
        // more than half the fair share): nobody waits for it.
        let _parked = b.park();
        assert_eq!(a.poll_admit(&mut wait), Admit::Now);
        // Idle again but holding as many as a: not below, not waited for.
        hooks.park();
        for _ in 0..4 {
            b.opened();
        }
        assert_eq!(a.poll_admit(&mut wait), Admit::Now);
    }

    #[test]
    fn a_starved_or_far_behind_worker_is_waited_for_even_busy() {
        let mut table = Table::create().unwrap();
        let w = ready(&mut table, 2);
        let (a, b) = (&w[0].1, &w[1].1);
        for _ in 0..4 {
            a.opened();
        }
        let hooks = b.runtime_idle(1); // busy
        let parked = b.park();
        assert!(!a.may_accept() && !a.far_over());
        let mut wait = AdmitWait::default();
        assert_eq!(
            a.poll_admit(&mut wait),
            Admit::Yield,
            "b holds 0 <= 3 / 2: starved, its accept comes soon"
        );
        drop(parked);
        assert_eq!(a.poll_admit(&mut wait), Admit::Now);
        // Far over its share, a waits for any worker parked below, busy or not.
        for _ in 0..6 {
            a.opened();
        }
        for _ in 0..3 {
            b.opened();
        }
        assert!(a.far_over(), "10 >= 7 + 2");
        let _parked = b.park();
        assert_eq!(a.poll_admit(&mut wait), Admit::Yield);
        drop(hooks);
    }

    #[test]
    fn a_worker_that_does_not_wake_is_waited_for_at_most_the_cap() {
        let mut table = Table::create().unwrap();
        let w = ready(&mut table, 2);
        let (a, b) = (&w[0].1, &w[1].1);
        for _ in 0..4 {
            a.opened();
        }
        let _parked = b.park(); // a runtime that does not report counts as idle
        let mut wait = AdmitWait::default();
        assert_eq!(a.poll_admit(&mut wait), Admit::Yield);
        std::thread::sleep(YIELD_CAP);
        assert_eq!(a.poll_admit(&mut wait), Admit::Now);
    }

    #[test]
    fn a_worker_far_over_its_share_yields_while_the_others_accept() {
        let mut table = Table::create().unwrap();
        let w = ready(&mut table, 2);
        let (a, b) = (&w[0].1, &w[1].1);
        for _ in 0..10 {
            a.opened();
        }
        assert!(a.far_over(), "10 >= 6 + 2");
        let hooks = b.runtime_idle(1); // b busy, not parked: running, accepting
        let mut wait = AdmitWait::default();
        assert_eq!(a.poll_admit(&mut wait), Admit::Yield);
        b.opened();
        assert_eq!(a.poll_admit(&mut wait), Admit::Yield, "b keeps accepting");
        // b stopped accepting (busy with something else): a accepts.
        std::thread::sleep(PROGRESS);
        assert_eq!(a.poll_admit(&mut wait), Admit::Now);
        drop(hooks);
    }

    #[test]
    fn draining_and_reaped_workers_do_not_count() {
        let mut table = Table::create().unwrap();
        let w = ready(&mut table, 3);
        let (a, c) = (&w[0].1, &w[2].1);
        for _ in 0..10 {
            c.opened();
        }
        for _ in 0..4 {
            a.opened();
        }
        assert!(a.may_accept(), "4 <= 15 / 3 + 1");
        table.set_accepting(w[2].0, false); // draining
        assert_eq!(a.share(), (4, 4, 2));
        assert!(!a.may_accept(), "4 > 5 / 2 + 1 once c no longer counts");
        // A draining worker is never waited for, even idle and parked.
        let _parked = c.park();
        c.closed();
        assert_eq!(a.poll_admit(&mut AdmitWait::default()), Admit::Now);
        table.free(w[2].0);
        let d = table.alloc().unwrap();
        assert_eq!(d, w[2].0, "the lowest free slot is reused");
        assert_eq!(table.worker(d).share().0, 0, "a reused slot starts empty");
        // A worker the master does not count as accepting yet still counts itself in.
        table.set_accepting(w[0].0, false);
        assert_eq!(a.share(), (4, 0, 1));
        assert!(!a.may_accept(), "4 > (4 + 1) / 2 + 1");
        a.closed();
        a.closed();
        assert!(a.may_accept(), "2 <= (2 + 1) / 2 + 1");
    }

    #[test]
    fn a_disabled_handle_always_admits() {
        let b = Balance::disabled();
        b.opened();
        let _parked = b.park();
        assert!(b.may_accept());
        assert_eq!(b.poll_admit(&mut AdmitWait::default()), Admit::Now);
    }

    #[test]
    fn a_woken_worker_leaves_the_connection_to_an_idle_one_holding_two_fewer() {
        let mut table = Table::create().unwrap();
        let w = ready(&mut table, 8);
        // 7 workers hold 2 each, the last none: every one of the 7 is within its share.
        for (_, b) in &w[..7] {
            b.opened();
            b.opened();
        }
        let (a, last) = (&w[0].1, &w[7].1);
        assert!(a.may_accept());
        let mut wait = AdmitWait::default();
        assert_eq!(
            a.poll_admit(&mut wait),
            Admit::Now,
            "not woken: the share rule only"
        );
        // The last one waits in accept with nothing to run: a woken worker leaves it the
        // connection (until it tried its accept).
        let hooks = last.runtime_idle(1);
        hooks.park();
        let parked = last.park();
        assert_eq!(a.poll_admit_woken(&mut wait), Admit::Yield);
        drop(parked);
        // It took it, and waits again holding one: one fewer is not enough.
        last.opened();
        let _parked = last.park();
        assert_eq!(
            a.poll_admit_woken(&mut wait),
            Admit::Now,
            "it holds 1: one fewer"
        );
    }

    #[test]
    fn a_parked_accept_asks_the_table_again_when_woken() {
        let mut table = Table::create().unwrap();
        let w = ready(&mut table, 2);
        let (a, b) = (&w[0].1, &w[1].1);
        for _ in 0..4 {
            a.opened();
        }
        let polls = std::cell::Cell::new(0);
        let accept = std::future::poll_fn(|_| {
            polls.set(polls.get() + 1);
            Poll::<()>::Pending
        });
        let mut accept = std::pin::pin!(a.parked(accept));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Admitted before it waits (b is busy), then parked.
        let hooks = b.runtime_idle(1);
        assert!(accept.as_mut().poll(&mut cx).is_pending());
        // While a waited, b went idle and parked: the connection that wakes a is b's.
        hooks.park();
        let parked = b.park();
        assert!(accept.as_mut().poll(&mut cx).is_pending());
        drop(parked);
        assert!(accept.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            polls.get(),
            2,
            "the accept is not polled while a leaves it to b"
        );
    }

    #[test]
    fn an_accept_is_parked_while_it_waits_and_wakes_once_tried() {
        let mut table = Table::create().unwrap();
        let w = ready(&mut table, 2);
        let (i, b) = (w[1].0, &w[1].1);
        let slot = table.slot(i);
        let mut polls = 0;
        let accept = std::future::poll_fn(|_| {
            polls += 1;
            if polls < 3 {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        let mut accept = std::pin::pin!(b.parked(accept));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(accept.as_mut().poll(&mut cx).is_pending());
        assert_eq!(slot.parked.load(Ordering::Relaxed), 1);
        let wakes = slot.wakes.load(Ordering::Relaxed);
        assert!(accept.as_mut().poll(&mut cx).is_pending());
        assert_eq!(slot.parked.load(Ordering::Relaxed), 1, "still waiting");
        assert_eq!(slot.wakes.load(Ordering::Relaxed), wakes + 1);
        assert!(accept.as_mut().poll(&mut cx).is_ready());
        assert_eq!(slot.parked.load(Ordering::Relaxed), 0, "accepted");
    }

    #[test]
    fn the_table_is_shared_across_mappings() {
        let mut table = Table::create().unwrap();
        let i = table.alloc().unwrap();
        table.set_accepting(i, true);
        let one = table.worker(i);
        let two = table.worker(i);
        one.opened();
        assert_eq!(two.share(), (1, 1, 1));
        drop(one);
        two.closed();
        assert_eq!(two.share(), (0, 0, 1));
    }
}
