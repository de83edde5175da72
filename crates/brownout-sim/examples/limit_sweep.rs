//! Where the adaptive concurrency limit settles, over many seeds: the sweep behind the
//! figures of `GradientConfig` and `docs/benchmarks/brownout-sim.md`.
//!
//! ```text
//! cargo run --release -p brownout-sim --example limit_sweep -- \
//!     [--seeds 1-20] [--loads 0.8,0.9,1,2,4,8] [--secs 30] \
//!     [--stacks brownout,brownout-defaults] [--slowdown-seeds 1-200] [--threads 2]
//! ```
//!
//! For each stack and load: how many runs' median limit (after the first second) lies
//! outside 0.7–1.3× the workers, the lowest and highest medians, and the mean and lowest
//! efficiency (goodput above 1×). Then the slowdown scenario: seeds whose settled windows
//! keep the targets (efficiency ≥ 98 %, priority score ≥ 97 %, Critical ≥ 99.5 %), and
//! whose settled medians both lie in the band. Each run has a thread of its own (the
//! admission layer's sampling tick is per thread), so a seed's figures do not depend on
//! the runs before it.

use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::time::Duration;

use brownout_core::Priority;
use brownout_sim::{Scenario, Stack, run};

struct Options {
    seeds: RangeInclusive<u64>,
    loads: Vec<f64>,
    secs: u64,
    stacks: Vec<Stack>,
    slowdown_seeds: Option<RangeInclusive<u64>>,
    threads: usize,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        seeds: 1..=20,
        loads: vec![0.8, 0.9, 1.0, 2.0, 4.0, 8.0],
        secs: 30,
        stacks: vec![Stack::Brownout],
        slowdown_seeds: None,
        threads: 2,
    };
    let range = |v: &str| -> Result<RangeInclusive<u64>, String> {
        let (a, b) = v.split_once('-').unwrap_or((v, v));
        let n = |x: &str| x.parse::<u64>().map_err(|e| format!("{v:?}: {e}"));
        Ok(n(a)?..=n(b)?)
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seeds" => o.seeds = range(&value)?,
            "--slowdown-seeds" => o.slowdown_seeds = Some(range(&value)?),
            "--loads" => {
                o.loads = value
                    .split(',')
                    .map(|l| l.parse().map_err(|e| format!("--loads {l:?}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--secs" => o.secs = value.parse().map_err(|e| format!("--secs: {e}"))?,
            "--threads" => o.threads = value.parse().map_err(|e| format!("--threads: {e}"))?,
            "--stacks" => {
                o.stacks = value.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(o)
}

/// Runs every job, `threads` at a time, each on a fresh thread; results in job order.
fn run_all<T: Send>(jobs: Vec<Box<dyn FnOnce() -> T + Send>>, threads: usize) -> Vec<T> {
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("no job panics").pop();
                    let Some((i, job)) = next else { break };
                    let result = std::thread::scope(|s| s.spawn(job).join().expect("a run"));
                    done.lock().expect("no job panics").push((i, result));
                }
            });
        }
    });
    let mut done = done.into_inner().expect("no job panics");
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("limit_sweep: {e}");
            std::process::exit(2);
        }
    };
    let workers = Scenario::default().workers as f64;
    let band = (0.7 * workers)..=(1.3 * workers);
    let seeds = o.seeds.clone().count();
    println!(
        "median limit after 1 s, {} s runs, seeds {:?}; band {:.1}-{:.1} (0.7-1.3x {workers} workers)",
        o.secs,
        o.seeds,
        band.start(),
        band.end()
    );
    for &stack in &o.stacks {
        let mut outside = 0;
        for &load in &o.loads {
            let jobs = o
                .seeds
                .clone()
                .map(|seed| {
                    let scenario = Scenario::load(load)
                        .with_seed(seed)
                        .with_duration(Duration::from_secs(o.secs));
                    Box::new(move || {
                        let r = run(&scenario, stack);
                        let efficiency = if load <= 1.0 {
                            r.efficiency()
                        } else {
                            r.goodput()
                        };
                        (
                            seed,
                            r.limit_median(Duration::from_secs(1), r.duration)
                                .unwrap_or(0.0),
                            efficiency,
                        )
                    }) as Box<dyn FnOnce() -> (u64, f64, f64) + Send>
                })
                .collect();
            let results = run_all(jobs, o.threads);
            let out: Vec<(u64, f64)> = results
                .iter()
                .filter(|(_, m, _)| !band.contains(m))
                .map(|&(s, m, _)| (s, m))
                .collect();
            outside += out.len();
            let medians = results.iter().map(|r| r.1);
            let efficiencies = results.iter().map(|r| r.2);
            println!(
                "{:>17} {load:>4}x: outside {:>2}/{seeds} {out:?}; medians {}-{}; efficiency mean {:.2} % min {:.2} %",
                stack.name(),
                out.len(),
                medians.clone().fold(f64::MAX, f64::min),
                medians.fold(0.0, f64::max),
                100.0 * efficiencies.clone().sum::<f64>() / seeds as f64,
                100.0 * efficiencies.fold(f64::MAX, f64::min),
            );
        }
        println!(
            "{:>17}: outside {outside} of {}",
            stack.name(),
            seeds * o.loads.len()
        );
    }
    let Some(slowdown_seeds) = o.slowdown_seeds else {
        return;
    };
    let n = slowdown_seeds.clone().count();
    for &stack in &o.stacks {
        let jobs = slowdown_seeds
            .clone()
            .map(|seed| {
                Box::new(move || {
                    let r = run(&Scenario::slowdown(0.8).with_seed(seed), stack);
                    let on_target = r
                        .settled
                        .iter()
                        .all(|w| w.efficiency() >= 0.98 && w.priority_score() >= 0.97)
                        && r.class(Priority::Critical).success() >= 0.995;
                    let medians: Vec<f64> = r
                        .settled
                        .iter()
                        .map(|w| w.limit_median.unwrap_or_default())
                        .collect();
                    let efficiency: Vec<f64> = r.settled.iter().map(|w| w.efficiency()).collect();
                    (seed, on_target, medians, efficiency)
                }) as Box<dyn FnOnce() -> (u64, bool, Vec<f64>, Vec<f64>) + Send>
            })
            .collect();
        let results = run_all(jobs, o.threads);
        let missed: Vec<u64> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
        let in_band = results
            .iter()
            .filter(|r| r.2.iter().all(|m| band.contains(m)))
            .count();
        let mean = |i: usize| {
            100.0
                * results
                    .iter()
                    .map(|r| r.3.get(i).copied().unwrap_or(0.0))
                    .sum::<f64>()
                / n as f64
        };
        println!(
            "{} slowdown, seeds {slowdown_seeds:?}: on target {}/{n} (missed {missed:?}); \
             settled medians in band {in_band}/{n}; mean efficiency slow {:.2} % recovered {:.2} %",
            stack.name(),
            n - missed.len(),
            mean(0),
            mean(1),
        );
    }
}
