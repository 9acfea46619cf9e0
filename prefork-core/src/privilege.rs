//! What the master applies to each worker between fork and exec: the user, group and
//! supplementary groups it runs as ([`Prefork::user`], [`Prefork::group`]), the CPU it is
//! pinned to ([`Prefork::cpu_affinity`]), and (with a user or group set) the TLS files, which
//! the master reads so that they may stay readable by root only.
//!
//! Everything is resolved in the master before the first worker starts: an unknown user or
//! group, or a master that is not root while a user is set, fails [`Prefork::run`] with
//! [`Error::Config`] before anything is bound or started. The per-worker values are computed
//! before `fork`; the code between `fork` and `exec` makes only async-signal-safe system calls
//! (`setgroups`, `setgid`, `setuid`, `sched_setaffinity`, `fcntl`).
//!
//! The driver applies the [`WorkerSetup`] to every worker's command (initial start, respawn,
//! reload, scale, recycle), so each gets the same treatment.
//!
//! [`Prefork::user`]: crate::Prefork::user
//! [`Prefork::group`]: crate::Prefork::group
//! [`Prefork::cpu_affinity`]: crate::Prefork::cpu_affinity
//! [`Prefork::run`]: crate::Prefork::run

use crate::builder::Prefork;
use crate::Error;

/// A certificate chain and its private key, as PEM bytes.
pub(crate) type Pem = (Vec<u8>, Vec<u8>);

/// The fd of the memfd holding the TLS PEM bytes the master read for the worker.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) const ENV_TLS_FD: &str = "PREFORK_TLS_FD";

/// Resolves the options; `None` when none is set.
pub(crate) fn prepare(cfg: &Prefork) -> Result<Option<WorkerSetup>, Error> {
    if cfg.user.is_none() && cfg.group.is_none() && !cfg.cpu_affinity {
        return Ok(None);
    }
    imp::prepare(cfg).map(Some)
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    /// Never built off Linux.
    #[derive(Debug)]
    pub(crate) struct WorkerSetup;

    impl WorkerSetup {
        pub(crate) fn apply(
            &self,
            _cmd: &mut std::process::Command,
            _worker_id: usize,
        ) -> std::io::Result<()> {
            Ok(())
        }
    }

    pub(super) fn prepare(_cfg: &Prefork) -> Result<WorkerSetup, Error> {
        Err(Error::Config(
            "user, group and cpu_affinity are supported on Linux only".into(),
        ))
    }
}

pub(crate) use imp::WorkerSetup;

/// The worker side of the TLS hand-over: `None` when the master passed nothing.
#[cfg(not(target_os = "linux"))]
#[allow(dead_code)]
pub(crate) fn take_tls_pem() -> Result<Option<Pem>, Error> {
    Ok(None)
}

#[cfg(target_os = "linux")]
pub(crate) use imp::take_tls_pem;

#[cfg(target_os = "linux")]
mod imp {
    use std::ffi::CString;
    use std::fs::File;
    use std::io::{self, Read, Seek};
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::{getegid, geteuid, Gid, Group, Pid, Uid, User};

    use super::*;

    /// Who the workers run as.
    #[derive(Debug, Clone)]
    struct Identity {
        /// For messages: `nobody (uid 65534)`.
        label: String,
        uid: Option<Uid>,
        gid: Gid,
        groups: Vec<Gid>,
    }

    /// What each worker gets between fork and exec, resolved once in the master.
    #[derive(Debug)]
    pub(crate) struct WorkerSetup {
        identity: Option<Identity>,
        cpus: Option<Vec<usize>>,
        #[cfg(feature = "tls")]
        tls_files: Option<crate::tls::PemFiles>,
        min_fd: i32,
    }

