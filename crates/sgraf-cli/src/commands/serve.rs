//! `sgraf-cli serve`: a local web page and JSON API over a folder.

use std::io::Write;

use anyhow::Result;

use crate::flags::ServeArgs;
use crate::ui::Bars;

pub fn run(a: &ServeArgs) -> Result<()> {
    let opts = sgraf_serve::Options {
        models: a.model.models.clone(),
        device: a.model.device.clone(),
        detector: a.photos.detector.clone(),
        ..a.server.clone()
    };
    sgraf_serve::run(&opts, &Bars::default(), |addr| {
        println!(
            "serving {} at http://{addr}/ (Ctrl-C stops)",
            opts.images.display()
        );
        let _ = std::io::stdout().flush();
    })
}
