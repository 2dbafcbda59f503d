//! sgraf-retrieval's image-index reader. It reads files of a folder, so each
//! input is written into a scratch folder of this process first: the first
//! byte chooses a manifest (JSON) or a segment (safetensors, opened with a
//! row count taken from that byte too).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sgraf_retrieval::index::store::{index_dir, read_manifests, Segment, SegmentRef};

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sgraf-fuzz-index-{}", std::process::id()));
        std::fs::create_dir_all(index_dir(&dir)).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    let idx = index_dir(dir);
    if kind & 1 == 0 {
        std::fs::write(idx.join("manifest.json"), body).unwrap();
        let _ = read_manifests(dir);
    } else {
        std::fs::write(idx.join("seg.safetensors"), body).unwrap();
        let seg = SegmentRef {
            file: "seg.safetensors".into(),
            rows: (kind >> 1) as usize,
            bytes: body.len() as u64,
            deleted: Vec::new(),
            crc32c: sgraf_retrieval::index::store::checksums(body),
        };
        if let Ok(s) = Segment::open(dir, &seg, &["m".to_string()], 2, 3) {
            let rows = s.rows();
            let _ = s.regions(0, 0..rows);
            let _ = s.global(0, 0..rows);
            let _ = s.verify_all();
        }
    }
});
