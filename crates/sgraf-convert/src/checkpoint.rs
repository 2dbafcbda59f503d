//! Reading `model_best.pth.tar`: the legacy format of PyTorch < 1.6 and
//! the zip format of later versions.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::io::Read;
use std::rc::Rc;

use crate::error::{ConvertError, Result};
use crate::pickle::{
    clip, unpickle, NoPersistent, PersistentLoad, StorageKind, TensorRef, TorchStorages, Value,
    MAX_DEPTH,
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
        // The shape was checked when the tensor was read: this cannot overflow.
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
    /// `model`: the image, text and similarity encoders' state dicts, in
    /// order (RCAR's single state dict split by its prefixes).
    pub state_dicts: Vec<Vec<(String, RawTensor)>>,
}

impl Checkpoint {
    pub fn opt(&self, key: &str) -> Option<&serde_json::Value> {
        self.opt.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Bytes of tensor data (zip members read, tensors copied out) a checkpoint
/// may make the importer hold, per byte of the file...
pub const ALLOC_PER_BYTE: usize = 4;
/// ...plus this much for any file.
pub const ALLOC_SLACK: usize = 1 << 20;
/// Longest parameter name a state dict may hold, bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// What a file may make the importer allocate: a checkpoint cannot describe
/// more tensor data than it contains (a few times over, for tensors that
/// share a storage), so every zip member and tensor is paid for out of
/// [`ALLOC_PER_BYTE`] times the file's size plus [`ALLOC_SLACK`], before
/// anything is allocated.
struct Budget {
    file: usize,
    total: usize,
    left: Cell<usize>,
}

impl Budget {
    fn new(file: usize) -> Self {
        let total = file
            .saturating_mul(ALLOC_PER_BYTE)
            .saturating_add(ALLOC_SLACK);
        Self {
            file,
            total,
            left: Cell::new(total),
        }
    }

    fn left(&self) -> usize {
        self.left.get()
    }

    /// Pays for `n` bytes of `what`, or says why not.
    fn take(&self, n: u64, what: impl FnOnce() -> String) -> Result<usize> {
        match usize::try_from(n)
            .ok()
            .and_then(|n| Some((n, self.left().checked_sub(n)?)))
        {
            Some((n, left)) => {
                self.left.set(left);
                Ok(n)
            }
            None => Err(ConvertError::Limit(format!(
                "{} needs {n} bytes, but a file of {} bytes may make the importer hold at most {} ({} left): a checkpoint cannot describe more tensor data than it contains",
                what(),
                self.file,
                self.total,
                self.left()
            ))),
        }
    }
}

/// Remembers the element type of every storage key the pickle names.
#[derive(Default)]
struct Storages {
    kinds: HashMap<Rc<str>, (StorageKind, usize)>,
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

/// A `torch.save` file taken apart: its pickled object and its storages
/// (slices of the file in the legacy format, zip members read out).
struct Pickled<'a> {
    format: Format,
    object: Value,
    /// Length of the pickle that made `object`.
    pickle_len: usize,
    storages: HashMap<Rc<str>, Cow<'a, [u8]>>,
    budget: Budget,
}

impl Pickled<'_> {
    fn storage(&self, key: &str) -> Result<&[u8]> {
        self.storages
            .get(key)
            .map(|s| &s[..])
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
            let name = k.as_str().ok_or_else(|| {
                contents(format!(
                    "{what} has the key {k} ({}), expected a string",
                    k.type_name()
                ))
            })?;
            if name.len() > MAX_NAME_LEN {
                return Err(contents(format!(
                    "{what} has a key of {} bytes ({}), expected a parameter name of at most {MAX_NAME_LEN}",
                    name.len(),
                    clip(name, 64)
                )));
            }
            let Value::Tensor(t) = v else {
                return Err(contents(format!(
                    "{what}.{} is a {}, expected a tensor",
                    clip(name, 200),
                    v.type_name()
                )));
            };
            tensors.push((
                name.to_string(),
                materialize(t, self.storage(&t.storage.key)?, &self.budget)?,
            ));
        }
        Ok(tensors)
    }
}

