//! The reference scheduler of the priority score: the best strict-priority scheduler of
//! one simple family, run on the same arrivals and the same backend as the stack.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use brownout_core::Priority;
use brownout_core::config::duration::mul_f64_saturating;

use crate::Scenario;
use crate::report::WEIGHTS;
use crate::scenario::Arrival;

/// How many queue timeouts the reference tries per phase: `deadline × i / TIMEOUT_STEPS`
/// for `i` in `1..=TIMEOUT_STEPS` (20 ms steps for a 500 ms deadline).
const TIMEOUT_STEPS: u64 = 25;

/// What the reference scheduler did with a scenario's arrivals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// Per arrival, whether it counts as answered (see [`reference`]).
    pub(crate) answered: Vec<bool>,
    /// The queue timeout chosen for each phase (split at the backend's speed changes).
    pub(crate) timeouts: Vec<Duration>,
}

/// Runs the [reference scheduler](crate::Report#the-reference-scheduler) on `arrivals`
/// (sorted by time, as [`Scenario::arrivals`] makes them).
///
/// The backend is the scenario's: `workers` workers, each request holding one for its
/// service time × the slowdown factor in force when it starts, no preemption. Whenever a
/// worker is free the scheduler starts the oldest waiting request of the most important
/// class; a request that waited longer than the queue timeout is dropped. It does not look
/// at service times (no real scheduler knows them in advance), so work that ends after the
/// client's deadline is wasted, as in the stacks.
///
/// The timeout is chosen in hindsight for each phase (before, while and after a slowdown;
/// one phase at constant load), phase by phase in time order: among [`TIMEOUT_STEPS`]
/// values up to the deadline, the one that maximizes the phase's weighted answers. A
/// request's timeout is that of the phase it arrived in.
///
/// An answer counts for its phase when its work started before the phase ended, answered
/// by the deadline: the phase's capacity is what the reference may use, as for the fluid
/// bound. Counting the answers that start later too would credit a long timeout with the
/// backlog it serves after the phase (or the run) ends, 500 ms of extra capacity at most:
/// 5 % of a 10 s run, a quarter of the window after a slowdown.
///
/// Cost: `TIMEOUT_STEPS` × phases runs of one event loop over the arrivals (a heap of the
/// workers' free times).
pub(crate) fn reference(scenario: &Scenario, arrivals: &[Arrival]) -> Arc<Reference> {
    // Comparing stacks runs one scenario several times, and its arrivals are a function of
    // it: the reference is computed once (the last few scenarios are kept).
    static RECENT: Mutex<Vec<(Scenario, Arc<Reference>)>> = Mutex::new(Vec::new());
    let cached = lock(&RECENT)
        .iter()
        .find(|(s, _)| s == scenario)
        .map(|(_, r)| r.clone());
    if let Some(cached) = cached {
        return cached;
    }
    let computed = Arc::new(compute(scenario, arrivals));
    let mut recent = lock(&RECENT);
    if recent.len() >= 8 {
        recent.remove(0);
    }
    recent.push((scenario.clone(), computed.clone()));
    computed
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`reference`], uncached.
fn compute(scenario: &Scenario, arrivals: &[Arrival]) -> Reference {
    let deadline = scenario.deadline.as_millis() as u64;
    let mut edges: Vec<u64> = vec![0];
    edges.extend(
        scenario
            .changes()
            .into_iter()
            .filter(|&c| c < scenario.duration)
            .map(|c| c.as_millis() as u64),
    );
    edges.dedup();
    let duration = scenario.duration.as_millis() as u64;
    let model = Model::new(scenario, arrivals, &edges);
    let steps = TIMEOUT_STEPS.min(deadline.max(1));
    let candidates: Vec<u64> = (1..=steps).map(|i| deadline.max(1) * i / steps).collect();

    // Phase by phase: from the state at the phase's start (reached with the timeouts chosen
    // so far), try every timeout until the phase ends, keep the best, go on with it. What
    // starts before the phase ends does not depend on later arrivals.
    let mut state = State::new(scenario.workers.max(1));
    let mut timeouts = vec![0; edges.len()];
    let mut starts: Vec<Option<u64>> = vec![None; arrivals.len()];
    for phase in 0..edges.len() {
        let end = edges.get(phase + 1).copied().unwrap_or(duration);
        // The longest timeout first: when no request waited as long as a timeout, nothing
        // timed out and the run is the same with any longer one, so those are skipped. The
        // best among equals is the shortest.
        let mut best = (f64::NEG_INFINITY, deadline);
        let mut longest = u64::MAX;
        for &timeout in candidates.iter().rev() {
            if timeout > longest {
                continue;
            }
            timeouts[phase] = timeout;
            let mut trial = state.clone();
            let (value, waited) = model.run(&mut trial, &timeouts, phase, end, &mut |_, _| {});
            if longest == u64::MAX {
                longest = waited;
            }
            if value >= best.0 {
                best = (value, timeout);
            }
        }
        timeouts[phase] = best.1;
        model.run(&mut state, &timeouts, phase, end, &mut |k, at| {
            starts[k] = Some(at);
        });
    }
    Reference {
        answered: (0..arrivals.len())
            .map(|k| {
                let phase_end = edges.get(model.phase[k] + 1).copied().unwrap_or(duration);
                starts[k].is_some_and(|t| t < phase_end)
            })
            .collect(),
        timeouts: timeouts.into_iter().map(Duration::from_millis).collect(),
    }
}

