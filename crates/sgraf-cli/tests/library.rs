//! The umbrella crate's example `rank_folder` (the library as a user calls
//! it) prints exactly what `sgraf-cli rank --json` prints.

mod common;

use common::{fixtures, run, scratch};

#[test]
fn rank_folder_example_prints_what_rank_json_prints() {
    let example = std::path::Path::new(env!("CARGO_BIN_EXE_sgraf-cli"))
        .parent()
        .unwrap()
        .join("examples/rank_folder");
    assert!(
        example.is_file(),
        "{} is missing: the examples are built by `cargo test --workspace`",
        example.display()
    );
    let dir = scratch("example");
    let (shape, data) = sgraf::load_npy(fixtures().join("precomp/test_ims.npy")).unwrap();
    let per = shape[1] * shape[2];
    for i in 0..shape[0] {
        let path = dir.join(format!("img{i}.npy"));
        sgraf::data::npy::write_f32(&path, &shape[1..], &data[i * per..(i + 1) * per]).unwrap();
    }
    let d = dir.display().to_string();
    let (sgr, saf) = (
        fixtures().join("sgr").display().to_string(),
        fixtures().join("saf").display().to_string(),
    );
    let query = "Two dogs playing in the snow.";
    let cli = run(&[
        "rank", "--images", &d, "--query", query, "--json", "-m", &sgr, "-m", &saf,
    ]);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let ex = std::process::Command::new(&example)
        .args([&d, query, &sgr, &saf])
        .env_remove("SGRAF_MODEL")
        .output()
        .unwrap();
    assert!(
        ex.status.success(),
        "{}",
        String::from_utf8_lossy(&ex.stderr)
    );
    let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    let want = parse(&cli.stdout);
    assert_eq!(want.as_array().unwrap().len(), shape[0]);
    assert_eq!(parse(&ex.stdout), want);
    std::fs::remove_dir_all(&dir).unwrap();
}
