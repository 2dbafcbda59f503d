//! `sgraf-cli plot RUN...`: the training curves of one or more runs
//! (`RUN/metrics.jsonl`) as one PNG: the loss (raw, faint, and smoothed as
//! TensorBoard smooths), the learning rate, the validation rsum and R@1/5/10
//! of both directions, every panel over the same integer step axis with
//! the epoch ends marked.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use sgraf_train::metrics_log::{self, Log, StepRecord, ValidationRecord};

use crate::flags::PlotArgs;

/// A run's log, named for the legend.
#[derive(Clone, Debug)]
pub struct Run {
    pub name: String,
    pub steps: Vec<StepRecord>,
    pub vals: Vec<ValidationRecord>,
}

/// Reads `RUN/metrics.jsonl` (a resumed run's repeated steps replace the
/// ones logged before: see [`Log::parse`]).
pub fn read_run(dir: &Path, name: String) -> Result<Run> {
    let path = dir.join(metrics_log::FILE_NAME);
    let log = Log::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if log.steps.is_empty() {
        bail!("{} holds no training steps yet", path.display());
    }
    Ok(Run {
        name,
        steps: log.steps,
        vals: log.validations,
    })
}

/// TensorBoard's scalar smoothing: an exponential moving average started
/// at 0 and debiased (divided by 1 - weight^n), so that the first points
/// are not pulled towards 0. Non-finite values pass through unsmoothed, and
/// so does a constant series, as in TensorBoard's `resmoothDataset`.
pub fn ema(values: &[f64], weight: f64) -> Vec<f64> {
    let constant = values.windows(2).all(|w| w[0] == w[1]);
    let mut last = 0.0;
    let mut n = 0;
    values
        .iter()
        .map(|&v| {
            if constant || !v.is_finite() {
                return v;
            }
            last = last * weight + (1.0 - weight) * v;
            n += 1;
            let debias = if weight == 1.0 {
                1.0
            } else {
                1.0 - weight.powi(n)
            };
            last / debias
        })
        .collect()
}

/// Whether the log has every batch's size, so that the loss can be shown
/// per caption.
pub fn has_batch_sizes(run: &Run) -> bool {
    run.steps
        .iter()
        .all(|s| s.batch_size.is_some_and(|b| b > 0))
}

/// The loss per step: per caption (the batch's sum divided by its size)
/// when `per_caption` and the log has the batch sizes, else the logged sum.
pub fn loss_points(run: &Run, per_caption: bool) -> Vec<(f64, f64)> {
    run.steps
        .iter()
        .map(|s| {
            let l = match s.batch_size {
                Some(b) if per_caption && b > 0 => s.loss / b as f64,
                _ => s.loss,
            };
            (s.step as f64, l)
        })
        .collect()
}

/// The last step of every epoch but the final one.
pub fn epoch_ends(run: &Run) -> Vec<u64> {
    run.steps
        .windows(2)
        .filter(|w| w[0].epoch != w[1].epoch)
        .map(|w| w[0].step)
        .collect()
}

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

/// Data range with a margin, so that nothing sits on a frame.
fn span(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let d = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    (lo - pad * d, hi + pad * d)
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Triangle,
    Cross,
    /// Hollow circle: a small last batch.
    Ring,
}

struct Line {
    points: Vec<(f64, f64)>,
    color: RGBAColor,
    width: u32,
    marker: Option<Marker>,
    /// Only the markers, no line.
    markers_only: bool,
    label: Option<String>,
}

struct Panel {
    title: String,
    y_desc: String,
    y: (f64, f64),
    /// Fixed ticks (log panels); None: round ones.
    y_ticks: Option<Vec<f64>>,
    y_label: fn(f64, usize) -> String,
    lines: Vec<Line>,
    /// Vertical lines (epoch ends).
    vlines: Vec<(f64, RGBAColor)>,
}

