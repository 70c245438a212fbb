//! The stamp every published number carries: machine, toolchain, date, command, and the load
//! average when the run started (how busy the shared machine was).

use std::process::Command;

#[derive(Clone, Debug)]
pub struct Stamp {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub rustc: String,
    pub date: String,
    pub command: String,
    /// /proc/loadavg's 1-minute load average at the start of the run ("" if unknown).
    pub load: String,
    /// What one `--work` unit cost at the start of the run, in µs (the sweeps' `--work`).
    pub work_unit_us: Option<f64>,
}

/// One `--work` unit's CPU time here and now: the best of five runs of 20,000 units of the very
/// function the servers call (server_common's `work::burn`), as its `work_cost` example does.
pub fn work_unit_us() -> f64 {
    let units = 20_000;
    server_common::work::burn(100); // wake the core's clock up first
    (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            server_common::work::burn(units);
            t.elapsed().as_secs_f64() * 1e6 / f64::from(units)
        })
        .fold(f64::INFINITY, f64::min)
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

impl Stamp {
    pub fn now(command: String) -> Stamp {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        Stamp {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: first_line("uname", &["-r"]),
            rustc: first_line("rustc", &["--version"]),
            date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            command,
            load: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
                .unwrap_or_default(),
            work_unit_us: None,
        }
    }

    /// One line for the top of a generated table.
    pub fn line(&self) -> String {
        let load = if self.load.is_empty() {
            String::new()
        } else {
            format!("; load average {} at the start", self.load)
        };
        format!(
            "Measured {} on {} ({} cores), Linux {}, {}, by `{}`{load}.",
            self.date, self.cpu, self.cores, self.kernel, self.rustc, self.command
        )
    }

    /// A stamp back from [`Stamp::json`] ("unknown" where a field is missing).
    pub fn from_json(v: &serde_json::Value) -> Stamp {
        let s = |k: &str| v[k].as_str().unwrap_or("unknown").to_string();
        Stamp {
            cpu: s("cpu"),
            cores: v["cores"].as_u64().unwrap_or(0) as usize,
            kernel: s("kernel"),
            rustc: s("rustc"),
            date: s("date"),
            command: s("command"),
            load: v["load"].as_str().unwrap_or_default().to_string(),
            work_unit_us: v["work_unit_us"].as_f64(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": self.cpu, "cores": self.cores, "kernel": self.kernel,
            "rustc": self.rustc, "date": self.date, "command": self.command, "load": self.load,
            "work_unit_us": self.work_unit_us,
        })
    }
}
