//! Reading `model_best.pth.tar`: the legacy format of PyTorch < 1.6 and
//! the zip format of later versions.

use std::collections::HashMap;
use std::io::Read;

use crate::error::{ConvertError, Result};
use crate::pickle::{
    unpickle, NoPersistent, PersistentLoad, StorageKind, TensorRef, TorchStorages, Value,
};

/// `0x1950a86a20f9469cfc6c`, little-endian, as the legacy format's first pickle holds it.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL: i64 = 1001;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// PyTorch < 1.6: five pickles, then the raw storages.
    Legacy,
    /// PyTorch >= 1.6: a zip archive with `data.pkl` and `data/<key>`.
    Zip,
}

/// A tensor copied out of its storage, contiguous, little-endian.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub kind: StorageKind,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl RawTensor {
    /// The elements as f32 (float storages only).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let chunks = self.data.chunks_exact(self.kind.size());
        Some(match self.kind {
            StorageKind::F32 => chunks
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            StorageKind::F64 => chunks
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            _ => return None,
        })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What an SGRAF `model_best.pth.tar` holds.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub format: Format,
    pub epoch: Option<i64>,
    pub best_rsum: Option<f64>,
    pub eiters: Option<i64>,
    /// The `opt` Namespace, attribute by attribute.
    pub opt: Vec<(String, serde_json::Value)>,
    /// `model`: the image, text and similarity encoders' state dicts, in order.
    pub state_dicts: Vec<Vec<(String, RawTensor)>>,
}

impl Checkpoint {
    pub fn opt(&self, key: &str) -> Option<&serde_json::Value> {
        self.opt.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Remembers the element type of every storage key the pickle names.
#[derive(Default)]
struct Storages {
    kinds: HashMap<String, (StorageKind, usize)>,
}

impl PersistentLoad for Storages {
    fn load(&mut self, pid: Value) -> std::result::Result<Value, String> {
        let numel = match &pid {
            Value::Tuple(t) => t.get(4).and_then(Value::as_usize),
            _ => None,
        };
        let v = TorchStorages.load(pid)?;
        if let (Value::Storage(s), Some(numel)) = (&v, numel) {
            if let Some((kind, _)) = self.kinds.get(&s.key) {
                if *kind != s.kind {
                    return Err(format!("storage {} is read as two element types", s.key));
                }
            }
            self.kinds.insert(s.key.clone(), (s.kind, numel));
        }
        Ok(v)
    }
}

/// A `torch.save` file taken apart: its pickled object and its storages.
struct Pickled {
    format: Format,
    object: Value,
    storages: HashMap<String, Vec<u8>>,
}

impl Pickled {
    fn storage(&self, key: &str) -> Result<&[u8]> {
        self.storages
            .get(key)
            .map(Vec::as_slice)
            .ok_or_else(|| ConvertError::Contents(format!("storage {key} is missing")))
    }

    /// The tensors of a state dict held in `d`, in order.
    fn state_dict(&self, d: &Value, what: &str) -> Result<Vec<(String, RawTensor)>> {
        let contents = |msg: String| ConvertError::Contents(msg);
        let Value::Dict(entries) = d else {
            return Err(contents(format!(
                "{what} is a {}, expected a state dict",
                d.type_name()
            )));
        };
        let mut tensors = Vec::new();
        for (k, v) in entries.borrow().iter() {
            let name = k
                .as_str()
                .ok_or_else(|| contents(format!("{what} has a non-string key")))?;
            let Value::Tensor(t) = v else {
                return Err(contents(format!(
                    "{what}.{name} is a {}, expected a tensor",
                    v.type_name()
                )));
            };
            tensors.push((
                name.to_string(),
                materialize(t, self.storage(&t.storage.key)?)?,
            ));
        }
        Ok(tensors)
    }
}

fn read_pickled(bytes: &[u8]) -> Result<Pickled> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes)
    } else if bytes.starts_with(&[0x80, 0x02]) {
        read_legacy(bytes)
    } else {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Err(ConvertError::NotACheckpoint(format!(
            "expected a zip archive (PyTorch >= 1.6) or a protocol-2 pickle (legacy format), found the bytes [{}]",
            head.join(" ")
        )))
    }
}

/// Parses a checkpoint held in memory.
pub fn read_checkpoint(bytes: &[u8]) -> Result<Checkpoint> {
    interpret(&read_pickled(bytes)?)
}

