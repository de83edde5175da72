//! The command line of the `brownout-sim` binary.
//!
//! Parsed by hand: a dozen `--flag value` options do not justify a parser crate (and its
//! compile time on every CI run); the rules are the usual ones (`--flag value` or
//! `--flag=value`, `--help`), and errors name the flag.

use std::time::Duration;

use crate::{Report, Scenario, Stack, run, table};

/// Which scenarios to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The constant-load scenarios (`--loads`).
    Load,
    /// The backend slowdown.
    Slowdown,
    /// Both.
    All,
}

/// Parsed command-line options.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// Load multiples of the constant-load scenarios.
    pub loads: Vec<f64>,
    /// Offered load of the slowdown scenario.
    pub slowdown_load: f64,
    /// Virtual seconds per scenario (`None`: 10 s, 12 s for the slowdown; 3 s / 6 s quick).
    pub duration: Option<Duration>,
    /// Backend workers.
    pub workers: usize,
    /// Mean service time.
    pub service: Duration,
    /// Client deadline.
    pub deadline: Duration,
    /// Seed.
    pub seed: u64,
    /// Which scenarios.
    pub which: Which,
    /// Stacks to compare (all by default).
    pub stacks: Vec<Stack>,
    /// Print JSON instead of tables.
    pub json: bool,
    /// Short runs (for CI).
    pub quick: bool,
    /// Print the help and exit.
    pub help: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            loads: vec![0.5, 1.0, 2.0, 4.0, 8.0],
            slowdown_load: 0.8,
            duration: None,
            workers: 16,
            service: Duration::from_millis(20),
            deadline: Duration::from_millis(500),
            seed: 42,
            which: Which::All,
            stacks: Stack::ALL.to_vec(),
            json: false,
            quick: false,
            help: false,
        }
    }
}

/// The text of `--help`.
pub const HELP: &str = "\
brownout-sim: the same overload through several tower stacks, in virtual time

USAGE: brownout-sim [OPTIONS]

  --loads 0.5,1,2,4,8     load multiples of capacity for the constant-load scenarios
  --slowdown-load 0.8     offered load (x nominal capacity) of the slowdown scenario, where
                          the backend is 3x slower during the middle third of the run
  --scenario all          load | slowdown | all
  --stacks a,b            stacks to compare: unprotected, tower, bulkhead, brownout,
                          brownout-fixed (the default: all five), brownout-defaults
  --duration 10           virtual seconds per scenario (default 10, slowdown 12)
  --quick                 short runs for CI (3 s, slowdown 6 s) unless --duration is given
  --workers 16            backend workers
  --service-ms 20         mean service time (exponential); capacity = workers / service time
  --deadline-ms 500       client deadline; the client gives up then
  --seed 42               seed of arrivals, classes and service times
  --json                  one JSON object per line per run instead of tables
  -h, --help              this help";

fn value<'a>(
    flag: &str,
    inline: Option<&'a str>,
    rest: &mut impl Iterator<Item = &'a str>,
) -> Result<&'a str, String> {
    inline
        .or_else(|| rest.next())
        .ok_or_else(|| format!("{flag} needs a value"))
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{flag}: {text:?} is not a valid number"))
}

fn positive(flag: &str, text: &str) -> Result<f64, String> {
    let x: f64 = number(flag, text)?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!(
            "{flag}: must be a positive finite number, got {text:?}"
        ))
    }
}

