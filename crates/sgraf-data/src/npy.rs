//! NumPy `.npy` files: read memory-mapped, written atomically.
//!
//! Every header is validated before any data is touched: the header length
//! is bounded, the header dictionary is parsed strictly, and every size is
//! computed with checked arithmetic (as the safetensors crate does), so a
//! hostile or damaged file gets one error naming what was expected and what
//! was found, never a panic or a read past the data.
#![allow(unsafe_code, reason = "memory-maps .npy files read-only")]

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{format_err, DataError, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The longest header accepted. numpy writes a few hundred bytes for the
/// arrays sgraf reads (and refuses headers over 10 000 bytes by default);
/// a longer one is damage or an attack, and is refused before it is read.
pub const MAX_HEADER_LEN: usize = 65_536;

/// The most dimensions accepted (numpy's own limit is 64).
pub const MAX_DIMS: usize = 64;

/// Element types we read; everything is handed out as f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

/// Header of a `.npy`: element type, shape and where the data starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data_offset: usize,
}

impl Header {
    /// Elements of the array, or `None` when the count overflows `usize`.
    pub fn numel(&self) -> Option<usize> {
        self.shape
            .iter()
            .copied()
            .try_fold(1usize, usize::checked_mul)
    }

    /// Bytes of data after the header, or `None` on overflow.
    pub fn data_len(&self) -> Option<usize> {
        self.numel()?.checked_mul(self.dtype.size())
    }

    /// Offset one past the last data byte, or `None` on overflow.
    pub fn data_end(&self) -> Option<usize> {
        self.data_offset.checked_add(self.data_len()?)
    }
}

/// `(2, 3, 4)`, as numpy prints a shape.
fn show_shape(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Checks that no product of the dimensions of `shape` (zeros counted as
/// one, so that every partial product is bounded too), times the element
/// size, overflows `usize`; returns the data length in bytes.
fn checked_data_len(shape: &[usize], dtype: Dtype) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))?
        .checked_mul(dtype.size())?;
    shape
        .iter()
        .copied()
        .try_fold(1usize, usize::checked_mul)?
        .checked_mul(dtype.size())
}

/// A value of the header dictionary (a Python literal).
#[derive(Debug, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    Int(String),
    Tuple(Vec<Value>),
    /// A list, `None` or anything else numpy does not write for a plain array.
    Other(String),
}

/// A strict parser for the Python dictionary literal of a `.npy` header.
struct Literal<'a> {
    text: &'a [u8],
    at: usize,
    depth: usize,
}

impl<'a> Literal<'a> {
    fn skip_ws(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = self.text[self.at];
        self.at += 1;
        let start = self.at;
        while self.at < self.text.len() && self.text[self.at] != quote {
            if self.text[self.at] == b'\\' {
                return Err("escape sequences in a header string".into());
            }
            self.at += 1;
        }
        if self.at >= self.text.len() {
            return Err("an unterminated string".into());
        }
        let s = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
        self.at += 1;
        Ok(s)
    }

    fn word(&mut self) -> String {
        let start = self.at;
        while self.at < self.text.len()
            && (self.text[self.at].is_ascii_alphanumeric() || b"_+-.".contains(&self.text[self.at]))
        {
            self.at += 1;
        }
        String::from_utf8_lossy(&self.text[start..self.at]).into_owned()
    }

