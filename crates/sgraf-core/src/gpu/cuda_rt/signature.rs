//! What a kernel's generated CUDA C++ says about its arguments: the
//! parameters of its `extern "C" __global__` entry point and the fields of
//! its `info_st` (the scalars and the buffers' lengths, packed by
//! [`super::args`]). Read from the source itself, so that a change in
//! CubeCL's code generator or in a kernel's parameters is an error at
//! load time (and in the tests), not a wrong launch.

use super::CudaError;

/// One parameter of the entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// The C++ element type: `float`, `uint32_t`, `info_st`...
    pub ty: String,
    pub name: String,
    /// A pointer (a buffer, or the info buffer when it is not passed by value).
    pub pointer: bool,
    /// Passed by value in the parameter block (`__grid_constant__`).
    pub grid_constant: bool,
}

/// One array field of `info_st`: `ty name[len];`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoField {
    pub ty: String,
    pub name: String,
    pub len: usize,
}

impl InfoField {
    /// Bytes of one element.
    pub fn elem_bytes(&self) -> Option<usize> {
        elem_bytes(&self.ty)
    }
}

/// Bytes of one element of the C++ type `ty`, for the types the kernels use.
pub fn elem_bytes(ty: &str) -> Option<usize> {
    match ty {
        "float" | "uint32_t" | "int32_t" | "uint" | "int" => Some(4),
        "double" | "uint64_t" | "int64_t" => Some(8),
        "__half" | "__nv_bfloat16" | "uint16_t" | "int16_t" => Some(2),
        "uint8_t" | "int8_t" | "bool" => Some(1),
        _ => None,
    }
}

/// A kernel's entry point as generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    /// `__launch_bounds__(N)`: the units per cube it was generated for.
    pub launch_bounds: u32,
    pub params: Vec<Param>,
    /// `info_st`'s fields in order (empty when the kernel has none).
    pub info: Vec<InfoField>,
}

impl Signature {
    /// The buffer parameters (pointers that are not the info).
    pub fn buffers(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.pointer && !self.is_info(p))
    }

    /// The info parameter, if any.
    pub fn info_param(&self) -> Option<&Param> {
        self.params.iter().find(|p| self.is_info(p))
    }

    fn is_info(&self, p: &Param) -> bool {
        p.ty == "info_st" || (!self.info.is_empty() && p.name == "info")
    }

    /// Bytes of `info_st`: each field padded to 8 bytes, as CubeCL lays
    /// out the info words.
    pub fn info_bytes(&self) -> Result<usize, CudaError> {
        self.info.iter().try_fold(0usize, |total, f| {
            let bytes = f
                .elem_bytes()
                .and_then(|b| b.checked_mul(f.len))
                .ok_or_else(|| self.bad(format!("info field `{} {}`", f.ty, f.name)))?;
            total
                .checked_add(bytes.next_multiple_of(8))
                .ok_or_else(|| self.bad("info_st larger than memory".into()))
        })
    }

    fn bad(&self, what: String) -> CudaError {
        CudaError::Signature {
            kernel: self.name.clone(),
            problem: format!("unsupported {what}"),
        }
    }
}

