//! Giving memory back to the system after a wave of connections.
//!
//! glibc's allocator keeps the pages it freed: after 10,000 keep-alive connections have come and
//! gone, a worker stays at the resident size of the peak (200 MiB and more) until the next
//! wave reuses it. [`Drain`](crate::Drain) calls [`release_free_memory`] once the open
//! connections fall to a quarter of a peak of at least [`RELEASE_AFTER_PEAK`], which returns
//! the free pages (`malloc_trim(0)`); steady traffic below that peak never triggers it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The least peak of open connections after which their closing gives memory back.
pub const RELEASE_AFTER_PEAK: usize = 1024;

/// Returns the allocator's free pages to the system (glibc's `malloc_trim(0)`); `false` where
/// that is not available (another libc, or another global allocator's memory, which this does
/// not reach). Takes about a millisecond per 100 MiB of heap, under the allocator's lock.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim has no preconditions; it takes the allocator's own locks and
        // only gives back pages that hold no allocation.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The peak of open connections since memory was last given back.
#[derive(Debug, Default)]
pub(crate) struct Peak(AtomicUsize);

impl Peak {
    /// A connection opened: `open` are open now.
    #[inline]
    pub(crate) fn opened(&self, open: usize) {
        if open > self.0.load(Ordering::Relaxed) {
            self.0.fetch_max(open, Ordering::Relaxed);
        }
    }

    /// A connection closed, `open` are left: gives memory back once they are down to a quarter
    /// of a peak of at least [`RELEASE_AFTER_PEAK`].
    #[inline]
    pub(crate) fn closed(&self, open: usize) {
        let peak = self.0.load(Ordering::Relaxed);
        if peak >= RELEASE_AFTER_PEAK
            && open <= peak / 4
            && self
                .0
                .compare_exchange(peak, open, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let t = std::time::Instant::now();
            let released = release_free_memory();
            tracing::debug!(
                peak,
                open,
                released,
                micros = t.elapsed().as_micros() as u64,
                "connections fell from their peak: free memory given back"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_back_once_per_wave() {
        let p = Peak::default();
        for n in 1..=2000 {
            p.opened(n);
        }
        p.closed(1999);
        assert_eq!(p.0.load(Ordering::Relaxed), 2000);
        p.closed(500);
        assert_eq!(p.0.load(Ordering::Relaxed), 500, "released, peak reset");
        p.closed(100);
        assert_eq!(
            p.0.load(Ordering::Relaxed),
            500,
            "below the least peak: nothing"
        );
        assert!(release_free_memory() || cfg!(not(target_env = "gnu")));
    }
}
