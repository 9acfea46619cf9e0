//! Balanced accept across workers that share one listening socket.
//!
//! Every worker waits on the same accept queue, and the one that happens to be awake takes a
//! whole burst (issue 16: 64 connections opened at once split 64/0 on two workers). The master
//! keeps a small table in shared memory (a memfd mapped by every worker): one slot per worker
//! *process* holding its open-connection count, how many connections it accepted so far, and
//! whether it is accepting (ready and not draining, set by the master from its supervisor's
//! state). Before each `accept`, a worker asks [`Balance::poll_admit`]:
//!
//! - if it holds no more than the average of the accepting workers plus a slack of one
//!   (`mine ≤ (total + 1) / live + 1`), it accepts;
//! - otherwise it defers: it checks again every millisecond, and as long as other workers keep
//!   accepting it leaves the queue to them; once nobody else accepted for [`PATIENCE`] (they are
//!   busy, hung or gone) it accepts anyway, so a stuck worker never throttles the others and no
//!   connection waits in the queue for long.
//!
//! Nothing is sent per connection: counting is one atomic add on the worker's own slot (its
//! own cache line), and a check reads one line per live slot. Connections are counted by the
//! worker's [`Counters`](crate::Counters) ([`Counters::connection`](crate::Counters::connection)
//! guards), so every adapter that counts its connections feeds the table.
//!
//! The table exists only in the shared-socket mode (in `SO_REUSEPORT` mode the kernel picks the
//! socket, and a worker that defers only delays its own queue); [`Balance`] is disabled in a
//! [`Worker::standalone`](crate::Worker::standalone) context, when the master runs with
//! `PREFORK_BALANCE=off` in its environment, and off Linux.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Slots in the table: worker processes alive at once (a reload runs two per worker id).
pub(crate) const SLOTS: usize = 1024;

/// How long a worker over its share waits for another worker to accept before it accepts
/// anyway.
pub const PATIENCE: Duration = Duration::from_millis(20);

/// How often a deferring worker looks at the table again.
pub const RECHECK: Duration = Duration::from_millis(1);

/// How many connections above the average a worker may hold and still accept.
const SLACK: u64 = 1;

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
    /// Do not accept yet: ask again after this long (or earlier).
    Later(Duration),
}

/// The state of one deferral, kept by the accept loop between calls of
/// [`Balance::poll_admit`].
#[derive(Debug, Default, Clone)]
pub struct AdmitWait {
    /// The other workers' accepted total last seen, and since when it has not changed.
    quiet: Option<(u64, Instant)>,
}

/// A worker's handle on the balance table (see the [module](self) docs): whether it may accept
/// now. Cheap to clone. Get it from [`Worker::balance`](crate::Worker::balance).
///
/// Use it in an accept loop, before each `accept`:
///
/// ```no_run
/// # async fn sleep(_: std::time::Duration) {}
/// # async fn example(child: &prefork_core::Worker) {
/// let balance = child.balance();
/// loop {
///     // Waits while this worker holds more than its share and the others keep accepting.
///     balance.admit(sleep).await;
///     // let (stream, peer) = listener.accept().await?;
///     // count it: let conn = drain.connection(); (or child.counters().connection())
/// }
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Balance {
    inner: Option<Arc<(Mapping, usize)>>,
}

impl std::fmt::Debug for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("Balance(disabled)"),
            Some(inner) => {
                let (mine, total, live) = self.share();
                f.debug_struct("Balance")
                    .field("slot", &inner.1)
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
            inner: Some(Arc::new((map, slot))),
        })
    }

    /// Whether this worker balances its accepts with the others.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn slot(&self) -> Option<&Slot> {
        let (map, i) = &**self.inner.as_ref()?;
        Some(&map.layout().slots[*i])
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
        let Some((map, me)) = self.inner.as_deref() else {
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

    /// Whether this worker is within its share: `mine ≤ (total + 1) / live + 1` (the
    /// connection about to be accepted counted in). A worker the master does not (yet) count as
    /// accepting (its ready is still on its way, or its heartbeats look late to the master)
    /// counts itself in: it is balanced against the others all the same. Always `true` when
    /// disabled.
    pub fn may_accept(&self) -> bool {
        let Some((map, me)) = self.inner.as_deref() else {
            return true;
        };
        let (mine, mut total, mut live) = self.share();
        if map.layout().slots[*me].accepting.load(Ordering::Relaxed) == 0 {
            total += mine;
            live += 1;
        }
        mine * live <= total + 1 + SLACK * live
    }

    /// The connections the *other* workers accepted so far (a change means one of them is
    /// taking connections from the queue).
    fn others_accepted(&self) -> u64 {
        let Some((map, me)) = self.inner.as_deref() else {
            return 0;
        };
        let layout = map.layout();
        let high = (layout.header.high.load(Ordering::Acquire) as usize).min(SLOTS);
        layout.slots[..high]
            .iter()
            .enumerate()
            .filter(|(i, _)| i != me)
            .map(|(_, s)| s.accepted.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }

    /// Decides whether to accept now, without blocking; `wait` carries the deferral between
    /// calls (keep one per accept loop). [`Admit::Later`] says when to ask again.
    ///
    /// Within its share, a worker accepts. Over it, it defers while the other workers keep
    /// accepting, and accepts anyway once none of them accepted for [`PATIENCE`].
    pub fn poll_admit(&self, wait: &mut AdmitWait) -> Admit {
        if self.may_accept() {
            wait.quiet = None;
            return Admit::Now;
        }
        let now = Instant::now();
        let others = self.others_accepted();
        match wait.quiet {
            Some((seen, since)) if seen == others => {
                if now.duration_since(since) >= PATIENCE {
                    wait.quiet = None;
                    return Admit::Now;
                }
            }
            _ => wait.quiet = Some((others, now)),
        }
        Admit::Later(RECHECK)
    }

    /// Completes once this worker may accept (see [`Balance::poll_admit`]); `sleep` is the
    /// runtime's timer (`tokio::time::sleep`, `async_io::Timer::after`, ...). Completes at once
    /// when disabled or within the share.
    pub async fn admit<T: Future>(&self, mut sleep: impl FnMut(Duration) -> T) {
        let mut wait = AdmitWait::default();
        while let Admit::Later(d) = self.poll_admit(&mut wait) {
            sleep(d).await;
        }
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
    fn a_deferring_worker_accepts_anyway_once_nobody_else_accepts() {
        let mut table = Table::create().unwrap();
        let w = ready(&mut table, 2);
        let (a, b) = (&w[0].1, &w[1].1);
        for _ in 0..6 {
            a.opened();
        }
        let mut wait = AdmitWait::default();
        assert_eq!(a.poll_admit(&mut wait), Admit::Later(RECHECK));
        // The other worker keeps accepting: still deferring, past the patience.
        std::thread::sleep(PATIENCE);
        b.opened();
        assert_eq!(a.poll_admit(&mut wait), Admit::Later(RECHECK));
        // Nobody accepts for a whole patience (b is hung): a accepts anyway.
        std::thread::sleep(PATIENCE);
        assert_eq!(a.poll_admit(&mut wait), Admit::Now);
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
        assert!(b.may_accept());
        assert_eq!(b.poll_admit(&mut AdmitWait::default()), Admit::Now);
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
