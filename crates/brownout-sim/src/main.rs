//! `brownout-sim`: compares overload-control stacks on identical simulated traffic.
//! Run `cargo run --release -p brownout-sim -- --help`.

use std::process::ExitCode;

use brownout_sim::cli::{Args, HELP, render_text};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match Args::parse(argv.iter().map(String::as_str)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("brownout-sim: {message}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let reports = args.run();
    if args.json {
        for report in &reports {
            println!("{}", report.to_json());
        }
    } else {
        print!("{}", render_text(&args, &reports));
    }
    ExitCode::SUCCESS
}
