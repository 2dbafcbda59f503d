//! `RUN/metrics.jsonl`, a run's log: one JSON object per line, a
//! [`StepRecord`] after every optimizer step and a [`ValidationRecord`]
//! after every validation. The trainer writes these types and `sgraf-cli
//! plot` reads them back, so the two cannot drift apart.
//!
//! The fields are declared in alphabetical order, the order in which the
//! log has always been written, so that a line is the same bytes as
//! before the types existed and old runs read back unchanged. A value
//! that is not finite (a diverged loss) is written as `null`, as
//! `serde_json` writes such floats, and read back as NaN.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};
use sgraf_retrieval::Metrics;

use crate::error::io;
use crate::{Result, TrainError};

/// The log's file name inside a run folder.
pub const FILE_NAME: &str = "metrics.jsonl";

/// One optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Captions in the batch (the last batch of an epoch is smaller);
    /// absent from logs written before it was logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// The epoch, from 0.
    pub epoch: usize,
    /// The global L2 norm of the gradients, before clipping.
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f64,
    /// The batch's loss: a sum over its captions.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// The learning rate of the step.
    #[serde(deserialize_with = "nan_if_null")]
    pub lr: f64,
    /// Optimizer steps taken so far, this one included.
    pub step: u64,
}

/// One validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidationRecord {
    /// The epoch, from 0.
    pub epoch: usize,
    /// Image to text: R@1, R@5, R@10, median and mean rank.
    pub i2t: [f64; 5],
    /// The sum of the six recalls.
    pub rsum: f64,
    /// Optimizer steps taken before the validation.
    pub step: u64,
    /// Text to image: R@1, R@5, R@10, median and mean rank.
    pub t2i: [f64; 5],
    /// Always true: marks the line as a validation.
    pub validation: bool,
}

impl ValidationRecord {
    pub fn new(step: u64, epoch: usize, m: &Metrics) -> Self {
        Self {
            epoch,
            i2t: m.i2t.to_array(),
            rsum: m.rsum,
            step,
            t2i: m.t2i.to_array(),
            validation: true,
        }
    }
}

/// A line of the log: its kind is told by its fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Record {
    Validation(ValidationRecord),
    Step(StepRecord),
}

impl From<StepRecord> for Record {
    fn from(r: StepRecord) -> Self {
        Self::Step(r)
    }
}

impl From<ValidationRecord> for Record {
    fn from(r: ValidationRecord) -> Self {
        Self::Validation(r)
    }
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Appends one record as a line of the log at `path`.
pub fn append(path: &Path, record: &Record) -> Result<()> {
    let line = serde_json::to_string(record).expect("a record serializes");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(io(path))?;
    writeln!(f, "{line}").map_err(io(path))
}

/// A log read back: the steps and validations in the order taken.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Log {
    pub steps: Vec<StepRecord>,
    pub validations: Vec<ValidationRecord>,
}

impl Log {
    /// Reads the log at `path` (see [`Log::parse`]).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        Self::parse(&text).map_err(|(line, err)| {
            TrainError::Invalid(format!("{} line {line}: {err}", path.display()))
        })
    }

    /// Parses a log's text; an error names the line (from 1). Blank lines
    /// are skipped. A resumed run repeats the steps taken after its last
    /// checkpoint; as TensorBoard does with such "orphaned" events, a step
    /// at or before one already read drops what was logged from it on.
    pub fn parse(text: &str) -> std::result::Result<Self, (usize, String)> {
        let mut log = Self::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: Record = serde_json::from_str(line).map_err(|e| {
                let what = if e.is_data() {
                    "neither a training step nor a validation".to_string()
                } else {
                    e.to_string()
                };
                (i + 1, what)
            })?;
            match record {
                Record::Validation(v) => log.validations.push(v),
                Record::Step(s) => {
                    if log.steps.last().is_some_and(|last| last.step >= s.step) {
                        log.steps.retain(|r| r.step < s.step);
                        log.validations.retain(|r| r.step < s.step);
                    }
                    log.steps.push(s);
                }
            }
        }
        Ok(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: u64, loss: f64, batch: usize) -> Record {
        StepRecord {
            batch_size: Some(batch),
            epoch: 0,
            grad_norm: 1.0,
            loss,
            lr: 2e-4,
            step,
        }
        .into()
    }

    fn val(step: u64, r: f64) -> Record {
        ValidationRecord {
            epoch: 0,
            i2t: [r, r + 10.0, r + 20.0, 2.0, 3.0],
            rsum: 6.0 * r + 44.0,
            step,
            t2i: [r, r + 5.0, r + 9.0, 2.0, 3.0],
            validation: true,
        }
        .into()
    }

    fn text(records: &[Record]) -> String {
        records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect()
    }

    #[test]
    fn lines_are_the_bytes_the_log_always_had() {
        assert_eq!(
            serde_json::to_string(&step(3, 7.5, 16)).unwrap(),
            r#"{"batch_size":16,"epoch":0,"grad_norm":1.0,"loss":7.5,"lr":0.0002,"step":3}"#
        );
        assert_eq!(
            serde_json::to_string(&val(4, 10.0)).unwrap(),
            r#"{"epoch":0,"i2t":[10.0,20.0,30.0,2.0,3.0],"rsum":104.0,"step":4,"t2i":[10.0,15.0,19.0,2.0,3.0],"validation":true}"#
        );
        // And the same as the untyped writer made them.
        let old = serde_json::json!({"step": 3, "epoch": 0, "loss": 7.5, "lr": 2e-4,
            "grad_norm": 1.0, "batch_size": 16});
        assert_eq!(
            serde_json::to_string(&step(3, 7.5, 16)).unwrap(),
            old.to_string()
        );
    }

    #[test]
    fn old_logs_and_non_finite_values_read_back() {
        let log = Log::parse(concat!(
            r#"{"epoch":1,"grad_norm":2,"loss":null,"lr":0.0002,"step":1}"#,
            "\n\n",
            r#"{"epoch":1,"i2t":[1,2,3,4,5],"rsum":6,"step":1,"t2i":[1,2,3,4,5],"validation":true}"#,
        ))
        .unwrap();
        assert_eq!(log.steps.len(), 1);
        assert!(log.steps[0].loss.is_nan() && log.steps[0].batch_size.is_none());
        assert_eq!(log.validations[0].i2t, [1.0, 2.0, 3.0, 4.0, 5.0]);
        let err = Log::parse("\n{\"step\": 1}\n").unwrap_err();
        assert_eq!(err.0, 2, "{err:?}");
        assert!(Log::parse("{\"step\": ").is_err());
    }

    #[test]
    fn a_resumed_log_keeps_the_steps_taken_last() {
        // Steps 1-3 and a validation at 2, then a resume from the checkpoint
        // after step 1 redoes steps 2 and 3.
        let log = Log::parse(&text(&[
            step(1, 9.0, 4),
            step(2, 8.0, 4),
            val(2, 10.0),
            step(3, 7.0, 2),
            step(2, 6.0, 4),
            step(3, 5.0, 2),
            val(3, 20.0),
        ]))
        .unwrap();
        let got: Vec<(u64, f64)> = log.steps.iter().map(|s| (s.step, s.loss)).collect();
        assert_eq!(got, [(1, 9.0), (2, 6.0), (3, 5.0)]);
        let vals: Vec<u64> = log.validations.iter().map(|v| v.step).collect();
        assert_eq!(vals, [3]);
    }
}
