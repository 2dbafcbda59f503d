//! The arguments of each kernel as its Rust definition declares them
//! ([`KERNELS`], one row per `#[cube(launch_unchecked)]` function of
//! `gpu::kernels`), checked against the generated entry point
//! ([`super::signature`]), and packed the way CubeCL's launcher packs them
//! for its own CUDA runtime (cubecl-core 0.11 `InfoBuilder`): the buffers'
//! device pointers in order, then `info_st` — the scalars grouped by type
//! in the order of `info_st`'s fields, each group in parameter order and
//! padded to 8 bytes, then every buffer's length in elements
//! (`static_meta`).

use super::signature::{elem_bytes, Signature};
use super::{CudaError, Grid};

/// A buffer's element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    U32,
}

impl Elem {
    /// The C++ type CubeCL writes for it.
    pub fn cpp(self) -> &'static str {
        match self {
            Elem::F32 => "float",
            Elem::U32 => "uint32_t",
        }
    }
}

/// A scalar parameter's kind: `usize` (an index, the kernel's address
/// type on the device) or `f32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarKind {
    Index,
    F32,
}

/// A scalar argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    Index(usize),
    F32(f32),
}

impl From<usize> for Scalar {
    fn from(i: usize) -> Self {
        Scalar::Index(i)
    }
}

impl From<f32> for Scalar {
    fn from(x: f32) -> Self {
        Scalar::F32(x)
    }
}

impl Scalar {
    pub fn kind(self) -> ScalarKind {
        match self {
            Scalar::Index(_) => ScalarKind::Index,
            Scalar::F32(_) => ScalarKind::F32,
        }
    }
}

/// One kernel's parameters as its Rust definition declares them.
#[derive(Clone, Copy, Debug)]
pub struct KernelSpec {
    pub name: &'static str,
    pub buffers: &'static [Elem],
    pub scalars: &'static [ScalarKind],
}

use Elem::{F32 as Bf, U32 as Bu};
use ScalarKind::{Index as I, F32 as S};

/// Every kernel of `gpu::kernels`, with the parameters of its definition
/// (buffers, then scalars). The test `specs_match_generated_signatures`
/// (tests/gpu_cuda.rs) checks each row against the generated source.
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        name: "matmul",
        buffers: &[Bf, Bf, Bf],
        scalars: &[I, I, I, I, I, I, I, I, I, I, I, I, I, I],
    },
    KernelSpec {
        name: "attention_norms",
        buffers: &[Bf, Bu, Bu, Bf],
        scalars: &[I, I, I],
    },
    KernelSpec {
        name: "attention_softmax",
        buffers: &[Bf, Bu, Bf],
        scalars: &[I, I, I, I],
    },
    KernelSpec {
        name: "context_diff",
        buffers: &[Bf, Bf],
        scalars: &[I, I, I, I],
    },
    KernelSpec {
        name: "global_diff",
        buffers: &[Bf, Bf, Bf],
        scalars: &[I, I, I, I],
    },
    KernelSpec {
        name: "bias_l2norm_rows",
        buffers: &[Bf, Bf, Bu, Bf],
        scalars: &[I, I],
    },
    KernelSpec {
        name: "graph_edges",
        buffers: &[Bf, Bf, Bf, Bu, Bu, Bu, Bf],
        scalars: &[I, I, I, I],
    },
    KernelSpec {
        name: "graph_softmax",
        buffers: &[Bf, Bu, Bu],
        scalars: &[I, I],
    },
    KernelSpec {
        name: "graph_combine",
        buffers: &[Bf, Bf, Bf, Bu, Bu, Bu, Bf],
        scalars: &[I, I, I],
    },
    KernelSpec {
        name: "sgr_score",
        buffers: &[Bf, Bu, Bf, Bf],
        scalars: &[I, I, I, S],
    },
    KernelSpec {
        name: "saf_gate",
        buffers: &[Bf, Bf, Bf],
        scalars: &[I, I, S, S, S],
    },
    KernelSpec {
        name: "saf_score",
        buffers: &[Bf, Bf, Bu, Bu, Bf, Bf],
        scalars: &[I, I, I, S],
    },
    KernelSpec {
        name: "gather_first_nodes",
        buffers: &[Bf, Bu, Bf],
        scalars: &[I, I],
    },
    KernelSpec {
        name: "sgr_last_pool",
        buffers: &[Bf, Bf, Bu, Bu, Bf],
        scalars: &[I, I, I],
    },
    KernelSpec {
        name: "sgr_last_score",
        buffers: &[Bf, Bf, Bf, Bf],
        scalars: &[I, I, I, S],
    },
];

