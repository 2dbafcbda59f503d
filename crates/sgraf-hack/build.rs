//! Empty: it exists so that Cargo resolves this crate's build-dependencies,
//! which unify the features of proc-macro and build-script dependencies.
fn main() {}