fn plain(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

fn power_of_ten(v: f64, _: usize) -> String {
    let lr = 10f64.powf(v);
    let s = format!("{lr:.0e}");
    // 2e-4 rather than 2e-4 with rounding noise such as 1.9999e-4.
    s.replace("e-0", "e-")
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn draw_marker(
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
fn legend_corner(p: &Panel, (x0, x1): (f64, f64)) -> SeriesLabelPosition {
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

fn draw_panel(area: &Area, p: &Panel, x: (f64, f64), labels: bool) -> Result<PixelRect> {
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

/// Names for the legend: folder names, or whole paths when those repeat.
fn run_names(dirs: &[PathBuf]) -> Vec<String> {
    let short: Vec<String> = dirs
        .iter()
        .map(|d| {
            d.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| d.display().to_string())
        })
        .collect();
    let unique = short
        .iter()
        .enumerate()
        .all(|(i, a)| short[..i].iter().all(|b| b != a));
    if unique {
        short
    } else {
        dirs.iter().map(|d| d.display().to_string()).collect()
    }
}

/// Ticks for a log10 axis: 1, 2 and 5 times each power of ten in range.
fn log_ticks((lo, hi): (f64, f64)) -> Vec<f64> {
    let mut ticks = Vec::new();
    for e in (lo.floor() as i32 - 1)..=(hi.ceil() as i32) {
        for m in [1.0f64, 2.0, 5.0] {
            let t = e as f64 + m.log10();
            if t >= lo && t <= hi {
                ticks.push(t);
            }
        }
    }
    ticks
}

fn panels(runs: &[Run], smoothing: f64) -> (Vec<Panel>, (f64, f64)) {
    let several = runs.len() > 1;
    let color = |i: usize| PALETTE[i % PALETTE.len()];
    let x_max = runs
        .iter()
        .flat_map(|r| r.steps.iter().map(|s| s.step))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    // A little room on the right so that the last point is not on the frame.
    let x = (0.0, x_max * 1.015);
    // Epoch ends: between the last step of an epoch and the next; grey
    // where every run has one, else in the colour of the run.
    let ends: Vec<Vec<u64>> = runs.iter().map(epoch_ends).collect();
    let mut vlines = Vec::new();
    for (i, run_ends) in ends.iter().enumerate() {
        for &s in run_ends {
            let shared = ends.iter().all(|e| e.contains(&s));
            let c = if !shared {
                color(i).mix(0.45)
            } else if i == 0 {
                BLACK.mix(0.25)
            } else {
                continue;
            };
            vlines.push((s as f64 + 0.5, c));
        }
    }

    // Loss.
    // Per caption only when every run can be: one axis, one unit.
    let per_caption = runs.iter().all(has_batch_sizes);
    let mut lines = Vec::new();
    let mut loss_values = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let points = loss_points(run, per_caption);
        let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
        let smooth: Vec<(f64, f64)> = points
            .iter()
            .zip(ema(&ys, smoothing))
            .map(|(p, s)| (p.0, s))
            .collect();
        loss_values.extend(ys);
        lines.push(Line {
            points: points.clone(),
            color: color(i).mix(0.3),
            width: 1,
            marker: None,
            markers_only: false,
            label: (!several).then(|| "raw".to_string()),
        });
        if !per_caption {
            // Without the batch sizes the loss is the batch's sum, and the
            // smaller last batch of each epoch drops it: mark those steps.
            let ends: Vec<(f64, f64)> = epoch_ends(run)
                .iter()
                .chain(run.steps.last().map(|s| &s.step))
                .filter_map(|&e| points.iter().find(|p| p.0 == e as f64).copied())
                .collect();
            lines.push(Line {
                points: ends,
                color: color(i).to_rgba(),
                width: 1,
                marker: Some(Marker::Ring),
                markers_only: true,
                label: (i == 0).then(|| "last batch of an epoch (smaller)".to_string()),
            });
        }
        lines.push(Line {
            points: smooth,
            color: color(i).to_rgba(),
            width: 2,
            marker: None,
            markers_only: false,
            label: Some(if several {
                run.name.clone()
            } else {
                format!("smoothed (EMA {smoothing})")
            }),
        });
    }
    let loss = Panel {
        title: if per_caption {
            "training loss per caption (batch loss / batch size)".into()
        } else {
            "training loss (sum over the batch)".into()
        },
        y_desc: "loss".into(),
        y: span(loss_values.into_iter(), 0.04),
        y_ticks: None,
        y_label: plain,
        lines,
        vlines: vlines.clone(),
    };

    // Learning rate on a log axis (log10 values), so that each x0.1 decay
    // is one equal step down.
    let mut lines = Vec::new();
    let mut lrs = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let points: Vec<(f64, f64)> = run
            .steps
            .iter()
            .filter(|s| s.lr > 0.0)
            .map(|s| (s.step as f64, s.lr.log10()))
            .collect();
        lrs.extend(points.iter().map(|p| p.1));
        lines.push(Line {
            points,
            color: color(i).to_rgba(),
            width: 2,
            marker: None,
            markers_only: false,
            label: several.then(|| run.name.clone()),
        });
    }
    let (lo, hi) = span(lrs.into_iter(), 0.0);
    let lr_range = (lo - 0.35, hi + 0.35);
    let lr = Panel {
        title: "learning rate (log scale)".into(),
        y_desc: "lr".into(),
        y: lr_range,
        y_ticks: Some(log_ticks(lr_range)),
        y_label: power_of_ten,
        lines,
        vlines: vlines.clone(),
    };

    // Validation.
    let mut lines = Vec::new();
    let mut rsums = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let points: Vec<(f64, f64)> = run.vals.iter().map(|v| (v.step as f64, v.rsum)).collect();
        rsums.extend(points.iter().map(|p| p.1));
        lines.push(Line {
            points,
            color: color(i).to_rgba(),
            width: 2,
            marker: Some(Marker::Circle),
            markers_only: false,
            label: several.then(|| run.name.clone()),
        });
    }
    let rsum = Panel {
        title: "validation rsum (six recalls)".into(),
        y_desc: "rsum".into(),
        y: span(rsums.into_iter(), 0.06),
        y_ticks: None,
        y_label: plain,
        lines,
        vlines: vlines.clone(),
    };
    let recall_panel = |title: &str, pick: fn(&ValidationRecord) -> [f64; 5]| {
        let mut lines = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            for (k, (name, marker)) in [
                ("R@1", Marker::Circle),
                ("R@5", Marker::Triangle),
                ("R@10", Marker::Cross),
            ]
            .into_iter()
            .enumerate()
            {
                let points = run
                    .vals
                    .iter()
                    .map(|v| (v.step as f64, pick(v)[k]))
                    .collect();
                // One run: a colour per K; several: a colour per run and
                // a marker per K.
                let c = if several { color(i) } else { color(k) };
                lines.push(Line {
                    points,
                    color: c.to_rgba(),
                    width: if several { 1 } else { 2 },
                    marker: Some(marker),
                    markers_only: false,
                    label: Some(if several {
                        format!("{} {name}", run.name)
                    } else {
                        name.to_string()
                    }),
                });
            }
        }
        Panel {
            title: title.into(),
            y_desc: "recall (%)".into(),
            y: (-3.0, 103.0),
            y_ticks: Some(vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]),
            y_label: plain,
            lines,
            vlines: vlines.clone(),
        }
    };
    let i2t = recall_panel("validation image -> text", |v| v.i2t);
    let t2i = recall_panel("validation text -> image", |v| v.t2i);
    (vec![loss, lr, rsum, i2t, t2i], x)
}

