//! The command line of the `brownout-demo` binary.
//!
//! Parsed by hand, like `brownout-sim`'s: `--flag value` or `--flag=value`, errors name the
//! flag.

use std::path::PathBuf;
use std::time::Duration;

/// Parsed command-line options.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// Load multiples of capacity, one phase each.
    pub loads: Vec<f64>,
    /// Seconds per constant-load phase (`None`: 5 s, quick 0.8 s); the slowdown phase runs
    /// 1.5 × as long.
    pub duration: Option<Duration>,
    /// Offered load of the slowdown phase (× nominal capacity); `None` leaves it out.
    pub slowdown_load: Option<f64>,
    /// Service-time multiplier during the middle third of the slowdown phase.
    pub slowdown_factor: f64,
    /// Backend workers.
    pub workers: usize,
    /// Mean service time (exponential).
    pub service: Duration,
    /// Client deadline.
    pub deadline: Duration,
    /// h2c connections per server.
    pub connections: usize,
    /// Seed of arrivals, classes and work.
    pub seed: u64,
    /// Where the report goes.
    pub out: PathBuf,
    /// Print a JSON summary instead of the table (and no progress bar).
    pub json: bool,
    /// The short smoke run.
    pub quick: bool,
    /// Print the help and exit.
    pub help: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            loads: vec![0.5, 1.0, 2.0, 4.0],
            duration: None,
            slowdown_load: Some(0.8),
            slowdown_factor: 3.0,
            workers: 16,
            service: Duration::from_millis(40),
            deadline: Duration::from_millis(500),
            connections: 16,
            seed: 42,
            out: PathBuf::from("target/brownout-demo"),
            json: false,
            quick: false,
            help: false,
        }
    }
}

/// The text of `--help`.
pub const HELP: &str = "\
brownout-demo: real HTTP overload on loopback — unprotected vs plain tower vs brownout

Starts three axum servers on 127.0.0.1 (ephemeral ports), each over its own simulated
backend of WORKERS workers and exponential service times, and drives them one after the
other with the same open-loop Poisson traffic (5 classes, x-priority, a grpc-timeout
deadline) over h2c; prints a side-by-side table and writes an HTML report.

USAGE: brownout-demo [OPTIONS]

  --loads 0.5,1,2,4       load multiples of capacity, one phase each
  --duration 5            seconds per load phase (the slowdown phase runs 1.5x as long)
  --slowdown-load 0.8     offered load of the slowdown phase, where the backend is
                          FACTOR x slower during its middle third; 0 leaves it out
  --slowdown-factor 3     service-time multiplier while slow
  --workers 16            backend workers; capacity = workers / service time
  --service-ms 40         mean service time (exponential, whole milliseconds)
  --deadline-ms 500       client deadline; the client gives up then (a failure)
  --connections 16        h2c keep-alive connections per server
  --seed 42               seed of arrivals, classes and work
  --out DIR               report directory (default target/brownout-demo)
  --json                  print a JSON summary instead of the table; no progress bar
  --quick                 smoke run: loads 1,4, 0.8 s phases (unless given)
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

fn millis(flag: &str, text: &str) -> Result<Duration, String> {
    let ms: u64 = number(flag, text)?;
    if ms == 0 {
        return Err(format!("{flag}: must be at least 1"));
    }
    Ok(Duration::from_millis(ms))
}

