//! `sgraf-cli plot RUN...`: the training curves of one or more runs
//! (`RUN/metrics.jsonl`) as one PNG: the loss (raw, faint, and smoothed as
//! TensorBoard smooths), the learning rate, the validation rsum and R@1/5/10
//! of both directions, every panel over the same integer step axis with
//! the epoch ends marked.
//!
//! [`read`] reads the runs, [`series`] computes what each panel shows, and
//! [`draw`] draws it.

mod draw;
mod read;
mod series;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::flags::PlotArgs;
use draw::draw;
use read::{read_run, run_names};

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
    use super::draw::*;
    use super::read::*;
    use super::series::*;
    use plotters::prelude::*;
    use sgraf::{StepRecord, ValidationRecord};

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