    /// `(a, b, ...)` or `[a, b, ...]` after its opening bracket.
    fn sequence(&mut self, close: u8) -> std::result::Result<Vec<Value>, String> {
        self.depth += 1;
        if self.depth > 8 {
            return Err("brackets nested too deeply".into());
        }
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                break;
            }
            items.push(self.value()?);
            if self.eat(close) {
                break;
            }
            if !self.eat(b',') {
                return Err(format!("a missing ',' or '{}'", close as char));
            }
        }
        self.depth -= 1;
        Ok(items)
    }

    fn value(&mut self) -> std::result::Result<Value, String> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Value::Str(self.string()?)),
            Some(b'(') => {
                self.at += 1;
                Ok(Value::Tuple(self.sequence(b')')?))
            }
            Some(b'[') => {
                let start = self.at;
                self.at += 1;
                self.sequence(b']')?;
                Ok(Value::Other(
                    String::from_utf8_lossy(&self.text[start..self.at]).into_owned(),
                ))
            }
            Some(c) if c.is_ascii_alphanumeric() || c == b'-' || c == b'+' => {
                let w = self.word();
                Ok(match w.as_str() {
                    "True" => Value::Bool(true),
                    "False" => Value::Bool(false),
                    _ if w
                        .bytes()
                        .next()
                        .is_some_and(|c| c.is_ascii_digit() || c == b'-' || c == b'+') =>
                    {
                        Value::Int(w)
                    }
                    _ => Value::Other(w),
                })
            }
            Some(c) => Err(format!("an unexpected character {:?}", c as char)),
            None => Err("an unexpected end".into()),
        }
    }

    /// The whole header: one dictionary with string keys, then only
    /// whitespace.
    fn dict(mut self) -> std::result::Result<Vec<(String, Value)>, String> {
        if !self.eat(b'{') {
            return Err("no '{' at its start".into());
        }
        let mut items = Vec::new();
        loop {
            if self.eat(b'}') {
                break;
            }
            let key = match self.peek() {
                Some(b'\'' | b'"') => self.string()?,
                _ => return Err("a key that is not a string".into()),
            };
            if !self.eat(b':') {
                return Err(format!("no ':' after the key '{key}'"));
            }
            let value = self.value()?;
            if items.iter().any(|(k, _)| k == &key) {
                return Err(format!("the key '{key}' twice"));
            }
            items.push((key, value));
            if self.eat(b'}') {
                break;
            }
            if !self.eat(b',') {
                return Err("a missing ',' or '}'".into());
            }
        }
        self.skip_ws();
        if self.at != self.text.len() {
            return Err("text after the dictionary".into());
        }
        Ok(items)
    }
}

/// What a descr names, for messages.
fn describe_descr(descr: &str) -> String {
    let (order, kind) = match descr.as_bytes().first() {
        Some(b'<') => ("little-endian ", &descr[1..]),
        Some(b'>') => ("big-endian ", &descr[1..]),
        Some(b'=') => ("native-order ", &descr[1..]),
        Some(b'|') => ("", &descr[1..]),
        _ => ("", descr),
    };
    let name = match kind {
        "f2" => "float16",
        "f4" => "float32",
        "f8" => "float64",
        "f16" => "float128",
        "i1" => "int8",
        "i2" => "int16",
        "i4" => "int32",
        "i8" => "int64",
        "u1" => "uint8",
        "u2" => "uint16",
        "u4" => "uint32",
        "u8" => "uint64",
        "b1" => "bool",
        "c8" => "complex64",
        "c16" => "complex128",
        _ if kind.starts_with('O') => "Python object",
        _ if kind.starts_with('U') || kind.starts_with('S') => "string",
        _ => return format!("'{descr}'"),
    };
    format!("{order}{name} ('{descr}')")
}

