//! Project tasks: `cargo xtask <task>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const HELP: &str = "\
cargo xtask <task>

Tasks:
  fixtures [--full DIR]   regenerate tests/fixtures/ with the PyTorch reference
                          (needs python3 with torch, numpy, safetensors); with
                          --full, write the full-size check into DIR instead
";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn fixtures(args: &[String]) -> Result<()> {
    let script = root().join("tests/reference/make_fixtures.py");
    let status = Command::new("python3")
        .arg(&script)
        .args(args)
        .status()
        .with_context(|| format!("running python3 {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fixtures") => fixtures(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{HELP}"),
    }
}
