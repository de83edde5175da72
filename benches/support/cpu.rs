//! Helpers shared by the criterion benches of several crates (included with
//! `#[path = "../../../benches/support/cpu.rs"] mod cpu;`): one full request on a no-op
//! waker, and the thread's CPU time, which leaves out the time a thread waits for a core so
//! rows of one run stay comparable on a loaded machine (Linux only).
#![allow(dead_code)] // each bench uses the part it needs

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tower_service::Service;

/// One full request: `poll_ready`, `call`, one `poll` of the response future. `true` when
/// it was answered `Ok` at once; `false` when not ready, refused or pending.
#[inline]
pub(crate) fn once<S: Service<R>, R>(svc: &mut S, cx: &mut Context<'_>, req: R) -> bool {
    if !matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))) {
        return false;
    }
    let fut = pin!(svc.call(req));
    matches!(fut.poll(cx), Poll::Ready(Ok(_)))
}

/// CPU time of this thread so far (Linux `/proc/thread-self/schedstat`, nanoseconds).
pub(crate) fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat")
}

/// One row of a CPU-time table: runs `n` requests, returns CPU ns per request.
pub(crate) type CpuRow = (&'static str, Box<dyn FnMut(u64) -> f64>);

/// A row sending `req` through `svc` with [`once`].
pub(crate) fn cpu_row<S: Service<u64> + 'static>(name: &'static str, svc: S, req: u64) -> CpuRow {
    cpu_row_with(name, svc, move || black_box(req))
}

/// A row sending a request made by `make` through `svc` with [`once`] (the making counts:
/// give it a row of its own to subtract, as the http rows do).
pub(crate) fn cpu_row_with<S, R>(
    name: &'static str,
    mut svc: S,
    mut make: impl FnMut() -> R + 'static,
) -> CpuRow
where
    S: Service<R> + 'static,
{
    let run = move |n: u64| {
        let mut cx = Context::from_waker(Waker::noop());
        let cpu = thread_cpu_ns();
        for _ in 0..n {
            black_box(once(&mut svc, &mut cx, make()));
        }
        (thread_cpu_ns() - cpu) as f64 / n as f64
    };
    (name, Box::new(run))
}
