//! The photo with each word's strongest regions drawn, one panel per word
//! (`sgraf-cli explain --out`).

use std::path::Path;

use crate::error::{Error, Result};
use image::{Rgb, RgbImage};
use imageproc::drawing::draw_hollow_rect_mut;
use imageproc::rect::Rect;

use crate::explain::QueryExplanation;

/// Regions drawn per word.
pub const TOP_REGIONS: usize = 5;
/// Panels side by side before a new row starts.
pub const COLUMNS: usize = 3;
/// Panels are scaled so that their longer side is at most this.
pub const MAX_SIDE: u32 = 640;
/// Pixels between panels (white).
pub const GAP: u32 = 4;
/// Box outline width.
pub const LINE: i32 = 3;

/// The colour of a region whose weight is `rel` of its word's strongest:
/// red (255, 0, 0) for the strongest, through orange to yellow (255, 255, 0).
pub fn colour(rel: f32) -> Rgb<u8> {
    let g = (255.0 * (1.0 - rel.clamp(0.0, 1.0))).round() as u8;
    Rgb([255, g, 0])
}

/// A photo as OpenCV decodes it (the pixels the boxes were found in), RGB.
pub fn open_photo(path: &Path) -> Result<RgbImage> {
    let bgr = sgraf_vision::BgrImage::open(path)?;
    let mut img = RgbImage::new(bgr.width as u32, bgr.height as u32);
    for (px, c) in img.pixels_mut().zip(bgr.data.chunks_exact(3)) {
        *px = Rgb([c[2], c[1], c[0]]);
    }
    Ok(img)
}

/// A plain grey canvas of the photo's size, when only the boxes are known.
pub fn blank(width: usize, height: usize) -> RgbImage {
    RgbImage::from_pixel(
        width.max(1) as u32,
        height.max(1) as u32,
        Rgb([200, 200, 200]),
    )
}

/// Panels for `words` (indices into `e.words`), left to right then down:
/// each the photo with the word's [`TOP_REGIONS`] strongest regions shaded
/// and outlined by weight ([`colour`]; the strongest drawn last).
pub fn draw(photo: &RgbImage, e: &QueryExplanation, words: &[usize]) -> Result<RgbImage> {
    let Some(boxes) = &e.boxes else {
        return Err(Error::NoBoxes {
            file: e.file.clone(),
        });
    };
    if words.is_empty() {
        return Err(Error::BadOption {
            name: "words",
            expected: "at least one word to draw".into(),
            found: "none".into(),
        });
    }
    let scale = (MAX_SIDE as f32 / photo.width().max(photo.height()) as f32).min(1.0);
    let base = if scale < 1.0 {
        image::imageops::resize(
            photo,
            ((photo.width() as f32 * scale).round() as u32).max(1),
            ((photo.height() as f32 * scale).round() as u32).max(1),
            image::imageops::FilterType::Triangle,
        )
    } else {
        photo.clone()
    };
    // Boxes are in the photo's pixels as the sidecar gives its size.
    let (sx, sy) = match e.image_size {
        Some([w, h]) if w > 0 && h > 0 => (
            base.width() as f32 / w as f32,
            base.height() as f32 / h as f32,
        ),
        _ => (scale, scale),
    };
    let (pw, ph) = (base.width(), base.height());
    let cols = words.len().min(COLUMNS) as u32;
    let rows = words.len().div_ceil(COLUMNS) as u32;
    let mut out = RgbImage::from_pixel(
        cols * pw + (cols - 1) * GAP,
        rows * ph + (rows - 1) * GAP,
        Rgb([255, 255, 255]),
    );
    for (k, &w) in words.iter().enumerate() {
        let mut panel = base.clone();
        let top = e.top_regions(w, TOP_REGIONS);
        let peak = top.first().map_or(1.0, |t| t.1).max(1e-12);
        for &(r, weight) in top.iter().rev() {
            let rel = weight / peak;
            let c = colour(rel);
            let [x1, y1, x2, y2] = boxes[r];
            let x1 = ((x1 * sx).round() as i32).clamp(0, pw as i32 - 1);
            let y1 = ((y1 * sy).round() as i32).clamp(0, ph as i32 - 1);
            let x2 = ((x2 * sx).round() as i32).clamp(x1, pw as i32 - 1);
            let y2 = ((y2 * sy).round() as i32).clamp(y1, ph as i32 - 1);
            // Shade the inside by weight, then outline.
            let alpha = 0.35 * rel;
            for y in y1..=y2 {
                for x in x1..=x2 {
                    let p = panel.get_pixel_mut(x as u32, y as u32);
                    for ch in 0..3 {
                        p.0[ch] =
                            (p.0[ch] as f32 * (1.0 - alpha) + c.0[ch] as f32 * alpha).round() as u8;
                    }
                }
            }
            for t in 0..LINE {
                let (w_, h_) = (x2 - x1 + 1 - 2 * t, y2 - y1 + 1 - 2 * t);
                if w_ > 0 && h_ > 0 {
                    draw_hollow_rect_mut(
                        &mut panel,
                        Rect::at(x1 + t, y1 + t).of_size(w_ as u32, h_ as u32),
                        c,
                    );
                }
            }
        }
        let (col, row) = ((k % COLUMNS) as u32, (k / COLUMNS) as u32);
        image::imageops::replace(
            &mut out,
            &panel,
            (col * (pw + GAP)) as i64,
            (row * (ph + GAP)) as i64,
        );
    }
    Ok(out)
}

/// Writes `img` as a PNG, atomically.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::Invalid(format!("encoding {} as PNG: {e}", path.display())))?;
    sgraf_data::write_atomic(path, &bytes)?;
    Ok(())
}
