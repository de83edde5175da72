//! CPU and memory pressure of this process's container (cgroup v2), or of the host.
//!
//! Enabled by the `system` cargo feature (off by default). Inside a container the host's
//! `/proc` numbers lie: a pod limited to 2 CPUs on a 64-CPU host is saturated at 3 % host CPU.
//! So both sources read the cgroup v2 files first and fall back to `/proc` only where there
//! is no cgroup (or no limit):
//!
//! | source | cgroup v2 (preferred) | fallback |
//! |---|---|---|
//! | [`CpuPressure`] | Δ`cpu.stat` `usage_usec` ÷ (Δwall × `cpu.max` quota ÷ period) | Δbusy ÷ Δtotal of the `cpu` line of `/proc/stat` |
//! | [`MemoryPressure`] | `memory.current` ÷ `memory.max` | (`MemTotal` − `MemAvailable`) ÷ `MemTotal` from `/proc/meminfo` |
//!
//! Values are fractions (0.0 – 1.0, CPU may briefly exceed 1.0); use them with
//! [`Thresholds::UTILIZATION`](brownout_core::Thresholds::UTILIZATION) (50 / 65 / 80 / 90 %).
//! CPU needs two samples: the first tick reports nothing. Elapsed time for CPU is wall-clock
//! (`std::time::Instant`), as CPU usage is: pausing tokio's clock does not pause the CPU.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use brownout_core::PressureSource;

/// Parses `usage_usec` out of a cgroup v2 `cpu.stat` file.
pub fn parse_cpu_stat_usage_usec(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next()) {
            (Some("usage_usec"), Some(value)) => value.parse().ok(),
            _ => None,
        }
    })
}

/// Parses a cgroup v2 `cpu.max` file (`"$QUOTA $PERIOD"` or `"max $PERIOD"`) into the
/// number of CPUs it allows: `Some(None)` when unlimited, `None` when malformed.
pub fn parse_cpu_max(text: &str) -> Option<Option<f64>> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?;
    let period: f64 = match fields.next() {
        Some(p) => p.parse().ok()?,
        None => 100_000.0,
    };
    if quota == "max" {
        return Some(None);
    }
    let quota: f64 = quota.parse().ok()?;
    if period > 0.0 && quota > 0.0 && quota.is_finite() && period.is_finite() {
        Some(Some(quota / period))
    } else {
        None
    }
}

/// Parses a cgroup v2 byte-count file such as `memory.max` or `memory.current`:
/// `Some(None)` for `max` (unlimited), `None` when malformed.
pub fn parse_memory_value(text: &str) -> Option<Option<u64>> {
    let text = text.trim();
    if text == "max" {
        Some(None)
    } else {
        text.parse().ok().map(Some)
    }
}

/// Parses the aggregate `cpu` line of `/proc/stat` into `(busy, total)` jiffies
/// (idle = `idle` + `iowait`; guest time is already part of `user` and `nice`).
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 4 {
        return None;
    }
    let total = values.iter().try_fold(0u64, |sum, v| sum.checked_add(*v))?;
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Parses `/proc/meminfo` into `(MemTotal, MemAvailable)` in bytes.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            let scale = match parts.next() {
                Some("kB") => 1024,
                None => 1,
                Some(_) => return None,
            };
            value.checked_mul(scale)
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")?;
    (total > 0).then_some((total, available))
}

/// Where the files are read from (overridable for tests).
#[derive(Debug, Clone)]
struct Roots {
    cgroup: PathBuf,
    proc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            cgroup: PathBuf::from("/sys/fs/cgroup"),
            proc: PathBuf::from("/proc"),
        }
    }
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

#[derive(Debug, Clone, Copy)]
enum CpuReading {
    /// cgroup: CPU time used (µs) at a wall-clock instant, and the CPUs allowed.
    Cgroup {
        usage_usec: u64,
        at: std::time::Instant,
        cpus: f64,
    },
    /// Host: busy and total jiffies.
    Host { busy: u64, total: u64 },
}

/// CPU utilization of the cgroup (against its quota, or the host's CPUs when unlimited), or
/// of the host when there is no cgroup v2. Named `"cpu"`.
pub struct CpuPressure {
    roots: Roots,
    previous: Mutex<Option<CpuReading>>,
}

impl CpuPressure {
    /// Reads `/sys/fs/cgroup` and `/proc`.
    pub fn new() -> CpuPressure {
        CpuPressure::with_roots("/sys/fs/cgroup", "/proc")
    }

    /// Reads the cgroup files from `cgroup` and the host files from `proc`.
    pub fn with_roots(cgroup: impl Into<PathBuf>, proc: impl Into<PathBuf>) -> CpuPressure {
        CpuPressure {
            roots: Roots {
                cgroup: cgroup.into(),
                proc: proc.into(),
            },
            previous: Mutex::new(None),
        }
    }

