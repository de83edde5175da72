//! `cargo run --release -p brownout-demo`: the overload demo with real HTTP load.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use brownout_demo::cli::{Args, HELP};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match Args::parse(argv.iter().map(String::as_str)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("brownout-demo: {e}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("brownout-demo: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(brownout_demo::run(&args)) {
        Ok(done) => {
            if args.json {
                println!("{}", done.json);
            } else {
                println!("{}", done.table);
                println!("report: {}", done.report.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("brownout-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
