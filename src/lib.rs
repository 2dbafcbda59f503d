pub use sgraf_core as core;
