//! Prints what one `--work` unit costs on this machine (the ladder benchmark measures the same at
//! the start of every run and states it on its CPU-work sweep page).
//! `cargo run --release -p server_common --example work_cost`

use std::time::Instant;

fn main() {
    let units = 20_000;
    server_common::work::burn(100); // warm up the core's clock
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        server_common::work::burn(units);
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / f64::from(units));
    }
    println!("one --work unit: {best:.2} µs (best of 5 runs of {units} units)");
}
