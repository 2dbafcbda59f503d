//! Ranks a folder of images for a query and prints what
//! `sgraf-cli rank --json` prints: every image, best first.
//!
//! ```sh
//! cargo run --release --example rank_folder -- DIR "a dog in the snow" MODEL [MODEL...]
//! ```
//!
//! A MODEL is a model folder or a Hugging Face Hub id; two (SGR and SAF)
//! are SGRAF.

use sgraf::{Device, Sgraf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, query, models @ ..] = args.as_slice() else {
        return Err("usage: rank_folder DIR QUERY MODEL [MODEL...]".into());
    };
    let hits = Sgraf::load(models, &Device::Cpu)?.rank_folder(dir, query)?;
    let rows: Vec<_> = hits
        .iter()
        .enumerate()
        .map(|(i, hit)| serde_json::json!({"rank": i + 1, "score": hit.score, "file": hit.file}))
        .collect();
    println!("{}", serde_json::Value::Array(rows));
    Ok(())
}