    pub(super) fn prepare(cfg: &Prefork) -> Result<WorkerSetup, Error> {
        let identity = match (&cfg.user, &cfg.group) {
            (None, None) => None,
            (user, group) => Some(resolve(user.as_deref(), group.as_deref())?),
        };
        let identity = identity.filter(needs_change);
        if let Some(id) = &identity {
            if !geteuid().is_root() {
                return Err(Error::Config(format!(
                    "workers are to run as {}, but the master runs as uid {}, not root: only \
                     root can start processes as another user; start the master as root (it \
                     binds, then drops privileges in each worker) or remove the user/group \
                     setting",
                    id.label,
                    geteuid()
                )));
            }
            if cfg.reuseport {
                // In SO_REUSEPORT mode each worker binds its own socket, after it dropped its
                // privileges: a port below 1024 would fail in every worker.
                for a in cfg.addrs.iter().filter(|a| a.unix_path().is_none()) {
                    let addr = a.resolve(cfg.network)?;
                    if addr.port() != 0 && addr.port() < 1024 {
                        return Err(Error::Config(format!(
                            "{addr}: in SO_REUSEPORT mode each worker binds its own socket after \
                             dropping to {}, and a port below 1024 needs root; use the default \
                             shared-socket mode (the master binds as root) or a port of 1024 or more",
                            id.label
                        )));
                    }
                }
            }
            tracing::info!(
                user = %id.label,
                gid = id.gid.as_raw(),
                groups = ?id.groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>(),
                "workers run as another user"
            );
        }
        let cpus = if cfg.cpu_affinity {
            let set = sched_getaffinity(Pid::from_raw(0))
                .map_err(|e| Error::io("reading the master's CPU affinity", e.into()))?;
            let cpus: Vec<usize> = (0..CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect();
            tracing::info!(cpus = ?cpus, "workers pinned to one CPU each");
            Some(cpus).filter(|c| !c.is_empty())
        } else {
            None
        };
        #[cfg(feature = "tls")]
        let tls_files = match (&identity, &cfg.tls) {
            (Some(_), Some(tls)) => tls.pem_files().cloned(),
            _ => None,
        };
        // The worker's fd slots are 3.. (listeners, then the control socket): keep the TLS
        // memfd above all of them so placing those never overwrites it.
        let min_fd = crate::role::FIRST_FD + cfg.addrs.len() as i32 + 2;
        Ok(WorkerSetup {
            identity,
            cpus,
            #[cfg(feature = "tls")]
            tls_files,
            min_fd,
        })
    }

    impl WorkerSetup {
        /// Applies the setup to worker `worker_id`'s command.
        pub(crate) fn apply(&self, cmd: &mut Command, worker_id: usize) -> io::Result<()> {
            let cpu = match &self.cpus {
                Some(cpus) => {
                    let mut set = CpuSet::new();
                    set.set(cpus[worker_id % cpus.len()])
                        .map_err(io::Error::from)?;
                    Some(set)
                }
                None => None,
            };
            #[cfg(feature = "tls")]
            let tls_fd = match &self.tls_files {
                Some(files) => Some(tls_memfd(files, self.min_fd)?),
                None => None,
            };
            #[cfg(not(feature = "tls"))]
            let tls_fd: Option<OwnedFd> = {
                let _ = self.min_fd;
                None
            };
            if let Some(fd) = &tls_fd {
                cmd.env(ENV_TLS_FD, fd.as_raw_fd().to_string());
            }
            apply(cmd, self.identity.clone(), cpu, tls_fd);
            Ok(())
        }
    }

    /// Adds the pre-exec step. Everything it uses was computed before; it allocates nothing.
    fn apply(cmd: &mut Command, id: Option<Identity>, cpu: Option<CpuSet>, tls: Option<OwnedFd>) {
        // The closure owns `tls`, so its fd stays open in the master until the command (and the
        // closure) is dropped after the spawn.
        // SAFETY: runs in the forked child before exec, calling only fcntl, setgroups, setgid,
        // setuid and sched_setaffinity (async-signal-safe, through nix's non-allocating
        // wrappers) on values computed before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = &tls {
                    // Let exactly this memfd cross the exec (it is close-on-exec in the master).
                    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                }
                if let Some(id) = &id {
                    nix::unistd::setgroups(&id.groups)?;
                    nix::unistd::setgid(id.gid)?;
                    if let Some(uid) = id.uid {
                        nix::unistd::setuid(uid)?;
                    }
                }
                if let Some(set) = &cpu {
                    sched_setaffinity(Pid::from_raw(0), set)?;
                }
                Ok(())
            });
        }
    }

    /// Whether the identity differs from the master's own (a user set to the master's own user
    /// needs no root and changes nothing).
    fn needs_change(id: &Identity) -> bool {
        id.uid.is_some_and(|u| u != geteuid()) || id.gid != getegid()
    }

    fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Identity, Error> {
        let lookup = |e: nix::Error, what: &str| {
            Error::io(format!("looking up {what} in the user database"), e.into())
        };
        let user_entry = match user {
            None => None,
            Some(spec) => Some(match spec.parse::<u32>() {
                Ok(n) => (
                    Uid::from_raw(n),
                    User::from_uid(Uid::from_raw(n)).map_err(|e| lookup(e, &format!("uid {n}")))?,
                ),
                Err(_) => {
                    let u = User::from_name(spec)
                        .map_err(|e| lookup(e, &format!("user {spec:?}")))?
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "user {spec:?} does not exist (no such entry in the user \
                                 database); nothing was started"
                            ))
                        })?;
                    (u.uid, Some(u))
                }
            }),
        };
        let gid = match group {
            Some(spec) => match spec.parse::<u32>() {
                Ok(n) => Gid::from_raw(n),
                Err(_) => {
                    Group::from_name(spec)
                        .map_err(|e| lookup(e, &format!("group {spec:?}")))?
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "group {spec:?} does not exist (no such entry in the group \
                                 database); nothing was started"
                            ))
                        })?
                        .gid
                }
            },
            None => match &user_entry {
                Some((_, Some(u))) => u.gid,
                Some((uid, None)) => {
                    return Err(Error::Config(format!(
                        "uid {uid} has no entry in the user database, so its group is unknown: \
                         set the group too"
                    )))
                }
                None => unreachable!("resolve is called with a user or a group"),
            },
        };
        let groups = match &user_entry {
            Some((_, Some(u))) => {
                let name = CString::new(u.name.as_str())
                    .map_err(|_| Error::Config(format!("user name {:?} holds a NUL", u.name)))?;
                let mut g = nix::unistd::getgrouplist(&name, gid)
                    .map_err(|e| lookup(e, &format!("the groups of user {:?}", u.name)))?;
                if !g.contains(&gid) {
                    g.insert(0, gid);
                }
                g
            }
            _ => vec![gid],
        };
        let label = match &user_entry {
            Some((uid, Some(u))) => format!("user {:?} (uid {uid})", u.name),
            Some((uid, None)) => format!("uid {uid}"),
            None => format!("group {}", group.unwrap_or_default()),
        };
        Ok(Identity {
            label,
            uid: user_entry.map(|(uid, _)| uid),
            gid,
            groups,
        })
    }

    /// A sealed memfd holding the certificate chain and key (an 8-byte little-endian length of
    /// the chain, the chain, then the key), at an fd number of at least `min_fd`.
    #[cfg(feature = "tls")]
    fn tls_memfd(files: &crate::tls::PemFiles, min_fd: i32) -> io::Result<OwnedFd> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        use std::io::Write;
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                io::Error::new(e.kind(), format!("TLS: {}: cannot read: {e}", p.display()))
            })
        };
        let cert = read(&files.cert_chain)?;
        let key = read(&files.private_key)?;
        let fd = memfd_create(
            c"prefork-tls",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let mut file = File::from(fd);
        file.write_all(&(cert.len() as u64).to_le_bytes())?;
        file.write_all(&cert)?;
        file.write_all(&key)?;
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SEAL
                    | SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE,
            ),
        )?;
        let high = fcntl(&file, FcntlArg::F_DUPFD_CLOEXEC(min_fd))?;
        // SAFETY: just returned by F_DUPFD_CLOEXEC, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(high) })
    }

    /// In a worker: reads and closes the memfd the master passed (`PREFORK_TLS_FD`), if any.
    pub(crate) fn take_tls_pem() -> Result<Option<Pem>, Error> {
        let Ok(v) = std::env::var(ENV_TLS_FD) else {
            return Ok(None);
        };
        let bad = |why: String| Error::NotAWorker(format!("{ENV_TLS_FD}={v:?}: {why}"));
        let fd: i32 = v.parse().map_err(|_| bad("not a number".into()))?;
        if fd < 3 || !crate::listener::fd_is_open(fd) {
            return Err(bad(format!("fd {fd} is not open")));
        }
        // SAFETY: the fd is open (checked above); the borrow only inspects it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let seals = fcntl(borrowed, FcntlArg::F_GET_SEALS).map_err(|e| {
            bad(format!(
                "fd {fd} is not the sealed memfd a master passes: {e}"
            ))
        })?;
        if seals & SealFlag::F_SEAL_WRITE.bits() == 0 {
            return Err(bad(format!("fd {fd} is not sealed against writes")));
        }
        // SAFETY: an open, sealed memfd that the master passed to this process alone; we take it
        // once (and close it when done).
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut data = Vec::new();
        file.rewind()
            .and_then(|_| file.read_to_end(&mut data))
            .map_err(|e| bad(format!("cannot read fd {fd}: {e}")))?;
        let (len, rest) = data
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("too short".into()))?;
        let len = u64::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(bad("truncated".into()));
        }
        let (cert, key) = rest.split_at(len);
        Ok(Some((cert.to_vec(), key.to_vec())))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn unknown_user_and_group_are_named() {
            let e = resolve(Some("no-such-user-prefork"), None).unwrap_err();
            assert!(
                e.to_string()
                    .contains("\"no-such-user-prefork\" does not exist"),
                "{e}"
            );
            let e = resolve(None, Some("no-such-group-prefork")).unwrap_err();
            assert!(
                e.to_string()
                    .contains("\"no-such-group-prefork\" does not exist"),
                "{e}"
            );
        }

        #[test]
        fn root_resolves_with_its_groups() {
            let id = resolve(Some("0"), None).unwrap();
            assert_eq!(id.uid, Some(Uid::from_raw(0)));
            assert_eq!(id.gid, Gid::from_raw(0));
            assert!(id.groups.contains(&Gid::from_raw(0)));
            let id = resolve(None, Some("0")).unwrap();
            assert_eq!(id.uid, None);
            assert_eq!(id.groups, vec![Gid::from_raw(0)]);
        }

        #[test]
        fn a_numeric_uid_without_entry_needs_a_group() {
            let e = resolve(Some("4000000001"), None).unwrap_err();
            assert!(e.to_string().contains("set the group too"), "{e}");
            let id = resolve(Some("4000000001"), Some("4000000001")).unwrap();
            assert_eq!(id.groups, vec![Gid::from_raw(4_000_000_001)]);
        }
    }
}
