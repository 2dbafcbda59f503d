//! Photo decoding equal to the port's `cv2.imread(path, cv2.IMREAD_COLOR)`,
//! pixel for pixel, as opencv-python 5.0.0 reads photos (its wheels bundle
//! libjpeg-turbo 3.1.2, libpng 1.6, libwebp and libtiff 4.7):
//!
//! * JPEG through libjpeg-turbo's own decompressor (accurate integer IDCT,
//!   fancy upsampling: libjpeg's defaults, which OpenCV keeps), here the one
//!   MozJPEG 4 vendors (`mozjpeg-sys`), a libjpeg-turbo fork whose
//!   decompression code equals libjpeg-turbo 3.1's (jdsample.c, jidctint.c,
//!   jdcolor.c, jdcoefct.c, jdmerge.c differ only by 3.x's renamed 12/16-bit
//!   macros). CMYK and YCCK are asked of libjpeg as CMYK and converted with
//!   OpenCV's own formula.
//! * PNG with the `png` crate: libpng's transformations OpenCV asks for
//!   (palette and low-bit gray expanded, 16 bits stripped to their high byte,
//!   alpha dropped, gray replicated), all exact integer operations.
//! * WebP with `image-webp`, which reproduces libwebp's lossy decoding
//!   (including its fancy chroma upsampling) bit for bit; alpha dropped.
//! * BMP by OpenCV's rules (grfmt_bmp.cpp, utils.cpp), TIFF with the `tiff`
//!   crate plus OpenCV's 16-to-8-bit rounding.
//! * EXIF orientation applied as OpenCV's `ApplyExifOrientation` applies it,
//!   for JPEG, PNG (eXIf) and WebP (EXIF chunk); TIFF's orientation tag as
//!   OpenCV's TIFF decoder applies it.
//!
//! GIF, which OpenCV 5 reads (its own decoder), is refused. Sizes are checked
//! against [`MAX_PIXELS`] before any pixel buffer is allocated; truncated or
//! corrupt files are errors, never panics.
//!
//! OpenCV sources cited below: opencv/opencv at 4.x/5.x,
//! modules/imgcodecs/src/{grfmt_jpeg.cpp, utils.cpp, loadsave.cpp,
//! grfmt_bmp.cpp, grfmt_png.cpp, grfmt_tiff.cpp}.
#![allow(unsafe_code, reason = "libjpeg-turbo's C API for JPEG decoding")]

use std::io::Cursor;

/// The largest image decoded: 2^28 pixels (16384 x 16384), 768 MiB of BGR.
pub const MAX_PIXELS: u64 = 1 << 28;

/// A decoded photo: `[height, width, 3]` BGR bytes.
#[derive(Debug)]
pub struct Decoded {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl Decoded {
    fn new(height: usize, width: usize, data: Vec<u8>) -> Self {
        Self {
            height,
            width,
            data,
        }
    }
}

/// What the first bytes of a file say it is (OpenCV also picks its decoder
/// by signature, not by extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    WebP,
    Bmp,
    Tiff,
    Gif,
}

pub fn sniff(bytes: &[u8]) -> Option<Format> {
    let starts = |sig: &[u8]| bytes.starts_with(sig);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(Format::WebP)
    } else if starts(b"BM") {
        Some(Format::Bmp)
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        Some(Format::Tiff)
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some(Format::Gif)
    } else {
        None
    }
}

/// Decodes a JPEG, PNG, WebP, BMP or TIFF file's bytes to BGR, turned
/// upright as `cv2.imread(path, cv2.IMREAD_COLOR)` turns it.
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let (img, orientation) = match sniff(bytes) {
        Some(Format::Jpeg) => jpeg::decode(bytes)?,
        Some(Format::Png) => png_decode(bytes)?,
        Some(Format::WebP) => webp_decode(bytes)?,
        Some(Format::Bmp) => (bmp_decode(bytes)?, 1),
        Some(Format::Tiff) => tiff_decode(bytes)?,
        Some(Format::Gif) => {
            return Err("GIF is not supported (convert the photo to PNG or JPEG)".into())
        }
        None if bytes.is_empty() => return Err("the file is empty".into()),
        None => return Err("not a JPEG, PNG, WebP, BMP or TIFF file".into()),
    };
    Ok(orient(img, orientation))
}

