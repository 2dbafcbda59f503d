//! `sgraf-cli vocab`: a vocabulary built as the published code builds it.

use anyhow::{bail, Context, Result};

use crate::flags::VocabArgs;

pub fn run(a: &VocabArgs) -> Result<()> {
    let (threshold, out) = (a.threshold, &a.out);
    let mut lines = Vec::new();
    for path in &a.captions {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        lines.extend(text.lines().map(|l| l.trim().to_string()));
    }
    if lines.is_empty() {
        bail!(
            "no captions in {}",
            a.captions
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let vocab = sgraf_text::Vocab::build(&lines, threshold);
    sgraf_data::write_atomic(out, vocab.to_json().to_string().as_bytes())?;
    println!(
        "wrote {}: {} words (4 special + {} seen at least {threshold} times) from {} captions",
        out.display(),
        vocab.len(),
        vocab.len() - 4,
        lines.len()
    );
    Ok(())
}