    fn read_now(&self) -> Option<CpuReading> {
        if let Some(usage_usec) =
            read(&self.roots.cgroup, "cpu.stat").and_then(|t| parse_cpu_stat_usage_usec(&t))
        {
            let cpus = read(&self.roots.cgroup, "cpu.max")
                .and_then(|t| parse_cpu_max(&t))
                .flatten()
                .unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
                });
            return Some(CpuReading::Cgroup {
                usage_usec,
                at: std::time::Instant::now(),
                cpus,
            });
        }
        let (busy, total) = read(&self.roots.proc, "stat").and_then(|t| parse_proc_stat(&t))?;
        Some(CpuReading::Host { busy, total })
    }
}

/// Utilization between two readings of the same kind.
fn cpu_utilization(previous: CpuReading, now: CpuReading) -> Option<f64> {
    match (previous, now) {
        (
            CpuReading::Cgroup {
                usage_usec: u0,
                at: t0,
                ..
            },
            CpuReading::Cgroup {
                usage_usec: u1,
                at: t1,
                cpus,
            },
        ) => {
            let wall_usec = t1.checked_duration_since(t0)?.as_secs_f64() * 1e6;
            let used = u1.checked_sub(u0)? as f64;
            (wall_usec > 0.0 && cpus > 0.0).then(|| used / (wall_usec * cpus))
        }
        (
            CpuReading::Host {
                busy: b0,
                total: t0,
            },
            CpuReading::Host {
                busy: b1,
                total: t1,
            },
        ) => {
            let total = t1.checked_sub(t0)?;
            let busy = b1.checked_sub(b0)?;
            (total > 0).then(|| busy as f64 / total as f64)
        }
        _ => None,
    }
}

impl Default for CpuPressure {
    fn default() -> Self {
        CpuPressure::new()
    }
}

impl PressureSource for CpuPressure {
    fn name(&self) -> &str {
        "cpu"
    }

    fn sample(&self) -> Option<f64> {
        let now = self.read_now()?;
        let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        let utilization = previous.and_then(|p| cpu_utilization(p, now));
        *previous = Some(now);
        utilization
    }
}

impl fmt::Debug for CpuPressure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuPressure")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

/// Memory use of the cgroup against its limit (or against host memory when unlimited), or of
/// the host when there is no cgroup v2. Named `"memory"`.
#[derive(Debug)]
pub struct MemoryPressure {
    roots: Roots,
}

impl MemoryPressure {
    /// Reads `/sys/fs/cgroup` and `/proc`.
    pub fn new() -> MemoryPressure {
        MemoryPressure {
            roots: Roots::default(),
        }
    }

    /// Reads the cgroup files from `cgroup` and the host files from `proc`.
    pub fn with_roots(cgroup: impl Into<PathBuf>, proc: impl Into<PathBuf>) -> MemoryPressure {
        MemoryPressure {
            roots: Roots {
                cgroup: cgroup.into(),
                proc: proc.into(),
            },
        }
    }
}

impl Default for MemoryPressure {
    fn default() -> Self {
        MemoryPressure::new()
    }
}

impl PressureSource for MemoryPressure {
    fn name(&self) -> &str {
        "memory"
    }

