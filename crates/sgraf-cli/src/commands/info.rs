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
        println!("module     {}", cfg.name());
        println!("data       {}", cfg.data_name().unwrap_or("unknown"));
        println!(
            "image      {} regions x {} features -> d = {}",
            cfg.num_regions(),
            cfg.img_dim(),
            cfg.embed_size()
        );
        let (bi_gru, num_layers) = match cfg {
            sgraf::ModelConfig::Sgraf(c) => (c.bi_gru, c.num_layers),
            sgraf::ModelConfig::Rcar(c) => (c.bi_gru, c.num_layers),
        };
        println!(
            "text       vocab {} -> word_dim {} -> {}GRU x{} -> d = {}",
            cfg.vocab_size(),
            cfg.word_dim(),
            if bi_gru { "bi-" } else { "" },
            num_layers,
            cfg.embed_size()
        );
        match cfg {
            sgraf::ModelConfig::Sgraf(c) => {
                println!("similarity m = {}, sgr_step {}", c.sim_dim, c.sgr_step)
            }
            sgraf::ModelConfig::Rcar(c) => {
                let steps = c.steps();
                println!(
                    "similarity m = {}, attn_type {} (smooth {}), {} with {} alignment, {} RCR and {} RAR steps",
                    c.sim_dim,
                    c.attn_type,
                    c.smooth(),
                    c.self_regulator,
                    steps.alv,
                    steps.rcr,
                    steps.rar
                )
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}
