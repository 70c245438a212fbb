//! Line charts for the sweeps (plotters, SVG backend only): one line per rung through the
//! medians, a min–max error bar at every point, nginx dashed and grey, a hollow marker where
//! the rung served only part of what was asked, a legend, and the stamp of the run under it.

use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

/// One point of a line: the median of its rounds and their range.
#[derive(Clone, Copy, Debug)]
pub struct Pt {
    pub x: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub partial: bool,
}

/// One line: a rung (or nginx, `anchor`).
#[derive(Clone, Debug)]
pub struct Line {
    pub label: String,
    pub anchor: bool,
    /// Its colour: the rung's place on the ladder, so a rung has one colour in every chart
    /// (for nginx: 0 for one worker, 1 for two, drawn with different dashes).
    pub hue: usize,
    pub points: Vec<Pt>,
}

/// How the x axis is laid out.
#[derive(Clone, Debug)]
pub enum XAxis {
    /// The sweep's points, evenly spaced and labelled with their values (0, 1,000, 5,000 …):
    /// roughly logarithmic for the sweeps' points, and 0 has a place.
    Points(Vec<f64>),
    /// A linear axis (offered requests per second).
    Linear,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: String,
    pub log_y: bool,
    pub x: XAxis,
    pub stamp: &'a str,
    /// Rounds behind each point, for the legend ("min–max of 3 rounds").
    pub rounds: u32,
}

const W: u32 = 1000;
const H: u32 = 560;
const LEGEND: u32 = 250;

fn color(i: usize, anchor: bool) -> RGBColor {
    if anchor {
        return RGBColor(130, 130, 130);
    }
    // Tableau-like colours that stay apart on white; more rungs than colours wrap around.
    const C: [RGBColor; 13] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(0, 0, 0),
        RGBColor(174, 199, 232),
        RGBColor(255, 187, 120),
        RGBColor(152, 223, 138),
    ];
    C[i % C.len()]
}

/// "1,000", "2.5", "0.04": a tick label with as many digits as it needs.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        crate::results::thousands(v)
    } else if a >= 1.0 {
        format!("{}", (v * 10.0).round() / 10.0)
    } else {
        format!("{:.2}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// Tick values for a log axis from `lo` to `hi`: 1, 2, 5 × 10ⁿ, or 1, 1.5, 2, 3, 5, 7 × 10ⁿ
/// when the range is too short for three of those.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let within = |steps: &[f64]| -> Vec<f64> {
        let mut v = Vec::new();
        let mut decade = 10f64.powi(lo.log10().floor() as i32);
        while decade <= hi {
            for m in steps {
                let t = m * decade;
                if t >= lo && t <= hi {
                    v.push(t);
                }
            }
            decade *= 10.0;
        }
        v
    };
    let coarse = within(&[1.0, 2.0, 5.0]);
    if coarse.len() >= 3 {
        coarse
    } else {
        within(&[1.0, 1.5, 2.0, 3.0, 5.0, 7.0])
    }
}

