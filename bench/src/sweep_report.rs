//! The sweeps' outputs: a markdown table per metric and a line chart per sweep
//! (docs/results/sweep-ID.md, sweep-ID-METRIC.svg), each rung's rows for its README, and the
//! headline of the root README.

use std::path::Path;

use crate::curves::{self, Line, Pt, XAxis};
use crate::results::thousands;
use crate::sweeps::{Axis, Cell, Metric, Sweep, charts, metrics};

/// A subject as the tables name it: a rung as code, nginx in italics.
fn shown(name: &str, anchor: bool) -> String {
    if anchor {
        format!("*{name}*")
    } else {
        format!("`{name}`")
    }
}

/// The subjects of a sweep in the order they appear: the ladder's, then nginx.
fn names(cells: &[&Cell]) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = Vec::new();
    for c in cells {
        if !v.iter().any(|(n, _)| n == &c.rung) {
            v.push((c.rung.clone(), c.anchor));
        }
    }
    v.sort_by_key(|(_, anchor)| *anchor); // stable: ladder order kept
    v
}

/// The columns of a sweep: its points (fractions, for the offered-load sweep).
fn columns(sweep: &Sweep, cells: &[&Cell]) -> Vec<f64> {
    let mut xs: Vec<f64> = if sweep.axis == Axis::Rate {
        cells.iter().filter_map(|c| c.fraction).collect()
    } else {
        cells.iter().map(|c| c.x).collect()
    };
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs
}

fn key(sweep: &Sweep, c: &Cell) -> f64 {
    if sweep.axis == Axis::Rate {
        c.fraction.unwrap_or(0.0)
    } else {
        c.x
    }
}

fn header(sweep: &Sweep, x: f64) -> String {
    match sweep.axis {
        Axis::Rate => format!("{x} ×"),
        Axis::Idle => format!("{} idle", thousands(x)),
        Axis::Conns if x == 1.0 => "1 conn".to_string(),
        Axis::Conns => format!("{} conns", thousands(x)),
        Axis::Work => format!("--work {}", thousands(x)),
        Axis::Delay => format!("{} ms", thousands(x)),
        Axis::Held => format!("{} held", thousands(x)),
    }
}

/// One cell as a table shows it: the median and its range, and what was left unserved.
fn cell_text(c: &Cell, m: Metric) -> String {
    let notes = c.notes();
    let value = c.spread(m).map(|s| s.show(|v| m.show(v)));
    match (value, notes.is_empty()) {
        (Some(v), true) => v,
        (Some(v), false) => format!("{v} · {notes}"),
        (None, false) => notes,
        (None, true) => "–".into(),
    }
}

/// A table: one row per rung, one column per point, of metric `m`.
pub fn table(sweep: &Sweep, cells: &[&Cell], m: Metric) -> String {
    grid(sweep, cells, |c| cell_text(c, m))
}

/// The offered rates behind the offered-load sweep's columns, per rung.
fn offered_table(sweep: &Sweep, cells: &[&Cell]) -> String {
    grid(sweep, cells, |c| format!("{} req/s", thousands(c.x)))
}

/// One row per rung (anchors last, in italics), one column per point, `text` in each cell.
fn grid(sweep: &Sweep, cells: &[&Cell], text: impl Fn(&Cell) -> String) -> String {
    let xs = columns(sweep, cells);
    let mut s = String::from("| server |");
    for &x in &xs {
        s += &format!(" {} |", header(sweep, x));
    }
    s += "\n|---|";
    s += &"--:|".repeat(xs.len());
    s += "\n";
    for (name, anchor) in names(cells) {
        let shown = shown(&name, anchor);
        s += &format!("| {shown} |");
        for &x in &xs {
            let t = cells
                .iter()
                .find(|c| c.rung == name && key(sweep, c) == x)
                .map_or("–".into(), |c| text(c));
            s += &format!(" {} |", t.replace('|', "\\|"));
        }
        s += "\n";
    }
    s
}

