//! What the machine and the servers did during a run, read from `/proc` (Linux only; elsewhere
//! the figures are empty).

use std::time::Duration;

/// Aggregate CPU time counters of the host, in clock ticks.
#[derive(Clone, Debug, Default)]
pub struct HostCpu {
    busy: u64,
    total: u64,
}

impl HostCpu {
    pub fn read() -> Self {
        let Ok(s) = std::fs::read_to_string("/proc/stat") else {
            return Self::default();
        };
        let Some(line) = s.lines().next() else {
            return Self::default();
        };
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        Self {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// Busy share of all cores between two readings, in percent.
    pub fn busy_pct(a: &Self, b: &Self) -> f64 {
        let total = b.total.saturating_sub(a.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * b.busy.saturating_sub(a.busy) as f64 / total as f64
    }
}

/// The server processes being measured.
#[derive(Clone, Debug, Default)]
pub struct Procs {
    pub pids: Vec<u32>,
}

/// Linux's USER_HZ: the unit of /proc/<pid>/stat CPU times, 100 on every mainstream kernel.
const TICKS_PER_S: f64 = 100.0;

impl Procs {
    pub fn new(pids: Vec<u32>) -> Self {
        Self { pids }
    }

    /// utime + stime of each process, in ticks (0 for a process that is gone).
    pub fn cpu_ticks(&self) -> Vec<u64> {
        self.pids
            .iter()
            .map(|p| proc_ticks(*p).unwrap_or(0))
            .collect()
    }

    pub fn cpu_pct(a: &[u64], b: &[u64], over: Duration) -> Vec<f64> {
        let secs = over.as_secs_f64().max(1e-9);
        a.iter()
            .zip(b)
            .map(|(a, b)| 100.0 * b.saturating_sub(*a) as f64 / TICKS_PER_S / secs)
            .collect()
    }

    /// Resident set size of each process, in MiB (0 for a process that is gone).
    pub fn rss_mib(&self) -> Vec<f64> {
        self.pids
            .iter()
            .map(|p| rss_mib(*p).unwrap_or(0.0))
            .collect()
    }
}

/// utime + stime of this process (the load generator), in ticks.
pub fn own_ticks() -> u64 {
    stat_ticks("/proc/self/stat").unwrap_or(0)
}

fn proc_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

fn stat_ticks(path: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // state is field 3 overall → index 0 here; utime is field 14 → index 11, stime 15 → 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