impl Args {
    /// Parses the arguments after the program name.
    ///
    /// # Errors
    ///
    /// A message naming the flag when a flag is unknown, lacks its value or has a bad one.
    ///
    /// ```
    /// use brownout_sim::cli::{Args, Which};
    ///
    /// let args = Args::parse(["--loads", "1,4", "--scenario=load", "--quick"]).unwrap();
    /// assert_eq!(args.loads, [1.0, 4.0]);
    /// assert_eq!(args.which, Which::Load);
    /// assert!(Args::parse(["--workers", "0"]).is_err());
    /// ```
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Args, String> {
        let mut out = Args::default();
        let mut rest = args.into_iter();
        while let Some(arg) = rest.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v)),
                _ => (arg, None),
            };
            match flag {
                "-h" | "--help" => out.help = true,
                "--json" => out.json = true,
                "--quick" => out.quick = true,
                "--loads" => {
                    let text = value(flag, inline, &mut rest)?;
                    out.loads = text
                        .split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| positive(flag, s))
                        .collect::<Result<_, _>>()?;
                    if out.loads.is_empty() {
                        return Err("--loads: give at least one load".to_owned());
                    }
                }
                "--slowdown-load" => {
                    out.slowdown_load = positive(flag, value(flag, inline, &mut rest)?)?;
                }
                "--duration" => {
                    let secs = positive(flag, value(flag, inline, &mut rest)?)?;
                    if secs > 3600.0 {
                        return Err("--duration: at most 3600 virtual seconds".to_owned());
                    }
                    out.duration = Some(Duration::from_secs_f64(secs));
                }
                "--workers" => {
                    let n: usize = number(flag, value(flag, inline, &mut rest)?)?;
                    if n == 0 {
                        return Err("--workers: must be at least 1".to_owned());
                    }
                    out.workers = n;
                }
                "--service-ms" => {
                    let n: u64 = number(flag, value(flag, inline, &mut rest)?)?;
                    if n == 0 {
                        return Err("--service-ms: must be at least 1".to_owned());
                    }
                    out.service = Duration::from_millis(n);
                }
                "--deadline-ms" => {
                    let n: u64 = number(flag, value(flag, inline, &mut rest)?)?;
                    if n == 0 {
                        return Err("--deadline-ms: must be at least 1".to_owned());
                    }
                    out.deadline = Duration::from_millis(n);
                }
                "--seed" => out.seed = number(flag, value(flag, inline, &mut rest)?)?,
                "--scenario" => {
                    out.which = match value(flag, inline, &mut rest)?.trim() {
                        "load" => Which::Load,
                        "slowdown" => Which::Slowdown,
                        "all" => Which::All,
                        other => {
                            return Err(format!(
                                "--scenario: expected load, slowdown or all, got {other:?}"
                            ));
                        }
                    };
                }
                "--stacks" => {
                    out.stacks = value(flag, inline, &mut rest)?
                        .split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| s.parse::<Stack>().map_err(|e| format!("--stacks: {e}")))
                        .collect::<Result<_, _>>()?;
                    if out.stacks.is_empty() {
                        return Err("--stacks: give at least one stack".to_owned());
                    }
                }
                other => return Err(format!("unknown option {other:?} (see --help)")),
            }
        }
        Ok(out)
    }

    /// The scenarios these options ask for, in run order.
    pub fn scenarios(&self) -> Vec<Scenario> {
        let (load_secs, slow_secs) = if self.quick { (3, 6) } else { (10, 12) };
        let shape = |s: Scenario, default_secs: u64| {
            s.with_workers(self.workers)
                .with_service(self.service)
                .with_deadline(self.deadline)
                .with_seed(self.seed)
                .with_duration(self.duration.unwrap_or(Duration::from_secs(default_secs)))
        };
        let mut out = Vec::new();
        if matches!(self.which, Which::Load | Which::All) {
            out.extend(
                self.loads
                    .iter()
                    .map(|&l| shape(Scenario::load(l), load_secs)),
            );
        }
        if matches!(self.which, Which::Slowdown | Which::All) {
            out.push(shape(Scenario::slowdown(self.slowdown_load), slow_secs));
        }
        out
    }

    /// Runs every scenario through every stack.
    pub fn run(&self) -> Vec<Report> {
        self.scenarios()
            .iter()
            .flat_map(|s| self.stacks.iter().map(move |&stack| run(s, stack)))
            .collect()
    }
}