/// The row of [`KERNELS`] named `name`.
pub fn spec(name: &str) -> Option<&'static KernelSpec> {
    KERNELS.iter().find(|k| k.name == name)
}

/// How one kernel's arguments are laid out on the device, from its spec
/// and its generated signature (checked against each other once, at load).
#[derive(Clone, Debug)]
pub struct ArgLayout {
    pub spec: &'static KernelSpec,
    /// The entry point's name in the generated source.
    pub entry: String,
    /// Units per cube the kernel was generated for.
    pub units: u32,
    /// `(byte offset, C++ type)` of each scalar in `info_st`, parameter order.
    scalar_at: Vec<(usize, &'static str)>,
    /// Byte offset and element bytes of `static_meta` (the buffers' lengths).
    meta_at: Option<(usize, usize)>,
    info_bytes: usize,
    /// `info_st` travels by value (`__grid_constant__`) rather than as a buffer.
    pub info_by_value: bool,
}

impl ArgLayout {
    /// Checks `sig` against `spec` and works out where each scalar goes.
    pub fn new(spec: &'static KernelSpec, sig: &Signature) -> Result<Self, CudaError> {
        let bad = |problem: String| CudaError::Signature {
            kernel: spec.name.into(),
            problem,
        };
        // CubeCL names the entry point `NAME` or `NAME_<hash of its settings>`.
        let suffix = sig.name.strip_prefix(spec.name);
        let named = match suffix {
            Some("") => true,
            Some(rest) => rest
                .strip_prefix('_')
                .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit())),
            None => false,
        };
        if !named {
            return Err(bad(format!("the source's entry point is {}", sig.name)));
        }
        let buffers: Vec<&str> = sig.buffers().map(|p| p.ty.as_str()).collect();
        let want: Vec<&str> = spec.buffers.iter().map(|e| e.cpp()).collect();
        if buffers != want {
            return Err(bad(format!(
                "buffers {want:?} in the definition, {buffers:?} in the generated source"
            )));
        }
        let unknown: Vec<String> = sig
            .params
            .iter()
            .filter(|p| !p.pointer && sig.info_param() != Some(*p))
            .map(|p| format!("{} {}", p.ty, p.name))
            .collect();
        if !unknown.is_empty() {
            return Err(bad(format!("parameters it cannot pack: {unknown:?}")));
        }
        // Field offsets, each field padded to 8 bytes.
        let mut offset = 0usize;
        let mut fields = Vec::new();
        for f in &sig.info {
            let size = f
                .elem_bytes()
                .and_then(|b| b.checked_mul(f.len))
                .ok_or_else(|| bad(format!("info field `{} {}[{}]`", f.ty, f.name, f.len)))?;
            fields.push((f, offset));
            offset += size.next_multiple_of(8);
        }
        // A scalar kind's field: floats in the float field; indices in the
        // one unsigned integer field (the kernels have no other integers).
        let field_of = |kind: ScalarKind| {
            let mut found = fields.iter().filter(|(f, _)| {
                f.name.starts_with("scalars_")
                    && match kind {
                        ScalarKind::F32 => f.ty == "float",
                        ScalarKind::Index => f.ty == "uint32_t" || f.ty == "uint64_t",
                    }
            });
            match (found.next(), found.next()) {
                (Some(one), None) => Ok(Some(*one)),
                (None, _) => Ok(None),
                (Some(_), Some(_)) => Err(bad(format!("two info fields could hold {kind:?}"))),
            }
        };
        let mut scalar_at = Vec::with_capacity(spec.scalars.len());
        let mut used = Vec::new();
        for kind in [ScalarKind::Index, ScalarKind::F32] {
            let count = spec.scalars.iter().filter(|k| **k == kind).count();
            match (field_of(kind)?, count) {
                (None, 0) => {}
                (None, n) => {
                    return Err(bad(format!(
                        "{n} {kind:?} scalars in the definition, no info field for them"
                    )))
                }
                (Some((f, _)), 0) => {
                    return Err(bad(format!("info field {} but no {kind:?} scalar", f.name)))
                }
                (Some((f, at)), n) => {
                    let elem = f.elem_bytes().unwrap_or(4);
                    // CubeCL pads each field to 8 bytes: `n` values take
                    // `len` slots exactly when len = n rounded up.
                    if f.len != n.next_multiple_of(8 / elem) {
                        return Err(bad(format!(
                            "{n} {kind:?} scalars in the definition, {} holds {}",
                            f.name, f.len
                        )));
                    }
                    used.push(f.name.clone());
                    let ty = if f.ty == "float" {
                        "float"
                    } else if elem == 8 {
                        "uint64_t"
                    } else {
                        "uint32_t"
                    };
                    let mut k = 0;
                    for (i, sk) in spec.scalars.iter().enumerate() {
                        if *sk == kind {
                            scalar_at.push((i, at + k * elem, ty));
                            k += 1;
                        }
                    }
                }
            }
        }
        scalar_at.sort_by_key(|s| s.0);
        let meta = fields.iter().find(|(f, _)| f.name == "static_meta");
        let meta_at = match meta {
            Some((f, at)) => {
                let elem = f.elem_bytes().unwrap_or(4);
                if f.len != spec.buffers.len().next_multiple_of(8 / elem) {
                    return Err(bad(format!(
                        "{} buffers in the definition, static_meta holds {}",
                        spec.buffers.len(),
                        f.len
                    )));
                }
                used.push(f.name.clone());
                Some((*at, elem))
            }
            None => None,
        };
        if let Some((f, _)) = fields.iter().find(|(f, _)| !used.contains(&f.name)) {
            return Err(bad(format!("info field {} it cannot fill", f.name)));
        }
        let info_by_value = match sig.info_param() {
            None if sig.info.is_empty() => false,
            None => return Err(bad("info_st declared but not a parameter".into())),
            Some(p) => !p.pointer,
        };
        Ok(Self {
            spec,
            entry: sig.name.clone(),
            units: sig.launch_bounds,
            scalar_at: scalar_at.into_iter().map(|(_, at, ty)| (at, ty)).collect(),
            meta_at,
            info_bytes: offset,
            info_by_value,
        })
    }

    /// `info_st`'s bytes (in 8-byte words) for these buffer lengths
    /// (elements) and scalars; an error when they do not fit the kernel.
    pub fn pack_info(
        &self,
        buffer_lens: &[usize],
        scalars: &[Scalar],
    ) -> Result<Vec<u64>, CudaError> {
        let bad = |problem: String| CudaError::Arguments {
            kernel: self.spec.name,
            problem,
        };
        if buffer_lens.len() != self.spec.buffers.len() {
            return Err(bad(format!(
                "{} buffers expected, {} given",
                self.spec.buffers.len(),
                buffer_lens.len()
            )));
        }
        let kinds: Vec<ScalarKind> = scalars.iter().map(|s| s.kind()).collect();
        if kinds != self.spec.scalars {
            return Err(bad(format!(
                "scalars {:?} expected, {kinds:?} given",
                self.spec.scalars
            )));
        }
        let mut bytes = vec![0u8; self.info_bytes];
        let mut put = |at: usize, ty: &str, v: Scalar| -> Result<(), CudaError> {
            let (raw, n): ([u8; 8], usize) = match (ty, v) {
                ("float", Scalar::F32(x)) => (pad(&x.to_le_bytes()), 4),
                ("uint32_t", Scalar::Index(i)) => (
                    pad(&u32::try_from(i)
                        .map_err(|_| bad(format!("index {i} past the kernel's 32-bit addressing")))?
                        .to_le_bytes()),
                    4,
                ),
                ("uint64_t", Scalar::Index(i)) => ((i as u64).to_le_bytes(), 8),
                _ => return Err(bad(format!("{v:?} into a {ty} slot"))),
            };
            bytes[at..at + n].copy_from_slice(&raw[..n]);
            Ok(())
        };
        for (&(at, ty), &v) in self.scalar_at.iter().zip(scalars) {
            put(at, ty, v)?;
        }
        if let Some((at, elem)) = self.meta_at {
            let ty = if elem == 8 { "uint64_t" } else { "uint32_t" };
            for (k, &len) in buffer_lens.iter().enumerate() {
                put(at + k * elem, ty, Scalar::Index(len))?;
            }
        }
        Ok(bytes
            .chunks(8)
            .map(|c| u64::from_le_bytes(pad(c)))
            .collect())
    }

    /// Checks one launch against the kernel (cube size, buffer types and
    /// count, scalar kinds) and packs its `info_st` ([`Self::pack_info`]):
    /// everything a runtime checks before handing the arguments over.
    pub fn check_launch(
        &self,
        grid: &Grid,
        buffers: &[(Elem, usize)],
        scalars: &[Scalar],
    ) -> Result<Vec<u64>, CudaError> {
        let bad = |problem: String| CudaError::Arguments {
            kernel: self.spec.name,
            problem,
        };
        if grid.units_per_cube() != self.units {
            return Err(bad(format!(
                "cubes of {} units, the kernel was generated for {}",
                grid.units_per_cube(),
                self.units
            )));
        }
        if grid.cube_count() == 0 {
            return Err(bad(format!("an empty grid {grid:?}")));
        }
        let elems: Vec<Elem> = buffers.iter().map(|b| b.0).collect();
        if elems != self.spec.buffers {
            return Err(bad(format!(
                "buffers {:?} expected, {elems:?} given",
                self.spec.buffers
            )));
        }
        let lens: Vec<usize> = buffers.iter().map(|b| b.1).collect();
        self.pack_info(&lens, scalars)
    }

    /// Whether the kernel takes an `info_st` at all.
    pub fn has_info(&self) -> bool {
        self.info_bytes > 0
    }
}

