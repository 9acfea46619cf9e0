//! Heap memory per idle keep-alive connection, counted by a global allocator: what each
//! connection keeps once it has served one request and waits for the next (issue 15, c10k).
//!
//! Its own test binary: the counting allocator is global. Prints the live allocations per
//! connection by size (`cargo test -p prefork-tokio --test conn_memory -- --nocapture`) and
//! fails if the total grows past the budget.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prefork_testutil::DEADLINE;
use prefork_tokio::{Shutdown, ShutdownReason, Worker};

/// Live bytes and allocations by exact size (sizes of `BUCKETS` bytes and up share the last).
struct Counting;

const BUCKETS: usize = 20_000;
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_BY_SIZE: [AtomicI64; BUCKETS + 1] = [const { AtomicI64::new(0) }; BUCKETS + 1];

fn count(size: usize, n: i64) {
    LIVE_BYTES.fetch_add(n * size as i64, Ordering::Relaxed);
    LIVE_BY_SIZE[size.min(BUCKETS)].fetch_add(n, Ordering::Relaxed);
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged;
// the counting touches only atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn snapshot() -> (i64, Vec<i64>) {
    (
        LIVE_BYTES.load(Ordering::SeqCst),
        LIVE_BY_SIZE
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect(),
    )
}

/// One keep-alive connection that has had one answer, reading into `buf`.
fn open_one(addr: SocketAddr, buf: &mut [u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut got = 0;
    while !buf[..got].ends_with(b"Hello, World!") {
        let n = s.read(&mut buf[got..]).unwrap();
        assert!(n > 0, "closed early");
        got += n;
    }
    s
}

/// Heap bytes the server keeps per idle keep-alive connection with `http`, and the live
/// allocations per connection by size.
fn per_connection(
    http: prefork_tokio::HttpBuilder<hyper_util::rt::TokioExecutor>,
) -> (f64, Vec<(usize, f64)>) {
    const N: usize = 200;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new().unwrap();
    let stop = shutdown.clone();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            Worker::standalone(vec![listener], shutdown)?
                .serve_with(http, |_| {
                    hyper::service::service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            "Hello, World!".to_owned(),
                        ))
                    })
                })
                .await
        })
    });
    let mut buf = vec![0u8; 4096];
    let mut conns = Vec::with_capacity(2 * N);
    // Warm up: the runtime's and the accept loop's own allocations settle.
    for _ in 0..N {
        conns.push(open_one(addr, &mut buf));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (b0, s0) = snapshot();
    for _ in 0..N {
        conns.push(open_one(addr, &mut buf));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (b1, s1) = snapshot();
    drop(conns);
    stop.trigger(ShutdownReason::Requested);
    server.join().unwrap().unwrap();
    let per = (b1 - b0) as f64 / N as f64;
    let mut sizes: Vec<(usize, f64)> = s0
        .iter()
        .zip(&s1)
        .enumerate()
        .map(|(size, (a, b))| (size, (b - a) as f64 / N as f64))
        .filter(|(_, n)| n.abs() >= 0.5)
        .collect();
    sizes.sort_by(|a, b| (b.0 as f64 * b.1).total_cmp(&(a.0 as f64 * a.1)));
    (per, sizes)
}

fn report(label: &str, (per, sizes): &(f64, Vec<(usize, f64)>)) {
    println!("{label}: {per:.0} heap bytes per idle connection");
    for (size, n) in sizes {
        println!("  {n:>5.2} x {size} bytes");
    }
}

#[test]
fn heap_per_idle_keepalive_connection() {
    let default = per_connection(prefork_tokio::http_builder());
    report("http_builder()", &default);
    let mut http = prefork_tokio::http_builder();
    http.http1().max_buf_size(64 * 1024);
    let large_heads = per_connection(http);
    report("max_buf_size(64 KiB)", &large_heads);
    // The task (about 1.6 KiB), hyper's read and write buffers (8 KiB each), a few hundred bytes
    // of small parts; before issue 15 it was about 34 KiB (a task of 8 KiB, a read buffer of
    // 16 KiB).
    assert!(
        default.0 < 21.0 * 1024.0,
        "{:.0} heap bytes per idle connection",
        default.0
    );
    // A larger head limit doubles the read buffer (hyper-util's version detection).
    assert!(large_heads.0 > default.0 + 4096.0);
}
