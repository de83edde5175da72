//! Triggering the shutdown on SIGTERM / SIGINT (feature `signal`).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;

use tokio::task::JoinHandle;

use crate::Shutdown;

impl Shutdown {
    /// Spawns a task that triggers the shutdown on the first SIGTERM or SIGINT (Ctrl-C;
    /// only Ctrl-C outside Unix). The task ends after the signal, or when the shutdown is
    /// triggered some other way, so it never outlives the shutdown.
    ///
    /// A second signal is left to tokio's handling (it is not turned back into the default
    /// "terminate now"); send SIGKILL to stop a process stuck in its drain.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime. If the runtime has no I/O driver (`enable_io`/`enable_all`),
    /// the signal handlers cannot be installed: the task logs an error and ends (the
    /// shutdown can still be triggered programmatically).
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() {
    /// let shutdown = brownout_shutdown::Shutdown::new();
    /// shutdown.listen_for_signals();
    /// // ... serve with `shutdown.layer()` and `shutdown.refusing()` ...
    /// let report = shutdown.wait().await;
    /// println!("{report}");
    /// # }
    /// ```
    pub fn listen_for_signals(&self) -> JoinHandle<()> {
        let shutdown = self.clone();
        tokio::spawn(async move {
            let mut triggered = pin!(shutdown.triggered());
            let mut signal = pin!(next_signal());
            let received = poll_fn(|cx| {
                if triggered.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                signal.as_mut().poll(cx).map(Some)
            })
            .await;
            match received {
                Some(Ok(name)) => {
                    tracing::info!(signal = name, "shutdown: signal received");
                    shutdown.trigger();
                }
                Some(Err(err)) => {
                    tracing::error!(%err, "shutdown: cannot listen for signals");
                }
                None => {}
            }
        })
    }
}

#[cfg(unix)]
async fn next_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    // tokio panics when the runtime has no I/O driver; report that as an error instead.
    let install = |kind: SignalKind| -> std::io::Result<Signal> {
        std::panic::catch_unwind(|| signal(kind)).unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the tokio runtime has no I/O driver (enable_io / enable_all)",
            ))
        })
    };
    let mut term = install(SignalKind::terminate())?;
    let mut interrupt = install(SignalKind::interrupt())?;
    poll_fn(|cx| {
        if term.poll_recv(cx).is_ready() {
            return Poll::Ready(Ok("SIGTERM"));
        }
        if interrupt.poll_recv(cx).is_ready() {
            return Poll::Ready(Ok("SIGINT"));
        }
        Poll::Pending
    })
    .await
}

#[cfg(not(unix))]
async fn next_signal() -> std::io::Result<&'static str> {
    tokio::signal::ctrl_c().await.map(|()| "ctrl-c")
}