/// Refuses empty and absurd sizes before anything is allocated.
fn check_size(width: u64, height: u64) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("the image is empty ({width}x{height})"));
    }
    let pixels = width.saturating_mul(height);
    if pixels > MAX_PIXELS {
        return Err(format!(
            "the image is {width}x{height} pixels, over the limit of {MAX_PIXELS} (2^28) pixels"
        ));
    }
    Ok(())
}

/// The orientation (tag 0x0112) of IFD0 of an EXIF block, read as OpenCV's
/// `ExifReader` reads it (exif.cpp: the "Exif\0\0" header skipped when
/// present, "II"/"MM" byte order, the SHORT at the entry's value offset).
pub fn exif_orientation(exif: &[u8]) -> Option<u16> {
    let tiff = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    let le = match tiff.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(o..o.checked_add(2)?)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(o..o.checked_add(4)?)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = u32_at(4)? as usize;
    let entries = u16_at(ifd)? as usize;
    (0..entries).find_map(|i| {
        let e = ifd.checked_add(2 + 12 * i)?;
        (u16_at(e)? == 0x0112).then(|| u16_at(e + 8)).flatten()
    })
}

/// OpenCV's `ApplyExifOrientation` (loadsave.cpp): 1 as is, 2 mirrored,
/// 3 turned half, 4 flipped, 5 transposed, 6 transposed then mirrored
/// (turned clockwise), 7 transposed then turned half, 8 transposed then
/// flipped; any other value leaves the image as it is.
fn orient(img: Decoded, orientation: u16) -> Decoded {
    if !(2..=8).contains(&orientation) {
        return img;
    }
    let (h, w) = (img.height, img.width);
    let transpose = orientation >= 5;
    let (oh, ow) = if transpose { (w, h) } else { (h, w) };
    // After the optional transpose, mirror (x) and/or flip (y).
    let (mirror, flip) = match orientation {
        2 => (true, false),
        3 => (true, true),
        4 => (false, true),
        5 => (false, false),
        6 => (true, false),
        7 => (true, true),
        _ => (false, true),
    };
    let mut data = vec![0u8; img.data.len()];
    for y in 0..oh {
        let sy = if flip { oh - 1 - y } else { y };
        for x in 0..ow {
            let sx = if mirror { ow - 1 - x } else { x };
            // (sy, sx) in the transposed image is (sx, sy) in the source.
            let (ry, rx) = if transpose { (sx, sy) } else { (sy, sx) };
            let s = (ry * w + rx) * 3;
            let d = (y * ow + x) * 3;
            data[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    Decoded {
        height: oh,
        width: ow,
        data,
    }
}

/// JPEG through libjpeg-turbo's decompressor, set up as OpenCV's
/// `JpegDecoder::readData` sets it up (grfmt_jpeg.cpp, the `if( color )`
/// block): 3 components (or 1, replicated by libjpeg) to RGB, which OpenCV
/// swaps to BGR (`icvCvt_RGB2BGR_8u_C3R`; libjpeg-turbo builds of OpenCV ask
/// for JCS_EXT_BGR directly: the same bytes); 4 components to JCS_CMYK
/// (libjpeg converts YCCK to CMYK), then `icvCvt_CMYK2BGR_8u_C4C3R`
/// (utils.cpp). Everything else keeps libjpeg's defaults: JDCT_ISLOW, fancy
/// upsampling, block smoothing (which only touches incomplete progressive
/// scans).
mod jpeg {
    use std::ffi::{c_int, c_ulong, c_void};
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

    use mozjpeg_sys::*;

    use super::{check_size, exif_orientation, Decoded};

    /// libjpeg's fatal error, carried out of its call by unwinding.
    struct JpegError(String);

    /// What the warning hook saw (reached through `client_data`).
    #[derive(Default)]
    struct Warnings {
        eof: bool,
    }

    fn message(cinfo: &mut jpeg_common_struct) -> String {
        let mut buf = [0u8; 80]; // JMSG_LENGTH_MAX
                                 // SAFETY: `err` is the manager set up in `decode`; format_message
                                 // writes a NUL-terminated string of at most JMSG_LENGTH_MAX bytes.
        unsafe {
            let err = &*cinfo.err;
            if let Some(f) = err.format_message {
                // The binding declares the buffer `&[u8; 80]`; libjpeg writes
                // into it, so pass it as the mutable pointer it is.
                let f: unsafe extern "C-unwind" fn(&mut jpeg_common_struct, *mut u8) =
                    std::mem::transmute(f);
                f(cinfo, buf.as_mut_ptr());
            }
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }

    /// libjpeg's `error_exit` must not return: unwind to `decode` (no panic
    /// hook runs for `resume_unwind`). The C library is built with
    /// -fexceptions (`mozjpeg-sys/unwinding`), so its frames unwind cleanly.
    unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
        let msg = message(cinfo);
        resume_unwind(Box::new(JpegError(msg)));
    }

    /// Warnings (corrupt data that libjpeg skips) are ignored as OpenCV
    /// ignores them, except the end of the data before the end of the image:
    /// libjpeg would pad the photo with grey, we refuse it.
    unsafe extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: c_int) {
        if level < 0 {
            let err = &mut *cinfo.err;
            err.num_warnings += 1;
            if err.msg_code == JWRN_JPEG_EOF as c_int && !cinfo.client_data.is_null() {
                (*(cinfo.client_data as *mut Warnings)).eof = true;
            }
        }
    }

    /// Owns the libjpeg objects; destroys them on return and on unwinding.
    struct Session {
        cinfo: Box<jpeg_decompress_struct>,
        _err: Box<jpeg_error_mgr>,
        warnings: Box<Warnings>,
        created: bool,
    }

    impl Drop for Session {
        fn drop(&mut self) {
            if self.created {
                // SAFETY: created by jpeg_create_decompress, destroyed once.
                unsafe { jpeg_destroy_decompress(&mut self.cinfo) };
            }
        }
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<(Decoded, u16), String> {
        // SAFETY: `decode_inner` needs only a readable byte slice, which
        // `bytes` is for the whole call; libjpeg's error exit unwinds (a
        // `JpegError` payload) through C built with -fexceptions
        // (mozjpeg-sys/unwinding), and is caught here.
        match catch_unwind(AssertUnwindSafe(|| unsafe { decode_inner(bytes) })) {
            Ok(r) => r,
            Err(payload) => match payload.downcast::<JpegError>() {
                Ok(e) => Err(e.0),
                Err(other) => resume_unwind(other),
            },
        }
    }

    /// # Safety
    /// Must run inside `catch_unwind`: libjpeg reports errors by unwinding
    /// out of `error_exit`. Every libjpeg object it uses lives in `Session`,
    /// whose drop destroys the decompressor exactly once.
    unsafe fn decode_inner(bytes: &[u8]) -> Result<(Decoded, u16), String> {
        let mut err: Box<jpeg_error_mgr> = Box::new(std::mem::zeroed());
        jpeg_std_error(&mut err);
        err.error_exit = Some(error_exit);
        err.emit_message = Some(emit_message);
        let mut s = Session {
            cinfo: Box::new(std::mem::zeroed()),
            _err: err,
            warnings: Box::default(),
            created: false,
        };
        s.cinfo.common.err = &mut *s._err;
        s.cinfo.common.client_data = &mut *s.warnings as *mut Warnings as *mut c_void;
        jpeg_create_decompress(&mut *s.cinfo);
        s.created = true;
        let cinfo = &mut *s.cinfo;
        jpeg_mem_src(cinfo, bytes.as_ptr(), bytes.len() as c_ulong);
        // OpenCV keeps the APP1 (0xE1) markers for its EXIF reader.
        jpeg_save_markers(cinfo, 0xE1, 0xffff);
        jpeg_read_header(cinfo, 1);
        check_size(cinfo.image_width as u64, cinfo.image_height as u64)?;
        let orientation = exif(cinfo).unwrap_or(1);

        let cmyk = cinfo.num_components == 4;
        if cmyk {
            cinfo.out_color_space = J_COLOR_SPACE::JCS_CMYK;
            cinfo.out_color_components = 4;
        } else {
            cinfo.out_color_space = J_COLOR_SPACE::JCS_EXT_BGR;
            cinfo.out_color_components = 3;
        }
        jpeg_start_decompress(cinfo);
        let (w, h) = (cinfo.output_width as usize, cinfo.output_height as usize);
        check_size(w as u64, h as u64)?;
        if cinfo.output_components != if cmyk { 4 } else { 3 } {
            return Err(format!(
                "libjpeg gave {} components per pixel",
                cinfo.output_components
            ));
        }
        let mut data = vec![0u8; w * h * 3];
        let mut row = vec![0u8; if cmyk { w * 4 } else { 0 }];
        while (cinfo.output_scanline as usize) < h {
            let y = cinfo.output_scanline as usize;
            let mut ptr = if cmyk {
                row.as_mut_ptr()
            } else {
                data[y * w * 3..].as_mut_ptr()
            };
            if jpeg_read_scanlines(cinfo, &mut ptr, 1) != 1 {
                return Err("libjpeg stopped before the last row".into());
            }
            if cmyk {
                cmyk_to_bgr(&row, &mut data[y * w * 3..(y + 1) * w * 3]);
            }
        }
        if s.warnings.eof {
            return Err("the JPEG data ends before the image does (truncated file)".into());
        }
        // No jpeg_finish_decompress: the pixels are complete, and what
        // follows the last scan (OpenCV reads and ignores it) cannot change them.
        Ok((Decoded::new(h, w, data), orientation))
    }

    /// `icvCvt_CMYK2BGR_8u_C4C3R` (utils.cpp): libjpeg's CMYK is Adobe's
    /// inverted CMYK; `c = k - ((255 - c) * k >> 8)` and so on, R = c,
    /// G = m, B = y.
    fn cmyk_to_bgr(cmyk: &[u8], bgr: &mut [u8]) {
        for (s, d) in cmyk.chunks_exact(4).zip(bgr.chunks_exact_mut(3)) {
            let k = s[3] as i32;
            let f = |v: u8| (k - (((255 - v as i32) * k) >> 8)) as u8;
            d[2] = f(s[0]);
            d[1] = f(s[1]);
            d[0] = f(s[2]);
        }
    }

    /// The orientation of the first APP1 marker that holds EXIF.
    ///
    /// # Safety
    /// `cinfo` must have read its header with markers saved
    /// (`jpeg_save_markers`): libjpeg then keeps a valid list of markers,
    /// each with `data_length` readable bytes at `data`, alive until the
    /// decompressor is destroyed.
    unsafe fn exif(cinfo: &jpeg_decompress_struct) -> Option<u16> {
        let mut m = cinfo.marker_list;
        while !m.is_null() {
            let mk = &*m;
            if mk.marker == 0xE1 && !mk.data.is_null() {
                let data = std::slice::from_raw_parts(mk.data, mk.data_length as usize);
                if data.starts_with(b"Exif\0\0") {
                    return exif_orientation(data);
                }
            }
            m = mk.next;
        }
        None
    }
}

/// PNG as OpenCV's `PngDecoder::readData` asks libpng for it with
/// IMREAD_COLOR (grfmt_png.cpp): palette to RGB, gray of 1, 2 or 4 bits
/// scaled to 8 (x255, x85, x17), alpha stripped, gray replicated to BGR,
/// 16 bits stripped to the high byte (`png_set_strip_16`: checked against
/// cv2, not rounded). The eXIf chunk's orientation is applied.
fn png_decode(bytes: &[u8]) -> Result<(Decoded, u16), String> {
    let e = |e: png::DecodingError| e.to_string();
    let mut dec = png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: 1 << 30 });
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(e)?;
    let (w, h) = (reader.info().width, reader.info().height);
    check_size(w as u64, h as u64)?;
    let orientation = reader
        .info()
        .exif_metadata
        .as_deref()
        .and_then(exif_orientation)
        .unwrap_or(1);
    let size = reader
        .output_buffer_size()
        .ok_or("the image is too large")?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(e)?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let channels = frame.color_type.samples();
    let wide = frame.bit_depth == png::BitDepth::Sixteen;
    if !wide && frame.bit_depth != png::BitDepth::Eight {
        return Err(format!("unexpected PNG bit depth {:?}", frame.bit_depth));
    }
    let bps = if wide { 2 } else { 1 };
    let mut data = vec![0u8; w * h * 3];
    for y in 0..h {
        let row = &buf[y * frame.line_size..][..w * channels * bps];
        for x in 0..w {
            // The high byte of a big-endian 16-bit sample is its first.
            let s = |c: usize| row[(x * channels + c) * bps];
            let d = &mut data[(y * w + x) * 3..][..3];
            if channels >= 3 {
                d.copy_from_slice(&[s(2), s(1), s(0)]);
            } else {
                d.fill(s(0));
            }
        }
    }
    Ok((Decoded::new(h, w, data), orientation))
}

/// WebP as OpenCV's WebP decoder gives it to IMREAD_COLOR (libwebp's
/// `WebPDecodeBGRInto`; alpha ignored, RGB not premultiplied), EXIF
/// orientation applied.
fn webp_decode(bytes: &[u8]) -> Result<(Decoded, u16), String> {
    let e = |e: image_webp::DecodingError| e.to_string();
    let mut dec = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(e)?;
    let (w, h) = dec.dimensions();
    check_size(w as u64, h as u64)?;
    let orientation = dec
        .exif_metadata()
        .ok()
        .flatten()
        .as_deref()
        .and_then(exif_orientation)
        .unwrap_or(1);
    let channels = if dec.has_alpha() { 4 } else { 3 };
    let size = dec.output_buffer_size().ok_or("the image is too large")?;
    let mut buf = vec![0u8; size];
    dec.read_image(&mut buf).map_err(e)?;
    let (w, h) = (w as usize, h as usize);
    if buf.len() != w * h * channels {
        return Err("unexpected WebP frame size".into());
    }
    let mut data = vec![0u8; w * h * 3];
    for (s, d) in buf.chunks_exact(channels).zip(data.chunks_exact_mut(3)) {
        d.copy_from_slice(&[s[2], s[1], s[0]]);
    }
    Ok((Decoded::new(h, w, data), orientation))
}

/// BMP as OpenCV's own `BmpDecoder` reads it (grfmt_bmp.cpp): 1, 4 and 8
/// bits through the palette (entries stored B, G, R, unused), 16 bits as
/// 5-5-5 or, with BI_BITFIELDS masks 0xF800/0x07E0/0x001F, 5-6-5, each
/// sample shifted up without rounding (`icvCvt_BGR5552BGR_8u_C2C3R`,
/// `icvCvt_BGR5652BGR_8u_C2C3R` in utils.cpp), 24 bits as they are, 32 bits
/// with the fourth byte dropped; rows bottom-up unless the height is
/// negative. Run-length compressed files are refused.
fn bmp_decode(bytes: &[u8]) -> Result<Decoded, String> {
    let truncated = || "the BMP file is truncated".to_string();
    let u16_at = |o: usize| -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            bytes
                .get(o..o + 2)
                .ok_or_else(truncated)?
                .try_into()
                .unwrap(),
        ))
    };
    let u32_at = |o: usize| -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            bytes
                .get(o..o + 4)
                .ok_or_else(truncated)?
                .try_into()
                .unwrap(),
        ))
    };
    let offset = u32_at(10)? as usize;
    let header = u32_at(14)? as usize;
    let (width, height, bpp, compression, colors, palette_entry) = if header >= 36 {
        (
            u32_at(18)? as i32 as i64,
            u32_at(22)? as i32 as i64,
            u16_at(28)?,
            u32_at(30)?,
            u32_at(46)? as usize,
            4,
        )
    } else if header == 12 {
        // OS/2 BITMAPCOREHEADER: 16-bit sizes, 3-byte palette entries.
        (
            u16_at(18)? as i16 as i64,
            u16_at(20)? as i16 as i64,
            u16_at(24)?,
            0,
            0,
            3,
        )
    } else {
        return Err(format!("unsupported BMP header of {header} bytes"));
    };
    let top_down = height < 0;
    let (w, h) = (width, height.unsigned_abs() as i64);
    if w <= 0 {
        return Err(format!("invalid BMP width {w}"));
    }
    check_size(w as u64, h as u64)?;
    const BI_RGB: u32 = 0;
    const BI_BITFIELDS: u32 = 3;
    let rgb565 = match (compression, bpp) {
        (BI_RGB, 1 | 4 | 8 | 16 | 24 | 32) => false,
        (BI_BITFIELDS, 16) => {
            // The masks follow a 40-byte header (or are part of a longer one).
            let masks = [u32_at(14 + 40)?, u32_at(14 + 44)?, u32_at(14 + 48)?];
            masks == [0xF800, 0x07E0, 0x001F]
        }
        (BI_BITFIELDS, 32) => false,
        (1 | 2, _) => return Err("run-length compressed BMP is not supported".into()),
        (c, b) => return Err(format!("unsupported BMP: {b} bits, compression {c}")),
    };
    let (w, h) = (w as usize, h as usize);
    // Palette: zero-filled 256 entries, the file's (or 2^bpp) first.
    let mut palette = [[0u8; 3]; 256];
    if bpp <= 8 {
        let n = if colors == 0 || colors > 256 {
            1 << bpp
        } else {
            colors
        };
        let start = 14 + header;
        for (i, p) in palette.iter_mut().take(n).enumerate() {
            let o = start + i * palette_entry;
            let e = bytes.get(o..o + 3).ok_or_else(truncated)?;
            *p = [e[0], e[1], e[2]];
        }
    }
    let stride = (w * bpp as usize).div_ceil(32) * 4;
    let end = stride
        .checked_mul(h)
        .and_then(|n| n.checked_add(offset))
        .ok_or_else(truncated)?;
    if bytes.len() < end {
        return Err(truncated());
    }
    let mut data = vec![0u8; w * h * 3];
    for y in 0..h {
        let src_row = if top_down { y } else { h - 1 - y };
        let row = &bytes[offset + src_row * stride..][..stride];
        let out = &mut data[y * w * 3..][..w * 3];
        for (x, d) in out.chunks_exact_mut(3).enumerate() {
            let px: [u8; 3] = match bpp {
                1 => palette[((row[x / 8] >> (7 - x % 8)) & 1) as usize],
                4 => palette[((row[x / 2] >> if x % 2 == 0 { 4 } else { 0 }) & 15) as usize],
                8 => palette[row[x] as usize],
                16 => {
                    let v = u16::from_le_bytes([row[2 * x], row[2 * x + 1]]) as u32;
                    if rgb565 {
                        [
                            ((v << 3) & 0xf8) as u8,
                            ((v >> 3) & 0xfc) as u8,
                            ((v >> 8) & 0xf8) as u8,
                        ]
                    } else {
                        [
                            ((v << 3) & 0xf8) as u8,
                            ((v >> 2) & 0xf8) as u8,
                            ((v >> 7) & 0xf8) as u8,
                        ]
                    }
                }
                24 => [row[3 * x], row[3 * x + 1], row[3 * x + 2]],
                _ => [row[4 * x], row[4 * x + 1], row[4 * x + 2]],
            };
            d.copy_from_slice(&px);
        }
    }
    Ok(Decoded {
        height: h,
        width: w,
        data,
    })
}

