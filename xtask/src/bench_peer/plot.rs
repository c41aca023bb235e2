//! The peer benchmark's plots (SVG, plotters): throughput against packet
//! size per system, the latency CDF per system at 90 % of its loss-free
//! rate, and throughput against workers.

use super::report::{Scaling, SystemRun};
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (900, 520);

fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    PALETTE[i % PALETTE.len()]
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// A line with dots per series, over `x_labels` on the x axis.
pub(crate) fn lines_chart(
    path: &Path,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    x_labels: &[String],
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(0.0f64, f64::max)
        .max(1e-6)
        * 1.15;
    let n = x_labels.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..y_max)
        .map_err(err)?;
    let labels = x_labels.to_vec();
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(x_labels.len())
        .x_label_formatter(&move |x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Mpps (loss-free) against packet size, one line per system at `workers`.
pub fn throughput(path: &Path, runs: &[SystemRun], workers: u32, sizes: &[String]) -> Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .filter(|r| r.skipped.is_none() && r.workers == workers)
        .map(|r| {
            let points = sizes
                .iter()
                .enumerate()
                .filter_map(|(i, size)| {
                    let s = r.sizes.iter().find(|s| &s.size == size)?;
                    Some((i as f64, s.mpps))
                })
                .collect();
            (r.system.clone(), points)
        })
        .collect();
    lines_chart(
        path,
        &format!("Loss-free throughput by packet size ({workers} worker(s) per gateway)"),
        "inner IP packet size (bytes)",
        "Mpps",
        sizes,
        &series,
    )
}

/// Latency CDF at 90 % of the loss-free rate, one line per system, at
/// `size` and `workers`; the x axis is logarithmic.
pub fn latency_cdf(path: &Path, runs: &[SystemRun], workers: u32, size: &str) -> Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .filter(|r| r.skipped.is_none() && r.workers == workers)
        .filter_map(|r| {
            let s = r.sizes.iter().find(|s| s.size == size)?;
            let cdf: Vec<(f64, f64)> = s
                .at_90
                .latency_cdf
                .iter()
                .map(|&(us, q)| (us.max(0.1), q))
                .collect();
            (!cdf.is_empty()).then(|| (r.system.clone(), cdf))
        })
        .collect();
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(1.0f64, f64::max)
        * 1.5;
    let x_min = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(f64::MAX, f64::min)
        .min(x_max / 10.0)
        .max(0.1)
        / 1.5;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("One-way latency at 90 % of the loss-free rate, {size} bytes"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("fraction of packets")
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Mpps against workers per system at `size`.
pub fn workers(path: &Path, scaling: &[Scaling], size: &str, counts: &[u32]) -> Result<()> {
    let mut systems: Vec<&str> = scaling.iter().map(|s| s.system.as_str()).collect();
    systems.dedup();
    let series: Vec<(String, Vec<(f64, f64)>)> = systems
        .iter()
        .map(|sys| {
            let points = counts
                .iter()
                .enumerate()
                .filter_map(|(i, w)| {
                    let s = scaling
                        .iter()
                        .find(|s| s.system == *sys && s.size == size && s.workers == *w)?;
                    Some((i as f64, s.mpps))
                })
                .collect();
            (sys.to_string(), points)
        })
        .collect();
    let labels: Vec<String> = counts.iter().map(u32::to_string).collect();
    lines_chart(
        path,
        &format!("Loss-free throughput by workers per gateway, {size} bytes"),
        "workers (and queues) per gateway",
        "Mpps",
        &labels,
        &series,
    )
}
