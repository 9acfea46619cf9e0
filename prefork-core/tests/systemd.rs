//! Socket activation with real processes and no systemd: `systemd-socket-activate` (shipped
//! with systemd) and a launcher of our own that sets `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`
//! itself; and the deploy/ unit files checked by `systemd-analyze verify`.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use prefork_testutil::{contract, get, wait_for_distinct_pids, Server, Sig, DEADLINE};

fn bin() -> PathBuf {
    prefork_testutil::example_bin("std_hello")
}

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The environment of `pid` as `NAME=value` lines.
fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn systemd_socket_activate_serves_and_workers_see_no_listen_vars() {
    let Some(activate) = tool("systemd-socket-activate") else {
        eprintln!("skipped: systemd-socket-activate is not installed (.ci/run installs systemd)");
        return;
    };
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = bin();
    // systemd-socket-activate runs the program on the first connection.
    let first = knock(move || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let s = Server::start(
        &activate,
        &[
            "-l",
            &addr,
            "-E",
            "NOTIFY_SOCKET=/nonexistent/notify",
            "-E",
            "WATCHDOG_USEC=30000000",
            b.to_str().unwrap(),
            "--addr",
            &addr,
            "--workers",
            "2",
        ],
    );
    assert_eq!(s.addr.port(), port, "{}", s.log());
    first.join().unwrap();
    assert!(
        s.log().contains("socket passed by the service manager"),
        "{}",
        s.log()
    );
    let workers = s.wait_ready();
    contract::assert_hello(&get(s.addr, "/").unwrap());
    assert_eq!(wait_for_distinct_pids(s.addr, 2).len(), 2, "{}", s.log());
    // The master got the variables (systemd-socket-activate execs it, so it keeps its pid) ...
    let master_env = environ(s.pid());
    assert!(
        master_env.iter().any(|v| v.starts_with("LISTEN_FDS=")),
        "{master_env:?}"
    );
    // ... and no worker did.
    for w in workers {
        let env = environ(w);
        assert!(env.iter().any(|v| v == "PREFORK_CHILD=1"), "{env:?}");
        for v in &env {
            for name in [
                "LISTEN_",
                "NOTIFY_SOCKET=",
                "WATCHDOG_USEC=",
                "WATCHDOG_PID=",
            ] {
                assert!(!v.starts_with(name), "worker {w} has {v}");
            }
        }
    }
    let mut s = s;
    s.signal(Sig::SIGTERM);
    let status = s.wait_exit(DEADLINE).expect("master exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
}

#[test]
fn a_passed_unix_socket_is_served() {
    let Some(activate) = tool("systemd-socket-activate") else {
        eprintln!("skipped: systemd-socket-activate is not installed");
        return;
    };
    let dir = TempDir::new("sa-unix");
    let sock = dir.0.join("app.sock");
    let unix = format!("unix:{}", sock.display());
    let b = bin();
    let knock_path = sock.clone();
    let first = knock(move || std::os::unix::net::UnixStream::connect(&knock_path).is_ok());
    let s = Server::start_ready(
        &activate,
        &[
            "-l",
            sock.to_str().unwrap(),
            b.to_str().unwrap(),
            "--addr",
            &unix,
            "--workers",
            "2",
        ],
        &[],
    );
    assert!(
        s.log().contains("socket passed by the service manager"),
        "{}",
        s.log()
    );
    first.join().unwrap();
    let body = unix_get(&sock, "/");
    assert_eq!(body, "Hello, World!");
}

#[test]
fn a_datagram_socket_is_refused_naming_the_fd() {
    let Some(activate) = tool("systemd-socket-activate") else {
        eprintln!("skipped: systemd-socket-activate is not installed");
        return;
    };
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = bin();
    // systemd-socket-activate only execs the program once a datagram arrives.
    let mut s = Command::new(&activate);
    s.args(["--datagram", "-l", &addr, b.to_str().unwrap()])
        .args(["--addr", &addr, "--workers", "2"])
        .env_remove("PREFORK_CHILD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = s.spawn().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut out = String::new();
    let ok = prefork_testutil::wait_until(DEADLINE, || {
        let _ = udp.send_to(b"x", &addr);
        matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(ok, "the master did not exit");
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(!child.wait().unwrap().success());
    assert!(
        out.contains("fd 3") && out.contains("UDP datagram socket") && out.contains(&addr),
        "{out}"
    );
    assert!(!out.contains("worker started"), "{out}");
}

/// Starts `std_hello` through `sh -c 'LISTEN_PID=$$ ... exec std_hello'` (exec keeps the pid,
/// so LISTEN_PID is the master's), with `fd` placed at 3. Returns its exit status and stderr
/// when it exits on its own, or the running child.
fn launch(fd: &OwnedFd, names: &str, args: &[&str]) -> std::process::Child {
    let raw = fd.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES={names} exec \"$0\" \"$@\""
        ))
        .arg(bin())
        .args(args)
        .env_remove("PREFORK_CHILD")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: runs in the forked child before exec and calls only dup2 and fcntl
    // (async-signal-safe); `raw` stays open in this process until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            let r = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if r == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

fn exits_with(mut child: std::process::Child) -> (bool, String) {
    let mut out = String::new();
    let exited = prefork_testutil::wait_until(DEADLINE, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (child.wait().unwrap().success(), out)
}

#[test]
fn own_launcher_matches_by_name_and_refuses_what_is_not_a_socket() {
    // Matched by LISTEN_FDNAMES: the name is the configured unix: path.
    let dir = TempDir::new("launcher");
    let path = dir.0.join("named.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd = OwnedFd::from(l);
    let unix = format!("unix:{}", path.display());
    let child = launch(
        &fd,
        path.to_str().unwrap(),
        &["--addr", &unix, "--workers", "1"],
    );
    let pid = child.id();
    let mut guard = Kill(Some(child));
    assert_eq!(unix_get(&path, "/"), "Hello, World!");
    // SIGTERM drains and exits 0.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Sig::SIGTERM).unwrap();
    let (ok, out) = exits_with(guard.0.take().unwrap());
    assert!(ok, "{out}");
    assert!(
        out.contains("socket passed by the service manager"),
        "{out}"
    );

    // A regular file at fd 3.
    let file = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    let child = launch(&file, "web", &["--addr", "127.0.0.1:1", "--workers", "1"]);
    let (ok, out) = exits_with(child);
    assert!(!ok);
    assert!(
        out.contains("fd 3") && out.contains("not a socket") && out.contains("\"web\""),
        "{out}"
    );

    // A listening socket, but not the configured address nor name.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_addr = other.local_addr().unwrap();
    let child = launch(
        &OwnedFd::from(other),
        "web",
        &["--addr", "127.0.0.1:1", "--workers", "1"],
    );
    let (ok, out) = exits_with(child);
    assert!(!ok);
    assert!(
        out.contains("no socket passed by the service manager matches 127.0.0.1:1")
            && out.contains(&other_addr.to_string()),
        "{out}"
    );
}

/// Collects notification datagrams into one list of `NAME=value` assignments.
fn drain_notifications(rx: &std::os::unix::net::UnixDatagram, into: &mut Vec<String>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = rx.recv(&mut buf) {
        into.extend(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_owned),
        );
    }
}

/// Whether `wanted` appear in `got` in this order (other assignments may come between).
fn in_order(got: &[String], wanted: &[&str]) -> bool {
    let mut it = got.iter();
    wanted
        .iter()
        .all(|w| it.any(|g| g == w || (w.ends_with('=') && g.starts_with(w))))
}

#[test]
fn notify_ready_reloading_ready_stopping_and_watchdog() {
    let dir = TempDir::new("notify");
    let path = dir.0.join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(std::time::Duration::from_millis(20)))
        .unwrap();
    let mut s = Server::start_with_env(
        &bin(),
        &["--addr", "127.0.0.1:0", "--workers", "2"],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut got = Vec::new();
    let wait_for = |got: &mut Vec<String>, wanted: &[&str]| {
        prefork_testutil::wait_until(DEADLINE, || {
            drain_notifications(&rx, got);
            in_order(got, wanted)
        })
    };
    assert!(
        wait_for(&mut got, &["MAINPID=", "READY=1"]),
        "{got:?}; log:\n{}",
        s.log()
    );
    // Watchdog pings at half of WATCHDOG_USEC.
    let pings = |got: &Vec<String>| got.iter().filter(|g| *g == "WATCHDOG=1").count();
    assert!(
        prefork_testutil::wait_until(DEADLINE, || {
            drain_notifications(&rx, &mut got);
            pings(&got) >= 3
        }),
        "{got:?}"
    );
    s.signal(Sig::SIGHUP);
    assert!(
        wait_for(
            &mut got,
            &["READY=1", "RELOADING=1", "MONOTONIC_USEC=", "READY=1"]
        ),
        "{got:?}; log:\n{}",
        s.log()
    );
    assert!(got.iter().any(|g| g.starts_with("STATUS=")), "{got:?}");
    s.signal(Sig::SIGTERM);
    assert!(
        wait_for(&mut got, &["RELOADING=1", "READY=1", "STOPPING=1"]),
        "{got:?}; log:\n{}",
        s.log()
    );
    assert!(s.wait_exit(DEADLINE).is_some_and(|st| st.success()));
}

#[test]
fn deploy_unit_files_pass_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        eprintln!("skipped: systemd-analyze is not installed (.ci/run installs systemd)");
        return;
    };
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let dir = TempDir::new("units");
    // The unit names its program by absolute path; verify checks that it exists and is
    // executable, so point it at a stand-in inside the copy.
    let exe = dir.0.join("hello-server");
    std::fs::copy("/bin/true", &exe).unwrap();
    let mut units = Vec::new();
    for name in ["prefork-hello.socket", "prefork-hello.service"] {
        let text = std::fs::read_to_string(deploy.join(name)).unwrap();
        assert!(
            name.ends_with(".socket") || text.contains("/usr/local/bin/hello-server"),
            "{name} no longer names /usr/local/bin/hello-server"
        );
        let text = text.replace("/usr/local/bin/hello-server", exe.to_str().unwrap());
        let path = dir.0.join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = Command::new(&analyze)
        .arg("verify")
        .args(&units)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // systemd before 253 does not know Type=notify-reload (it falls back to simple): the one
    // message tolerated there.
    let version = Command::new(&analyze)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let major: u32 = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Lines about the host's own units (not ours) are not this test's business.
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("prefork-hello") || l.contains("hello-server"))
        .filter(|l| !(major < 253 && l.contains("service type, ignoring: notify-reload")))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{text}");
}

/// Connects (with `connect`) until it works, from a thread, bounded by [`DEADLINE`]:
/// systemd-socket-activate starts its program on the first connection.
fn knock(connect: impl Fn() -> bool + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        assert!(
            prefork_testutil::wait_until(DEADLINE, connect),
            "never connected"
        );
    })
}

/// `GET path` over a Unix socket (HTTP/1.0, so the server closes after answering); the body.
fn unix_get(path: &Path, req: &str) -> String {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {req} HTTP/1.0\r\nhost: test\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// Kills the process on drop (a failing test leaves nothing behind).
struct Kill(Option<std::process::Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(-(c.id() as i32)), Sig::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("prefork-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
