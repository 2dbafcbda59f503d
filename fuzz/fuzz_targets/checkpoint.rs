//! The legacy/zip `torch.save` reader on arbitrary bytes, both entry points.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = sgraf_convert::read_checkpoint(data) {
        assert!(e.to_string().len() < 4096, "an unbounded error message");
    }
    let _ = sgraf_convert::read_state_dict(data);
});
