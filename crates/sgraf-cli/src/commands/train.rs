//! `sgraf-cli train`: a run from scratch, from a model (--init), or resumed.

use anyhow::Result;
use sgraf::{TrainEvent as Event, TrainOptions, Trainer};

use crate::flags::TrainArgs;
use crate::ui::{say, steps};

impl TrainArgs {
    /// The library's options for a new run.
    fn options(&self) -> Result<TrainOptions> {
        Ok(TrainOptions {
            data: self.data.clone().expect("clap requires --data"),
            module: self.module.as_deref().map(str::parse).transpose()?,
            init: self.init.as_deref().map(sgraf::hub::resolve).transpose()?,
            vocab: self.vocab.clone(),
            batch_size: self.batch_size,
            epochs: self.epochs,
            learning_rate: self.learning_rate,
            lr_update: self.lr_update,
            warmup_epochs: self.warmup_epochs,
            margin: self.margin,
            max_violation: !self.no_max_violation,
            grad_clip: self.grad_clip,
            embed_size: self.embed_size,
            sim_dim: self.sim_dim,
            word_dim: self.word_dim,
            sgr_step: self.sgr_step,
            num_layers: self.num_layers,
            dropout: self.dropout,
            max_steps: self.max_steps,
            no_shuffle: self.no_shuffle,
            seed: self.seed,
            train_split: self.train_split.clone(),
            val_split: self.val_split.clone(),
            val_step: self.val_step,
            vocab_threshold: self.vocab_threshold,
            checkpoint_step: self.checkpoint_step,
            ..TrainOptions::default()
        })
    }
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let mut trainer = match &a.resume {
        Some(run) => Trainer::resume(run, a.max_steps)?,
        None => Trainer::new(a.out.as_deref().expect("clap requires --out"), a.options()?)?,
    };
    let bar = steps(trainer.planned_steps());
    bar.set_position(trainer.steps_done());
    trainer.run(&mut |e| match e {
        Event::Step(s) => {
            bar.set_position(s.step);
            bar.set_message(format!(
                "epoch {}/{} loss {:.4} lr {:.1e}",
                s.epoch + 1,
                s.epochs,
                s.loss,
                s.lr
            ));
        }
        Event::Validation { epoch, step, metrics } => say(&bar, format!(
            "epoch {} step {step}: rsum {:.1} (i2t R@1 {:.1} R@5 {:.1} R@10 {:.1}, t2i R@1 {:.1} R@5 {:.1} R@10 {:.1})",
            epoch + 1,
            metrics.rsum,
            metrics.i2t.r1,
            metrics.i2t.r5,
            metrics.i2t.r10,
            metrics.t2i.r1,
            metrics.t2i.r5,
            metrics.t2i.r10
        )),
    })?;
    bar.finish_and_clear();
    let run = trainer.run_dir();
    println!(
        "{} steps; best validation rsum {:.1}; models in {} and {}",
        trainer.steps_done(),
        trainer.best_rsum(),
        run.join("best").display(),
        run.join("last").display()
    );
    Ok(())
}
