//! NumPy `.npy` files: read memory-mapped, written atomically.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{format_err, DataError, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

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

fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    Some(rest)
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
            u16::from_le_bytes(
                bytes
                    .get(8..10)
                    .ok_or_else(|| bad("truncated header"))?
                    .try_into()
                    .unwrap(),
            ) as usize,
            10,
        ),
        2 | 3 => (
            u32::from_le_bytes(
                bytes
                    .get(8..12)
                    .ok_or_else(|| bad("truncated header"))?
                    .try_into()
                    .unwrap(),
            ) as usize,
            12,
        ),
        v => return Err(bad(&format!("unknown format version {v}"))),
    };
    let text = bytes
        .get(start..start + len)
        .ok_or_else(|| bad("truncated header"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad("header is not text"))?;
    let descr = field(text, "descr").ok_or_else(|| bad("no 'descr' in the header"))?;
    let descr = descr
        .trim_start_matches(['\'', '"'])
        .split(['\'', '"'])
        .next()
        .unwrap_or("");
    let dtype = match descr {
        "<f4" | "=f4" => Dtype::F32,
        "<f8" | "=f8" => Dtype::F64,
        other => {
            return Err(format_err(
                path,
                format!(
                "holds {other} values; sgraf reads little-endian float32 (<f4) or float64 (<f8)"
            ),
            ))
        }
    };
    let fortran =
        field(text, "fortran_order").ok_or_else(|| bad("no 'fortran_order' in the header"))?;
    if fortran.starts_with("True") {
        return Err(format_err(
            path,
            "is stored in Fortran (column-major) order; save it with numpy.ascontiguousarray(x) first",
        ));
    }
    let shape = field(text, "shape").ok_or_else(|| bad("no 'shape' in the header"))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("malformed shape"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("malformed shape")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Header {
        dtype,
        shape,
        data_offset: start + len,
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

impl Npy {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|err| DataError::Io {
            path: path.to_path_buf(),
            err,
        })?;
        // SAFETY: read-only mapping; like any reader we assume the file is
        // not truncated by someone else while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(|err| DataError::Io {
            path: path.to_path_buf(),
            err,
        })?;
        let header = parse_header(&map, path)?;
        let numel: usize = header.shape.iter().product();
        let need = header.data_offset + numel * header.dtype.size();
        if map.len() < need {
            return Err(format_err(
                path,
                format!(
                    "is truncated: shape {:?} needs {need} bytes, the file has {}",
                    header.shape,
                    map.len()
                ),
            ));
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
        self.header.shape.iter().skip(1).product()
    }

    /// Rows `start..start+n` of the first axis as f32.
    pub fn rows(&self, start: usize, n: usize) -> Result<Vec<f32>> {
        let rows = self.header.shape.first().copied().unwrap_or(1);
        if start + n > rows {
            return Err(DataError::Invalid(format!(
                "{}: rows {start}..{} requested of {rows}",
                self.path.display(),
                start + n
            )));
        }
        let (row, size) = (self.row_len(), self.header.dtype.size());
        let from = self.header.data_offset + start * row * size;
        let bytes = &self.map[from..from + n * row * size];
        Ok(match self.header.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
        })
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
    let numel: usize = header.shape.iter().product();
    let need = header.data_offset + numel * header.dtype.size();
    let data = bytes
        .get(header.data_offset..need)
        .ok_or_else(|| format_err(path, format!("is truncated: shape {:?}", header.shape)))?;
    let values = match header.dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
    };
    Ok((header.shape, values))
}

/// A float32 `.npy` file's bytes (format 1.0, C order).
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape and data disagree"
    );
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Data aligned to 64 bytes, header ending with a newline.
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a float32 `.npy` atomically.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    crate::write_atomic(path, &encode_f32(shape, data))
}