/// The lines of a chart of metric `m`.
pub fn lines(cells: &[&Cell], m: Metric) -> Vec<Line> {
    names(cells)
        .into_iter()
        .map(|(name, anchor)| {
            let mut points: Vec<Pt> = cells
                .iter()
                .filter(|c| c.rung == name)
                .filter_map(|c| {
                    let s = c.spread(m)?;
                    Some(Pt {
                        x: c.x,
                        median: m.plotted(s.median),
                        min: m.plotted(s.min),
                        max: m.plotted(s.max),
                        partial: c.partial(),
                    })
                })
                .collect();
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            let hue = if anchor {
                usize::from(name.contains("2 workers"))
            } else {
                conformance::rungs::RUNGS
                    .iter()
                    .position(|r| r.krate == name)
                    .unwrap_or(0)
            };
            Line {
                label: name,
                anchor,
                hue,
                points,
            }
        })
        .filter(|l| !l.points.is_empty())
        .collect()
}

fn chart_file(sweep: &Sweep, m: Metric) -> String {
    let tag = match m {
        Metric::Rate => "rate",
        Metric::CpuUs => "cpu",
        Metric::P50 => "p50",
        Metric::P99 => "p99",
        Metric::P999 => "p999",
        Metric::PssMib => "pss",
        Metric::BytesPerConn => "bytes",
        Metric::ThreadsPerConn => "threads",
        Metric::StackBytes => "stacks",
        Metric::AnonBytes => "anon",
        Metric::FileBytes => "file",
        Metric::PageTableBytes => "pte",
        Metric::KernelStackBytes => "kstack",
    };
    format!("sweep-{}-{tag}.svg", sweep.id)
}

/// The chart files of a sweep (relative to docs/results) and their titles.
pub fn chart_files(sweep: &Sweep) -> Vec<(String, String)> {
    charts(sweep.axis)
        .iter()
        .map(|(m, _)| {
            (
                chart_file(sweep, *m),
                format!("{}: {} against {}", sweep.title, m.name(), sweep.x_label),
            )
        })
        .collect()
}

/// Draws the sweep's charts into `out`.
pub fn draw(sweep: &Sweep, cells: &[&Cell], out: &Path, stamp: &str, rounds: u32) {
    for &(m, log_y) in charts(sweep.axis) {
        let ls = lines(cells, m);
        if ls.is_empty() {
            continue;
        }
        let title = format!("{}: {}", sweep.title, m.name());
        let x = if sweep.axis == Axis::Rate {
            XAxis::Linear
        } else {
            XAxis::Points(columns(sweep, cells))
        };
        let y_label = if m.unit().is_empty() {
            m.name().to_string()
        } else {
            format!("{} ({})", m.name(), m.unit())
        };
        let chart = curves::Chart {
            title: &title,
            x_label: sweep.x_label,
            y_label,
            log_y,
            x,
            stamp,
            rounds,
        };
        if let Err(e) = curves::draw(&out.join(chart_file(sweep, m)), &chart, &ls) {
            eprintln!("bench: chart {}: {e}", chart_file(sweep, m));
        }
    }
}

/// docs/results/sweep-ID.md: what was run, the charts, a table per metric.
pub fn page(sweep: &Sweep, cells: &[&Cell], stamps: &str, rounds_note: &str) -> String {
    let mut s = format!(
        "# {}\n\n{stamps}\n\n**Workload:** {}. {rounds_note}\n\n",
        sweep.title, sweep.about
    );
    for (file, title) in chart_files(sweep) {
        s += &format!("![{title}]({file})\n\n");
    }
    if sweep.axis == Axis::Rate {
        s += "## Offered rate at each column (× the rung's own closed-loop rate)\n\n";
        s += &offered_table(sweep, cells);
        s += "\n";
    }
    if let Some(g) = growth(sweep, cells) {
        s += &g;
    }
    for &m in metrics(sweep.axis) {
        s += &format!("## {}\n\n{}\n", capital(m.name()), table(sweep, cells, m));
    }
    if let Some(w) = where_it_goes(sweep, cells) {
        s += &w;
    }
    s += "\nHow each column is measured: [method](../method.md); what the columns mean: \
          [README](README.md#the-columns).\n";
    s
}