/// The arrivals, in the units the event loop uses (milliseconds).
struct Model {
    at: Vec<u64>,
    class: Vec<usize>,
    work: Vec<u64>,
    phase: Vec<usize>,
    weight: Vec<f64>,
    deadline: u64,
    /// Service-time multiplier per phase.
    factor: Vec<f64>,
    edges: Vec<u64>,
}

/// Where the scheduler stands: its queues, the workers' free times and the clock.
#[derive(Debug, Clone)]
struct State {
    queues: [VecDeque<usize>; Priority::COUNT],
    waiting: usize,
    free: BinaryHeap<Reverse<u64>>,
    next: usize,
    now: u64,
}

impl State {
    fn new(workers: usize) -> State {
        State {
            queues: Default::default(),
            waiting: 0,
            free: (0..workers).map(|_| Reverse(0)).collect(),
            next: 0,
            now: 0,
        }
    }
}

impl Model {
    fn new(scenario: &Scenario, arrivals: &[Arrival], edges: &[u64]) -> Model {
        Model {
            at: arrivals.iter().map(|a| a.at_ms).collect(),
            class: arrivals.iter().map(|a| a.priority.index()).collect(),
            work: arrivals.iter().map(|a| a.service_ms).collect(),
            phase: arrivals
                .iter()
                .map(|a| edges.partition_point(|&e| e <= a.at_ms).saturating_sub(1))
                .collect(),
            weight: arrivals
                .iter()
                .map(|a| WEIGHTS[a.priority.index()])
                .collect(),
            deadline: scenario.deadline.as_millis() as u64,
            factor: edges
                .iter()
                .map(|&e| scenario.factor_at(Duration::from_millis(e)))
                .collect(),
            edges: edges.to_vec(),
        }
    }

    /// The service time of arrival `k` at speed `factor`, as the backend computes it: whole
    /// milliseconds × the factor.
    fn service(&self, k: usize, factor: f64) -> u64 {
        if factor == 1.0 {
            self.work[k]
        } else {
            mul_f64_saturating(Duration::from_millis(self.work[k]), factor).as_millis() as u64
        }
    }

