//! The greeter client:
//! `client [ADDR] [NAME] [PRIORITY] [COUNT]` (defaults `127.0.0.1:50051 world medium 1`).
//!
//! Sends COUNT `SayHello` calls with `x-priority: PRIORITY` metadata and a 1 s
//! `grpc-timeout`, and prints each answer, or the status, its pushback and the server's
//! load level when the server refused the call.

use std::net::SocketAddr;
use std::time::Duration;

use brownout::{BoxError, Priority};
use tonic_greeter::{connect, hello};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:50051".to_owned())
        .parse()?;
    let name = args.next().unwrap_or_else(|| "world".to_owned());
    let priority: Priority = args.next().as_deref().unwrap_or("medium").parse()?;
    let count: u32 = args.next().as_deref().unwrap_or("1").parse()?;

    let mut client = connect(addr).await?;
    for _ in 0..count {
        let request = hello(&name, priority, Some(Duration::from_secs(1)));
        match client.say_hello(request).await {
            Ok(reply) => println!("{}", reply.into_inner().message),
            Err(status) => {
                let meta = |key: &str| {
                    status
                        .metadata()
                        .get(key)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned()
                };
                println!(
                    "{:?} \"{}\" pushback={}ms level={}",
                    status.code(),
                    status.message(),
                    meta("grpc-retry-pushback-ms"),
                    meta("x-load-level"),
                );
            }
        }
    }
    Ok(())
}
