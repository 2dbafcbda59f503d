//! TensorBoard event files, written as the published SGRAF code writes them.
//!
//! The published `train.py` (Paranioar/SGRAF, branch python3.6, commit
//! a19d1a9) logs through `tensorboard_logger`: one event per `log_value`
//! call, each holding one `simple_value` scalar, in a file named
//! `events.out.tfevents.{secs}.{hostname}` that starts with the
//! `file_version: "brain.Event:2"` event. We write the same records; the
//! messages are the few fields of TensorFlow's `event.proto` and
//! `summary.proto` we use, declared by hand for `prost` (no `protoc`).
//!
//! A record (TensorFlow's TFRecord framing) is: the data length as a
//! little-endian u64, the masked CRC32C of those 8 bytes, the data, the
//! masked CRC32C of the data. The data is an `Event` message: `wall_time`
//! (double, field 1), `step` (int64, field 2), `file_version` (string,
//! field 3), `summary` (field 5) whose `Summary.Value`s (field 1) carry
//! `tag` (string, field 1) and `simple_value` (float, field 2).
//!
//! Every writer call takes its wall time explicitly, so that fixed inputs
//! give the same bytes (the committed fixture under `tests/fixtures/tb/`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sgraf_retrieval::Metrics;

use crate::error::io;
use crate::trainer::StepInfo;
use crate::Result;

/// What TensorBoard expects as the first event of every file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// A malformed event file (the reader's errors).
#[derive(Debug, thiserror::Error)]
pub enum EventFileError {
    #[error("event file truncated at byte {offset}")]
    Truncated { offset: usize },
    #[error("event file: CRC of the record length at byte {offset} does not match")]
    LengthCrc { offset: usize },
    #[error("event file: CRC of the record at byte {offset} does not match")]
    DataCrc { offset: usize },
    #[error("event file: record at byte {offset} is not an Event message: {msg}")]
    Protobuf { offset: usize, msg: String },
}

/// TFRecord's masking of a CRC-32C (so that CRCs of data holding CRCs stay strong).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(0xA282_EAD8)
}

/// TensorFlow's `Event` (event.proto), the fields we write. proto3 leaves
/// fields at their default value out, as the Python writers do (a step-0
/// event has no step field); fields we do not know are skipped on reading.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

/// `Event.what`: the first event's file version, or a summary.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// TensorFlow's `Summary` (summary.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `Summary.Value`: a tag and, of its `value` oneof, the scalar.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    /// `simple_value` sits in a oneof, so it is written even when 0.
    #[prost(oneof = "Value", tags = "2")]
    pub value: Option<Value>,
}

/// `Summary.Value.value`, of which we write `simple_value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
}

fn scalar_event(wall_time: f64, step: i64, tag: &str, value: f32) -> Event {
    Event {
        wall_time,
        step,
        what: Some(What::Summary(Summary {
            value: vec![SummaryValue {
                tag: tag.to_string(),
                value: Some(Value::SimpleValue(value)),
            }],
        })),
    }
}

fn record(event: &Event) -> Vec<u8> {
    let data = prost::Message::encode_to_vec(event);
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(&data);
    out.extend_from_slice(&masked_crc32c(&data).to_le_bytes());
    out
}

/// Writes events to any `Write`; deterministic: nothing reads the clock.
pub struct EventWriter<W: Write> {
    out: W,
}