/// For the sweeps whose first metric is a cost (idle: CPU per request; held: memory), how much
/// it grew from the first point to the last, per rung, and whether the two cells' ranges
/// overlap — the only case in which the data do not show a change.
fn growth(sweep: &Sweep, cells: &[&Cell]) -> Option<String> {
    let m = match sweep.axis {
        Axis::Idle => Metric::CpuUs,
        _ => return None,
    };
    let xs = columns(sweep, cells);
    let (first, last) = (*xs.first()?, *xs.last()?);
    if first == last {
        return None;
    }
    let mut s = format!(
        "## From {} to {}\n\n{} at the last point ÷ at the first (medians); \"changed\" only where the \
         two cells' min–max ranges do not overlap.\n\n| server | ratio | |\n|---|--:|---|\n",
        header(sweep, first),
        header(sweep, last),
        capital(m.name())
    );
    for (name, anchor) in names(cells) {
        let shown = shown(&name, anchor);
        let at = |x: f64| cells.iter().find(|c| c.rung == name && c.x == x);
        let (Some(a), Some(b)) = (at(first), at(last)) else {
            continue;
        };
        let verdict = match (a.spread(m), b.spread(m)) {
            (Some(p), Some(q)) if b.partial() => format!(
                "{:.2} × | not comparable: {}",
                q.median / p.median,
                b.notes()
            ),
            (Some(p), Some(q)) if p.n > 1 && q.n > 1 => format!(
                "{:.2} × | {}",
                q.median / p.median,
                if p.overlaps(&q) {
                    "within the spread"
                } else {
                    "changed"
                }
            ),
            (Some(p), Some(q)) => format!(
                "{:.2} × | one round: no spread to judge by",
                q.median / p.median
            ),
            _ => format!("– | {}", b.notes()),
        };
        s += &format!("| {shown} | {verdict} |\n");
    }
    s += "\n";
    Some(s)
}

/// The held sweep's breakdown of memory per connection: (column, metric), the total first.
const WHERE: [(&str, Metric); 6] = [
    ("total per connection", Metric::BytesPerConn),
    ("stacks", Metric::StackBytes),
    ("other anonymous", Metric::AnonBytes),
    ("file-backed", Metric::FileBytes),
    ("page tables", Metric::PageTableBytes),
    ("kernel stacks", Metric::KernelStackBytes),
];

/// What the breakdown's columns count (the sweep page says it above the table; procfs.rs
/// measures it).
const WHERE_ABOUT: &str = "**Stacks** is the PSS of the mappings that hold a thread's stack \
    (in /proc/PID/smaps, the mapping that contains a thread's stack pointer, read from \
    /proc/PID/task/TID/syscall while the thread is blocked, and the main thread's `[stack]`); \
    **other anonymous** the PSS of the remaining mappings with no file behind them (`[heap]`, \
    malloc's arenas, a forked child's copy-on-write copies of its parent's heap, anonymous \
    mmaps); **file-backed** the PSS of the mappings of a file (the binary, its libraries). \
    These three add up to the total, within rounding (smaps rounds each mapping down to a KiB, \
    and is read a few milliseconds after the total). **Page tables** (`VmPTE` of each process) \
    and **kernel stacks** are kernel memory that PSS does not count; kernel stacks are the \
    difference of `KernelStack` in /proc/meminfo, which is machine-wide, so other activity on \
    the machine moves them.";

fn has_breakdown(cells: &[&Cell]) -> bool {
    cells.iter().any(|c| c.spread(Metric::StackBytes).is_some())
}

