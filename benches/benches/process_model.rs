//! Criterion micro-benchmarks of the process model.
//!
//! Run with: `cargo bench -p prefork-benches`
//!
//! `spawn_to_ready` times a whole master cycle with one worker: bind, re-exec this benchmark
//! binary as the worker, wait for its `ready`, stop it. The worker side is this same binary,
//! recognised by `prefork_core::is_worker()` before criterion starts.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use prefork_core::{is_worker, Prefork, Shutdown, ShutdownReason};

fn worker() {
    let result = Prefork::new("127.0.0.1:0").run(|child| {
        child.ready()?;
        child.shutdown().wait();
        Ok(())
    });
    std::process::exit(i32::from(result.is_err()));
}

fn spawn_to_ready(c: &mut Criterion) {
    let exe = std::env::current_exe().expect("current_exe");
    c.bench_function("spawn_to_ready (1 worker, start + ready + stop)", |b| {
        b.iter(|| {
            let exe = exe.clone();
            let err = Prefork::new("127.0.0.1:0")
                .workers(1)
                .command_producer(move |_| Ok(Command::new(&exe)))
                // Stop as soon as the worker is ready: the hook's error ends `run`.
                .on_master_ready(|_| Err("ready".into()))
                .run(|_| unreachable!("the master never serves"))
                .unwrap_err();
            assert!(err.to_string().contains("ready"));
        })
    });
}

fn shutdown_notify(c: &mut Criterion) {
    c.bench_function("shutdown trigger + blocking wait", |b| {
        b.iter(|| {
            let s = Shutdown::new().unwrap();
            s.trigger(ShutdownReason::Requested);
            s.wait()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = spawn_to_ready, shutdown_notify
}

fn main() {
    if is_worker() {
        worker();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
