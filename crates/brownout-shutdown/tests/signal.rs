//! A real SIGTERM, sent to this test process only (its own binary, so no other test shares
//! the process), triggers the shutdown.
#![cfg(all(feature = "signal", unix))]
#![allow(missing_docs)]

use std::time::Duration;

use brownout_shutdown::{Phase, Shutdown};

#[tokio::test]
async fn sigterm_to_this_process_triggers_the_shutdown() {
    let shutdown = Shutdown::new();
    let listener = shutdown.listen_for_signals();
    // Let the listener task install its handlers before the signal is sent: without them
    // SIGTERM would end the test process.
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    assert!(!listener.is_finished(), "handlers installed, waiting");
    let sent = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(std::process::id().to_string())
        .status();
    let Ok(status) = sent else {
        eprintln!("no `kill` command here; signal delivery not exercised");
        shutdown.trigger();
        return;
    };
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(10), shutdown.triggered())
        .await
        .expect("SIGTERM triggered the shutdown");
    listener.await.unwrap();
    let report = shutdown.wait().await;
    assert!(report.drained);
    assert_eq!(shutdown.phase(), Phase::Terminated);
}