/// The held sweep page's "where the memory goes": one row per rung at the largest point,
/// `None` for other sweeps and for results measured before the breakdown existed.
fn where_it_goes(sweep: &Sweep, cells: &[&Cell]) -> Option<String> {
    if sweep.axis != Axis::Held || !has_breakdown(cells) {
        return None;
    }
    let x = *columns(sweep, cells).last()?;
    let mut s = format!(
        "## Where the memory goes, at the largest point\n\nAt {}: the growth over the idle \
         server per connection held, split by where it lies. {WHERE_ABOUT}\n\n| server |",
        header(sweep, x)
    );
    for (column, _) in WHERE {
        s += &format!(" {column} |");
    }
    s += "\n|---|";
    s += &"--:|".repeat(WHERE.len());
    s += "\n";
    for (name, anchor) in names(cells) {
        s += &format!("| {} |", shown(&name, anchor));
        let c = cells.iter().find(|c| c.rung == name && c.x == x);
        for (_, m) in WHERE {
            let t = c.map_or("–".into(), |c| cell_text(c, m));
            s += &format!(" {} |", t.replace('|', "\\|"));
        }
        s += "\n";
    }
    s += "\n";
    Some(s)
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// One rung's rows of every sweep, for its README: a small table per sweep, points as rows.
pub fn rung_rows(rung: &str, sweeps: &[Sweep], cells: &[Cell]) -> String {
    let mut s = String::new();
    for sweep in sweeps {
        let mine: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.sweep == sweep.id && c.rung == rung)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let ms = metrics(sweep.axis);
        s += &format!(
            "**{}** — {} ([all rungs](../docs/results/sweep-{}.md))\n\n| {} |",
            sweep.title, sweep.about, sweep.id, sweep.x_label
        );
        if sweep.axis == Axis::Rate {
            s += " offered |";
        }
        for m in ms {
            s += &format!(" {} |", m.name());
        }
        s += " notes |\n|--:|";
        if sweep.axis == Axis::Rate {
            s += "--:|";
        }
        s += &"--:|".repeat(ms.len());
        s += "---|\n";
        let mut mine = mine;
        mine.sort_by(|a, b| key(sweep, a).total_cmp(&key(sweep, b)));
        for &c in &mine {
            let x = key(sweep, c);
            s += &format!(
                "| {} |",
                if sweep.axis == Axis::Rate {
                    format!("{x} ×")
                } else {
                    thousands(x)
                }
            );
            if sweep.axis == Axis::Rate {
                s += &format!(" {} req/s |", thousands(c.x));
            }
            for &m in ms {
                s += &format!(
                    " {} |",
                    c.spread(m).map_or("–".into(), |sp| sp.show(|v| m.show(v)))
                );
            }
            let notes = c.notes();
            s += &format!(
                " {} |\n",
                if notes.is_empty() {
                    "ok".to_string()
                } else {
                    notes.replace('|', "\\|")
                }
            );
        }
        s += "\n";
        if sweep.axis == Axis::Held && has_breakdown(&mine) {
            s += &breakdown_rows(sweep, &mine);
        }
    }
    s
}

/// The held sweep's breakdown for one rung's README: a row per point.
fn breakdown_rows(sweep: &Sweep, mine: &[&Cell]) -> String {
    let mut s = format!(
        "Where the memory per connection goes ([what each column counts](../docs/results/sweep-{}.md#where-the-memory-goes-at-the-largest-point)): \
         stacks + other anonymous + file-backed = the total, within rounding; page tables and \
         kernel stacks are kernel memory outside PSS (kernel stacks: machine-wide).\n\n| {} |",
        sweep.id, sweep.x_label
    );
    for (column, _) in WHERE {
        s += &format!(" {column} |");
    }
    s += "\n|--:|";
    s += &"--:|".repeat(WHERE.len());
    s += "\n";
    for c in mine {
        s += &format!("| {} |", thousands(key(sweep, c)));
        for (_, m) in WHERE {
            s += &format!(
                " {} |",
                c.spread(m).map_or("–".into(), |sp| sp.show(|v| m.show(v)))
            );
        }
        s += "\n";
    }
    s += "\n";
    s
}

