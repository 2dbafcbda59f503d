//! `sgraf-cli vocab`: a vocabulary built as the published code builds it.

use anyhow::Result;

use crate::flags::VocabArgs;

pub fn run(a: &VocabArgs) -> Result<()> {
    let (threshold, out) = (a.threshold, &a.out);
    let v = sgraf::build_vocab(&a.captions, threshold, out)?;
    println!(
        "wrote {}: {} words (4 special + {} seen at least {threshold} times) from {} captions",
        out.display(),
        v.words,
        v.words - 4,
        v.captions
    );
    Ok(())
}