impl Args {
    /// Parses the arguments after the program name.
    ///
    /// ```
    /// use brownout_demo::cli::Args;
    ///
    /// let args = Args::parse(["--quick", "--loads", "1,4", "--out=/tmp/demo"]).unwrap();
    /// assert!(args.quick);
    /// assert_eq!(args.loads, vec![1.0, 4.0]);
    /// assert!(Args::parse(["--workers", "0"]).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// An unknown flag, a missing value or an invalid number, naming the flag.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Args, String> {
        let mut out = Args::default();
        let mut loads_given = false;
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
                    loads_given = true;
                }
                "--duration" => {
                    let secs = positive(flag, value(flag, inline, &mut rest)?)?;
                    if secs > 600.0 {
                        return Err("--duration: at most 600 seconds".to_owned());
                    }
                    out.duration = Some(Duration::from_secs_f64(secs));
                }
                "--slowdown-load" => {
                    let x: f64 = number(flag, value(flag, inline, &mut rest)?)?;
                    if !(x.is_finite() && x >= 0.0) {
                        return Err(format!("{flag}: must be 0 or a positive number"));
                    }
                    out.slowdown_load = (x > 0.0).then_some(x);
                }
                "--slowdown-factor" => {
                    out.slowdown_factor = positive(flag, value(flag, inline, &mut rest)?)?;
                }
                "--workers" => {
                    let n: usize = number(flag, value(flag, inline, &mut rest)?)?;
                    if n == 0 || n > 10_000 {
                        return Err("--workers: must be between 1 and 10000".to_owned());
                    }
                    out.workers = n;
                }
                "--service-ms" => out.service = millis(flag, value(flag, inline, &mut rest)?)?,
                "--deadline-ms" => out.deadline = millis(flag, value(flag, inline, &mut rest)?)?,
                "--connections" => {
                    let n: usize = number(flag, value(flag, inline, &mut rest)?)?;
                    if n == 0 || n > 1000 {
                        return Err("--connections: must be between 1 and 1000".to_owned());
                    }
                    out.connections = n;
                }
                "--seed" => out.seed = number(flag, value(flag, inline, &mut rest)?)?,
                "--out" => out.out = PathBuf::from(value(flag, inline, &mut rest)?),
                other => return Err(format!("unknown option {other:?} (see --help)")),
            }
        }
        if out.quick && !loads_given {
            out.loads = vec![1.0, 4.0];
        }
        Ok(out)
    }

    /// Seconds per constant-load phase.
    pub fn phase_duration(&self) -> Duration {
        self.duration.unwrap_or(if self.quick {
            Duration::from_millis(800)
        } else {
            Duration::from_secs(5)
        })
    }

    /// Nominal capacity in requests per second: workers / mean service time.
    pub fn capacity(&self) -> f64 {
        self.workers as f64 / self.service.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_flags() {
        let d = Args::parse([]).unwrap();
        assert_eq!(d, Args::default());
        assert_eq!(d.capacity(), 400.0);
        assert_eq!(d.phase_duration(), Duration::from_secs(5));
        let a = Args::parse([
            "--loads=2",
            "--duration",
            "1.5",
            "--slowdown-load",
            "0",
            "--workers",
            "8",
            "--service-ms=20",
            "--deadline-ms",
            "300",
            "--seed",
            "9",
            "--json",
            "--connections",
            "4",
        ])
        .unwrap();
        assert_eq!(a.loads, vec![2.0]);
        assert_eq!(a.phase_duration(), Duration::from_millis(1500));
        assert_eq!(a.slowdown_load, None);
        assert_eq!((a.workers, a.seed, a.connections), (8, 9, 4));
        assert_eq!(a.service, Duration::from_millis(20));
        assert_eq!(a.deadline, Duration::from_millis(300));
        assert!(a.json);
        let q = Args::parse(["--quick"]).unwrap();
        assert_eq!(q.loads, vec![1.0, 4.0]);
        assert_eq!(q.phase_duration(), Duration::from_millis(800));
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (vec!["--loads", "1,-2"], "--loads"),
            (vec!["--loads", ""], "--loads"),
            (vec!["--duration", "NaN"], "--duration"),
            (vec!["--workers", "0"], "--workers"),
            (vec!["--service-ms", "0"], "--service-ms"),
            (vec!["--seed"], "--seed"),
            (vec!["--bogus"], "--bogus"),
        ] {
            let err = Args::parse(args).unwrap_err();
            assert!(err.contains(flag), "{err}");
        }
    }
}
