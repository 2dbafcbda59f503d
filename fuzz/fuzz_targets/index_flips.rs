//! Damage to a valid image index never reads as data: a segment and its
//! manifest are written once, then each input flips bytes of them (pairs of
//! a little-endian u32 position and a mask; the first byte picks the
//! segment, the manifest or both) and reads the index back. Whatever opens
//! and verifies must be exactly what was written.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sgraf_retrieval::index::store::{
    index_dir, read_manifests, write_manifest, FileStamp, Manifest, ModelSpec, Segment,
    SegmentWriter, INDEX_VERSION,
};

const ROWS: usize = 5;
const REGIONS: usize = 2;
const DIM: usize = 3;

struct Fixture {
    dir: PathBuf,
    segment: (String, Vec<u8>),
    manifest: Vec<u8>,
    stamps: Vec<FileStamp>,
    regions: Vec<f32>,
    global: Vec<f32>,
}

fn fingerprints() -> Vec<String> {
    vec!["m".to_string()]
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sgraf-fuzz-flips-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(index_dir(&dir)).unwrap();
        let mut w = SegmentWriter::new("main", 1, REGIONS, DIM);
        let (mut regions, mut global, mut stamps) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..ROWS {
            let r: Vec<f32> = (0..REGIONS * DIM)
                .map(|k| (i * 10 + k) as f32 * 0.25)
                .collect();
            let g: Vec<f32> = (0..DIM).map(|k| -((i * 10 + k) as f32)).collect();
            let stamp = FileStamp {
                name: format!("img{i}.npy"),
                size: 100 + i as u64,
                mtime_ns: 1_700_000_000_000_000_000 + i as u128,
                sha256: format!("{i:064x}"),
            };
            w.push(stamp.clone(), &[(&r, &g)]).unwrap();
            regions.extend(r);
            global.extend(g);
            stamps.push(stamp);
        }
        let seg = w.finish(&dir, &fingerprints()).unwrap();
        let m = Manifest {
            version: INDEX_VERSION,
            models: vec![ModelSpec {
                fingerprint: "m".into(),
                source: "/models/m".into(),
            }],
            regions: REGIONS,
            dim: DIM,
            segments: vec![seg.clone()],
        };
        write_manifest(&dir, "manifest.json", &m).unwrap();
        let idx = index_dir(&dir);
        let segment = (
            seg.file.clone(),
            std::fs::read(idx.join(&seg.file)).unwrap(),
        );
        let manifest = std::fs::read(idx.join("manifest.json")).unwrap();
        Fixture {
            dir,
            segment,
            manifest,
            stamps,
            regions,
            global,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, flips)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let idx = index_dir(&f.dir);
    let mut seg = f.segment.1.clone();
    let mut man = f.manifest.clone();
    for flip in flips.chunks_exact(5) {
        let at = u32::from_le_bytes(flip[..4].try_into().unwrap()) as usize;
        let target = if which % 3 == 0 || (which % 3 == 2 && at % 2 == 0) {
            &mut seg
        } else {
            &mut man
        };
        let n = target.len();
        target[at % n] ^= flip[4];
    }
    std::fs::write(idx.join(&f.segment.0), &seg).unwrap();
    std::fs::write(idx.join("manifest.json"), &man).unwrap();
    let intact = seg == f.segment.1 && man == f.manifest;
    let (manifests, problems) = read_manifests(&f.dir).unwrap();
    let Some((_, m)) = manifests.first() else {
        assert!(!intact, "the intact manifest was refused: {problems:?}");
        return;
    };
    let opened = Segment::open(&f.dir, &m.segments[0], &fingerprints(), REGIONS, DIM);
    let s = match opened {
        Ok(s) => s,
        Err(e) => {
            assert!(!intact, "the intact segment was refused: {e}");
            return;
        }
    };
    assert_eq!(s.files, f.stamps, "damaged stamps were read");
    match (s.regions(0, 0..ROWS), s.global(0, 0..ROWS)) {
        (Ok(r), Ok(g)) => {
            assert_eq!(&r[..], &f.regions[..], "damaged regions were read");
            assert_eq!(&g[..], &f.global[..], "damaged global vectors were read");
        }
        (r, g) => assert!(
            !intact,
            "the intact segment failed to read: {:?} {:?}",
            r.err(),
            g.err()
        ),
    }
});
