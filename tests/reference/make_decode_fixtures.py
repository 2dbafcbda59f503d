"""Write the photo-decoding fixtures (tests/fixtures/decode/) that tests/decode.rs
compares `BgrImage::open` against, pixel for pixel.

    python3 tests/reference/make_decode_fixtures.py

Needs numpy, pillow, safetensors and opencv-python-headless (the port reads
photos with `cv2.imread(path, cv2.IMREAD_COLOR)`; the fixtures were written
with opencv-python-headless 5.0.0, whose JPEG decoder is libjpeg-turbo 3.1.2).
The test suite never runs this.

Output:
    *.jpg *.png *.bmp *.tiff *.webp   one small photo per layout (names below)
    expected.safetensors              cv2.imread(file, IMREAD_COLOR) of each,
                                      uint8 [h, w, 3] BGR, keyed by file name
                                      (and hostile/garbled.jpg, which cv2 reads)
    refused.gif                       a GIF (refused by sgraf, see tests/decode.rs)
    extract.jpg, extract_cv2.png      a detector-sized JPEG and the PNG of its
                                      cv2.imread pixels: same regions expected
    hostile/*                         truncated, garbled and absurdly large files
"""

import io
import os
import struct
import zlib

import cv2
import numpy as np
from PIL import Image
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "decode")