/// The full text report: what was simulated, the legend, the tables, the stacks.
pub fn render_text(args: &Args, reports: &[Report]) -> String {
    let mut out = String::new();
    out.push_str("brownout-sim: the same open-loop overload through each stack, in virtual time\n");
    out.push_str(&format!(
        "backend: {} workers x {} ms mean service time (exponential) = capacity {:.0} req/s; \
         client deadline {} ms; seed {}\n",
        args.workers,
        args.service.as_millis(),
        args.workers as f64 / args.service.as_secs_f64(),
        args.deadline.as_millis(),
        args.seed,
    ));
    out.push_str(
        "traffic: Poisson arrivals, classes critical/high/medium/low/background = 10/30/30/20/10 %; \
         work that reached the backend cannot be cancelled\n\nStacks\n",
    );
    for stack in &args.stacks {
        out.push_str(&format!("  {:<16} {}\n", stack.name(), stack.description()));
    }
    out.push('\n');
    out.push_str(table::LEGEND);
    out.push('\n');
    out.push_str(&table::render(reports));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_issue() {
        let args = Args::parse([]).unwrap();
        assert_eq!(args.loads, [0.5, 1.0, 2.0, 4.0, 8.0]);
        assert_eq!(args.which, Which::All);
        assert_eq!(args.stacks, Stack::ALL);
        let scenarios = args.scenarios();
        assert_eq!(scenarios.len(), 6);
        assert!(
            scenarios[..5]
                .iter()
                .all(|s| s.duration == Duration::from_secs(10))
        );
        assert_eq!(scenarios[5].duration, Duration::from_secs(12));
        assert!(scenarios[5].slowdown.is_some());
        assert_eq!(scenarios[0].capacity(), 800.0);
    }

    #[test]
    fn flags_with_values_inline_or_separate() {
        let args = Args::parse([
            "--workers=8",
            "--service-ms",
            "10",
            "--deadline-ms=250",
            "--seed",
            "7",
            "--duration",
            "1.5",
            "--scenario",
            "slowdown",
            "--stacks",
            "tower,brownout-fixed",
            "--json",
        ])
        .unwrap();
        assert_eq!(args.workers, 8);
        assert_eq!(args.service, Duration::from_millis(10));
        assert_eq!(args.deadline, Duration::from_millis(250));
        assert_eq!(args.seed, 7);
        assert!(args.json);
        assert_eq!(args.stacks, [Stack::Tower, Stack::BrownoutFixed]);
        let scenarios = args.scenarios();
        assert_eq!(scenarios.len(), 1);
        assert_eq!(scenarios[0].duration, Duration::from_millis(1500));
        assert_eq!(scenarios[0].capacity(), 800.0);
        let quick = Args::parse(["--quick", "--scenario", "load"]).unwrap();
        assert!(
            quick
                .scenarios()
                .iter()
                .all(|s| s.duration == Duration::from_secs(3))
        );
    }

    #[test]
    fn bad_input_names_the_flag() {
        for (argv, flag) in [
            (&["--loads", "1,x"][..], "--loads"),
            (&["--loads", "-2"], "--loads"),
            (&["--loads", "NaN"], "--loads"),
            (&["--workers", "0"], "--workers"),
            (&["--duration"], "--duration"),
            (&["--duration", "1e9"], "--duration"),
            (&["--scenario", "spike"], "--scenario"),
            (&["--stacks", "envoy"], "--stacks"),
            (&["--seed", "-1"], "--seed"),
            (&["--frobnicate"], "--frobnicate"),
        ] {
            let err = Args::parse(argv.iter().copied()).unwrap_err();
            assert!(err.contains(flag), "{argv:?}: {err}");
        }
    }

    #[test]
    fn text_report_explains_itself() {
        let args =
            Args::parse(["--loads", "2", "--scenario", "load", "--duration", "0.5"]).unwrap();
        let reports = args.run();
        assert_eq!(reports.len(), Stack::ALL.len());
        let text = render_text(&args, &reports);
        for stack in Stack::ALL {
            assert!(text.contains(stack.description()), "{stack}");
        }
        assert!(text.contains("priority score"));
        assert!(text.contains("best: "));
        let json = reports[0].to_json();
        assert!(json.starts_with("{\"scenario\":\"load 2x\",\"stack\":\"unprotected\""));
        assert_eq!(json.matches('{').count(), json.matches('}').count());
        assert_eq!(json.matches('[').count(), json.matches(']').count());
    }
}