impl<W: Write> EventWriter<W> {
    /// Starts a file: writes the `brain.Event:2` event at `wall_time`.
    pub fn new(mut out: W, wall_time: f64) -> std::io::Result<Self> {
        out.write_all(&record(&Event {
            wall_time,
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.to_string())),
        }))?;
        Ok(Self { out })
    }

    /// One scalar event, as `tensorboard_logger.log_value(tag, value, step)` writes it.
    pub fn scalar(
        &mut self,
        wall_time: f64,
        step: i64,
        tag: &str,
        value: f32,
    ) -> std::io::Result<()> {
        self.out
            .write_all(&record(&scalar_event(wall_time, step, tag, value)))
    }

    /// Several scalars at one step, one event each (in the given order).
    pub fn scalars(
        &mut self,
        wall_time: f64,
        step: i64,
        values: &[(&str, f32)],
    ) -> std::io::Result<()> {
        for &(tag, value) in values {
            self.scalar(wall_time, step, tag, value)?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The machine's name for the file name (`socket.gethostname()` in the
/// Python writers); read from the kernel so that no libc binding is needed.
fn hostname() -> String {
    let name = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    // The name is a path component: keep it one.
    let name: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// An event file in a folder, flushed after every batch of scalars so that
/// a TensorBoard watching the folder sees a run as it trains.
pub struct EventFile {
    path: PathBuf,
    writer: EventWriter<BufWriter<File>>,
}

impl EventFile {
    /// Creates `dir/events.out.tfevents.{secs}.{hostname}` (with a `.N`
    /// suffix should that name exist: a resumed run in the same second);
    /// TensorBoard reads every file of a folder as one run.
    pub fn create(dir: &Path, wall_time: f64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let base = format!(
            "events.out.tfevents.{}.{}",
            wall_time.max(0.0).floor() as u64,
            hostname()
        );
        let mut n = 0;
        let (path, file) = loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let path = dir.join(name);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(io(&path)(e)),
            }
        };
        let mut writer = EventWriter::new(BufWriter::new(file), wall_time).map_err(io(&path))?;
        writer.flush().map_err(io(&path))?;
        Ok(Self { path, writer })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn scalars(&mut self, wall_time: f64, step: i64, values: &[(&str, f32)]) -> Result<()> {
        self.writer
            .scalars(wall_time, step, values)
            .and_then(|()| self.writer.flush())
            .map_err(io(&self.path))
    }
}

/// The scalars the published `train()` logs after each step, at step
/// `Eiters` (our `info.step`): `epoch` (0-based), `step` (the 0-based batch
/// within the epoch), `batch_time`, then `LogCollector.tb_log`'s `Eit`,
/// `lr` and `Loss` (the batch's loss, a sum over its captions). `data_time`
/// is left out: there is no separate data loader to time. `grad_norm` (before
/// clipping) is ours.
pub fn step_scalars(info: &StepInfo, batch_time: f64) -> Vec<(&'static str, f32)> {
    vec![
        ("epoch", info.epoch as f32),
        ("step", info.batch.saturating_sub(1) as f32),
        ("batch_time", batch_time as f32),
        ("Eit", info.step as f32),
        ("lr", info.lr as f32),
        ("Loss", info.loss as f32),
        ("grad_norm", info.grad_norm as f32),
    ]
}

/// The scalars the published `validate()` logs: `r1 r5 r10 medr meanr` for
/// image-to-text, `r1i r5i r10i medri` and `meanri` for text-to-image, and
/// `r_sum`. (The published code logs the text-to-image mean rank under
/// `meanr` a second time, having unpacked it into the same variable; we log
/// it as `meanri` and keep `meanr` the image-to-text one.)
pub fn validation_scalars(m: &Metrics) -> Vec<(&'static str, f32)> {
    vec![
        ("r1", m.i2t.r1 as f32),
        ("r5", m.i2t.r5 as f32),
        ("r10", m.i2t.r10 as f32),
        ("medr", m.i2t.medr as f32),
        ("meanr", m.i2t.meanr as f32),
        ("r1i", m.t2i.r1 as f32),
        ("r5i", m.t2i.r5 as f32),
        ("r10i", m.t2i.r10 as f32),
        ("medri", m.t2i.medr as f32),
        ("meanri", m.t2i.meanr as f32),
        ("r_sum", m.rsum as f32),
    ]
}

/// One decoded event.
#[derive(Clone, Debug, PartialEq)]
pub struct TbEvent {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    /// (tag, simple_value) of each summary value that has one.
    pub scalars: Vec<(String, f32)>,
}

impl From<Event> for TbEvent {
    fn from(e: Event) -> Self {
        let (file_version, scalars) = match e.what {
            Some(What::FileVersion(v)) => (Some(v), Vec::new()),
            Some(What::Summary(s)) => (
                None,
                s.value
                    .into_iter()
                    .filter_map(|v| match v.value {
                        Some(Value::SimpleValue(x)) => Some((v.tag, x)),
                        None => None,
                    })
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        Self {
            wall_time: e.wall_time,
            step: e.step,
            file_version,
            scalars,
        }
    }
}

/// Reads every event of an event file, checking both CRCs of every record.
pub fn read_events(bytes: &[u8]) -> std::result::Result<Vec<TbEvent>, EventFileError> {
    let mut events = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let offset = pos;
        let header = bytes
            .get(pos..pos + 12)
            .ok_or(EventFileError::Truncated { offset })?;
        let (len, len_crc) = header.split_at(8);
        if masked_crc32c(len) != u32::from_le_bytes(len_crc.try_into().expect("4 bytes")) {
            return Err(EventFileError::LengthCrc { offset });
        }
        let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| (pos + 12).checked_add(n))
            .and_then(|e| e.checked_add(4))
            .filter(|&e| e <= bytes.len())
            .ok_or(EventFileError::Truncated { offset })?;
        let data = &bytes[pos + 12..end - 4];
        if masked_crc32c(data)
            != u32::from_le_bytes(bytes[end - 4..end].try_into().expect("4 bytes"))
        {
            return Err(EventFileError::DataCrc { offset });
        }
        let event =
            <Event as prost::Message>::decode(data).map_err(|e| EventFileError::Protobuf {
                offset,
                msg: e.to_string(),
            })?;
        events.push(event.into());
        pos = end;
    }
    Ok(events)
}

/// Reads an event file from disk (see `read_events`).
pub fn read_event_file(path: &Path) -> Result<Vec<TbEvent>> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(read_events(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc32c_check_value() {
        // CRC-32C's standard check value (RFC 3720, iSCSI) is 0xE3069283;
        // masked: rotated right by 15 bits, plus 0xA282EAD8.
        let want = 0xE306_9283u32.rotate_right(15).wrapping_add(0xA282_EAD8);
        assert_eq!(masked_crc32c(b"123456789"), want);
    }

    #[test]
    fn first_event_is_the_file_version() {
        let w = EventWriter::new(Vec::new(), 12.5).unwrap();
        let bytes = w.into_inner();
        let ev = read_events(&bytes).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].file_version.as_deref(), Some(FILE_VERSION));
        assert_eq!((ev[0].wall_time, ev[0].step), (12.5, 0));
        // Field 1 (double) then field 3 (string), nothing else.
        assert_eq!(bytes[12], 0x09);
        assert_eq!(bytes[21], 0x1A);
        assert_eq!(bytes.len(), 12 + 1 + 8 + 2 + FILE_VERSION.len() + 4);
    }
}