/// Parses the header at the start of `bytes`.
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    let bad = |msg: &str| format_err(path, format!("not a readable .npy file: {msg}"));
    if !bytes.starts_with(MAGIC) {
        return Err(bad("it does not start with the NumPy magic string"));
    }
    let major = *bytes.get(6).ok_or_else(|| bad("truncated header"))?;
    let (len, start) = match major {
        1 => (
            bytes
                .get(8..10)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                .ok_or_else(|| bad("truncated header"))?,
            10,
        ),
        2 | 3 => (
            bytes
                .get(8..12)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| bad("truncated header"))?,
            12,
        ),
        v => {
            return Err(bad(&format!(
                "unknown format version {v} (expected 1, 2 or 3)"
            )))
        }
    };
    if len > MAX_HEADER_LEN {
        return Err(bad(&format!(
            "the header length is {len} bytes, over the limit of {MAX_HEADER_LEN}"
        )));
    }
    let end = start + len; // both bounded: no overflow
    let text = bytes.get(start..end).ok_or_else(|| {
        bad(&format!(
            "truncated header (it declares {len} bytes, the file has {} after the preamble)",
            bytes.len().saturating_sub(start)
        ))
    })?;
    let text = match major {
        // Format 3 allows UTF-8; 1 and 2 are Latin-1, and ASCII in practice.
        3 => std::str::from_utf8(text).map_err(|_| bad("header is not UTF-8 text"))?,
        _ => std::str::from_utf8(text)
            .ok()
            .filter(|t| t.is_ascii())
            .ok_or_else(|| bad("header is not ASCII text"))?,
    };
    let items = Literal {
        text: text.as_bytes(),
        at: 0,
        depth: 0,
    }
    .dict()
    .map_err(|e| {
        bad(&format!(
            "the header is not a Python dictionary literal: {e}"
        ))
    })?;
    let get = |key: &str| {
        items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| bad(&format!("no '{key}' in the header")))
    };
    if let Some((k, _)) = items
        .iter()
        .find(|(k, _)| !["descr", "fortran_order", "shape"].contains(&k.as_str()))
    {
        return Err(bad(&format!(
            "unexpected key '{k}' in the header (expected 'descr', 'fortran_order' and 'shape')"
        )));
    }
    let dtype = match get("descr")? {
        Value::Str(d) => match d.as_str() {
            "<f4" | "=f4" if cfg!(target_endian = "little") || d.starts_with('<') => Dtype::F32,
            "<f8" | "=f8" if cfg!(target_endian = "little") || d.starts_with('<') => Dtype::F64,
            other => {
                let hint = if other.starts_with('>') {
                    ": convert it with x.astype('<f4')"
                } else {
                    ": save it with x.astype(numpy.float32)"
                };
                return Err(format_err(
                    path,
                    format!(
                        "holds {} values; sgraf reads little-endian float32 ('<f4') or float64 ('<f8'){hint}",
                        describe_descr(other)
                    ),
                ));
            }
        },
        other => {
            return Err(format_err(
                path,
                format!(
                    "holds a structured or unsupported dtype ({}); sgraf reads little-endian float32 ('<f4') or float64 ('<f8')",
                    match other {
                        Value::Other(s) | Value::Int(s) => s.clone(),
                        v => format!("{v:?}"),
                    }
                ),
            ))
        }
    };
    match get("fortran_order")? {
        Value::Bool(false) => {}
        Value::Bool(true) => {
            return Err(format_err(
                path,
                "is stored in Fortran (column-major) order; save it with numpy.ascontiguousarray(x) first",
            ))
        }
        other => {
            return Err(bad(&format!(
                "'fortran_order' is {other:?}, expected True or False"
            )))
        }
    }
    let dims = match get("shape")? {
        Value::Tuple(dims) => dims,
        other => {
            return Err(bad(&format!(
                "'shape' is {other:?}, expected a tuple of integers"
            )))
        }
    };
    if dims.len() > MAX_DIMS {
        return Err(bad(&format!(
            "the shape has {} dimensions, more than {MAX_DIMS}",
            dims.len()
        )));
    }
    let shape = dims
        .iter()
        .map(|d| match d {
            Value::Int(s) => {
                // Python 2 wrote long integers with an `L`.
                let digits = s.strip_suffix('L').unwrap_or(s);
                if !digits.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(bad(&format!(
                        "the shape holds {s}, expected non-negative integers"
                    )));
                }
                digits.parse::<usize>().map_err(|_| {
                    bad(&format!(
                        "the dimension {s} of the shape does not fit this machine's sizes"
                    ))
                })
            }
            other => Err(bad(&format!(
                "the shape holds {other:?}, expected non-negative integers"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    if checked_data_len(&shape, dtype)
        .and_then(|n| n.checked_add(end))
        .is_none()
    {
        return Err(format_err(
            path,
            format!(
                "has an impossible shape {}: its size in bytes overflows this machine's {}-bit sizes (a damaged or hostile header)",
                show_shape(&shape),
                usize::BITS
            ),
        ));
    }
    Ok(Header {
        dtype,
        shape,
        data_offset: end,
    })
}

/// A memory-mapped `.npy` array: rows are copied out on demand, so arrays
/// larger than memory (COCO's features) can be read piecewise.
pub struct Npy {
    path: PathBuf,
    header: Header,
    map: Mmap,
}

impl std::fmt::Debug for Npy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Npy({}, {:?})", self.path.display(), self.header)
    }
}

/// Opens `path` for reading if it is a regular file: a FIFO would block
/// the open and a device (`/dev/zero`) never ends.
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File> {
    let io = |err| DataError::Io {
        path: path.to_path_buf(),
        err,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(format_err(
            path,
            if meta.is_dir() {
                "is a folder, not a file"
            } else {
                "is not a regular file (a pipe, socket or device)"
            },
        ));
    }
    std::fs::File::open(path).map_err(io)
}

/// `bytes` (little-endian) as f32.
fn decode(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
    }
}

fn truncated(path: &Path, header: &Header, need: usize, have: usize) -> DataError {
    format_err(
        path,
        format!(
            "is truncated: shape {} of {} needs {need} bytes, the file has {have}",
            show_shape(&header.shape),
            match header.dtype {
                Dtype::F32 => "float32",
                Dtype::F64 => "float64",
            }
        ),
    )
}

