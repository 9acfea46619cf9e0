//! What the benchmarks read from `/proc`: process trees, memory (PSS, RSS, private) and CPU time.
//! One copy, used by the load runs and the process-model measurements alike.

use std::process::Command;

use prefork_testutil::children_of;

/// Every pid in the tree under `root`, root included.
pub(crate) fn tree(root: u32) -> Vec<u32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        all.extend(children_of(all[i]));
        i += 1;
    }
    all
}

/// Proportional set size of one process, KiB (0 once it is gone).
pub(crate) fn pss_kb(pid: u32) -> u64 {
    field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// Resident set size of one process, KiB.
pub(crate) fn rss_kb(pid: u32) -> u64 {
    field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Private (clean + dirty) memory of one process, KiB.
pub(crate) fn private_kb(pid: u32) -> u64 {
    let rollup = format!("/proc/{pid}/smaps_rollup");
    field(&rollup, "Private_Clean:") + field(&rollup, "Private_Dirty:")
}

/// PSS summed over the tree under `root`, KiB, and the number of processes in it.
pub(crate) fn tree_pss_kb(root: u32) -> (u64, usize) {
    let pids = tree(root);
    (pids.iter().map(|&p| pss_kb(p)).sum(), pids.len())
}

/// utime + stime summed over the tree under `root`, in clock ticks.
pub(crate) fn tree_cpu_ticks(root: u32) -> u64 {
    tree(root).iter().map(|&p| cpu_ticks(p)).sum()
}

/// The number after `key` on the first line starting with it (0 if absent).
pub(crate) fn field(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 0; utime and stime are fields 11 and 12.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// Clock ticks per second.
pub(crate) fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `/proc` (or any) file's content, trimmed; empty if unreadable.
pub(crate) fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `MemTotal` as /proc/meminfo writes it (e.g. `24576000 kB`).
pub(crate) fn mem_total() -> String {
    read_trim("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
