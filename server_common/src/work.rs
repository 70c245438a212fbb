//! Simulated work (`--work`, `--delay-ms`): what a real request would cost besides I/O.

use std::hint::black_box;
use std::time::Duration;

/// Burns `units` units of CPU: each unit is 1,000 rounds of xorshift-multiply, a dependent chain
/// of shifts, xors and a multiply that no CPU can overlap across rounds and no optimiser can
/// fold, because the seed and the result pass through `black_box`. Its cost on this machine:
/// `cargo run --release -p server_common --example work_cost`.
#[inline(never)]
pub fn burn(units: u32) -> u64 {
    let mut x = black_box(0x2545_F491_4F6C_DD1Du64);
    for _ in 0..u64::from(units) * 1_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    black_box(x)
}

/// The per-request (or per-echoed-read) cost: `work_units` of CPU, then a blocking sleep.
pub fn simulate(work_units: u32, delay: Duration) {
    if work_units > 0 {
        burn(work_units);
    }
    if !delay.is_zero() {
        // Deliberately blocking: a slow backend holds whatever thread calls it.
        std::thread::sleep(delay);
    }
}
