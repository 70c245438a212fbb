//! SVG bar charts with plotters (its SVG backend only: no fonts or bitmaps to install).

use std::path::Path;

use plotters::prelude::*;

/// A horizontal bar chart: one bar per (label, value), longest label on top in ladder order.
/// Bars of anchors (nginx) are grey, the lessons blue; missing values get no bar and a note.
pub fn bars(
    path: &Path,
    title: &str,
    unit: &str,
    bars: &[(String, Option<f64>, bool)],
) -> Result<(), String> {
    let height = 80 + 28 * bars.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max = bars
        .iter()
        .filter_map(|b| b.1)
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let n = bars.len() as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(210)
        .build_cartesian_2d(0.0..max, (0..n - 1).into_segmented())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .y_labels(bars.len())
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => bars
                .get((n - 1 - *i) as usize)
                .map(|b| b.0.clone())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|x| crate::results::thousands(*x))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (_, value, anchor)) in bars.iter().enumerate() {
        let y = n - 1 - i as i32;
        let color = if *anchor {
            RGBColor(150, 150, 150)
        } else {
            RGBColor(52, 101, 164)
        };
        if let Some(v) = value {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(y)),
                        (*v, SegmentValue::Exact(y + 1)),
                    ],
                    color.filled(),
                )))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    crate::results::thousands(*v),
                    (*v + max * 0.01, SegmentValue::CenterOf(y)),
                    ("sans-serif", 13),
                )))
                .map_err(|e| e.to_string())?;
        } else {
            chart
                .draw_series(std::iter::once(Text::new(
                    "no result (see table)".to_string(),
                    (max * 0.01, SegmentValue::CenterOf(y)),
                    ("sans-serif", 13).into_font().color(&RED),
                )))
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}