/// A plain state dict, in either format: a dict of tensors, or a dict
/// whose `model` (or `state_dict`) entry is one (other entries, such as an
/// optimizer's state, are ignored).
pub fn read_state_dict(bytes: &[u8]) -> Result<(Format, Vec<(String, RawTensor)>)> {
    let p = read_pickled(bytes)?;
    let inner = ["model", "state_dict"]
        .iter()
        .find_map(|k| p.object.get(k).filter(|v| matches!(v, Value::Dict(_))));
    let tensors = match &inner {
        Some(d) => p.state_dict(d, "model")?,
        None => p.state_dict(&p.object, "the checkpoint")?,
    };
    Ok((p.format, tensors))
}

fn read_legacy(bytes: &[u8]) -> Result<Pickled> {
    let not_ckpt = |what: &str| ConvertError::NotACheckpoint(format!("{what} (legacy format)"));
    let (magic, pos) = unpickle(bytes, 0, &mut NoPersistent).map_err(|e| match e {
        ConvertError::Truncated(_) => e,
        _ => not_ckpt("the first pickle is not the PyTorch magic number"),
    })?;
    if !matches!(&magic, Value::BigInt(b) if b[..] == LEGACY_MAGIC) {
        return Err(not_ckpt("the first pickle is not the PyTorch magic number"));
    }
    let (proto, pos) = unpickle(bytes, pos, &mut NoPersistent)?;
    if proto.as_int() != Some(LEGACY_PROTOCOL) {
        return Err(not_ckpt(&format!(
            "protocol version {proto:?}, expected {LEGACY_PROTOCOL}"
        )));
    }
    let (sys_info, pos) = unpickle(bytes, pos, &mut NoPersistent)?;
    if let Some(Value::Bool(false)) = sys_info.get("little_endian") {
        return Err(ConvertError::Contents(
            "the checkpoint was written on a big-endian machine".into(),
        ));
    }
    let mut storages = Storages::default();
    let (object, pos) = unpickle(bytes, pos, &mut storages)?;
    let (keys, mut pos) = unpickle(bytes, pos, &mut NoPersistent)?;
    let keys: Vec<String> = match &keys {
        Value::List(l) => l
            .borrow()
            .iter()
            .map(|k| k.as_str().map(str::to_string))
            .collect::<Option<_>>(),
        _ => None,
    }
    .ok_or_else(|| {
        ConvertError::Contents("the storage key list is not a list of strings".into())
    })?;

    let mut raw: HashMap<String, Vec<u8>> = HashMap::new();
    for key in &keys {
        let (kind, numel) = *storages.kinds.get(key).ok_or_else(|| {
            ConvertError::Contents(format!("storage {key} is listed but never used"))
        })?;
        let header = bytes.get(pos..pos + 8).ok_or_else(|| {
            ConvertError::Truncated(format!("storage {key} should start at byte {pos}"))
        })?;
        let count = u64::from_le_bytes(header.try_into().unwrap()) as usize;
        if count != numel {
            return Err(ConvertError::Contents(format!(
                "storage {key} holds {count} elements, the pickle says {numel}"
            )));
        }
        let start = pos + 8;
        let len = count.saturating_mul(kind.size());
        let data = start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| {
                ConvertError::Truncated(format!(
                    "storage {key} needs {len} bytes from byte {start}, the file has {}",
                    bytes.len()
                ))
            })?;
        raw.insert(key.clone(), data.to_vec());
        pos = start + len;
    }
    Ok(Pickled {
        format: Format::Legacy,
        object,
        storages: raw,
    })
}

fn read_zip(bytes: &[u8]) -> Result<Pickled> {
    let zip_err = |e: zip::result::ZipError| match e {
        zip::result::ZipError::Io(err) => ConvertError::Truncated(format!("zip archive: {err}")),
        other => ConvertError::NotACheckpoint(format!("broken zip archive: {other}")),
    };
    // A zip's directory sits at its end: a cut file loses it first.
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| {
        ConvertError::Truncated(format!("the zip archive is incomplete or damaged ({e})"))
    })?;
    let pkl = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .ok_or_else(|| ConvertError::NotACheckpoint("a zip archive without data.pkl".into()))?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut read_entry = |name: &str| -> Result<Vec<u8>> {
        let mut f = archive.by_name(name).map_err(zip_err)?;
        let mut buf = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut buf)
            .map_err(|err| ConvertError::Truncated(format!("zip entry {name}: {err}")))?;
        Ok(buf)
    };
    let data_pkl = read_entry(&pkl)?;
    let mut storages = Storages::default();
    let (object, _) = unpickle(&data_pkl, 0, &mut storages)?;
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    for (key, (kind, numel)) in &storages.kinds {
        let data = read_entry(&format!("{prefix}data/{key}"))?;
        if data.len() < numel * kind.size() {
            return Err(ConvertError::Truncated(format!(
                "storage {key} has {} bytes, {} expected",
                data.len(),
                numel * kind.size()
            )));
        }
        cache.insert(key.clone(), data);
    }
    Ok(Pickled {
        format: Format::Zip,
        object,
        storages: cache,
    })
}

