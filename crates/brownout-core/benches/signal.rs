//! `LoadSignal::level()` against a plain atomic load and a `watch::Receiver::borrow()`.
#![allow(missing_docs)]
use std::hint::black_box;
use std::sync::atomic::{AtomicU8, Ordering};

use brownout_core::{LoadLevel, LoadSignal};
use criterion::{Criterion, criterion_group, criterion_main};

fn level_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("level_read");
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    publisher.publish(LoadLevel::High);
    group.bench_function("brownout_LoadSignal::level", |b| {
        b.iter(|| black_box(&signal).level())
    });
    let atomic = AtomicU8::new(2);
    group.bench_function("baseline_AtomicU8::load", |b| {
        b.iter(|| black_box(&atomic).load(Ordering::Relaxed))
    });
    let (_tx, rx) = tokio::sync::watch::channel(LoadLevel::High);
    group.bench_function("tokio_watch::Receiver::borrow", |b| {
        b.iter(|| *black_box(&rx).borrow())
    });
    group.finish();
}

criterion_group!(benches, level_read);
criterion_main!(benches);