fn read_pickled(bytes: &[u8]) -> Result<Pickled<'_>> {
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
///
/// Any input, however hostile, ends in a [`Checkpoint`] or one error, in time
/// and memory linear in `bytes.len()`: see [`crate::pickle::unpickle`] for
/// the pickle's limits, [`ALLOC_PER_BYTE`] for the data's.
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

fn read_legacy(bytes: &[u8]) -> Result<Pickled<'_>> {
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
            "protocol version {proto}, expected {LEGACY_PROTOCOL}"
        )));
    }
    let (sys_info, pos) = unpickle(bytes, pos, &mut NoPersistent)?;
    if let Some(Value::Bool(false)) = sys_info.get("little_endian") {
        return Err(ConvertError::Contents(
            "the checkpoint was written on a big-endian machine".into(),
        ));
    }
    let mut storages = Storages::default();
    let object_start = pos;
    let (object, pos) = unpickle(bytes, pos, &mut storages)?;
    let pickle_len = pos - object_start;
    let (keys, mut pos) = unpickle(bytes, pos, &mut NoPersistent)?;
    let keys: Vec<Rc<str>> = match &keys {
        Value::List(l) => l
            .borrow()
            .iter()
            .map(|k| k.as_rc_str().cloned())
            .collect::<Option<_>>(),
        _ => None,
    }
    .ok_or_else(|| {
        ConvertError::Contents("the storage key list is not a list of strings".into())
    })?;

    // Each storage is a slice of the file: nothing is copied yet.
    let mut raw: HashMap<Rc<str>, Cow<'_, [u8]>> = HashMap::new();
    for key in &keys {
        let (kind, numel) = *storages.kinds.get(key).ok_or_else(|| {
            ConvertError::Contents(format!(
                "storage {} is listed but never used",
                clip(key, 64)
            ))
        })?;
        let header = pos
            .checked_add(8)
            .and_then(|end| bytes.get(pos..end))
            .ok_or_else(|| {
                ConvertError::Truncated(format!("storage {key} should start at byte {pos}"))
            })?;
        let count = u64::from_le_bytes(header.try_into().unwrap());
        if usize::try_from(count).ok() != Some(numel) {
            return Err(ConvertError::Contents(format!(
                "storage {key} holds {count} elements, the pickle says {numel}"
            )));
        }
        let start = pos + 8;
        let data = numel
            .checked_mul(kind.size())
            .and_then(|len| Some((len, start.checked_add(len)?)))
            .and_then(|(len, end)| Some((len, bytes.get(start..end)?)))
            .map(|(_, data)| data)
            .ok_or_else(|| {
                ConvertError::Truncated(format!(
                    "storage {key} needs {numel} elements of {} bytes from byte {start}, the file has {}",
                    kind.size(),
                    bytes.len()
                ))
            })?;
        pos = start + data.len();
        raw.insert(key.clone(), Cow::Borrowed(data));
    }
    Ok(Pickled {
        format: Format::Legacy,
        object,
        pickle_len,
        storages: raw,
        budget: Budget::new(bytes.len()),
    })
}

/// Reads a zip member whole, refusing before any allocation one that
/// declares more than the budget allows, and one that inflates past the
/// size it declares (a deflate bomb) or holds less.
fn read_member(
    archive: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    name: &str,
    budget: &Budget,
) -> Result<Vec<u8>> {
    let f = archive.by_name(name).map_err(|e| match e {
        zip::result::ZipError::Io(err) => ConvertError::Truncated(format!("zip archive: {err}")),
        other => ConvertError::NotACheckpoint(format!(
            "broken zip archive ({}): {other}",
            clip(name, 300)
        )),
    })?;
    let declared = f.size();
    let n = budget.take(declared, || format!("zip entry {}", clip(name, 300)))?;
    let mut buf = Vec::with_capacity(n);
    f.take(declared.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|err| {
            let msg = format!("zip entry {}: {err}", clip(name, 300));
            match err.kind() {
                // A bad checksum, or more data than declared (zip's own check).
                std::io::ErrorKind::InvalidData => {
                    ConvertError::NotACheckpoint(format!("broken zip archive: {msg}"))
                }
                _ => ConvertError::Truncated(msg),
            }
        })?;
    if buf.len() > n {
        return Err(ConvertError::Limit(format!(
            "zip entry {} inflates past the {declared} bytes its header declares",
            clip(name, 300)
        )));
    }
    if buf.len() < n {
        return Err(ConvertError::Truncated(format!(
            "zip entry {} holds {} bytes, its header declares {declared}",
            clip(name, 300),
            buf.len()
        )));
    }
    Ok(buf)
}