/// The root README's headline: the rung's service and cost at the points where the models
/// part ways, each cell with its spread.
pub fn headline(sweeps: &[Sweep], cells: &[Cell]) -> String {
    let find = |id: &str| sweeps.iter().find(|s| s.id == id);
    let idle_max = find("idle").and_then(|s| {
        cells
            .iter()
            .filter(|c| c.sweep == s.id)
            .map(|c| c.x)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    });
    let held_max = cells
        .iter()
        .filter(|c| c.sweep == "held")
        .map(|c| c.x)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let at = |sweep: &str, rung: &str, x: f64| {
        cells
            .iter()
            .find(|c| c.sweep == sweep && c.rung == rung && c.x == x)
    };
    let busy = crate::sweeps::BUSY as f64;
    let mut s = format!(
        "| server | served ({b} busy conns) | HTTP keep-alive, {b} conns | CPU per request: {b} busy, 0 idle |",
        b = thousands(busy)
    );
    if let Some(n) = idle_max {
        s += &format!(
            " CPU per request: {} busy beside {} idle |",
            thousands(busy),
            thousands(n)
        );
    }
    if let Some(n) = held_max {
        s += &format!(" memory per connection ({} held) |", thousands(n));
    }
    s += "\n|---|---|--:|--:|";
    if idle_max.is_some() {
        s += "--:|";
    }
    if held_max.is_some() {
        s += "--:|";
    }
    s += "\n";
    let all: Vec<&Cell> = cells.iter().filter(|c| c.sweep == "idle").collect();
    for (name, anchor) in names(&all) {
        let shown = if anchor {
            format!("*{name}*")
        } else {
            format!("[`{name}`]({name}/)")
        };
        let base = at("idle", &name, 0.0);
        let served = base
            .and_then(|c| {
                let (a, b) = c.samples.iter().filter_map(|s| s.served).min()?;
                Some(if a == b {
                    "all".to_string()
                } else {
                    format!("{} of {}", thousands(a as f64), thousands(b as f64))
                })
            })
            .unwrap_or_else(|| "–".into());
        let show = |c: Option<&Cell>, m: Metric| {
            c.and_then(|c| {
                let v = c.spread(m)?.show(|v| m.show(v));
                Some(if c.partial() {
                    format!("{v} ({})", c.notes())
                } else {
                    v
                })
            })
            .unwrap_or_else(|| c.map_or("–".into(), |c| c.notes()))
        };
        s += &format!(
            "| {shown} | {served} | {} | {} |",
            show(base, Metric::Rate),
            show(base, Metric::CpuUs)
        );
        if let Some(n) = idle_max {
            s += &format!(" {} |", show(at("idle", &name, n), Metric::CpuUs));
        }
        if let Some(n) = held_max {
            let c = at("held", &name, n);
            s += &format!(" {} |", show(c, Metric::BytesPerConn));
        }
        s += "\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::Mode;
    use crate::sweeps::{Sample, sweeps};

    fn cell(sweep: &str, rung: &str, x: f64, cpu: &[f64], served: (u64, u64)) -> Cell {
        Cell {
            sweep: sweep.into(),
            rung: rung.into(),
            anchor: rung.starts_with("nginx"),
            x,
            fraction: None,
            samples: cpu
                .iter()
                .map(|&c| Sample {
                    cpu_us: Some(c),
                    rate: Some(1000.0 / c),
                    served: Some(served),
                    ..Sample::default()
                })
                .collect(),
            measured: String::new(),
        }
    }

    #[test]
    fn a_sweep_table_has_a_column_per_point_and_marks_partial_cells() {
        let sweep = sweeps(Mode::Full).remove(0);
        let cells = [
            cell("idle", "poll_server", 0.0, &[10.0, 11.0, 12.0], (100, 100)),
            cell(
                "idle",
                "poll_server",
                5000.0,
                &[50.0, 55.0, 60.0],
                (100, 100),
            ),
            cell("idle", "prefork_server", 0.0, &[20.0], (4, 100)),
            cell(
                "idle",
                "nginx (1 worker)",
                0.0,
                &[8.0, 8.0, 9.0],
                (100, 100),
            ),
        ];
        let refs: Vec<&Cell> = cells.iter().collect();
        let t = table(&sweep, &refs, Metric::CpuUs);
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows[0], "| server | 0 idle | 5,000 idle |");
        assert_eq!(
            rows[2],
            "| `poll_server` | 11.0 µs (10.0–12.0 µs) | 55.0 µs (50.0–60.0 µs) |"
        );
        assert_eq!(
            rows[3],
            "| `prefork_server` | 20.0 µs · served 4 of 100 | – |"
        );
        assert_eq!(
            rows[4], "| *nginx (1 worker)* | 8.0 µs (8.0–9.0 µs) | – |",
            "anchors last"
        );
    }

    /// A held-sweep cell of `rounds` (total, stacks, other anonymous, file-backed, page
    /// tables, kernel stacks) in bytes per connection.
    fn held(rung: &str, x: f64, rounds: &[[f64; 6]]) -> Cell {
        Cell {
            sweep: "held".into(),
            rung: rung.into(),
            anchor: false,
            x,
            fraction: None,
            samples: rounds
                .iter()
                .map(|r| Sample {
                    idle: Some(crate::idle::Held {
                        asked: x as u64,
                        connected: x as u64,
                        queued: 0,
                        dropped: 0,
                    }),
                    bytes_per_conn: Some(r[0]),
                    stack_bytes_per_conn: Some(r[1]),
                    anon_bytes_per_conn: Some(r[2]),
                    file_bytes_per_conn: Some(r[3]),
                    page_table_bytes_per_conn: Some(r[4]),
                    kernel_stack_bytes_per_conn: Some(r[5]),
                    ..Sample::default()
                })
                .collect(),
            measured: String::new(),
        }
    }

    #[test]
    fn the_held_page_and_readme_say_where_the_memory_goes() {
        let sweep = sweeps(Mode::Full).remove(4);
        assert_eq!(sweep.axis, Axis::Held);
        let cgi = [18_000.0, 16_384.0, 1_600.0, 16.0, 200.0, 16_400.0];
        let cells = [
            held("cgi_thread_server", 100.0, &[cgi]),
            held(
                "cgi_thread_server",
                1_000.0,
                &[
                    cgi,
                    [18_100.0, 16_384.0, 1_700.0, 16.0, 210.0, 16_300.0],
                    cgi,
                ],
            ),
            held(
                "epoll_et_server",
                1_000.0,
                &[[222.0, 0.0, 222.0, 0.0, 8.0, -4.0]],
            ),
            Cell {
                samples: vec![Sample {
                    trouble: "not run: held only 4 of 100 at the smaller point".into(),
                    ..Sample::default()
                }],
                ..held("prefork_server", 1_000.0, &[])
            },
        ];
        let refs: Vec<&Cell> = cells.iter().collect();
        let text = page(&sweep, &refs, "", "");
        let (_, table) = text
            .split_once("## Where the memory goes, at the largest point")
            .expect("the breakdown section");
        assert!(table.contains("At 1,000 held:") && table.contains("machine-wide"));
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(
            rows[0],
            "| server | total per connection | stacks | other anonymous | file-backed | page tables | kernel stacks |"
        );
        assert_eq!(
            rows[2],
            "| `cgi_thread_server` | 17.6 KiB (17.6–17.7 KiB) | 16.0 KiB (16.0–16.0 KiB) | \
             1,600 B (1,600–1,700 B) | 16 B (16–16 B) | 200 B (200–210 B) | 16.0 KiB (15.9–16.0 KiB) |"
        );
        assert_eq!(
            rows[3],
            "| `epoll_et_server` | 222 B | 0 B | 222 B | 0 B | 8 B | -4 B |"
        );
        assert_eq!(
            rows[4].matches("not run: held only 4 of 100").count(),
            6,
            "every cell of a rung that held fewer says why: {}",
            rows[4]
        );

        let readme = rung_rows("cgi_thread_server", std::slice::from_ref(&sweep), &cells);
        let (_, mine) = readme
            .split_once("Where the memory per connection goes")
            .expect("the rung's breakdown");
        let rows: Vec<&str> = mine.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 4, "header, rule, a row per point");
        assert!(rows[2].starts_with("| 100 | 17.6 KiB | 16.0 KiB | 1,600 B |"));

        // Results of before the breakdown: no section, no empty table.
        let old = Cell {
            samples: vec![Sample {
                bytes_per_conn: Some(18_000.0),
                ..Sample::default()
            }],
            ..held("cgi_thread_server", 1_000.0, &[])
        };
        assert!(!page(&sweep, &[&old], "", "").contains("Where the memory goes"));
        assert!(!rung_rows("cgi_thread_server", &[sweep], &[old]).contains("Where the memory"));
    }

    #[test]
    fn lines_follow_the_medians_and_flag_partial_points() {
        let cells = [
            cell(
                "idle",
                "poll_server",
                5000.0,
                &[50.0, 55.0, 60.0],
                (100, 100),
            ),
            cell("idle", "poll_server", 0.0, &[10.0, 11.0, 12.0], (90, 100)),
        ];
        let refs: Vec<&Cell> = cells.iter().collect();
        let l = lines(&refs, Metric::CpuUs);
        assert_eq!(l.len(), 1);
        let p = &l[0].points;
        assert_eq!((p[0].x, p[0].median, p[0].partial), (0.0, 11.0, true));
        assert_eq!((p[1].x, p[1].min, p[1].max), (5000.0, 50.0, 60.0));
    }
}