/// Reads the entry point and `info_st` of one kernel's generated source.
pub fn parse(source: &str) -> Result<Signature, CudaError> {
    let err = |problem: String| CudaError::Signature {
        kernel: "?".into(),
        problem,
    };
    let start = source
        .find("extern \"C\" __global__")
        .ok_or_else(|| err("no `extern \"C\" __global__` entry point in the source".into()))?;
    let head = &source[start..];
    let bounds_at = head
        .find("__launch_bounds__(")
        .ok_or_else(|| err("no __launch_bounds__ on the entry point".into()))?;
    let bounds_text = &head[bounds_at + "__launch_bounds__(".len()..];
    let bounds_end = bounds_text
        .find(')')
        .ok_or_else(|| err("unterminated __launch_bounds__".into()))?;
    let launch_bounds: u32 = bounds_text[..bounds_end]
        .trim()
        .parse()
        .map_err(|_| err(format!("__launch_bounds__({})", &bounds_text[..bounds_end])))?;
    let after = &bounds_text[bounds_end + 1..];
    let open = after
        .find('(')
        .ok_or_else(|| err("no parameter list on the entry point".into()))?;
    let name = after[..open]
        .split_whitespace()
        .last()
        .ok_or_else(|| err("no name on the entry point".into()))?
        .to_string();
    let err = |problem: String| CudaError::Signature {
        kernel: name.clone(),
        problem,
    };
    // The parameter list, to its matching parenthesis.
    let list = &after[open + 1..];
    let mut depth = 0i32;
    let mut end = None;
    for (i, c) in list.char_indices() {
        match c {
            '(' | '<' => depth += 1,
            ')' if depth == 0 => {
                end = Some(i);
                break;
            }
            ')' | '>' => depth -= 1,
            _ => {}
        }
    }
    let list = &list[..end.ok_or_else(|| err("unterminated parameter list".into()))?];
    let mut params = Vec::new();
    for text in split_top_level(list) {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let pointer = text.contains('*');
        let grid_constant = text.contains("__grid_constant__");
        let words: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || c == '*')
            .filter(|w| !w.is_empty())
            .collect();
        let (pname, rest) = words
            .split_last()
            .ok_or_else(|| err(format!("parameter `{text}`")))?;
        let ty = rest
            .iter()
            .copied()
            .find(|w| {
                !matches!(
                    *w,
                    "const" | "__restrict__" | "__grid_constant__" | "volatile"
                )
            })
            .ok_or_else(|| err(format!("no type in parameter `{text}`")))?;
        params.push(Param {
            ty: ty.to_string(),
            name: pname.to_string(),
            pointer,
            grid_constant,
        });
    }
    let info = match source.find("struct info_st") {
        None => Vec::new(),
        Some(at) => {
            let body = &source[at..];
            let open = body
                .find('{')
                .ok_or_else(|| err("info_st has no body".into()))?;
            let close = body
                .find('}')
                .ok_or_else(|| err("unterminated info_st".into()))?;
            body[open + 1..close]
                .split(';')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(|f| {
                    let bad = || err(format!("info_st field `{f}`"));
                    let (decl, len) = f.split_once('[').ok_or_else(bad)?;
                    let len: usize = len
                        .trim_end_matches(']')
                        .trim()
                        .parse()
                        .map_err(|_| bad())?;
                    let mut words = decl.split_whitespace();
                    let (ty, fname) =
                        (words.next().ok_or_else(bad)?, words.next().ok_or_else(bad)?);
                    Ok(InfoField {
                        ty: ty.to_string(),
                        name: fname.to_string(),
                        len,
                    })
                })
                .collect::<Result<Vec<_>, CudaError>>()?
        }
    };
    Ok(Signature {
        name,
        launch_bounds,
        params,
        info,
    })
}

/// Splits at the commas outside `<>` and `()`.
fn split_top_level(list: &str) -> Vec<&str> {
    let (mut out, mut depth, mut from) = (Vec::new(), 0i32, 0);
    for (i, c) in list.char_indices() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&list[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(&list[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The form CubeCL 0.11's CUDA generator writes (cubecl-cpp's
    /// `cuda/signature.rs`): `type const* const __restrict__ name` per
    /// buffer, the info as a pointer (or by value under `__grid_constant__`).
    const SAMPLE: &str = r#"
typedef unsigned int uint32_t;
struct info_st {
    float scalars_f32[2];
uint32_t scalars_u32[4];uint32_t static_meta[4];
};
extern "C" __global__ void __launch_bounds__(256)  sgr_score(float const* const __restrict__ nodes, uint32_t const* const __restrict__ pair_start, float const* const __restrict__ eval_w, float * const __restrict__ out, __grid_constant__ info_st const info) {
}
"#;

    #[test]
    fn parses_the_entry_point_and_info() {
        let s = parse(SAMPLE).unwrap();
        assert_eq!(s.name, "sgr_score");
        assert_eq!(s.launch_bounds, 256);
        let buffers: Vec<(&str, &str)> = s
            .buffers()
            .map(|p| (p.ty.as_str(), p.name.as_str()))
            .collect();
        assert_eq!(
            buffers,
            [
                ("float", "nodes"),
                ("uint32_t", "pair_start"),
                ("float", "eval_w"),
                ("float", "out")
            ]
        );
        let info = s.info_param().unwrap();
        assert!(info.grid_constant && !info.pointer);
        assert_eq!(
            s.info
                .iter()
                .map(|f| (f.ty.as_str(), f.name.as_str(), f.len))
                .collect::<Vec<_>>(),
            [
                ("float", "scalars_f32", 2),
                ("uint32_t", "scalars_u32", 4),
                ("uint32_t", "static_meta", 4)
            ]
        );
        assert_eq!(s.info_bytes().unwrap(), 8 + 16 + 16);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(parse("__global__ void f() {}").is_err());
        let bad = SAMPLE.replace("scalars_u32[4]", "scalars_u32[x]");
        assert!(matches!(parse(&bad), Err(CudaError::Signature { .. })));
        let odd = SAMPLE.replace("float scalars_f32[2]", "mystery scalars_x[2]");
        assert!(parse(&odd).unwrap().info_bytes().is_err());
    }
}