    fn sample(&self) -> Option<f64> {
        let meminfo = || read(&self.roots.proc, "meminfo").and_then(|t| parse_meminfo(&t));
        if let Some(current) = read(&self.roots.cgroup, "memory.current")
            .and_then(|t| parse_memory_value(&t))
            .flatten()
        {
            let limit =
                match read(&self.roots.cgroup, "memory.max").and_then(|t| parse_memory_value(&t)) {
                    Some(Some(limit)) => limit,
                    _ => meminfo()?.0,
                };
            return (limit > 0).then(|| current as f64 / limit as f64);
        }
        let (total, available) = meminfo()?;
        Some(total.saturating_sub(available) as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CPU_STAT: &str = "usage_usec 8573289\nuser_usec 6108220\nsystem_usec 2465068\n\
        nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";
    const PROC_STAT: &str = "cpu  4705 356 584 3699176 23060 0 277 0 0 0\n\
        cpu0 1393 280 336 918069 4808 0 40 0 0 0\nintr 1 2 3\nctxt 1990473\n";
    const MEMINFO: &str = "MemTotal:       16318480 kB\nMemFree:         1125652 kB\n\
        MemAvailable:    8159240 kB\nBuffers:          123 kB\n";

    #[test]
    fn parses_cgroup_files() {
        assert_eq!(parse_cpu_stat_usage_usec(CPU_STAT), Some(8_573_289));
        assert_eq!(parse_cpu_stat_usage_usec("user_usec 5\n"), None);
        assert_eq!(parse_cpu_max("max 100000\n"), Some(None));
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(Some(2.0)));
        assert_eq!(parse_cpu_max("50000 100000"), Some(Some(0.5)));
        assert_eq!(parse_cpu_max("50000 0"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("lots 100000"), None);
        assert_eq!(parse_memory_value("max\n"), Some(None));
        assert_eq!(parse_memory_value("536870912\n"), Some(Some(536_870_912)));
        assert_eq!(parse_memory_value("-1"), None);
    }

    #[test]
    fn parses_proc_files() {
        let (busy, total) = parse_proc_stat(PROC_STAT).unwrap();
        assert_eq!(total, 4705 + 356 + 584 + 3_699_176 + 23_060 + 277);
        assert_eq!(busy, 4705 + 356 + 584 + 277);
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2 x 4\n"), None);
        assert_eq!(
            parse_meminfo(MEMINFO),
            Some((16_318_480 * 1024, 8_159_240 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: 0 kB\nMemAvailable: 0 kB\n"), None);
    }

    #[test]
    fn cpu_utilization_from_two_readings() {
        let t0 = std::time::Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(1);
        let a = CpuReading::Cgroup {
            usage_usec: 0,
            at: t0,
            cpus: 2.0,
        };
        let b = CpuReading::Cgroup {
            usage_usec: 1_000_000,
            at: t1,
            cpus: 2.0,
        };
        assert_eq!(cpu_utilization(a, b), Some(0.5));
        assert_eq!(cpu_utilization(b, a), None);
        let h0 = CpuReading::Host {
            busy: 10,
            total: 100,
        };
        let h1 = CpuReading::Host {
            busy: 40,
            total: 200,
        };
        assert_eq!(cpu_utilization(h0, h1), Some(0.3));
        assert_eq!(cpu_utilization(h0, b), None);
    }

    #[test]
    fn sources_read_fixture_directories() {
        let dir =
            std::env::temp_dir().join(format!("brownout-monitor-system-{}", std::process::id()));
        let cgroup = dir.join("cgroup");
        let proc = dir.join("proc");
        std::fs::create_dir_all(&cgroup).unwrap();
        std::fs::create_dir_all(&proc).unwrap();
        std::fs::write(proc.join("meminfo"), MEMINFO).unwrap();
        std::fs::write(proc.join("stat"), PROC_STAT).unwrap();

        // No cgroup files: host fallback.
        let memory = MemoryPressure::with_roots(&cgroup, &proc);
        let host = memory.sample().unwrap();
        assert!((host - (1.0 - 8_159_240.0 / 16_318_480.0)).abs() < 1e-9);
        let cpu = CpuPressure::with_roots(&cgroup, &proc);
        assert_eq!(cpu.sample(), None, "first sample has no delta");
        assert_eq!(cpu.sample(), None, "no jiffies elapsed in the fixture");

        // cgroup v2 with a 256 MiB limit.
        std::fs::write(cgroup.join("memory.current"), "134217728\n").unwrap();
        std::fs::write(cgroup.join("memory.max"), "268435456\n").unwrap();
        assert_eq!(memory.sample(), Some(0.5));
        // Unlimited: against host memory.
        std::fs::write(cgroup.join("memory.max"), "max\n").unwrap();
        let expected = 134_217_728.0 / (16_318_480.0 * 1024.0);
        assert!((memory.sample().unwrap() - expected).abs() < 1e-12);

        std::fs::write(cgroup.join("cpu.stat"), CPU_STAT).unwrap();
        std::fs::write(cgroup.join("cpu.max"), "100000 100000\n").unwrap();
        assert_eq!(
            cpu.sample(),
            None,
            "switching from host to cgroup needs a new baseline"
        );
        let again = cpu.sample().unwrap();
        assert_eq!(again, 0.0, "usage did not move");
        assert_eq!(cpu.name(), "cpu");
        assert_eq!(memory.name(), "memory");
        std::fs::remove_dir_all(&dir).ok();
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in ".{0,200}") {
            let _ = parse_cpu_stat_usage_usec(&text);
            let _ = parse_cpu_max(&text);
            let _ = parse_memory_value(&text);
            let _ = parse_proc_stat(&text);
            let _ = parse_meminfo(&text);
        }

        #[test]
        fn cpu_max_round_trips(quota in 1u64..10_000_000, period in 1u64..1_000_000) {
            let cpus = parse_cpu_max(&format!("{quota} {period}\n")).unwrap().unwrap();
            prop_assert!((cpus - quota as f64 / period as f64).abs() < 1e-9);
        }
    }
}