def photo(h, w, seed=0):
    """Smooth colour waves plus texture (noise, a few sharp-edged squares):
    chroma that changes within a block exercises the upsampling."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    im = np.zeros((h, w, 3))
    for ch in range(3):
        fx, fy = rng.uniform(0.05, 0.25, 2)
        im[..., ch] = 128 + 100 * np.sin(fx * x + fy * y + rng.uniform(0, 6))
    for _ in range(4):
        x0, y0 = rng.integers(0, w - 6), rng.integers(0, h - 6)
        im[y0:y0 + rng.integers(3, 12), x0:x0 + rng.integers(3, 12)] = rng.uniform(0, 255, 3)
    im += rng.normal(0, 12, im.shape)
    return np.clip(im, 0, 255).round().astype(np.uint8)  # RGB


def exif(orientation):
    e = Image.Exif()
    e[0x0112] = orientation
    e[0x010F] = "sgraf"  # Make: a second entry before/after the orientation
    return e.tobytes()


def bmp(path, w, h, bpp, rows_bgr_bytes, compression=0, masks=None, palette=None, top_down=False):
    """A hand-made BMP (BITMAPINFOHEADER) for layouts PIL does not write."""
    stride = (w * bpp + 31) // 32 * 4
    pixels = b"".join(r.ljust(stride, b"\0") for r in (rows_bgr_bytes if top_down else rows_bgr_bytes[::-1]))
    extra = b"".join(struct.pack("<I", m) for m in masks) if masks else b""
    pal = b"".join(bytes([b, g, r, 0]) for r, g, b in palette) if palette is not None else b""
    off = 14 + 40 + len(extra) + len(pal)
    hdr = struct.pack("<2sIHHI", b"BM", off + len(pixels), 0, 0, off)
    info = struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, bpp, compression,
                       len(pixels), 2835, 2835, len(palette) if palette is not None else 0, 0)
    with open(path, "wb") as f:
        f.write(hdr + info + extra + pal + pixels)


def main():
    os.makedirs(os.path.join(OUT, "hostile"), exist_ok=True)
    expected = {}
    rgb = photo(48, 64)
    odd = photo(47, 63, seed=1)
    im, im_odd = Image.fromarray(rgb), Image.fromarray(odd)

    def add(name, write):
        path = os.path.join(OUT, name)
        write(path)
        got = cv2.imread(path, cv2.IMREAD_COLOR)
        assert got is not None and got.dtype == np.uint8 and got.ndim == 3, name
        expected[name] = np.ascontiguousarray(got)

    # JPEG: every chroma layout, even and odd sizes (edge upsampling).
    sf = {"444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
          "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "440": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440,
          "411": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411}
    for tag, src in (("", rgb), ("_odd", odd)):
        for s, v in sf.items():
            add(f"jpeg_{s}{tag}.jpg", lambda p, src=src, v=v: cv2.imwrite(
                p, src[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, v]))
        add(f"jpeg_progressive{tag}.jpg", lambda p, src=src: Image.fromarray(src).save(
            p, quality=80, subsampling=2, progressive=True))
        add(f"jpeg_restart{tag}.jpg", lambda p, src=src: cv2.imwrite(
            p, src[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_RST_INTERVAL, 2]))
        add(f"jpeg_gray{tag}.jpg", lambda p, src=src: Image.fromarray(src).convert("L").save(p, quality=90))
        # PIL writes Adobe CMYK (inverted) with an APP14 marker.
        add(f"jpeg_cmyk{tag}.jpg", lambda p, src=src: Image.fromarray(src).convert("CMYK").save(p, quality=90))
    add("jpeg_progressive_444.jpg", lambda p: im.save(p, quality=95, subsampling=0, progressive=True))
    add("jpeg_q100_444.jpg", lambda p: im.save(p, quality=100, subsampling=0))
    for o in range(1, 9):
        add(f"jpeg_exif{o}.jpg", lambda p, o=o: im_odd.save(p, quality=90, subsampling=2, exif=exif(o)))
    # An EXIF block in the second APP1 only (OpenCV reads the first APP1: no turn).
    def xmp_first(p):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90, exif=exif(6))
        data = buf.getvalue()
        xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta/>"
        seg = b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp
        with open(p, "wb") as f:
            f.write(data[:2] + seg + data[2:])
    add("jpeg_exif6_after_xmp.jpg", xmp_first)

    # PNG
    add("png_rgb8.png", lambda p: im.save(p))
    add("png_rgb16.png", lambda p: cv2.imwrite(p, (rgb[..., ::-1].astype(np.uint16) * 257
                                                    + np.random.default_rng(2).integers(0, 257, rgb.shape)
                                                    .astype(np.uint16))))
    add("png_gray8.png", lambda p: im.convert("L").save(p))
    add("png_gray16.png", lambda p: cv2.imwrite(p, (np.asarray(im.convert("L")).astype(np.uint16) * 259)))
    add("png_gray1.png", lambda p: im.convert("1").save(p))
    add("png_gray4.png", lambda p: im.convert("L").save(p, bits=4))
    add("png_palette.png", lambda p: im.convert("P", palette=Image.ADAPTIVE, colors=200).save(p))
    add("png_palette_trns.png", lambda p: im.convert("P", palette=Image.ADAPTIVE, colors=16).save(
        p, transparency=3))
    alpha = np.random.default_rng(3).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    add("png_rgba8.png", lambda p: Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(p))
    add("png_rgba16.png", lambda p: cv2.imwrite(p, np.dstack([rgb[..., ::-1], alpha]).astype(np.uint16) * 257 + 3))
    add("png_graya.png", lambda p: Image.fromarray(np.dstack([np.asarray(im.convert("L")), alpha]), "LA").save(p))
    add("png_exif6.png", lambda p: im_odd.save(p, exif=exif(6)))
    add("png_interlaced.png", lambda p: cv2.imwrite(p, odd[..., ::-1]) and _interlace(p))

    # BMP: PIL's 24-bit, 8-bit palette and 1-bit; hand-made 32-bit, 16-bit
    # (5-5-5 and 5-6-5), 4-bit and top-down files.
    add("bmp_24.bmp", lambda p: im_odd.save(p))
    add("bmp_8.bmp", lambda p: im.convert("P", palette=Image.ADAPTIVE, colors=256).save(p))
    add("bmp_gray8.bmp", lambda p: im.convert("L").save(p))
    add("bmp_1.bmp", lambda p: im.convert("1").save(p))
    h, w = odd.shape[:2]
    bgr = odd[..., ::-1]
    add("bmp_32.bmp", lambda p: bmp(p, w, h, 32, [np.concatenate([r, alpha[:h, :w][i][:, None]], 1).tobytes()
                                                  for i, r in enumerate(bgr)]))
    add("bmp_24_topdown.bmp", lambda p: bmp(p, w, h, 24, [r.tobytes() for r in bgr], top_down=True))
    r5, g5, b5 = (odd[..., 0] >> 3).astype(np.uint16), (odd[..., 1] >> 3).astype(np.uint16), (odd[..., 2] >> 3).astype(np.uint16)
    add("bmp_16_555.bmp", lambda p: bmp(p, w, h, 16, [((r5 << 10) | (g5 << 5) | b5)[i].astype("<u2").tobytes()
                                                      for i in range(h)]))
    g6 = (odd[..., 1] >> 2).astype(np.uint16)
    add("bmp_16_565.bmp", lambda p: bmp(p, w, h, 16, [((r5 << 11) | (g6 << 5) | b5)[i].astype("<u2").tobytes()
                                                      for i in range(h)], compression=3,
                                        masks=[0xF800, 0x07E0, 0x001F]))
    pal16 = [tuple(int(v) for v in np.random.default_rng(5).integers(0, 256, 3)) for _ in range(16)]
    idx = np.random.default_rng(6).integers(0, 16, (h, w)).astype(np.uint8)
    add("bmp_4.bmp", lambda p: bmp(p, w, h, 4, [bytes(((np.pad(r, (0, 1))[0::2] << 4) | np.pad(r, (0, 1))[1::2])
                                                        .astype(np.uint8)[: (w + 1) // 2]) for r in idx],
                                   palette=pal16))

    # TIFF: PIL's uncompressed, LZW, Deflate and PackBits; OpenCV's own
    # (LZW + predictor), 16-bit, gray, RGBA; orientation 3 (OpenCV flips it).
    add("tiff_rgb.tiff", lambda p: im_odd.save(p))
    add("tiff_lzw.tiff", lambda p: im.save(p, compression="tiff_lzw"))
    add("tiff_deflate.tiff", lambda p: im.save(p, compression="tiff_adobe_deflate"))
    add("tiff_packbits.tiff", lambda p: im.save(p, compression="packbits"))
    add("tiff_cv2.tiff", lambda p: cv2.imwrite(p, odd[..., ::-1]))
    add("tiff_rgb16.tiff", lambda p: cv2.imwrite(p, rgb[..., ::-1].astype(np.uint16) * 257
                                                 + np.random.default_rng(4).integers(0, 257, rgb.shape).astype(np.uint16)))
    add("tiff_gray.tiff", lambda p: im.convert("L").save(p))
    # PIL marks alpha unassociated (cv2 premultiplies it); cv2 writes none.
    add("tiff_rgba.tiff", lambda p: Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(p))
    add("tiff_rgba_cv2.tiff", lambda p: cv2.imwrite(p, np.dstack([rgb[..., ::-1], alpha])))
    add("tiff_rgba16.tiff", lambda p: cv2.imwrite(p, np.dstack([rgb[..., ::-1], alpha]).astype(np.uint16) * 257 + 5))
    add("tiff_graya.tiff", lambda p: Image.fromarray(np.dstack([np.asarray(im.convert("L")), alpha]), "LA").save(p))
    add("tiff_gray16.tiff", lambda p: cv2.imwrite(p, np.asarray(im.convert("L")).astype(np.uint16) * 259))
    add("tiff_orient3.tiff", lambda p: im.save(p, tiffinfo={274: 3}))

    # WebP
    add("webp_lossless.webp", lambda p: im.save(p, lossless=True))
    add("webp_lossy.webp", lambda p: im.save(p, quality=75))
    add("webp_lossy_odd.webp", lambda p: im_odd.save(p, quality=60))
    add("webp_lossy_alpha.webp", lambda p: Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(p, quality=80))
    add("webp_lossless_alpha.webp", lambda p: Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(
        p, lossless=True, exact=True))
    add("webp_exif6.webp", lambda p: im_odd.save(p, quality=80, exif=exif(6)))

    save_file(expected, os.path.join(OUT, "expected.safetensors"))

    # A GIF: OpenCV 5 reads it, we refuse it (see tests/decode.rs).
    im.convert("P").save(os.path.join(OUT, "refused.gif"))

    # The detector input: a JPEG the size of the tiny detector's photos, and
    # the PNG of what cv2.imread makes of it.
    big = photo(96, 128, seed=7)
    jpg = os.path.join(OUT, "extract.jpg")
    Image.fromarray(big).save(jpg, quality=85, subsampling=2)
    cv2.imwrite(os.path.join(OUT, "extract_cv2.png"), cv2.imread(jpg, cv2.IMREAD_COLOR))

    # Hostile inputs: none may panic, all are errors.
    hostile = os.path.join(OUT, "hostile")
    data = open(os.path.join(OUT, "jpeg_420.jpg"), "rb").read()
    open(os.path.join(hostile, "header_only.jpg"), "wb").write(data[:200])
    garbled = bytearray(data)
    rng = np.random.default_rng(9)
    for i in rng.integers(len(data) // 3, len(data), 200):
        garbled[i] = int(rng.integers(0, 256))
    open(os.path.join(hostile, "garbled.jpg"), "wb").write(bytes(garbled))
    # libjpeg skips corrupt entropy-coded data with a warning and cv2.imread
    # returns what it made of it. Garbage coefficients overflow the IDCT's
    # range: libjpeg-turbo's SIMD IDCT (cv2's) and its C IDCT (ours) then
    # differ in those blocks only, so the test compares the rest.
    add("hostile/garbled.jpg", lambda p: None)
    save_file(expected, os.path.join(OUT, "expected.safetensors"))
    png = open(os.path.join(OUT, "png_rgb8.png"), "rb").read()
    open(os.path.join(hostile, "truncated.png"), "wb").write(png[: len(png) // 2])
    webp = open(os.path.join(OUT, "webp_lossy.webp"), "rb").read()
    open(os.path.join(hostile, "truncated.webp"), "wb").write(webp[: len(webp) // 2])
    tif = open(os.path.join(OUT, "tiff_lzw.tiff"), "rb").read()
    open(os.path.join(hostile, "truncated.tiff"), "wb").write(tif[: len(tif) // 2])
    b = open(os.path.join(OUT, "bmp_24.bmp"), "rb").read()
    open(os.path.join(hostile, "truncated.bmp"), "wb").write(b[: len(b) // 2])
    # 65000 x 65000 JPEG (a SOF0 with a huge size, then nothing).
    sof = data.index(b"\xff\xc0")
    huge = bytearray(data)
    huge[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    open(os.path.join(hostile, "huge.jpg"), "wb").write(bytes(huge))
    # 2^20 x 2^20 PNG: a valid IHDR, a tiny IDAT.
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 1 << 20, 1 << 20, 8, 2, 0, 0, 0)
    open(os.path.join(hostile, "huge.png"), "wb").write(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    # 100000 x 100000 24-bit BMP header, no pixels.
    bmp(os.path.join(hostile, "huge.bmp"), 1, 1, 24, [b"\0\0\0"])
    hb = bytearray(open(os.path.join(hostile, "huge.bmp"), "rb").read())
    hb[18:26] = struct.pack("<ii", 100000, 100000)
    open(os.path.join(hostile, "huge.bmp"), "wb").write(bytes(hb))
    open(os.path.join(hostile, "empty.jpg"), "wb").write(b"")
    open(os.path.join(hostile, "not_an_image.png"), "wb").write(b"hello, this is text\n" * 4)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"{len(expected)} layouts, {total / 1024:.0f} KiB in {OUT}")


def _interlace(path):
    """Re-save a PNG Adam7-interlaced (PIL cannot write interlaced PNGs)."""
    a = cv2.imread(path, cv2.IMREAD_UNCHANGED)[..., ::-1]
    h, w = a.shape[:2]
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = a[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        raw += b"".join(b"\0" + row.tobytes() for row in sub)
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return True


if __name__ == "__main__":
    main()
