//! The `main` of a test binary declared `harness = false`: for the binaries that are also the
//! worker (or master) processes their tests start, re-executed by a master. Such a binary's
//! `main` first dispatches on its role (a worker runs the worker code and exits), and otherwise
//! calls [`run`] with its real test cases, so that no "entry point" poses as a test that passes
//! trivially.
//!
//! ```no_run
//! fn worker() -> ! {
//!     // ... serve, then:
//!     std::process::exit(0)
//! }
//!
//! fn serves() { /* start a master whose workers are this binary; assert */ }
//!
//! fn main() {
//!     if prefork_core::is_worker() {
//!         worker();
//!     }
//!     prefork_testutil::harness::run(prefork_testutil::cases![serves]);
//! }
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// A test case: its name and its function, which fails by panicking.
pub type Case = (&'static str, fn());

/// `[(name, function), ...]` for [`run`], from the functions' names.
#[macro_export]
macro_rules! cases {
    ($($f:ident),+ $(,)?) => {
        &[$((stringify!($f), $f as fn())),+]
    };
}

/// Which cases the command line selects, as libtest reads it: names (substrings; whole names
/// with `--exact`), `--skip NAME`; `--list` lists them instead. Other flags (`--nocapture`,
/// `--test-threads N`, ...) are accepted and have no effect: the cases run one at a time, their
/// output not captured.
#[derive(Debug, Default)]
struct Selection {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    ignored_only: bool,
}

impl Selection {
    fn parse(args: impl IntoIterator<Item = String>) -> Selection {
        let mut s = Selection::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--exact" => s.exact = true,
                "--list" => s.list = true,
                "--ignored" => s.ignored_only = true,
                "--skip" => s.skip.extend(args.next()),
                // libtest's flags that take a value.
                "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                    args.next();
                }
                _ if arg.starts_with("--skip=") => s.skip.push(arg["--skip=".len()..].to_owned()),
                _ if arg.starts_with('-') => {}
                _ => s.filters.push(arg),
            }
        }
        s
    }

    fn matches(&self, name: &str, pattern: &str) -> bool {
        if self.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    }

    fn selects(&self, name: &str) -> bool {
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(|f| self.matches(name, f)))
            && !self.skip.iter().any(|f| self.matches(name, f))
    }
}

/// Runs the selected `cases` (see the module) one after the other, each one's panic caught and
/// counted as its failure, then exits: status 0 if none failed, 101 (as libtest) otherwise,
/// after a closing line `N passed, N failed`.
pub fn run(cases: &[Case]) -> ! {
    let selection = Selection::parse(std::env::args().skip(1));
    let selected: Vec<&Case> = cases.iter().filter(|(n, _)| selection.selects(n)).collect();
    if selection.list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        std::process::exit(0);
    }
    let plural = if selected.len() == 1 { "" } else { "s" };
    println!("\nrunning {} test{plural}", selected.len());
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    for &&(name, case) in &selected {
        let start = Instant::now();
        let ok = catch_unwind(AssertUnwindSafe(case)).is_ok();
        let took = start.elapsed().as_secs_f64();
        println!(
            "test {name} ... {} ({took:.2} s)",
            if ok { "ok" } else { "FAILED" }
        );
        if ok { &mut passed } else { &mut failed }.push(name);
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!("\n{} passed, {} failed", passed.len(), failed.len());
    std::process::exit(if failed.is_empty() { 0 } else { 101 });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(args: &[&str]) -> Selection {
        Selection::parse(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn selection_reads_libtest_arguments() {
        let all = select(&["--nocapture", "--test-threads", "1"]);
        assert!(all.selects("a_case") && all.selects("another"));
        let some = select(&["case", "--skip", "another"]);
        assert!(some.selects("a_case") && !some.selects("another_case"));
        let exact = select(&["--exact", "a_case"]);
        assert!(exact.selects("a_case") && !exact.selects("a_case_2"));
        assert!(!select(&["--ignored"]).selects("a_case"));
        assert!(select(&["--list"]).list);
    }
}