pub fn draw(path: &Path, c: &Chart, lines: &[Line]) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (main, foot) = root.split_vertically(H - 36);
    let (plot, legend) = main.split_horizontally(W - LEGEND);

    let usable = |v: f64| v.is_finite() && (!c.log_y || v > 0.0);
    let values: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter().flat_map(|p| [p.min, p.max]))
        .filter(|&v| usable(v))
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = match (lo.is_finite(), c.log_y) {
        (false, _) => (1.0, 10.0),
        // A log axis: a little room above and below, in ratio.
        (true, true) => (lo / 1.3, hi * 1.3),
        (true, false) => (0.0f64.min(lo), hi * 1.08 + 1e-9),
    };
    // x: the index of the point for `Points`, the value for `Linear`.
    let tx = |x: f64| match &c.x {
        XAxis::Points(p) => p.iter().position(|&v| v == x).unwrap_or(0) as f64,
        XAxis::Linear => x,
    };
    let (x0, x1) = match &c.x {
        XAxis::Points(p) => (-0.3, p.len().max(2) as f64 - 0.7),
        XAxis::Linear => {
            let max = lines
                .iter()
                .flat_map(|l| l.points.iter().map(|p| p.x))
                .fold(1.0f64, f64::max);
            (0.0, max * 1.05)
        }
    };
    let points = match &c.x {
        XAxis::Points(p) => p.clone(),
        XAxis::Linear => Vec::new(),
    };
    let x_fmt = |x: &f64| match &c.x {
        XAxis::Points(_) => {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                points.get(i as usize).map(|v| tick(*v)).unwrap_or_default()
            } else {
                String::new()
            }
        }
        XAxis::Linear => tick(*x),
    };
    let x_ticks = match &c.x {
        XAxis::Points(p) => (p.len() * 4).max(2),
        XAxis::Linear => 8,
    };
    let builder = || {
        let mut b = ChartBuilder::on(&plot);
        b.caption(c.title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(70);
        b
    };
    // The same drawing on a linear or a logarithmic y axis (two coordinate types in plotters).
    macro_rules! plot_lines {
        ($chart:ident) => {{
            $chart
                .configure_mesh()
                .x_desc(c.x_label)
                .y_desc(&c.y_label)
                .x_labels(x_ticks)
                .y_labels(10)
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&|y: &f64| tick(*y))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(|x| e(&x))?;
            for l in lines {
                let col = color(l.hue, l.anchor);
                let pts: Vec<(f64, f64)> = l
                    .points
                    .iter()
                    .filter(|p| usable(p.median))
                    .map(|p| (tx(p.x), p.median))
                    .collect();
                let style = col.stroke_width(2);
                if l.anchor {
                    // nginx with 1 worker: long dashes; with 2: short ones.
                    let dash = if l.hue == 0 { 10 } else { 4 };
                    $chart
                        .draw_series(DashedLineSeries::new(pts.clone(), dash, 4, style))
                        .map_err(|x| e(&x))?;
                } else {
                    $chart
                        .draw_series(LineSeries::new(pts.clone(), style))
                        .map_err(|x| e(&x))?;
                }
                for p in l.points.iter().filter(|p| usable(p.min) && p.max > p.min) {
                    $chart
                        .draw_series(std::iter::once(ErrorBar::new_vertical(
                            tx(p.x),
                            p.min,
                            p.median,
                            p.max,
                            col.stroke_width(1),
                            8,
                        )))
                        .map_err(|x| e(&x))?;
                }
                for p in l.points.iter().filter(|p| usable(p.median)) {
                    let at = (tx(p.x), p.median);
                    if p.partial {
                        $chart
                            .draw_series([
                                Circle::new(at, 5, ShapeStyle::from(&WHITE).filled()),
                                Circle::new(at, 5, col.stroke_width(2)),
                            ])
                            .map_err(|x| e(&x))?;
                    } else {
                        $chart
                            .draw_series(std::iter::once(Circle::new(at, 4, col.filled())))
                            .map_err(|x| e(&x))?;
                    }
                }
            }
        }};
    }
    if c.log_y {
        let mut chart = builder()
            .build_cartesian_2d(
                x0..x1,
                (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
            )
            .map_err(|x| e(&x))?;
        plot_lines!(chart);
    } else {
        let mut chart = builder()
            .build_cartesian_2d(x0..x1, lo..hi)
            .map_err(|x| e(&x))?;
        plot_lines!(chart);
    }

    // The legend, drawn by hand in its own strip so fifteen lines never cover the data.
    let font = ("sans-serif", 13).into_font();
    let mut y = 40;
    for l in lines {
        let col = color(l.hue, l.anchor);
        let seg = [(8, y), (38, y)];
        if l.anchor {
            let dash = if l.hue == 0 { 10 } else { 4 };
            legend
                .draw(&DashedPathElement::new(seg, dash, 4, col.stroke_width(2)))
                .map_err(|x| e(&x))?;
        } else {
            legend
                .draw(&PathElement::new(seg, col.stroke_width(2)))
                .map_err(|x| e(&x))?;
        }
        legend
            .draw(&Text::new(l.label.clone(), (46, y - 7), font.clone()))
            .map_err(|x| e(&x))?;
        y += 19;
    }
    y += 12;
    let grey = RGBColor(90, 90, 90);
    legend
        .draw(&Circle::new((23, y), 5, grey.stroke_width(2)))
        .map_err(|x| e(&x))?;
    legend
        .draw(&Text::new(
            "served only part of it",
            (46, y - 7),
            font.clone(),
        ))
        .map_err(|x| e(&x))?;
    y += 19;
    let rounds = if c.rounds > 1 {
        legend
            .draw(&PathElement::new(
                [(23, y - 7), (23, y + 7)],
                grey.stroke_width(1),
            ))
            .map_err(|x| e(&x))?;
        format!("min–max of {} rounds", c.rounds)
    } else {
        "one round per point".to_string()
    };
    legend
        .draw(&Text::new(rounds, (46, y - 7), font.clone()))
        .map_err(|x| e(&x))?;
    // The stamp, on two lines: where and how, then the command.
    let small = ("sans-serif", 11).into_font().color(&grey);
    let (first, second) = match c.stamp.find(", by `") {
        Some(i) => (&c.stamp[..i + 1], &c.stamp[i + 2..]),
        None => (c.stamp, ""),
    };
    foot.draw(&Text::new(first.to_string(), (10, 4), small.clone()))
        .map_err(|x| e(&x))?;
    foot.draw(&Text::new(second.to_string(), (10, 18), small))
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_fall_on_round_values_inside_the_range() {
        assert_eq!(log_ticks(3.0, 120.0), [5.0, 10.0, 20.0, 50.0, 100.0]);
        assert_eq!(log_ticks(1.1, 2.5), [1.5, 2.0]);
        assert!(log_ticks(0.9, 1.05).len() <= 1);
    }

    #[test]
    fn tick_labels_keep_the_digits_they_need() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(18_000.0), "18,000");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.04), "0.04");
    }

    #[test]
    fn draws_a_chart_with_partial_points_and_an_anchor() {
        let dir = std::env::temp_dir().join(format!("bench-curves-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("c.svg");
        let pt = |x, m, partial| Pt {
            x,
            median: m,
            min: m * 0.9,
            max: m * 1.1,
            partial,
        };
        let lines = vec![
            Line {
                label: "poll_server".into(),
                anchor: false,
                hue: 8,
                points: vec![pt(0.0, 10.0, false), pt(1000.0, 40.0, false)],
            },
            Line {
                label: "nginx (1 worker)".into(),
                anchor: true,
                hue: 0,
                points: vec![pt(0.0, 8.0, false), pt(1000.0, 8.5, true)],
            },
        ];
        let chart = Chart {
            title: "t",
            x_label: "idle connections",
            y_label: "µs".into(),
            log_y: true,
            x: XAxis::Points(vec![0.0, 1000.0]),
            stamp: "Measured now",
            rounds: 3,
        };
        draw(&path, &chart, &lines).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("written");
        assert!(svg.contains("poll_server") && svg.contains("nginx (1 worker)"));
        assert!(svg.contains("Measured now") && svg.contains("min–max of 3 rounds"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