/// The pixel rectangle (x range, y range) of a chart's plotting area.
type PixelRect = (std::ops::Range<i32>, std::ops::Range<i32>);

/// Draws the figure; returns the plotting areas, inside which every curve lies.
fn draw_on(root: &Area, runs: &[Run], smoothing: f64, labels: bool) -> Result<Vec<PixelRect>> {
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

fn draw(runs: &[Run], smoothing: f64, out: &Path, labels: bool) -> Result<()> {
    let root = BitMapBackend::new(out, (1200, 1080)).into_drawing_area();
    draw_on(&root, runs, smoothing, labels).map(|_| ())
}

pub fn run(a: &PlotArgs) -> Result<()> {
    let out = plot(&a.runs, a.out.as_deref(), a.smoothing)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Plots `runs` into `out` (default: `RUN/curves.png` for one run) through
/// a temporary file; returns the path written. Text needs a system font
/// (DejaVu and fontconfig here); without one the curves are drawn unlabelled.
pub fn plot(dirs: &[PathBuf], out: Option<&Path>, smoothing: f64) -> Result<PathBuf> {
    if !(0.0..1.0).contains(&smoothing) {
        bail!("--smoothing must be at least 0 and below 1 (TensorBoard's default is 0.6)");
    }
    let out = match (out, dirs) {
        (Some(o), _) => o.to_path_buf(),
        (None, [one]) => one.join("curves.png"),
        _ => bail!("several runs: say where the picture goes with --out"),
    };
    let runs = dirs
        .iter()
        .zip(run_names(dirs))
        .map(|(d, name)| read_run(d, name))
        .collect::<Result<Vec<_>>>()?;
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}.png",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let drawn = draw(&runs, smoothing, &tmp, true).or_else(|_| draw(&runs, smoothing, &tmp, false));
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_is_tensorboards_debiased_average() {
        // By hand: last = 0.4*1 = 0.4, /0.4 -> 1; last = 0.24 + 0.4*3 = 1.44,
        // /(1 - 0.36) -> 2.25; last = 0.864 + 0.4*2 = 1.664, /0.784 -> 2.1224...
        let s = ema(&[1.0, 3.0, 2.0], 0.6);
        assert!((s[0] - 1.0).abs() < 1e-12);
        assert!((s[1] - 2.25).abs() < 1e-12);
        assert!((s[2] - 1.664 / 0.784).abs() < 1e-12);
        assert_eq!(ema(&[1.0, 3.0], 0.0), [1.0, 3.0]);
        assert_eq!(ema(&[5.0, 5.0, 5.0], 0.9), [5.0, 5.0, 5.0]);
        let with_nan = ema(&[1.0, f64::NAN, 3.0], 0.5);
        assert!(with_nan[1].is_nan() && (with_nan[2] - (0.25 + 1.5) / 0.75).abs() < 1e-12);
    }

    #[test]
    fn lines_are_clipped_to_the_chart() {
        // A spike above the range is cut at its top edge and the line
        // resumes where it comes back.
        let pts = [(0.0, 0.5), (1.0, 3.0), (2.0, 0.5), (3.0, 0.5)];
        let pieces = clip_polyline(&pts, (0.0, 3.0), (0.0, 1.0));
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        assert_eq!(pieces[0], [(0.0, 0.5), (0.2, 1.0)]);
        assert_eq!(pieces[1], [(1.8, 1.0), (2.0, 0.5), (3.0, 0.5)]);
        for p in pieces.iter().flatten() {
            assert!((0.0..=3.0).contains(&p.0) && (0.0..=1.0).contains(&p.1));
        }
        // Wholly outside: nothing; NaN breaks the line.
        assert!(clip_polyline(&[(0.0, 5.0), (1.0, 6.0)], (0.0, 1.0), (0.0, 1.0)).is_empty());
        let pieces = clip_polyline(
            &[
                (0.0, 0.1),
                (1.0, 0.2),
                (2.0, f64::NAN),
                (3.0, 0.3),
                (4.0, 0.4),
            ],
            (0.0, 4.0),
            (0.0, 1.0),
        );
        assert_eq!(
            pieces,
            [vec![(0.0, 0.1), (1.0, 0.2)], vec![(3.0, 0.3), (4.0, 0.4)]]
        );
    }

    #[test]
    fn step_ticks_are_whole_numbers() {
        let (t, d) = nice_ticks(0.0, 1128.0, 8, true);
        assert_eq!(t, [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        assert_eq!(d, 0);
        let (t, _) = nice_ticks(0.0, 3.0, 8, true);
        assert_eq!(t, [0.0, 1.0, 2.0, 3.0]);
        let (t, d) = nice_ticks(0.02, 0.5, 5, false);
        assert_eq!(d, 1);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn the_loss_is_shown_per_caption_when_the_log_has_batch_sizes() {
        let step = |step, loss, batch_size| StepRecord {
            batch_size,
            epoch: 0,
            grad_norm: 1.0,
            loss,
            lr: 2e-4,
            step,
        };
        let mut run = Run {
            name: "run".into(),
            steps: vec![
                step(1, 9.0, Some(4)),
                step(2, 6.0, Some(4)),
                step(3, 5.0, Some(2)),
            ],
            vals: Vec::new(),
        };
        // Per caption: the small last batch is not a drop.
        assert!(has_batch_sizes(&run));
        assert_eq!(
            loss_points(&run, true),
            [(1.0, 2.25), (2.0, 1.5), (3.0, 2.5)]
        );
        run.steps[1].batch_size = None;
        assert!(!has_batch_sizes(&run));
        assert_eq!(loss_points(&run, false)[1], (2.0, 6.0));
    }

    fn demo_like(name: &str, n: u64, per_epoch: u64, seed: u64) -> Run {
        let mut rng = seed;
        let mut noise = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as f64 / (1u64 << 31) as f64
        };
        let steps: Vec<StepRecord> = (1..=n)
            .map(|s| {
                let last = s % per_epoch == 0;
                let b = if last { 4 } else { 16 };
                // A spike far above the rest at step 7.
                let per = if s == 7 {
                    40.0
                } else {
                    1.0 / (1.0 + s as f64 / 50.0) + 0.3 * noise()
                };
                StepRecord {
                    batch_size: Some(b),
                    epoch: ((s - 1) / per_epoch) as usize,
                    grad_norm: 1.0,
                    loss: per * b as f64,
                    lr: if s > n / 2 { 1e-4 } else { 1e-3 },
                    step: s,
                }
            })
            .collect();
        let vals = (1..=n / per_epoch)
            .map(|e| {
                let r = (e as f64 * 9.0).min(90.0);
                ValidationRecord {
                    epoch: e as usize - 1,
                    i2t: [r, r + 5.0, r + 9.0, 2.0, 3.0],
                    rsum: 6.0 * r + 24.0,
                    step: e * per_epoch,
                    t2i: [r, r + 3.0, r + 7.0, 2.0, 3.0],
                    validation: true,
                }
            })
            .collect();
        Run {
            name: name.into(),
            steps,
            vals,
        }
    }

    #[test]
    fn nothing_is_drawn_outside_the_charts() {
        let runs = [demo_like("sgr", 300, 25, 1), demo_like("saf", 240, 20, 2)];
        let (w, h) = (1200u32, 1080u32);
        let mut buf = vec![0u8; (w * h * 3) as usize];
        let rects = {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            // Without a system font, the unlabelled figure.
            draw_on(&root, &runs, 0.6, true)
                .or_else(|_| draw_on(&root, &runs, 0.6, false))
                .unwrap()
        };
        assert_eq!(rects.len(), 5);
        // The curves are drawn in the runs' colours at full opacity (the raw
        // loss is blended, so it never matches exactly): every such pixel,
        // legend samples included, lies in a plotting area.
        let mut seen = [0usize; 2];
        for y in 0..h as i32 {
            for x in 0..w as i32 {
                let k = ((y as u32 * w + x as u32) * 3) as usize;
                let px = RGBColor(buf[k], buf[k + 1], buf[k + 2]);
                for (i, c) in PALETTE[..2].iter().enumerate() {
                    if px == *c {
                        seen[i] += 1;
                        assert!(
                            rects
                                .iter()
                                .any(|(xr, yr)| xr.contains(&x) && yr.contains(&y)),
                            "run {i}'s colour at ({x}, {y}), outside every chart {rects:?}"
                        );
                    }
                }
            }
        }
        assert!(seen[0] > 1000 && seen[1] > 1000, "{seen:?}");
    }
}
