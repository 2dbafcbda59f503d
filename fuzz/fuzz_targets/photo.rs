//! Photo decoding on arbitrary bytes: JPEG (libjpeg-turbo, C), PNG, WebP,
//! BMP and TIFF with their EXIF orientation, as a folder of the user's
//! photos or the server feeds them to the detector. An error is fine; a
//! crash, a hang or an allocation past the limits is not, and a decoded
//! image holds exactly its height x width BGR pixels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sgraf_vision::BgrImage;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = BgrImage::decode(data, "fuzz") {
        assert!(img.height > 0 && img.width > 0);
        assert_eq!(img.data.len(), img.height * img.width * 3);
    }
});