    /// Runs the scheduler from `state` until the first moment at or after `end`, with the
    /// queue timeout `timeouts[p]` for requests that arrived in phase `p`. Calls `started`
    /// with every request started that will answer by its deadline. Returns the weight of
    /// those that arrived in `phase`, and the longest wait of a request started or dropped.
    fn run(
        &self,
        state: &mut State,
        timeouts: &[u64],
        phase: usize,
        end: u64,
        started: &mut impl FnMut(usize, u64),
    ) -> (f64, u64) {
        let n = self.at.len();
        let mut value = 0.0;
        let mut longest = 0;
        while state.now < end {
            let now = state.now;
            let speed = self.edges.partition_point(|&e| e <= now).saturating_sub(1);
            let factor = self.factor.get(speed).copied().unwrap_or(1.0);
            while state.next < n && self.at[state.next] <= now {
                let k = state.next;
                state.queues[self.class[k]].push_back(k);
                state.waiting += 1;
                state.next += 1;
            }
            // Start the oldest request of the most important class that has not timed out,
            // while a worker is free.
            'start: while state.waiting > 0 {
                match state.free.peek() {
                    Some(&Reverse(t)) if t <= now => {}
                    _ => break,
                }
                for c in 0..Priority::COUNT {
                    while let Some(k) = state.queues[c].pop_front() {
                        state.waiting -= 1;
                        let waited = now - self.at[k];
                        longest = longest.max(waited);
                        if waited > timeouts[self.phase[k]] {
                            continue;
                        }
                        let done = now + self.service(k, factor);
                        if let Some(mut worker) = state.free.peek_mut() {
                            *worker = Reverse(done);
                        }
                        // An answer exactly at the deadline counts, as for the client.
                        if done <= self.at[k] + self.deadline {
                            started(k, now);
                            if self.phase[k] == phase {
                                value += self.weight[k];
                            }
                        }
                        continue 'start;
                    }
                }
                break;
            }
            // The next moment something can change: an arrival, or a worker freed while
            // requests wait.
            let arrival = self.at.get(state.next).copied();
            let freed = match state.free.peek() {
                Some(&Reverse(t)) if state.waiting > 0 && t > now => Some(t),
                _ => None,
            };
            state.now = match (arrival, freed) {
                (Some(a), Some(f)) => a.min(f),
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => u64::MAX,
            };
        }
        (value, longest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(at_ms: u64, priority: Priority, service_ms: u64) -> Arrival {
        Arrival {
            at_ms,
            priority,
            service_ms,
        }
    }

    fn one_worker() -> Scenario {
        Scenario::default()
            .with_workers(1)
            .with_deadline(Duration::from_millis(100))
    }

    #[test]
    fn serves_the_most_important_waiting_class_first_without_preemption() {
        let arrivals = [
            arrival(0, Priority::Low, 50),
            arrival(1, Priority::Low, 50),
            arrival(2, Priority::Critical, 50),
        ];
        // Low #0 runs 0-50; at 50 Critical goes before the older Low, which then ends at
        // 150, after its deadline (101) whatever the timeout.
        let r = compute(&one_worker(), &arrivals);
        assert_eq!(r.answered, [true, false, true]);
        assert_eq!(r.timeouts.len(), 1);
    }

    #[test]
    fn the_timeout_is_chosen_in_hindsight_without_knowing_service_times() {
        // High #0 runs 0-60. At 60 the old High #1 (60 ms) would end at 120 > 101: with a
        // timeout below 60 ms it is dropped and Medium #2 (arrived at 30) is served in
        // time (60-90 ≤ 130); with a longer one High #1 runs late and Medium times out or
        // comes late.
        let arrivals = [
            arrival(0, Priority::High, 60),
            arrival(1, Priority::High, 60),
            arrival(30, Priority::Medium, 30),
        ];
        let r = compute(&one_worker(), &arrivals);
        assert_eq!(r.answered, [true, false, true]);
        assert!(r.timeouts[0] < Duration::from_millis(59), "{r:?}");
    }

    #[test]
    fn uses_every_worker_and_the_slowdown_in_force_when_work_starts() {
        let s = one_worker().with_workers(3);
        let arrivals: Vec<Arrival> = (0..6).map(|_| arrival(0, Priority::Low, 50)).collect();
        assert_eq!(compute(&s, &arrivals).answered, [true; 6]);
        let arrivals: Vec<Arrival> = (0..7).map(|_| arrival(0, Priority::Low, 50)).collect();
        let r = compute(&s, &arrivals);
        assert_eq!(r.answered.iter().filter(|&&x| x).count(), 6);

        let slow = Scenario::slowdown(1.0)
            .with_duration(Duration::from_millis(300))
            .with_workers(1)
            .with_deadline(Duration::from_millis(100));
        // Slow from 100 to 200 ms (×3): 30 ms of work takes 90 ms there.
        let arrivals = [
            arrival(0, Priority::High, 40),
            arrival(150, Priority::High, 30),
            arrival(151, Priority::Critical, 4),
            arrival(250, Priority::Low, 30),
        ];
        // At 150 the 30 ms job runs 150-240. Critical starts at 240 with the normal speed
        // and ends at 244 ≤ 251, in time, but after the slow phase it arrived in: it does
        // not count for it (its capacity was used).
        let r = compute(&slow, &arrivals);
        assert_eq!(r.answered, [true, true, false, true]);
        assert_eq!(r.timeouts.len(), 3);
    }
}
