//! `sgraf-cli info`: what a model is.

use anyhow::Result;
use serde_json::json;

use crate::flags::InfoArgs;

pub fn run(a: &InfoArgs) -> Result<()> {
    let models = super::load(&a.model)?;
    let mut all = Vec::new();
    for (cfg, dir) in models.configs().into_iter().zip(&models.folders) {
        if a.json {
            all.push(json!({"folder": dir, "config": cfg}));
            continue;
        }
        println!("model      {}", dir.display());
        println!("module     {}", cfg.module);
        println!(
            "data       {}",
            cfg.data_name.as_deref().unwrap_or("unknown")
        );
        println!(
            "image      {} regions x {} features -> d = {}",
            cfg.num_regions, cfg.img_dim, cfg.embed_size
        );
        println!(
            "text       vocab {} -> word_dim {} -> {}GRU x{} -> d = {}",
            cfg.vocab_size,
            cfg.word_dim,
            if cfg.bi_gru { "bi-" } else { "" },
            cfg.num_layers,
            cfg.embed_size
        );
        println!("similarity m = {}, sgr_step {}", cfg.sim_dim, cfg.sgr_step);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}