impl Npy {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = open_regular(path)?;
        // SAFETY: read-only mapping; like any reader we assume the file is
        // not truncated by someone else while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(|err| DataError::Io {
            path: path.to_path_buf(),
            err,
        })?;
        let header = parse_header(&map, path)?;
        // parse_header checked that this does not overflow.
        let need = header
            .data_end()
            .ok_or_else(|| format_err(path, "has a shape whose size overflows"))?;
        if map.len() < need {
            return Err(truncated(path, &header, need, map.len()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            map,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn shape(&self) -> &[usize] {
        &self.header.shape
    }

    /// Elements per index of the first axis.
    pub fn row_len(&self) -> usize {
        // Bounded: `parse_header` checked every partial product.
        self.header.shape.iter().skip(1).product()
    }

    /// Rows `start..start+n` of the first axis as f32.
    pub fn rows(&self, start: usize, n: usize) -> Result<Vec<f32>> {
        let rows = self.header.shape.first().copied().unwrap_or(1);
        let end = start.checked_add(n).filter(|&e| e <= rows);
        let Some(end) = end else {
            return Err(DataError::Invalid(format!(
                "{}: rows {start}..{} requested of {rows}",
                self.path.display(),
                start as u128 + n as u128
            )));
        };
        // In bounds of the data that `open` checked is mapped: no overflow.
        let row_bytes = self.row_len() * self.header.dtype.size();
        let from = self.header.data_offset + start * row_bytes;
        let to = self.header.data_offset + end * row_bytes;
        let bytes = self
            .map
            .get(from..to)
            .ok_or_else(|| truncated(&self.path, &self.header, to, self.map.len()))?;
        Ok(decode(self.header.dtype, bytes))
    }

    /// The whole array as f32.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let rows = self.header.shape.first().copied().unwrap_or(1);
        if self.header.shape.is_empty() {
            return self.rows(0, 1);
        }
        self.rows(0, rows)
    }
}

/// Reads a `.npy` held in memory (an `.npz` member) as f32.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let header = parse_header(bytes, path)?;
    let need = header
        .data_end()
        .ok_or_else(|| format_err(path, "has a shape whose size overflows"))?;
    let data = bytes
        .get(header.data_offset..need)
        .ok_or_else(|| truncated(path, &header, need, bytes.len()))?;
    Ok((header.shape, decode(header.dtype, data)))
}

/// The header of a float32 `.npy` file (format 1.0, C order) of `shape`:
/// the data that follows starts 64-byte aligned.
pub fn header_f32(shape: &[usize]) -> Vec<u8> {
    let dims = show_shape(shape);
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Data aligned to 64 bytes, header ending with a newline.
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// A float32 `.npy` file's bytes (format 1.0, C order).
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    assert_eq!(
        shape.iter().copied().try_fold(1usize, usize::checked_mul),
        Some(data.len()),
        "shape and data disagree"
    );
    let mut out = header_f32(shape);
    out.reserve(data.len() * 4);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A float32 `.npy` file written a block of values at a time, for arrays
/// larger than memory: [`F32Writer::finish`] checks that exactly the
/// shape's values were written.
pub struct F32Writer {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    /// Values the shape holds, and values written so far.
    expected: usize,
    written: usize,
    bytes: Vec<u8>,
}

impl F32Writer {
    /// Creates (or truncates) `path` and writes the header of `shape`.
    pub fn create(path: &Path, shape: &[usize]) -> Result<Self> {
        let expected = checked_data_len(shape, Dtype::F32)
            .map(|bytes| bytes / 4)
            .ok_or_else(|| format_err(path, format!("shape {shape:?} overflows")))?;
        let io = |err| DataError::Io {
            path: path.to_path_buf(),
            err,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        std::io::Write::write_all(&mut out, &header_f32(shape)).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            expected,
            written: 0,
            bytes: Vec::new(),
        })
    }

    /// Appends `values` (row-major, continuing where the last call ended).
    pub fn write(&mut self, values: &[f32]) -> Result<()> {
        let total = self.written.checked_add(values.len());
        if total.is_none_or(|t| t > self.expected) {
            return Err(format_err(
                &self.path,
                format!(
                    "{} more values past the {} written, for an array of {}",
                    values.len(),
                    self.written,
                    self.expected
                ),
            ));
        }
        self.bytes.clear();
        for v in values {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::io::Write::write_all(&mut self.out, &self.bytes).map_err(|err| DataError::Io {
            path: self.path.clone(),
            err,
        })?;
        self.written += values.len();
        Ok(())
    }

    /// Flushes the file; refused when fewer values than the shape's were
    /// written.
    pub fn finish(self) -> Result<()> {
        if self.written != self.expected {
            return Err(format_err(
                &self.path,
                format!(
                    "{} values written for an array of {}",
                    self.written, self.expected
                ),
            ));
        }
        let path = self.path;
        self.out.into_inner().map_err(|e| DataError::Io {
            path,
            err: e.into_error(),
        })?;
        Ok(())
    }
}

/// Writes a float32 `.npy` atomically.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    crate::write_atomic(path, &encode_f32(shape, data))
}
