//! One SVG chart of a run: rps and p99 (median bars, min–max whiskers) per server and case.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::report::Summary;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Two panels side by side, one horizontal bar per (case, server, mode), coloured by case.
pub(crate) fn write(path: &Path, sums: &[Summary]) -> Result<()> {
    if sums.is_empty() {
        return Ok(());
    }
    let row_h = 18;
    let height = (sums.len() as u32 * row_h + 90).max(200);
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(660);
    let mut cases: Vec<&str> = Vec::new();
    for s in sums {
        if !cases.contains(&s.case.as_str()) {
            cases.push(&s.case);
        }
    }
    let color = |s: &Summary| PALETTE[cases.iter().position(|c| *c == s.case).unwrap_or(0) % 8];
    let labels: Vec<String> = sums
        .iter()
        .map(|s| format!("{} · {} {}", s.case, s.server, s.mode))
        .collect();
    let n = sums.len();
    let panel = |area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
                 title: &str,
                 with_labels: bool,
                 get: &dyn Fn(&Summary) -> (f64, f64, f64)|
     -> Result<()> {
        let max = sums
            .iter()
            .map(|s| get(s).2)
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.05;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(if with_labels { 260 } else { 10 })
            .build_cartesian_2d(0.0..max, 0.0..n as f64)
            .map_err(err)?;
        // The row labels are drawn below, one per bar (plotters' own labels fall on round
        // values, not on rows).
        chart
            .configure_mesh()
            .disable_y_mesh()
            .max_light_lines(0)
            .y_label_formatter(&|_| String::new())
            .x_label_formatter(&|v| {
                if max > 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            })
            .y_label_style(("sans-serif", 11))
            .x_label_style(("sans-serif", 11))
            .draw()
            .map_err(err)?;
        for (i, s) in sums.iter().enumerate() {
            let (med, lo, hi) = get(s);
            if !med.is_finite() {
                continue;
            }
            // Row i is drawn top-down.
            let y = (n - 1 - i) as f64;
            if with_labels {
                let (_, py) = chart.backend_coord(&(0.0, y + 0.5));
                area.draw(&Text::new(
                    labels[i].clone(),
                    (8, py - 6),
                    ("sans-serif", 11),
                ))
                .map_err(err)?;
            }
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + 0.15), (med, y + 0.85)],
                    color(s).filled(),
                )))
                .map_err(err)?;
            if hi > lo {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(lo, y + 0.5), (hi, y + 0.5)],
                        BLACK.stroke_width(1),
                    )))
                    .map_err(err)?;
            }
        }
        Ok(())
    };
    panel(
        &left,
        "requests per second (median, min–max)",
        true,
        &|s| (s.rps.median, s.rps.min, s.rps.max),
    )?;
    panel(&right, "p99 latency, ms (median, min–max)", false, &|s| {
        (s.p99_ms.median, s.p99_ms.min, s.p99_ms.max)
    })?;
    root.present().map_err(err)?;
    Ok(())
}

fn err(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}
