//! The stamp every published number carries: machine, toolchain, date and command.

use std::process::Command;

#[derive(Clone, Debug)]
pub struct Stamp {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub rustc: String,
    pub date: String,
    pub command: String,
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
        }
    }

    /// One line for the top of a generated table.
    pub fn line(&self) -> String {
        format!(
            "Measured {} on {} ({} cores), Linux {}, {}, by `{}`.",
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
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": self.cpu, "cores": self.cores, "kernel": self.kernel,
            "rustc": self.rustc, "date": self.date, "command": self.command,
        })
    }
}