fn pad(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..b.len()].copy_from_slice(b);
    out
}

/// Bytes of one element of `e` (for buffer sizes).
pub fn elem_size(e: Elem) -> usize {
    elem_bytes(e.cpp()).unwrap_or(4)
}

#[cfg(test)]
mod tests {
    use super::super::signature::parse;
    use super::*;

    /// As CubeCL 0.11 writes it (tests/gpu_cuda.rs checks the real sources).
    const SGR_SCORE: &str = r#"
struct info_st {
    uint32_t scalars_usize[4];
float scalars_f32[2];uint32_t static_meta[4];
};
extern "C" __global__ void __launch_bounds__(256)  sgr_score_f1db348b(float const* const __restrict__ v1, uint32_t const* const __restrict__ v5, float const* const __restrict__ v9, float * const __restrict__ v13, info_st const* const __restrict__ v175) {
}
"#;

    #[test]
    fn packs_scalars_by_type_then_buffer_lengths() {
        let layout =
            ArgLayout::new(spec("sgr_score").unwrap(), &parse(SGR_SCORE).unwrap()).unwrap();
        assert!(!layout.info_by_value && layout.has_info());
        assert_eq!(layout.entry, "sgr_score_f1db348b");
        assert_eq!(layout.units, 256);
        let words = layout
            .pack_info(
                &[10, 3, 256, 7],
                &[
                    Scalar::Index(7),
                    Scalar::Index(256),
                    Scalar::Index(5),
                    Scalar::F32(0.5),
                ],
            )
            .unwrap();
        // usize group [7, 256, 5, pad], f32 group [0.5, pad], meta [10, 3, 256, 7].
        let w = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
        assert_eq!(
            words,
            [
                w(7, 256),
                w(5, 0),
                w(0.5f32.to_bits(), 0),
                w(10, 3),
                w(256, 7)
            ]
        );
        // By value under `__grid_constant__`, the same words.
        let by_value = SGR_SCORE.replace(
            "info_st const* const __restrict__ v175",
            "__grid_constant__ info_st const v175",
        );
        let layout =
            ArgLayout::new(spec("sgr_score").unwrap(), &parse(&by_value).unwrap()).unwrap();
        assert!(layout.info_by_value);
    }

