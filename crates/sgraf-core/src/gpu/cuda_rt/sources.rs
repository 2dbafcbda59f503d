//! Every kernel of `gpu::kernels` as CUDA C++ with the dynamic shared
//! memory it needs (CubeCL gathers a kernel's shared arrays into one
//! `extern __shared__` block whose size only the compiler knows), and the
//! folder form that travels in the GPU check's bundle: `NAME.cu`, its first
//! line `// sgraf-cuda shared_memory_bytes=N`.
//!
//! Generating needs a wgpu client (CubeCL builds a kernel's definition from
//! a launch's registered arguments; lavapipe will do); loading from a
//! folder does not, so a CUDA machine without a Vulkan driver runs the
//! kernels generated elsewhere from the same definitions.
#![allow(
    unsafe_code,
    reason = "CubeCL buffer arguments of the one-element buffers the kernels are generated with"
)]

use std::path::Path;

use cubecl::prelude::*;
use cubecl_cpp::shared::{CompilationOptions, CppCompiler};
use cubecl_cpp::target::Cuda;

use super::CudaError;
use crate::gpu::kernels;

/// One kernel's CUDA C++.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSource {
    pub name: String,
    pub source: String,
    /// Bytes of dynamic shared memory each launch must reserve.
    pub shared_memory_bytes: usize,
}

const HEADER: &str = "// sgraf-cuda shared_memory_bytes=";

/// Every kernel's CUDA C++, generated with the default wgpu adapter's
/// properties (the code does not depend on them: CUDA gets its own
/// architecture when NVRTC compiles it).
pub fn generate() -> Result<Vec<KernelSource>, CudaError> {
    let device = cubecl::Device::wgpu(Default::default()).map_err(|e| {
        CudaError::Generate(format!("no wgpu adapter to define the kernels on: {e:?}"))
    })?;
    let client = std::panic::catch_unwind(|| device.client())
        .map_err(|_| CudaError::Generate("cannot start the wgpu client".into()))?;
    let props = client.properties_shared();
    let target = client.target_properties_shared();
    let (f, i) = (client.empty(4), client.empty(4));
    // SAFETY: each handle holds one 4-byte element, the length given.
    let b = || unsafe { BufferArg::from_raw_parts(f.clone(), 1) };
    // SAFETY: as above.
    let u = || unsafe { BufferArg::from_raw_parts(i.clone(), 1) };
    let one = CubeCount::Static(1, 1, 1);
    let flat = CubeDim::new_1d(kernels::UNITS);
    // `(name, definition)` of a kernel on dummy arguments: its buffers
    // (`b` f32, `u` u32), `;`, its scalars.
    macro_rules! define {
        ($kernel:ident, $dim:expr; $($buf:ident),+; $($scalar:expr),+) => {
            (
                stringify!($kernel),
                kernels::$kernel::create_dummy_kernel(
                    props.clone(), target.clone(), one.clone(), $dim, $($buf(),)+ $($scalar),+
                )
                .define(),
            )
        };
    }
    let defs: Vec<(&'static str, KernelDefinition)> = vec![
        define!(matmul, CubeDim::new_2d(16, 16); b, b, b; 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        define!(attention_norms, flat; b, u, u, b; 1, 1, 1),
        define!(attention_softmax, flat; b, u, b; 1, 1, 1, 1),
        define!(context_diff, flat; b, b; 1, 1, 1, 0),
        define!(global_diff, flat; b, b, b; 1, 1, 1, 0),
        define!(bias_l2norm_rows, flat; b, b, u, b; 1, 1),
        define!(graph_edges, flat; b, b, b, u, u, u, b; 1, 1, 1, 1),
        define!(graph_softmax, flat; b, u, u; 1, 1),
        define!(graph_combine, flat; b, b, b, u, u, u, b; 1, 1, 1),
        define!(sgr_score, flat; b, u, b, b; 1, 1, 0, 0.0),
        define!(saf_gate, flat; b, b, b; 1, 1, 0.0, 1.0, 0.0),
        define!(saf_score, flat; b, b, u, u, b, b; 1, 1, 0, 0.0),
        define!(gather_first_nodes, flat; b, u, b; 1, 1),
        define!(sgr_last_pool, flat; b, b, u, u, b; 1, 1, 1),
        define!(sgr_last_score, flat; b, b, b, b; 1, 1, 0, 0.0),
    ];
    let options = CompilationOptions::default();
    defs.into_iter()
        .map(|(name, def)| {
            let mut compiler = CppCompiler::<Cuda>::default();
            let kernel = cubecl::Compiler::compile(&mut compiler, def, &options)
                .map_err(|e| CudaError::Generate(format!("CUDA C++ of {name}: {e:?}")))?;
            Ok(KernelSource {
                name: name.to_string(),
                shared_memory_bytes: kernel.shared_memory_size,
                source: kernel.to_string(),
            })
        })
        .collect()
}

/// Writes `NAME.cu` for each kernel into `dir`.
pub fn write_dir(dir: &Path, sources: &[KernelSource]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for k in sources {
        std::fs::write(
            dir.join(format!("{}.cu", k.name)),
            format!("{HEADER}{}\n{}", k.shared_memory_bytes, k.source),
        )?;
    }
    Ok(())
}

/// The kernels [`write_dir`] wrote into `dir`, each checked for its header.
pub fn read_dir(dir: &Path) -> Result<Vec<KernelSource>, CudaError> {
    let io = |e: std::io::Error| CudaError::Sources(format!("{}: {e}", dir.display()));
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let path = e.map_err(io)?.path();
        if path.extension().is_none_or(|x| x != "cu") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(io)?;
        let (first, source) = text.split_once('\n').unwrap_or((&text, ""));
        let shared = first
            .strip_prefix(HEADER)
            .and_then(|n| n.trim().parse::<usize>().ok())
            .ok_or_else(|| {
                CudaError::Sources(format!(
                    "{}: first line {first:?}, expected `{HEADER}N`",
                    path.display()
                ))
            })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(KernelSource {
            name,
            source: source.to_string(),
            shared_memory_bytes: shared,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_form_round_trips_and_is_checked() {
        let dir = std::env::temp_dir().join(format!("sgraf-cuda-src-{}", std::process::id()));
        let k = KernelSource {
            name: "matmul".into(),
            source: "extern \"C\" __global__ void f() {}\n".into(),
            shared_memory_bytes: 8192,
        };
        write_dir(&dir, std::slice::from_ref(&k)).unwrap();
        assert_eq!(read_dir(&dir).unwrap(), vec![k]);
        std::fs::write(dir.join("bad.cu"), "no header\n").unwrap();
        assert!(matches!(read_dir(&dir), Err(CudaError::Sources(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
