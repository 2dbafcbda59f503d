//! How many cubes (CUDA blocks, Vulkan workgroups) of how many units
//! (threads) a launch takes, planned once for every runtime (wgpu and
//! `cuda_rt`). The most cubes per grid dimension is a parameter, `cap`:
//! the device's limit in production ([`super::Gpu::max_cubes_per_dim`],
//! 65535 on Vulkan's usual `maxComputeWorkGroupCount` and CUDA's y and z),
//! a small number in the self-check so that a released-size input reaches
//! the 2-D path. Too large a launch is an error the caller can report,
//! never a panic.

use super::{GpuError, GpuResult};

/// Cubes per grid dimension that every Vulkan and CUDA device accepts.
pub const MAX_CUBES_PER_DIM: usize = 65535;

/// A launch's shape: `cubes` (x, y, z) of `units` (x, y, z).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub cubes: (u32, u32, u32),
    pub units: (u32, u32, u32),
}

impl Grid {
    /// Units per cube.
    pub fn units_per_cube(&self) -> u32 {
        self.units.0 * self.units.1 * self.units.2
    }

    /// Cubes in all.
    pub fn cube_count(&self) -> u64 {
        self.cubes.0 as u64 * self.cubes.1 as u64 * self.cubes.2 as u64
    }
}

fn cap_ok(cap: usize) -> GpuResult<u32> {
    match u32::try_from(cap) {
        Ok(c) if c > 0 => Ok(c),
        _ => Err(GpuError(format!(
            "a grid of at most {cap} cubes per dimension: expected 1 to {}",
            u32::MAX
        ))),
    }
}

/// `cubes` cubes of `per_cube` units (1-D), laid out 2-D past `cap`, 3-D
/// past `cap * cap`: the kernels read the linear cube position and check
/// it against their row count, so the last row (or layer) of cubes may run
/// past `cubes`.
pub fn cubes(cubes: usize, per_cube: u32, cap: usize) -> GpuResult<Grid> {
    cap_ok(cap)?;
    if per_cube == 0 {
        return Err(GpuError("cubes of 0 units".into()));
    }
    let cubes = cubes.max(1);
    let x = cubes.min(cap);
    let rest = cubes.div_ceil(x);
    let y = rest.min(cap);
    let z = rest.div_ceil(y);
    if z > cap {
        return Err(GpuError(format!(
            "a launch of {cubes} cubes of {per_cube} units, more than {cap} x {cap} x {cap} in one grid"
        )));
    }
    Ok(Grid {
        cubes: (x as u32, y as u32, z as u32),
        units: (per_cube, 1, 1),
    })
}

/// `n` units in cubes of `per_cube`, as [`cubes`] lays them out.
pub fn units(n: usize, per_cube: u32, cap: usize) -> GpuResult<Grid> {
    if per_cube == 0 {
        return Err(GpuError("cubes of 0 units".into()));
    }
    cubes(n.div_ceil(per_cube as usize), per_cube, cap)
}

/// The product kernel's grid: one cube of 16 x 16 units per `tile` x `tile`
/// block of the `[rows, cols]` output, one grid layer per batch. Larger
/// products are launched in pieces ([`super::Gpu`]'s `matmul`).
pub fn matmul(batches: usize, rows: usize, cols: usize, tile: u32, cap: usize) -> GpuResult<Grid> {
    cap_ok(cap)?;
    let tile = (tile as usize).max(1);
    let (gx, gy) = (cols.div_ceil(tile), rows.div_ceil(tile));
    if gx > cap || gy > cap || batches > cap {
        return Err(GpuError(format!(
            "a product of {batches} x [{rows}, {cols}] needs {gx} x {gy} x {batches} cubes, \
             more than {cap} in a dimension"
        )));
    }
    Ok(Grid {
        cubes: (gx.max(1) as u32, gy.max(1) as u32, batches.max(1) as u32),
        units: (16, 16, 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_cover_n_and_go_2d_then_3d_past_the_cap() {
        for cap in [MAX_CUBES_PER_DIM, 7] {
            for n in [
                0usize,
                1,
                255,
                256,
                257,
                7 * 256 + 1,
                49 * 256,
                cap * 256 + 1,
                50 * 256,
                343 * 256,
            ] {
                let g = units(n, 256, cap).unwrap();
                let (x, y, z) = g.cubes;
                assert!(x as usize <= cap && y as usize <= cap && z as usize <= cap);
                let covered = g.cube_count() * g.units_per_cube() as u64;
                assert!(covered >= n as u64, "{n}: {g:?}");
                // Never more than one extra layer of cubes, nor a row
                // beyond what the first layer needs.
                assert!(
                    covered < n as u64 + (x as u64 * y as u64 + 1) * 256,
                    "{n}: {g:?}"
                );
                assert!(z == 1 || y as usize == cap, "{n}: {g:?}");
            }
        }
        assert_eq!(units(257, 256, 65535).unwrap().cubes, (2, 1, 1));
        assert_eq!(units(65536 * 256, 256, 65535).unwrap().cubes, (65535, 2, 1));
        assert_eq!(units(8 * 256, 256, 7).unwrap().cubes, (7, 2, 1));
        assert_eq!(units(50 * 256, 256, 7).unwrap().cubes, (7, 7, 2));
        assert!(units(usize::MAX / 2, 256, 65535).is_err());
        assert!(units(344 * 256, 256, 7).is_err());
        assert!(units(1, 0, 7).is_err());
        assert!(units(1, 256, 0).is_err());
    }

    #[test]
    fn matmul_tiles_the_output() {
        let g = matmul(3, 130, 256, 64, 65535).unwrap();
        assert_eq!(g.cubes, (4, 3, 3));
        assert_eq!(g.units_per_cube(), 256);
        assert!(matmul(1, 65535 * 64, 256, 64, 65535).is_ok());
        assert!(matmul(1, 65535 * 64 + 1, 256, 64, 65535).is_err());
        assert!(matmul(65536, 1, 1, 64, 65535).is_err());
        assert!(matmul(1, 64, 8 * 64, 64, 7).is_err());
        assert!(matmul(1, 64, 0, 64, 0).is_err());
    }
}