fn read_zip(bytes: &[u8]) -> Result<Pickled<'_>> {
    let budget = Budget::new(bytes.len());
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
    let data_pkl = read_member(&mut archive, &pkl, &budget)?;
    let mut storages = Storages::default();
    let (object, _) = unpickle(&data_pkl, 0, &mut storages)?;
    let mut keys: Vec<(&Rc<str>, &(StorageKind, usize))> = storages.kinds.iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let mut cache: HashMap<Rc<str>, Cow<'_, [u8]>> = HashMap::new();
    for (key, &(kind, numel)) in keys {
        let need = numel.checked_mul(kind.size()).ok_or_else(|| {
            ConvertError::Limit(format!(
                "storage {key} declares {numel} elements of {} bytes, more than any file holds",
                kind.size()
            ))
        })?;
        let data = read_member(&mut archive, &format!("{prefix}data/{key}"), &budget)?;
        if data.len() < need {
            return Err(ConvertError::Truncated(format!(
                "storage {key} has {} bytes, {need} expected",
                data.len(),
            )));
        }
        cache.insert(key.clone(), Cow::Owned(data));
    }
    Ok(Pickled {
        format: Format::Zip,
        object,
        pickle_len: data_pkl.len(),
        storages: cache,
        budget,
    })
}

/// Copies a (possibly strided) tensor out of its storage. Every size
/// product is checked (as the safetensors crate does), the tensor must lie
/// inside its storage, and its bytes are paid for out of `budget` before
/// they are allocated.
fn materialize(t: &TensorRef, storage: &[u8], budget: &Budget) -> Result<RawTensor> {
    let size = t.storage.kind.size();
    let key = &t.storage.key;
    let overflow = || {
        ConvertError::Limit(format!(
            "a tensor of shape {:?} and stride {:?} in storage {key}: its size overflows",
            t.size, t.stride
        ))
    };
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .ok_or_else(overflow)?;
    let nbytes = numel.checked_mul(size).ok_or_else(overflow)?;
    let base = t
        .storage
        .offset
        .checked_add(t.offset)
        .ok_or_else(overflow)?;
    // Elements of the storage (view) that exist in the file.
    let end = t
        .storage
        .offset
        .saturating_add(t.storage.elements)
        .min(storage.len() / size);
    if numel == 0 {
        if base > end {
            return Err(ConvertError::Contents(format!(
                "an empty tensor of shape {:?} starts at element {base}, past the end of storage {key} ({} elements)",
                t.size, t.storage.elements
            )));
        }
        return Ok(RawTensor {
            kind: t.storage.kind,
            shape: t.size.clone(),
            data: Vec::new(),
        });
    }
    // Largest element index the tensor touches.
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(base, |acc, (&n, &s)| {
            acc.checked_add((n - 1).checked_mul(s)?)
        })
        .ok_or_else(overflow)?;
    if last >= end {
        return Err(ConvertError::Contents(format!(
            "a tensor of shape {:?} reaches element {last}, past the end of storage {key} ({} elements)",
            t.size, t.storage.elements
        )));
    }
    budget.take(nbytes as u64, || {
        format!(
            "a tensor of shape {:?} ({numel} elements of {size} bytes)",
            t.size
        )
    })?;
    let mut data = Vec::with_capacity(nbytes);
    // `numel` > 0: every partial product below is at most `numel`.
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

/// An `opt` value as JSON. Recursion is bounded by [`MAX_DEPTH`] (which
/// the pickle already enforces), and `budget` caps the values and string
/// bytes made, so that a value shared many times cannot expand without end.
fn to_json(v: &Value, depth: usize, budget: &mut usize, name: &str) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    let cost = 1 + match v {
        Value::Str(s) => s.len(),
        _ => 0,
    };
    *budget = budget.checked_sub(cost).ok_or_else(|| {
        ConvertError::Limit(format!(
            "the options ('opt') expand to more values than the pickle holds (at opt.{})",
            clip(name, 100)
        ))
    })?;
    if depth > MAX_DEPTH {
        return Err(ConvertError::Limit(format!(
            "opt.{} nests more than {MAX_DEPTH} levels deep",
            clip(name, 100)
        )));
    }
    let items = |items: &[Value], budget: &mut usize| -> Result<J> {
        items
            .iter()
            .map(|x| to_json(x, depth + 1, budget, name))
            .collect::<Result<Vec<_>>>()
            .map(J::Array)
    };
    Ok(match v {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Str(s) => J::String(s.to_string()),
        Value::Tuple(t) => items(t, budget)?,
        Value::List(l) => items(&l.borrow(), budget)?,
        Value::Dict(d) => {
            let mut map = serde_json::Map::new();
            for (k, v) in d.borrow().iter() {
                let key = match k.as_str() {
                    Some(s) => s.to_string(),
                    None => k.to_string(),
                };
                *budget = budget.saturating_sub(key.len());
                map.insert(key, to_json(v, depth + 1, budget, name)?);
            }
            J::Object(map)
        }
        other => J::String(format!("<{}>", other.type_name())),
    })
}