    #[test]
    fn refuses_mismatches() {
        let s = spec("sgr_score").unwrap();
        let sig = parse(SGR_SCORE).unwrap();
        let layout = ArgLayout::new(s, &sig).unwrap();
        // Wrong scalar kinds or counts, wrong buffer count, an index past u32.
        let one = Scalar::Index(1);
        assert!(layout.pack_info(&[1, 1, 1, 1], &[one]).is_err());
        assert!(layout
            .pack_info(&[1, 1, 1], &[one, one, one, Scalar::F32(0.0)])
            .is_err());
        assert!(layout
            .pack_info(
                &[1, 1, 1, 1],
                &[Scalar::F32(1.0), one, one, Scalar::F32(0.0)]
            )
            .is_err());
        assert!(matches!(
            layout.pack_info(
                &[1, 1, 1, 1],
                &[Scalar::Index(1 << 33), one, one, Scalar::F32(0.0)]
            ),
            Err(CudaError::Arguments { .. })
        ));
        // A definition that disagrees with the source.
        for (from, to) in [
            (
                "uint32_t const* const __restrict__ v5",
                "float const* const __restrict__ v5",
            ),
            ("uint32_t scalars_usize[4]", "uint32_t scalars_usize[2]"),
            ("uint32_t static_meta[4]", "uint32_t static_meta[6]"),
            ("float scalars_f32[2];", ""),
            ("sgr_score_f1db348b(", "sgr_scorex("),
            ("sgr_score_f1db348b(", "sgr_score_xyz("),
        ] {
            let changed = parse(&SGR_SCORE.replace(from, to)).unwrap();
            assert!(ArgLayout::new(s, &changed).is_err(), "{from} -> {to}");
        }
        assert!(ArgLayout::new(spec("matmul").unwrap(), &sig).is_err());
    }

    #[test]
    fn every_kernel_has_one_spec() {
        let mut names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KERNELS.len());
    }
}