/// TIFF (uncompressed, LZW, Deflate, PackBits; gray, RGB, RGBA, 8 or 16
/// bits) as OpenCV's `TiffDecoder` gives it to IMREAD_COLOR: 16-bit samples
/// rounded to 8 bits (`round(v / 257)`; gray keeps its high byte: both
/// checked against cv2), alpha dropped
/// (8-bit RGB with unassociated alpha premultiplied first, as libtiff's RGBA
/// reader does), gray replicated, orientations 1-4 applied. OpenCV 5.0.0 fails on
/// orientations 5-8 (an internal assertion in imread), so do we.
fn tiff_decode(bytes: &[u8]) -> Result<(Decoded, u16), String> {
    use tiff::decoder::{Decoder, DecodingResult, Limits};
    use tiff::tags::Tag;
    use tiff::ColorType;
    let e = |e: tiff::TiffError| e.to_string();
    let mut limits = Limits::default();
    limits.decoding_buffer_size = (MAX_PIXELS * 8) as usize;
    let mut dec = Decoder::new(Cursor::new(bytes))
        .map_err(e)?
        .with_limits(limits);
    let (w, h) = dec.dimensions().map_err(e)?;
    check_size(w as u64, h as u64)?;
    let orientation: u16 = dec
        .find_tag_unsigned(Tag::Orientation)
        .ok()
        .flatten()
        .unwrap_or(1);
    if (5..=8).contains(&orientation) {
        return Err(format!(
            "TIFF orientation {orientation} is not supported (OpenCV cannot read it either)"
        ));
    }
    let channels = match dec.colortype().map_err(e)? {
        ColorType::Gray(8 | 16) => 1,
        // Gray + alpha (PIL's "LA" files lack the ExtraSamples tag).
        ColorType::GrayA(8)
        | ColorType::Multiband {
            bit_depth: 8,
            num_samples: 2,
        } => 2,
        ColorType::RGB(8 | 16) => 3,
        ColorType::RGBA(8 | 16) => 4,
        other => return Err(format!("unsupported TIFF layout {other:?}")),
    };
    // Unassociated alpha (ExtraSamples = 2) on 8-bit RGBA: OpenCV reads
    // those through libtiff's RGBA interface, which premultiplies
    // (tif_getimage.c `BuildMapUaToAa`: (v * a + 127) / 255).
    let premultiply = matches!(dec.colortype(), Ok(ColorType::RGBA(8)))
        && dec
            .find_tag_unsigned_vec::<u16>(Tag::ExtraSamples)
            .ok()
            .flatten()
            .is_some_and(|v| v.first() == Some(&2));
    let (w, h) = (w as usize, h as usize);
    let mut samples: Vec<u8> = match dec.read_image().map_err(e)? {
        DecodingResult::U8(v) => v,
        // OpenCV rounds 16-bit colour to 8 bits (v * 255 / 65535, rounded)
        // but keeps the high byte of 16-bit gray (both checked against cv2).
        DecodingResult::U16(v) if channels == 1 => v.iter().map(|&s| (s >> 8) as u8).collect(),
        DecodingResult::U16(v) => v
            .iter()
            .map(|&s| ((s as u32 * 255 + 32767) / 65535) as u8)
            .collect(),
        _ => return Err("unsupported TIFF sample format".into()),
    };
    if samples.len() != w * h * channels {
        return Err("unexpected TIFF image size".into());
    }
    if premultiply {
        for px in samples.chunks_exact_mut(4) {
            let a = px[3] as u32;
            for v in &mut px[..3] {
                *v = ((*v as u32 * a + 127) / 255) as u8;
            }
        }
    }
    let mut data = vec![0u8; w * h * 3];
    for (s, d) in samples.chunks_exact(channels).zip(data.chunks_exact_mut(3)) {
        if channels >= 3 {
            d.copy_from_slice(&[s[2], s[1], s[0]]);
        } else {
            d.fill(s[0]);
        }
    }
    Ok((Decoded::new(h, w, data), orientation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientations_follow_opencv() {
        // 2x3 image, pixel value = its index.
        let img = || Decoded {
            height: 2,
            width: 3,
            data: (0..6u8).flat_map(|v| [v, v, v]).collect(),
        };
        let px = |d: &Decoded| d.data.chunks(3).map(|p| p[0]).collect::<Vec<_>>();
        // 0 1 2 / 3 4 5
        assert_eq!(px(&orient(img(), 1)), [0, 1, 2, 3, 4, 5]);
        assert_eq!(px(&orient(img(), 2)), [2, 1, 0, 5, 4, 3]);
        assert_eq!(px(&orient(img(), 3)), [5, 4, 3, 2, 1, 0]);
        assert_eq!(px(&orient(img(), 4)), [3, 4, 5, 0, 1, 2]);
        let t = orient(img(), 5);
        assert_eq!((t.height, t.width), (3, 2));
        assert_eq!(px(&t), [0, 3, 1, 4, 2, 5]);
        assert_eq!(px(&orient(img(), 6)), [3, 0, 4, 1, 5, 2]); // clockwise
        assert_eq!(px(&orient(img(), 7)), [5, 2, 4, 1, 3, 0]);
        assert_eq!(px(&orient(img(), 8)), [2, 5, 1, 4, 0, 3]); // anticlockwise
        assert_eq!(px(&orient(img(), 9)), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn exif_orientation_reads_both_byte_orders() {
        let le = b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0";
        assert_eq!(exif_orientation(le), Some(6));
        let be = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x03\0\0";
        assert_eq!(exif_orientation(be), Some(3));
        assert_eq!(exif_orientation(b"II*\0\xff\xff\xff\x7f"), None);
        assert_eq!(exif_orientation(b""), None);
    }

    #[test]
    fn absurd_sizes_are_refused_before_allocating() {
        assert!(check_size(1 << 16, 1 << 16).unwrap_err().contains("2^28"));
        assert!(check_size(u64::MAX, u64::MAX).is_err());
        assert!(check_size(0, 5).is_err());
        assert!(check_size(16384, 16384).is_ok());
    }
}
