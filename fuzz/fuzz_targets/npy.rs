//! sgraf-data's `.npy` reader on arbitrary bytes (the in-memory reader that
//! `.npz` members go through, and the header parser).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.npy");
    let _ = sgraf_data::npy::parse_header(data, path);
    if let Ok((shape, values)) = sgraf_data::npy::from_bytes(data, path) {
        assert_eq!(shape.iter().product::<usize>(), values.len());
    }
});
