//! Drawing the panels with plotters: geometry (clipping, ticks, the
//! legend's corner) and the figure.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::read::Run;
use super::series::{panels, Marker, Panel};

/// The pieces of a polyline inside `[x0, x1] x [y0, y1]`: each segment is
/// cut at the rectangle (Liang-Barsky), and non-finite points break the
/// line. plotters does not clip to a chart's plotting area, so a line
/// outside the axis ranges would be drawn over the axes and titles.
pub fn clip_polyline(
    points: &[(f64, f64)],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Vec<Vec<(f64, f64)>> {
    let mut pieces: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let inside = |p: &(f64, f64)| p.0 >= x0 && p.0 <= x1 && p.1 >= y0 && p.1 <= y1;
    let mut flush = |current: &mut Vec<(f64, f64)>| {
        if !current.is_empty() {
            pieces.push(std::mem::take(current));
        }
    };
    if points.len() == 1 && finite(&points[0]) && inside(&points[0]) {
        return vec![points.to_vec()];
    }
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        if !finite(&a) || !finite(&b) {
            flush(&mut current);
            continue;
        }
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        let mut visible = true;
        for (p, q) in [
            (-dx, a.0 - x0),
            (dx, x1 - a.0),
            (-dy, a.1 - y0),
            (dy, y1 - a.1),
        ] {
            if p == 0.0 {
                if q < 0.0 {
                    visible = false;
                }
            } else {
                let r = q / p;
                if p < 0.0 {
                    t0 = t0.max(r);
                } else {
                    t1 = t1.min(r);
                }
            }
        }
        if !visible || t0 > t1 {
            flush(&mut current);
            continue;
        }
        let start = (a.0 + t0 * dx, a.1 + t0 * dy);
        let end = (a.0 + t1 * dx, a.1 + t1 * dy);
        if t0 > 0.0 || current.is_empty() {
            flush(&mut current);
            current.push(start);
        }
        current.push(end);
        if t1 < 1.0 {
            flush(&mut current);
        }
    }
    flush(&mut current);
    pieces
}

/// Round tick positions: steps of 1, 2 or 5 times a power of ten, whole
/// numbers when `integer`; and the decimals the labels need.
pub fn nice_ticks(lo: f64, hi: f64, target: usize, integer: bool) -> (Vec<f64>, usize) {
    let raw = ((hi - lo) / target.max(1) as f64).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    if integer {
        step = step.max(1.0).round();
    }
    let decimals = if integer {
        0
    } else {
        (-step.log10().floor()).max(0.0) as usize
    };
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    (ticks, decimals)
}

pub(super) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

pub(super) fn draw_marker(
    chart: &mut ChartContext<
        '_,
        BitMapBackend<'_>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    points: &[(f64, f64)],
    marker: Marker,
    color: RGBAColor,
) -> Result<()> {
    let points = points.iter().copied();
    match marker {
        Marker::Circle => {
            chart.draw_series(points.map(|p| Circle::new(p, 3, color.filled())))?;
        }
        Marker::Triangle => {
            chart.draw_series(points.map(|p| TriangleMarker::new(p, 4, color.filled())))?;
        }
        Marker::Cross => {
            chart.draw_series(points.map(|p| Cross::new(p, 3, color.stroke_width(2))))?;
        }
        Marker::Ring => {
            chart.draw_series(points.map(|p| Circle::new(p, 3, color.stroke_width(1))))?;
        }
    }
    Ok(())
}

/// The corner of a chart where the legend covers the least of the curves:
/// the share of each line's length (sampled along its segments) inside a
/// box of the legend's rough size, counted per corner.
pub(super) fn legend_corner(p: &Panel, (x0, x1): (f64, f64)) -> SeriesLabelPosition {
    let entries = p.lines.iter().filter(|l| l.label.is_some()).count() as f64;
    let (w, h) = (0.4, (0.06 + 0.075 * entries).min(0.9));
    let corners = [
        (
            SeriesLabelPosition::UpperRight,
            (1.0 - w, 1.0),
            (1.0 - h, 1.0),
        ),
        (SeriesLabelPosition::LowerRight, (1.0 - w, 1.0), (0.0, h)),
        (SeriesLabelPosition::UpperLeft, (0.0, w), (1.0 - h, 1.0)),
        (SeriesLabelPosition::LowerLeft, (0.0, w), (0.0, h)),
    ];
    let (y0, y1) = p.y;
    let mut counts = [0usize; 4];
    for line in &p.lines {
        for seg in line.points.windows(2) {
            for k in 0..=8 {
                let t = k as f64 / 8.0;
                let fx = (seg[0].0 + t * (seg[1].0 - seg[0].0) - x0) / (x1 - x0);
                let fy = (seg[0].1 + t * (seg[1].1 - seg[0].1) - y0) / (y1 - y0);
                for (n, (_, xs, ys)) in counts.iter_mut().zip(&corners) {
                    if fx >= xs.0 && fx <= xs.1 && fy >= ys.0 && fy <= ys.1 {
                        *n += 1;
                    }
                }
            }
        }
    }
    let best = (0..4).min_by_key(|&i| counts[i]).unwrap_or(0);
    corners[best].0.clone()
}

