//! What the library adds to each request and connection in a worker: the counters the
//! heartbeats carry, the drain's per-connection state, the balance check before an accept.
//!
//! Run with: `cargo bench -p prefork-benches --bench hot_path`
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use prefork_core::{Counters, Drain, Shutdown};

fn counters(c: &mut Criterion) {
    let counters = Counters::default();
    c.bench_function("Counters::request (per request)", |b| {
        b.iter(|| black_box(&counters).request())
    });
    c.bench_function("Counters::connection + drop (per connection)", |b| {
        b.iter(|| drop(black_box(&counters).connection()))
    });
}

fn drain(c: &mut Criterion) {
    let drain = Drain::new(
        Shutdown::new().expect("shutdown"),
        Counters::default(),
        Duration::from_secs(1),
    );
    let conn = drain.connection();
    c.bench_function(
        "DrainConn: read + request + response_ready (per request)",
        |b| {
            b.iter(|| {
                let conn = black_box(&conn);
                conn.on_read();
                conn.request_started(false);
                black_box(conn.response_ready())
            })
        },
    );
    c.bench_function("Drain::connection + drop (per connection)", |b| {
        b.iter(|| drop(black_box(&drain).connection()))
    });
}

criterion_group! {
    name = hot_path;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = counters, drain
}
criterion_main!(hot_path);
