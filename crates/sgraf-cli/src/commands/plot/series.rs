//! What is drawn, computed from the runs: smoothed losses, epoch ends,
//! axis ranges and the panels' lines, with no drawing.

use plotters::prelude::*;
use sgraf::ValidationRecord;

use super::read::Run;

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

/// Data range with a margin, so that nothing sits on a frame.
pub(super) fn span(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
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

pub(super) const PALETTE: [RGBColor; 8] = [
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
pub(super) enum Marker {
    Circle,
    Triangle,
    Cross,
    /// Hollow circle: a small last batch.
    Ring,
}

pub(super) struct Line {
    pub(super) points: Vec<(f64, f64)>,
    pub(super) color: RGBAColor,
    pub(super) width: u32,
    pub(super) marker: Option<Marker>,
    /// Only the markers, no line.
    pub(super) markers_only: bool,
    pub(super) label: Option<String>,
}

pub(super) struct Panel {
    pub(super) title: String,
    pub(super) y_desc: String,
    pub(super) y: (f64, f64),
    /// Fixed ticks (log panels); None: round ones.
    pub(super) y_ticks: Option<Vec<f64>>,
    pub(super) y_label: fn(f64, usize) -> String,
    pub(super) lines: Vec<Line>,
    /// Vertical lines (epoch ends).
    pub(super) vlines: Vec<(f64, RGBAColor)>,
}

pub(super) fn plain(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

pub(super) fn power_of_ten(v: f64, _: usize) -> String {
    let lr = 10f64.powf(v);
    let s = format!("{lr:.0e}");
    // 2e-4 rather than 2e-4 with rounding noise such as 1.9999e-4.
    s.replace("e-0", "e-")
}

/// Ticks for a log10 axis: 1, 2 and 5 times each power of ten in range.
pub(super) fn log_ticks((lo, hi): (f64, f64)) -> Vec<f64> {
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

pub(super) fn panels(runs: &[Run], smoothing: f64) -> (Vec<Panel>, (f64, f64)) {
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
