//! CPU time and memory of server processes (and their children, e.g. nginx workers) from /proc.

use std::fs;

use anyhow::{Context, Result};
use serde::Serialize;

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// What a set of processes used, summed.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    /// Proportional set size: shared pages split between the processes sharing them.
    pub pss_kib: u64,
}

/// `pids` and all their descendants.
pub fn with_descendants(pids: &[u32]) -> Vec<u32> {
    let mut all: Vec<u32> = pids.to_vec();
    let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat(&stat)?.0))
        })
        .collect();
    let mut index = 0;
    while index < all.len() {
        let parent = all[index];
        all.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        index += 1;
    }
    all
}

/// The usage of `pids` and their descendants now.
pub fn usage(pids: &[u32]) -> Result<Usage> {
    let mut total = Usage::default();
    for pid in with_descendants(pids) {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("process {pid} is gone"))?;
        let (_, ticks) = parse_stat(&stat).context("unreadable /proc/<pid>/stat")?;
        total.cpu_seconds += ticks as f64 / TICKS_PER_SECOND;
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        total.rss_kib += field_kib(&rollup, "Rss:").unwrap_or(0);
        total.pss_kib += field_kib(&rollup, "Pss:").unwrap_or(0);
    }
    Ok(total)
}

/// (parent pid, user + system ticks) from a /proc/<pid>/stat line. The command name may hold
/// spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks))
}

/// A `Name:   123 kB` line's value.
fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines().find(|line| line.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command_name() {
        let stat = "4242 (nginx: worker (x)) S 4240 4240 4240 0 -1 4194624 1 0 0 0 \
                    150 25 0 0 20 0 1 0 100 1000 200";
        assert_eq!(parse_stat(stat), Some((4240, 175)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_measured() {
        let usage = usage(&[std::process::id()]).expect("own /proc entry");
        assert!(usage.rss_kib > 0 && usage.pss_kib > 0, "{usage:?}");
        assert!(field_kib("Rss:  12 kB\nPss:   7 kB", "Pss:") == Some(7));
    }
}
