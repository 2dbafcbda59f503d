//! `sgraf-cli plot RUN`: the loss and validation rsum curves of a run as a PNG.

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

/// Training loss per step and validation rsum per validation.
pub struct Curves {
    pub loss: Vec<(f64, f64)>,
    pub rsum: Vec<(f64, f64)>,
}

pub fn read_curves(run: &Path) -> Result<Curves> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut curves = Curves {
        loss: Vec::new(),
        rsum: Vec::new(),
    };
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        let step = v["step"].as_f64().unwrap_or(0.0);
        if let Some(r) = v.get("rsum").and_then(|r| r.as_f64()) {
            curves.rsum.push((step, r));
        } else if let Some(l) = v.get("loss").and_then(|l| l.as_f64()) {
            curves.loss.push((step, l));
        }
    }
    if curves.loss.is_empty() {
        bail!("{} holds no training steps yet", path.display());
    }
    Ok(curves)
}

fn range(points: &[(f64, f64)]) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    (x0, x1, y0 - pad, y1 + pad)
}

fn draw(curves: &Curves, out: &Path, labels: bool) -> Result<()> {
    let root = BitMapBackend::new(out, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 1));
    let series = [
        (&curves.loss, "training loss", BLUE),
        (&curves.rsum, "validation rsum", RED),
    ];
    for (area, (points, name, color)) in panels.iter().zip(series) {
        let all = if points.is_empty() {
            &curves.loss
        } else {
            points
        };
        let (x0, x1, y0, y1) = range(all);
        let mut builder = ChartBuilder::on(area);
        builder.margin(15);
        if labels {
            builder
                .caption(name, ("sans-serif", 22))
                .x_label_area_size(35)
                .y_label_area_size(60);
        }
        let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1)?;
        let mut mesh = chart.configure_mesh();
        if labels {
            mesh.x_desc("step");
        } else {
            mesh.disable_x_mesh()
                .disable_y_mesh()
                .x_labels(0)
                .y_labels(0);
        }
        mesh.draw()?;
        if points.len() > 1 {
            chart.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?;
        }
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    root.present()?;
    Ok(())
}

/// Writes the PNG through a temporary file. Text needs a system font
/// (DejaVu and fontconfig here); without one the curves are drawn unlabelled.
pub fn plot(run: &Path, out: &Path) -> Result<()> {
    let curves = read_curves(run)?;
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}.png",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let drawn = draw(&curves, &tmp, true).or_else(|_| draw(&curves, &tmp, false));
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