pub(super) fn draw_panel(area: &Area, p: &Panel, x: (f64, f64), labels: bool) -> Result<PixelRect> {
    let (x_ticks, _) = nice_ticks(x.0, x.1, 8, true);
    let (y_ticks, decimals) = match &p.y_ticks {
        Some(t) => (t.clone(), 0),
        None => nice_ticks(p.y.0, p.y.1, 5, false),
    };
    let mut builder = ChartBuilder::on(area);
    builder.margin(8).margin_right(16);
    if labels {
        builder
            .caption(&p.title, ("sans-serif", 17))
            .x_label_area_size(34)
            .y_label_area_size(58);
    }
    // Plain f64 axes; the mesh is drawn at our own round ticks below.
    let mut chart = builder.build_cartesian_2d(x.0..x.1, p.y.0..p.y.1)?;
    let grid = BLACK.mix(0.08);
    for &t in &y_ticks {
        chart.draw_series(LineSeries::new([(x.0, t), (x.1, t)], grid))?;
    }
    for &t in &x_ticks {
        chart.draw_series(LineSeries::new([(t, p.y.0), (t, p.y.1)], grid))?;
    }
    for &(v, color) in &p.vlines {
        if v > x.0 && v < x.1 {
            chart.draw_series(LineSeries::new(
                [(v, p.y.0), (v, p.y.1)],
                color.stroke_width(1),
            ))?;
        }
    }
    if labels {
        let y_label = p.y_label;
        let xs = x_ticks.clone();
        let ys = y_ticks.clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(xs.len().max(2))
            .y_labels(ys.len().max(2))
            .x_label_formatter(&|v| format!("{}", v.round() as i64))
            .y_label_formatter(&|v| y_label(*v, decimals))
            .x_desc("step")
            .y_desc(p.y_desc.as_str())
            .axis_desc_style(("sans-serif", 14))
            .label_style(("sans-serif", 13))
            .draw()?;
    }
    let (xr, yr) = (x, p.y);
    for line in &p.lines {
        let style = line.color.stroke_width(line.width);
        if !line.markers_only {
            for piece in clip_polyline(&line.points, xr, yr) {
                chart.draw_series(LineSeries::new(piece, style))?;
            }
        }
        let inside: Vec<(f64, f64)> = line
            .points
            .iter()
            .copied()
            .filter(|p| p.0 >= xr.0 && p.0 <= xr.1 && p.1 >= yr.0 && p.1 <= yr.1)
            .collect();
        if let Some(m) = line.marker {
            draw_marker(&mut chart, &inside, m, line.color)?;
        }
        if let (Some(label), true) = (&line.label, labels) {
            let (color, marker, bare) = (line.color, line.marker, line.markers_only);
            chart
                .draw_series(LineSeries::new(Vec::<(f64, f64)>::new(), style))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    // One element type for every legend entry: the unused
                    // parts are transparent.
                    let hide = |on: bool, c: RGBAColor| if on { c } else { TRANSPARENT };
                    let path = if bare { TRANSPARENT.into() } else { style };
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (20, 0)], path)
                        + Circle::new(
                            (10, 0),
                            3,
                            hide(matches!(marker, Some(Marker::Circle)), color).filled(),
                        )
                        + Circle::new(
                            (10, 0),
                            3,
                            hide(matches!(marker, Some(Marker::Ring)), color).stroke_width(1),
                        )
                        + TriangleMarker::new(
                            (10, 0),
                            4,
                            hide(matches!(marker, Some(Marker::Triangle)), color).filled(),
                        )
                        + Cross::new(
                            (10, 0),
                            3,
                            hide(matches!(marker, Some(Marker::Cross)), color).stroke_width(2),
                        )
                });
        }
    }
    if labels && p.lines.iter().any(|l| l.label.is_some()) {
        chart
            .configure_series_labels()
            .position(legend_corner(p, x))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    Ok(chart.plotting_area().get_pixel_range())
}

/// The pixel rectangle (x range, y range) of a chart's plotting area.
pub(super) type PixelRect = (std::ops::Range<i32>, std::ops::Range<i32>);

/// Draws the figure; returns the plotting areas, inside which every curve lies.
pub(super) fn draw_on(
    root: &Area,
    runs: &[Run],
    smoothing: f64,
    labels: bool,
) -> Result<Vec<PixelRect>> {
    root.fill(&WHITE)?;
    let body = if labels {
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        let title = format!("{}   (vertical lines: epoch ends)", names.join(", "));
        root.titled(&title, ("sans-serif", 20))?
    } else {
        root.clone()
    };
    let (panels, x) = panels(runs, smoothing);
    // The loss across the top; lr beside rsum; the recalls of both directions.
    let (w, _) = body.dim_in_pixel();
    let (top, rest) = body.split_vertically(400);
    let (middle, bottom) = rest.split_vertically(310);
    let (mid_l, mid_r) = middle.split_horizontally(w / 2);
    let (bot_l, bot_r) = bottom.split_horizontally(w / 2);
    let mut rects = Vec::new();
    for (area, panel) in [&top, &mid_l, &mid_r, &bot_l, &bot_r]
        .into_iter()
        .zip(&panels)
    {
        rects.push(draw_panel(area, panel, x, labels)?);
    }
    root.present()?;
    Ok(rects)
}

pub(super) fn draw(runs: &[Run], smoothing: f64, out: &Path, labels: bool) -> Result<()> {
    let root = BitMapBackend::new(out, (1200, 1080)).into_drawing_area();
    draw_on(&root, runs, smoothing, labels).map(|_| ())
}
