//! The restricted pickle interpreter on arbitrary bytes: it must return a
//! value or an error, never panic, overflow the stack, leak or run away.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sgraf_convert::pickle::{unpickle, TorchStorages};

fuzz_target!(|data: &[u8]| {
    if let Ok((value, end)) = unpickle(data, 0, &mut TorchStorages) {
        assert!(end <= data.len());
        // Formatting is bounded, whatever the value.
        assert!(format!("{value:?}").len() < 4096);
    }
});
