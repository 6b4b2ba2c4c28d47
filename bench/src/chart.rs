//! SVG charts of results (plotters): bar panels side by side, or lines over client counts.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// A chart to draw.
pub enum Chart {
    /// Panels of (title, bars of (label, value)).
    Bars(Vec<(String, Vec<(String, f64)>)>),
    /// Lines: title, x axis, y axis, series of (label, points).
    Lines { title: String, x: String, y: String, series: Vec<(String, Vec<(f64, f64)>)> },
}

/// A bar panel's title and how to read its value from an outcome.
pub type Panel<'a, T> = (&'a str, fn(&T) -> f64);

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

impl Chart {
    /// Bar panels over `outcomes`: one per (title, value), a bar per outcome named by `label`.
    pub fn bars_of<T>(outcomes: &[T], label: fn(&T) -> &str, panels: &[Panel<T>]) -> Chart {
        let panel = |(title, value): &Panel<T>| {
            let bars = outcomes.iter().map(|o| (label(o).to_owned(), value(o))).collect();
            ((*title).to_owned(), bars)
        };
        Chart::Bars(panels.iter().map(panel).collect())
    }

    pub fn write_svg(&self, path: &Path) -> Result<()> {
        match self {
            Chart::Bars(panels) => bars(path, panels),
            Chart::Lines { title, x, y, series } => lines(path, title, x, y, series),
        }
        .map_err(|e| anyhow!("chart {}: {e}", path.display()))
    }
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn bars(path: &Path, panels: &[(String, Vec<(String, f64)>)]) -> DrawResult {
    let width = 360 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 320)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for ((title, values), area) in panels.iter().zip(&areas) {
        let top = values.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(f64::EPSILON) * 1.2;
        let labels: Vec<&str> = values.iter().map(|(l, _)| l.as_str()).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d((0..values.len()).into_segmented(), 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|segment| match segment {
                SegmentValue::CenterOf(i) => labels.get(*i).copied().unwrap_or("").to_owned(),
                _ => String::new(),
            })
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, (_, value))| {
            let color = COLORS[i % COLORS.len()];
            let mut bar = Rectangle::new(
                [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *value)],
                color.filled(),
            );
            bar.set_margin(0, 0, 8, 8);
            bar
        }))?;
        chart.draw_series(values.iter().enumerate().map(|(i, (_, value))| {
            Text::new(
                format!("{value:.3}"),
                (SegmentValue::CenterOf(i), *value),
                ("sans-serif", 12),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

fn lines(
    path: &Path,
    title: &str,
    x: &str,
    y: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> DrawResult {
    let root = SVGBackend::new(path, (720, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let points = series.iter().flat_map(|(_, points)| points);
    let (x_max, y_max) =
        points.fold((1.0f64, 1.0f64), |(xm, ym), (px, py)| (xm.max(*px), ym.max(*py)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max * 1.15)?;
    chart.configure_mesh().x_desc(x).y_desc(y).draw()?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(px, py)| PathElement::new(vec![(px, py), (px + 16, py)], color));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