/// Copies a (possibly strided) tensor out of its storage.
fn materialize(t: &TensorRef, storage: &[u8]) -> Result<RawTensor> {
    let size = t.storage.kind.size();
    let numel: usize = t.size.iter().product();
    let base = t.storage.offset + t.offset;
    // Largest element index the tensor touches.
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .map(|(&n, &s)| n.saturating_sub(1) * s)
        .sum::<usize>()
        + base;
    if numel > 0
        && (last >= t.storage.offset + t.storage.elements || (last + 1) * size > storage.len())
    {
        return Err(ConvertError::Contents(format!(
            "a tensor of shape {:?} reaches element {last}, past the end of storage {} ({} elements)",
            t.size, t.storage.key, t.storage.elements
        )));
    }
    let mut data = Vec::with_capacity(numel * size);
    let contiguous = {
        let mut expect = 1;
        t.size.iter().zip(&t.stride).rev().all(|(&n, &s)| {
            let ok = n == 1 || s == expect;
            expect *= n;
            ok
        })
    };
    if contiguous {
        data.extend_from_slice(&storage[base * size..(base + numel) * size]);
    } else {
        let mut idx = vec![0usize; t.size.len()];
        for _ in 0..numel {
            let off = base + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            data.extend_from_slice(&storage[off * size..(off + 1) * size]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    Ok(RawTensor {
        kind: t.storage.kind,
        shape: t.size.clone(),
        data,
    })
}

fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Str(s) => J::String(s.clone()),
        Value::Tuple(t) => J::Array(t.iter().map(to_json).collect()),
        Value::List(l) => J::Array(l.borrow().iter().map(to_json).collect()),
        Value::Dict(d) => J::Object(
            d.borrow()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("{k:?}")),
                        to_json(v),
                    )
                })
                .collect(),
        ),
        other => J::String(format!("<{}>", other.type_name())),
    }
}

fn interpret(p: &Pickled) -> Result<Checkpoint> {
    let (object, format) = (&p.object, p.format);
    let contents = |msg: String| ConvertError::Contents(msg);
    if !matches!(object, Value::Dict(_)) {
        return Err(contents(format!(
            "the checkpoint is a {}, expected a dict with 'model' and 'opt'",
            object.type_name()
        )));
    }
    let model = object
        .get("model")
        .ok_or_else(|| contents("no 'model' entry (the list of three state dicts)".into()))?;
    let dicts: Vec<Value> = match &model {
        Value::List(l) => l.borrow().clone(),
        Value::Tuple(t) => t.to_vec(),
        other => {
            return Err(contents(format!(
                "'model' is a {}, expected a list of three state dicts",
                other.type_name()
            )))
        }
    };
    if dicts.len() != 3 {
        return Err(contents(format!(
            "'model' holds {} state dicts, expected 3 (image, text, similarity encoders)",
            dicts.len()
        )));
    }
    let state_dicts = dicts
        .iter()
        .enumerate()
        .map(|(i, d)| p.state_dict(d, &format!("model[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let opt = match object.get("opt") {
        Some(Value::Namespace(ns)) => ns
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect(),
        Some(Value::Dict(d)) => d
            .borrow()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), to_json(v))))
            .collect(),
        Some(other) => {
            return Err(contents(format!(
                "'opt' is a {}, expected a Namespace",
                other.type_name()
            )))
        }
        None => return Err(contents("no 'opt' entry (the training options)".into())),
    };
    Ok(Checkpoint {
        format,
        epoch: object.get("epoch").and_then(|v| v.as_int()),
        best_rsum: object.get("best_rsum").and_then(|v| v.as_float()),
        eiters: object.get("Eiters").and_then(|v| v.as_int()),
        opt,
        state_dicts,
    })
}