/// One state dict of a whole model (RCAR's, saved from `DataParallel`: keys
/// `module.img_enc.*`, `module.txt_enc.*`, `module.sim_enc.*`) -> the three
/// encoders' state dicts in SGRAF's order, the prefixes removed.
fn split_encoders(all: Vec<(String, RawTensor)>) -> Result<Vec<Vec<(String, RawTensor)>>> {
    let mut parts: Vec<Vec<(String, RawTensor)>> = vec![Vec::new(), Vec::new(), Vec::new()];
    for (name, t) in all {
        let bare = name.strip_prefix("module.").unwrap_or(&name);
        let Some((i, rest)) = crate::convert::ENCODERS
            .iter()
            .enumerate()
            .find_map(|(i, e)| bare.strip_prefix(*e)?.strip_prefix('.').map(|r| (i, r)))
        else {
            return Err(ConvertError::StateDict(format!(
                "unexpected tensor {} (expected names under img_enc., txt_enc. or sim_enc.)",
                clip(&name, 200)
            )));
        };
        parts[i].push((rest.to_string(), t));
    }
    Ok(parts)
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
    let model = object.get("model").ok_or_else(|| {
        contents(
            "no 'model' entry (SGRAF's list of three state dicts, or RCAR's state dict)".into(),
        )
    })?;
    let state_dicts = match &model {
        // RCAR (train.py:155-161): the state dict of DataParallel(SCANpp).
        Value::Dict(_) => split_encoders(p.state_dict(&model, "model")?)?,
        Value::List(_) | Value::Tuple(_) => {
            let dicts: Vec<Value> = match &model {
                Value::List(l) => l.borrow().clone(),
                Value::Tuple(t) => t.to_vec(),
                _ => unreachable!("matched above"),
            };
            if dicts.len() != 3 {
                return Err(contents(format!(
                    "'model' holds {} state dicts, expected 3 (image, text, similarity encoders)",
                    dicts.len()
                )));
            }
            dicts
                .iter()
                .enumerate()
                .map(|(i, d)| p.state_dict(d, &format!("model[{i}]")))
                .collect::<Result<Vec<_>>>()?
        }
        other => {
            return Err(contents(format!(
                "'model' is a {}, expected a list of three state dicts or a state dict",
                other.type_name()
            )))
        }
    };
    // JSON made from the options: at most twice the pickle, plus 64 KiB.
    let mut budget = p.pickle_len.saturating_mul(2).saturating_add(1 << 16);
    let mut opt = Vec::new();
    match &object.get("opt") {
        Some(Value::Namespace(ns)) => {
            for (k, v) in ns.borrow().iter() {
                budget = budget.saturating_sub(k.len());
                opt.push((k.to_string(), to_json(v, 1, &mut budget, k)?));
            }
        }
        Some(Value::Dict(d)) => {
            for (k, v) in d.borrow().iter() {
                if let Some(k) = k.as_str() {
                    budget = budget.saturating_sub(k.len());
                    opt.push((k.to_string(), to_json(v, 1, &mut budget, k)?));
                }
            }
        }
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
