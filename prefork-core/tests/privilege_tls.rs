//! With `user` set, the master reads the TLS files, so a key readable by root only still
//! works in workers that run as `nobody`. The master runs inside this test process; the workers
//! are this test binary again, re-executed: its `main` (a `harness = false` test) runs
//! [`worker`] in a worker, and otherwise the test case.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use prefork_core::{is_worker, Error, PemFiles, Prefork, SpawnContext, TlsConfig};

const DIR_VAR: &str = "PRIV_TLS_TEST_DIR";

fn tls(dir: &Path) -> TlsConfig {
    TlsConfig::from_pem_files(PemFiles {
        cert_chain: dir.join("cert.pem"),
        private_key: dir.join("key.pem"),
    })
}

fn main() {
    if is_worker() {
        worker();
    }
    prefork_testutil::harness::run(prefork_testutil::cases![
        a_root_only_key_works_in_workers_running_as_nobody
    ]);
}

/// The worker side, in a worker started by the test: checks that it cannot read the key, yet
/// has the TLS configuration, then serves until told to stop.
fn worker() -> ! {
    let dir = PathBuf::from(std::env::var_os(DIR_VAR).expect(DIR_VAR));
    let key = dir.join("key.pem");
    let result = Prefork::new("127.0.0.1:0")
        .tls(tls(&dir))
        .user("nobody")
        .run(|child| {
            // This worker cannot read the key itself: its TLS configuration came from the master.
            match std::fs::read(&key) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                other => {
                    return Err(std::io::Error::other(format!(
                        "the worker could read {}: {other:?}",
                        key.display()
                    )))
                }
            }
            if child.tls_config().is_none() {
                return Err(std::io::Error::other("no TLS configuration in the worker"));
            }
            child.ready()?;
            child.shutdown().wait();
            Ok(())
        });
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

fn a_root_only_key_works_in_workers_running_as_nobody() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (the master drops privileges per worker)");
        return;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").ok().flatten() else {
        eprintln!("skipped: no user `nobody` on this machine");
        return;
    };
    let dir = prefork_testutil::temp_dir("priv-tls");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), c.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let worker_dir = dir.clone();
    let result = Prefork::new("127.0.0.1:0")
        .workers(2)
        .tls(tls(&dir))
        .user("nobody")
        .shutdown_timeout(std::time::Duration::from_secs(10))
        .command_producer(move |_ctx: &SpawnContext| {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.env(DIR_VAR, &worker_dir);
            Ok(cmd)
        })
        .on_master_ready(move |pids| {
            for &pid in pids {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
                let uid = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next())
                    .unwrap_or("");
                if uid != nobody.uid.as_raw().to_string() {
                    return Err(format!("worker {pid} runs as uid {uid}").into());
                }
            }
            // Every worker is ready with the key it could not read: stop here.
            Err("all ready".into())
        })
        .run(|_| unreachable!("the master does not serve"));
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Err(Error::Hook { source, .. }) if source.to_string() == "all ready" => {}
        other => panic!("expected every worker ready as nobody with TLS, got {other:?}"),
    }
}
