//! Criterion benches of the hot path: the schedule (next intended time) and recording a response.
#![allow(missing_docs, clippy::unwrap_used)] // criterion_group! generates undocumented functions

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use stackproof_loadtest::{Frame, Schedule, Stage};

fn schedule(c: &mut Criterion) {
    c.bench_function("schedule/constant next_offset", |b| {
        let mut s = Schedule::constant(1e9, Duration::from_secs(3600));
        b.iter(|| black_box(s.next_offset()))
    });
    c.bench_function("schedule/ramp next_offset", |b| {
        let mut s = Schedule::staged(
            0.0,
            &[Stage {
                target: 1e9,
                duration: 3600.0,
            }],
        );
        b.iter(|| black_box(s.next_offset()))
    });
}

fn record(c: &mut Criterion) {
    let addr = "127.0.0.1:80".parse().unwrap();
    let mut f = Frame::new(0, 1);
    let mut i = 0u64;
    c.bench_function("record/response + header value", |b| {
        b.iter(|| {
            i += 1;
            let d = Duration::from_micros(200 + (i % 5000));
            f.response(200, d, d / 2, addr);
            f.header_value(
                0,
                Some(if i.is_multiple_of(2) {
                    b"us-east-1a"
                } else {
                    b"us-east-1b"
                }),
            );
        })
    });
    c.bench_function("record/merge frame", |b| {
        let mut src = Frame::new(0, 1);
        for k in 0..5000u64 {
            let d = Duration::from_micros(100 + k);
            src.response(200, d, d, addr);
        }
        b.iter(|| {
            let mut into = Frame::new(0, 1);
            for (a, b) in into.statuses.iter_mut().zip(&src.statuses) {
                *a += b;
            }
            into.corrected.add(&src.corrected).unwrap();
            black_box(into.corrected.len())
        })
    });
}

criterion_group!(benches, schedule, record);
criterion_main!(benches);
