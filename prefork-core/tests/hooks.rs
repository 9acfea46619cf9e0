//! Hooks and the command producer, with the master running inside this test process and the
//! workers being this same test binary, re-executed: its `main` (a `harness = false` test)
//! runs [`worker`] in a worker, [`master`] in the master of the master-death test, and
//! otherwise the test cases.

use std::cell::RefCell;
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use prefork_core::{is_worker, Error, Prefork, SpawnContext};
use prefork_testutil::{alive, wait_until, DEADLINE};

fn main() {
    if is_worker() {
        worker();
    }
    if std::env::var_os("HOOK_TEST_MASTER").is_some() {
        master();
    }
    prefork_testutil::harness::run(prefork_testutil::cases![
        on_master_death_runs_in_each_worker_when_the_master_is_killed,
        on_child_spawn_error_stops_everything_and_is_returned,
        on_master_ready_gets_every_pid_and_its_error_is_returned,
        on_child_recover_reports_old_and_new_pid,
        a_worker_that_never_gets_ready_fails_the_start,
    ]);
}

/// The worker side, in a worker started by the tests below: serves until told to stop.
fn worker() -> ! {
    let mut prefork = Prefork::new("127.0.0.1:0");
    if let Some(dir) = std::env::var_os("HOOK_TEST_DEATH_DIR") {
        // Each worker leaves a file named by its pid (written whole, then renamed into place).
        prefork = prefork.on_master_death(move || {
            let dir = std::path::Path::new(&dir);
            let pid = std::process::id().to_string();
            let tmp = dir.join(format!(".{pid}"));
            if std::fs::write(&tmp, "done").is_ok() {
                let _ = std::fs::rename(&tmp, dir.join(pid));
            }
        });
    }
    let result = prefork.run(|child| {
        if std::env::var_os("HOOK_TEST_HANG").is_some() {
            // A start-up that never finishes (bounded, so nothing can outlive the test run).
            std::thread::sleep(DEADLINE);
        }
        child.ready()?;
        if std::env::var_os("HOOK_TEST_CRASH").is_some() && child.id() == 0 {
            std::process::exit(3);
        }
        child.shutdown().wait();
        Ok(())
    });
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

/// A master in a process of its own (this test binary again), for the master-death test.
fn master() -> ! {
    let dir = std::env::var_os("HOOK_TEST_DEATH_DIR").expect("HOOK_TEST_DEATH_DIR");
    let result = prefork()
        .command_producer(producer(&[]))
        .on_master_ready(move |_| {
            // Tells the test that every worker serves (and so watches its master).
            std::fs::write(std::path::Path::new(&dir).join("ready"), "")?;
            Ok(())
        })
        .run(|_| unreachable!());
    std::process::exit(i32::from(result.is_err()));
}

fn on_master_death_runs_in_each_worker_when_the_master_is_killed() {
    let dir = prefork_testutil::temp_dir("master-death");

    let mut master = Command::new(std::env::current_exe().unwrap())
        .env("HOOK_TEST_MASTER", "1")
        .env("HOOK_TEST_DEATH_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = master.id();
    // Kill the master only once every worker is ready: a worker still starting would find its
    // `ready` report refused and exit before it ever watched the master.
    let mut exited = None;
    let started = wait_until(DEADLINE, || {
        exited = master.try_wait().unwrap();
        exited.is_some() || dir.join("ready").exists()
    });
    assert!(
        started && exited.is_none(),
        "the master never got its workers ready (exit: {exited:?})"
    );
    let workers = prefork_testutil::children_of(pid);
    // Whatever fails below, no worker outlives the test (nor holds its output pipe).
    let _reap = KillOnDrop(workers.clone());
    master.kill().unwrap();
    master.wait().unwrap();
    // The hook ran in every worker.
    let ran_in = |pid: &u32| dir.join(pid.to_string()).exists();
    assert!(
        wait_until(DEADLINE, || workers.iter().all(ran_in)),
        "on_master_death did not run in every worker {workers:?}: {:?}",
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    assert_gone(&workers);
    let _ = std::fs::remove_dir_all(dir);
}

/// Re-executes this test binary: as a worker, it runs [`worker`].
fn producer(
    extra_env: &'static [(&'static str, &'static str)],
) -> impl FnMut(&SpawnContext) -> std::io::Result<Command> {
    move |_ctx| {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.envs(extra_env.iter().copied());
        Ok(cmd)
    }
}

/// SIGKILLs the pids when dropped (a failing assertion included).
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A master for this test process, bounded: if it has not returned within a minute (a
/// regression that hangs it), it is stopped at once, so the test fails instead of hanging.
fn prefork() -> Prefork {
    let prefork = Prefork::new("127.0.0.1:0")
        .workers(2)
        .shutdown_timeout(Duration::from_secs(10));
    let handle = prefork.handle();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        handle.stop(false);
    });
    prefork
}

fn assert_gone(pids: &[u32]) {
    for &pid in pids {
        assert!(
            wait_until(DEADLINE, || !alive(pid)),
            "worker {pid} left running"
        );
    }
}

fn on_child_spawn_error_stops_everything_and_is_returned() {
    let spawned = Rc::new(RefCell::new(Vec::new()));
    let s = spawned.clone();
    let err = prefork()
        .command_producer(producer(&[]))
        .on_worker_spawn(move |pid| {
            s.borrow_mut().push(pid);
            if s.borrow().len() == 2 {
                return Err("refusing the second worker".into());
            }
            Ok(())
        })
        .run(|_| unreachable!("the master never serves"))
        .unwrap_err();
    match &err {
        Error::Hook { hook, source } => {
            assert_eq!(*hook, "on_worker_spawn");
            assert_eq!(source.to_string(), "refusing the second worker");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(spawned.borrow().len(), 2);
    assert_gone(&spawned.borrow());
}

fn on_master_ready_gets_every_pid_and_its_error_is_returned() {
    let spawned = Rc::new(RefCell::new(Vec::new()));
    let ready = Rc::new(RefCell::new(Vec::new()));
    let (s, r) = (spawned.clone(), ready.clone());
    let err = prefork()
        .command_producer(producer(&[]))
        .on_worker_spawn(move |pid| {
            s.borrow_mut().push(pid);
            Ok(())
        })
        .on_master_ready(move |pids| {
            r.borrow_mut().extend_from_slice(pids);
            Err("not today".into())
        })
        .run(|_| unreachable!())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Hook {
                hook: "on_master_ready",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        *ready.borrow(),
        *spawned.borrow(),
        "ready pids in worker order"
    );
    assert_gone(&spawned.borrow());
}

fn on_child_recover_reports_old_and_new_pid() {
    // Worker 0 exits with status 3 right after it is ready, every time: with a threshold of 2
    // the master respawns it twice, then gives up.
    let spawned = Rc::new(RefCell::new(Vec::new()));
    let recovered = Rc::new(RefCell::new(Vec::new()));
    let (s, r) = (spawned.clone(), recovered.clone());
    let err = prefork()
        .command_producer(producer(&[("HOOK_TEST_CRASH", "1")]))
        .recover_threshold(2)
        .on_worker_spawn(move |pid| {
            s.borrow_mut().push(pid);
            Ok(())
        })
        .on_worker_recover(move |old, new| r.borrow_mut().push((old, new)))
        .run(|_| unreachable!())
        .unwrap_err();
    match err {
        Error::OverRecovery { exits, threshold } => assert_eq!((exits, threshold), (3, 2)),
        other => panic!("unexpected {other}"),
    }
    let recovered = recovered.borrow();
    assert_eq!(recovered.len(), 2, "{recovered:?}");
    for (old, new) in recovered.iter() {
        assert_ne!(old, new);
        assert!(spawned.borrow().contains(old) && spawned.borrow().contains(new));
    }
    // The replacement of one recovery is the one that crashed next.
    assert_eq!(recovered[0].1, recovered[1].0);
    assert_gone(&spawned.borrow());
}

fn a_worker_that_never_gets_ready_fails_the_start() {
    let spawned = Rc::new(RefCell::new(Vec::new()));
    let s = spawned.clone();
    let err = prefork()
        .command_producer(producer(&[("HOOK_TEST_HANG", "1")]))
        .ready_timeout(Duration::from_millis(300))
        .shutdown_timeout(Duration::from_millis(500))
        .on_worker_spawn(move |pid| {
            s.borrow_mut().push(pid);
            Ok(())
        })
        .run(|_| unreachable!())
        .unwrap_err();
    assert!(matches!(err, Error::WorkerStartup { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("did not report ready within 300 ms"),
        "{err}"
    );
    assert_gone(&spawned.borrow());
}
