//! How many cubes (CUDA blocks) of how many units (threads) a launch takes,
//! with the limits every runtime shares (65535 cubes per grid dimension:
//! Vulkan's usual `maxComputeWorkGroupCount`, and CUDA's for y and z).
//! Too large a launch is an error the caller can report, never a panic.

use super::CudaError;

/// Cubes per grid dimension, at most.
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

/// `n` units in cubes of `per_cube` (1-D), the cubes laid out 2-D past
/// 65535: the kernels read the linear cube position and check it against
/// their row count, so the last row of cubes may run past `n`.
pub fn units(n: usize, per_cube: u32) -> Result<Grid, CudaError> {
    if per_cube == 0 {
        return Err(CudaError::Grid("cubes of 0 units".into()));
    }
    let cubes = n.div_ceil(per_cube as usize).max(1);
    let x = cubes.min(MAX_CUBES_PER_DIM);
    let y = cubes.div_ceil(x);
    if y > MAX_CUBES_PER_DIM {
        return Err(CudaError::Grid(format!(
            "{n} units need {cubes} cubes of {per_cube}, more than {} in one launch",
            MAX_CUBES_PER_DIM * MAX_CUBES_PER_DIM
        )));
    }
    Ok(Grid {
        cubes: (x as u32, y as u32, 1),
        units: (per_cube, 1, 1),
    })
}

/// The product kernel's grid: one cube of 16 x 16 units per `tile` x `tile`
/// block of the `[rows, cols]` output, one grid layer per batch.
pub fn matmul(batches: usize, rows: usize, cols: usize, tile: u32) -> Result<Grid, CudaError> {
    let tile = tile as usize;
    let (gx, gy) = (cols.div_ceil(tile), rows.div_ceil(tile));
    if gx > MAX_CUBES_PER_DIM || gy > MAX_CUBES_PER_DIM || batches > MAX_CUBES_PER_DIM {
        return Err(CudaError::Grid(format!(
            "a product of {batches} x [{rows}, {cols}] needs {gx} x {gy} x {batches} cubes, \
             more than {MAX_CUBES_PER_DIM} in a dimension"
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
    fn units_cover_n_and_go_2d_past_the_limit() {
        for n in [
            0usize,
            1,
            255,
            256,
            257,
            65535 * 256,
            65535 * 256 + 1,
            1 << 30,
        ] {
            let g = units(n, 256).unwrap();
            assert!(
                g.cubes.0 as usize <= MAX_CUBES_PER_DIM && g.cubes.1 as usize <= MAX_CUBES_PER_DIM
            );
            let covered = g.cube_count() * g.units_per_cube() as u64;
            assert!(covered >= n as u64, "{n}: {g:?}");
            // Never more than one extra row of cubes.
            assert!(
                covered < n as u64 + (g.cubes.0 as u64 + 1) * 256,
                "{n}: {g:?}"
            );
        }
        assert_eq!(units(257, 256).unwrap().cubes, (2, 1, 1));
        assert_eq!(units(65536 * 256, 256).unwrap().cubes, (65535, 2, 1));
        assert!(matches!(
            units(usize::MAX / 2, 256),
            Err(CudaError::Grid(_))
        ));
        assert!(units(1, 0).is_err());
    }

    #[test]
    fn matmul_tiles_the_output() {
        let g = matmul(3, 130, 256, 64).unwrap();
        assert_eq!(g.cubes, (4, 3, 3));
        assert_eq!(g.units_per_cube(), 256);
        // The released size's largest product: 36 regions x 1024 per image.
        assert!(matmul(1, 65535 * 64, 256, 64).is_ok());
        assert!(matmul(1, 65535 * 64 + 1, 256, 64).is_err());
        assert!(matmul(65536, 1, 1, 64).is_err());
    }
}
