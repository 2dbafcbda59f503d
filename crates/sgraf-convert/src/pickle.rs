//! A restricted pickle interpreter: just the opcodes and globals that a
//! PyTorch checkpoint needs.
//!
//! A pickle is a program for a stack machine that may import and call any
//! Python function. This one imports nothing: every `GLOBAL` is looked up in
//! a fixed allow-list of the classes `torch.save` writes, and anything else
//! stops the load with an error that names it.
//!
//! It is also built for hostile input: every file ends in a value or one
//! error, in time and memory linear in its size (see [`unpickle`]).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::rc::Rc;

use crate::error::ConvertError;

/// Element type of a torch storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageKind {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// The Python callables and classes a checkpoint may reference.
#[derive(Clone, Debug, PartialEq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StorageKind),
    Namespace,
    NumpyScalar,
    NumpyDtype,
    CodecsEncode,
}

impl Global {
    fn resolve(module: &str, name: &str) -> Option<Self> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Self::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Self::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Self::RebuildParameter,
            ("torch", class) => Self::Storage(StorageKind::from_class(class)?),
            ("argparse", "Namespace") => Self::Namespace,
            ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Self::NumpyScalar,
            ("numpy", "dtype") => Self::NumpyDtype,
            ("_codecs", "encode") => Self::CodecsEncode,
            _ => return None,
        })
    }
}

/// Deepest nesting of containers (tuples, lists, dicts, Namespaces) a pickle
/// may build. A state dict is three levels deep; Python's own limit on
/// rebuilding nested objects is about 1000.
pub const MAX_DEPTH: usize = 100;

/// Most dimensions a tensor may have (PyTorch itself stops at 64 in places).
pub const MAX_NDIM: usize = 64;

/// Longest storage key: `torch.save` writes decimal numbers.
pub const MAX_KEY_LEN: usize = 256;

/// Work the interpreter may do beyond reading its opcodes (hashing dict
/// keys, copying attributes, encoding strings), per byte of input...
pub const WORK_PER_BYTE: usize = 16;
/// ...plus this much for any input.
pub const WORK_SLACK: usize = 1 << 20;

/// A storage named by a persistent id: `elements` elements of `kind`
/// starting `offset` elements into the raw storage `key`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub kind: StorageKind,
    pub key: Rc<str>,
    pub offset: usize,
    pub elements: usize,
}

/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

pub type Shared<T> = Rc<RefCell<T>>;

/// A value on the pickle machine's stack.
///
/// Values are shared, never deep-copied: `DUP` and `BINGET` clone an `Rc`.
/// Dropping a value never recurses (a million nested tuples are freed with
/// an explicit stack), and formatting one (`{}` or `{:?}`) prints at most a
/// few hundred characters, a few levels deep, `[...]` for a container that
/// contains itself.
#[derive(Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Vec<Value>>),
    List(Shared<Vec<Value>>),
    /// `dict` and `OrderedDict`, in insertion order.
    Dict(Shared<Dict>),
    /// `argparse.Namespace`, its attributes in pickle order.
    Namespace(Shared<Vec<(Rc<str>, Value)>>),
    Global(Global),
    Storage(StorageRef),
    Tensor(Rc<TensorRef>),
    /// A numpy dtype, e.g. `"f8"`.
    Dtype(Rc<str>),
    /// An integer too wide for i64 (little-endian two's complement bytes).
    BigInt(Rc<[u8]>),
}

/// A dict in insertion order, with hashed `str` and `int` keys (other keys,
/// which checkpoints do not use, are kept but never looked up).
#[derive(Default)]
pub struct Dict {
    entries: Vec<(Value, Value)>,
    strs: HashMap<Rc<str>, usize>,
    ints: HashMap<i64, usize>,
}

impl Dict {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, (Value, Value)> {
        self.entries.iter()
    }

    /// The value under the string key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.strs.get(key).map(|&i| &self.entries[i].1)
    }

    /// Sets `key` to `value`, keeping the first insertion's position.
    pub fn insert(&mut self, key: Value, value: Value) {
        let slot = match &key {
            Value::Str(s) => self.strs.get(&**s).copied(),
            Value::Int(i) => self.ints.get(i).copied(),
            _ => None,
        };
        match slot {
            Some(i) => self.entries[i].1 = value,
            None => {
                let i = self.entries.len();
                match &key {
                    Value::Str(s) => {
                        self.strs.insert(s.clone(), i);
                    }
                    Value::Int(n) => {
                        self.ints.insert(*n, i);
                    }
                    _ => {}
                }
                self.entries.push((key, value));
            }
        }
    }

    fn drain_into(&mut self, out: &mut Vec<Value>) {
        self.strs.clear();
        self.ints.clear();
        for (k, v) in self.entries.drain(..) {
            out.push(k);
            out.push(v);
        }
    }
}

impl Drop for Value {
    /// Frees nested containers with an explicit stack: a deep value must not
    /// overflow the thread's stack the way the derived, recursive drop would.
    fn drop(&mut self) {
        if container_id(self).is_none() {
            return;
        }
        let mut pending = Vec::new();
        self.take_children(&mut pending);
        while let Some(mut v) = pending.pop() {
            v.take_children(&mut pending);
        }
    }
}

impl Value {
    /// Moves the children of a container this value solely owns into `out`.
    fn take_children(&mut self, out: &mut Vec<Value>) {
        match self {
            Value::Tuple(t) => {
                if let Some(items) = Rc::get_mut(t) {
                    out.append(items);
                }
            }
            Value::List(l) => {
                if let Some(cell) = Rc::get_mut(l) {
                    out.append(cell.get_mut());
                }
            }
            Value::Dict(d) => {
                if let Some(cell) = Rc::get_mut(d) {
                    cell.get_mut().drain_into(out);
                }
            }
            Value::Namespace(ns) => {
                if let Some(cell) = Rc::get_mut(ns) {
                    out.extend(cell.get_mut().drain(..).map(|(_, v)| v));
                }
            }
            _ => {}
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Namespace(_) => "Namespace",
            Value::Global(_) => "class",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Dtype(_) => "dtype",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The shared string, for keeping it without a copy.
    pub fn as_rc_str(&self) -> Option<&Rc<str>> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    pub fn as_usize(&self) -> Option<usize> {
        self.as_int().and_then(|i| usize::try_from(i).ok())
    }

    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// Looks `key` up in a dict with string keys or a Namespace.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => d.borrow().get(key).cloned(),
            Value::Namespace(ns) => ns
                .borrow()
                .iter()
                .find(|(k, _)| &**k == key)
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    }
}

/// The identity of a container (for cycle and depth bookkeeping); `None`
/// for every other value.
fn container_id(v: &Value) -> Option<usize> {
    Some(match v {
        Value::Tuple(t) => Rc::as_ptr(t) as *const () as usize,
        Value::List(l) => Rc::as_ptr(l) as *const () as usize,
        Value::Dict(d) => Rc::as_ptr(d) as *const () as usize,
        Value::Namespace(ns) => Rc::as_ptr(ns) as *const () as usize,
        _ => return None,
    })
}

/// The `i`-th child of a container (a dict's keys and values alternate).
fn child(v: &Value, i: usize) -> Option<Value> {
    match v {
        Value::Tuple(t) => t.get(i).cloned(),
        Value::List(l) => l.borrow().get(i).cloned(),
        Value::Dict(d) => d.borrow().entries.get(i / 2).map(|(k, v)| {
            if i.is_multiple_of(2) {
                k.clone()
            } else {
                v.clone()
            }
        }),
        Value::Namespace(ns) => ns.borrow().get(i).map(|(_, v)| v.clone()),
        _ => None,
    }
}

/// What [`check_nesting`] found wrong.
enum Shape {
    TooDeep,
    Cycle(&'static str),
}

/// Walks everything reachable from `roots` with an explicit stack and
/// refuses a container that contains itself or containers nested deeper than
/// `limit`. Linear in the containers and their items (shared ones are
/// walked once).
fn check_nesting<'v>(
    roots: impl IntoIterator<Item = &'v Value>,
    limit: usize,
) -> Result<(), Shape> {
    // Finished containers: how many levels of containers they hold, themselves included.
    let mut height: HashMap<usize, usize> = HashMap::new();
    // Containers on the current path.
    let mut active: HashSet<usize> = HashSet::new();
    for root in roots {
        let Some(id) = container_id(root) else {
            continue;
        };
        if height.contains_key(&id) {
            continue;
        }
        // (container, its id, next child, height so far)
        let mut stack: Vec<(Value, usize, usize, usize)> = vec![(root.clone(), id, 0, 1)];
        active.insert(id);
        loop {
            let depth = stack.len();
            let Some(top) = stack.last_mut() else {
                break;
            };
            match child(&top.0, top.2) {
                Some(c) => {
                    top.2 += 1;
                    let Some(cid) = container_id(&c) else {
                        continue;
                    };
                    if active.contains(&cid) {
                        return Err(Shape::Cycle(c.type_name()));
                    }
                    if let Some(&h) = height.get(&cid) {
                        if depth + h > limit {
                            return Err(Shape::TooDeep);
                        }
                        top.3 = top.3.max(h + 1);
                        continue;
                    }
                    if depth + 1 > limit {
                        return Err(Shape::TooDeep);
                    }
                    active.insert(cid);
                    stack.push((c, cid, 0, 1));
                }
                None => {
                    let (_, id, _, h) = stack.pop().expect("a frame");
                    active.remove(&id);
                    height.insert(id, h);
                    if let Some(parent) = stack.last_mut() {
                        parent.3 = parent.3.max(h + 1);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Longest text a formatted value may take, characters.
const SHOW_CHARS: usize = 200;
/// Levels of containers a formatted value shows.
const SHOW_DEPTH: usize = 3;
/// Items shown per container.
const SHOW_ITEMS: usize = 6;
/// Longest string shown, bytes.
const SHOW_STR: usize = 48;

/// `s`, or its first `max` bytes and its length when it is longer.
pub(crate) fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}... ({} bytes)", &s[..end], s.len()))
}

/// Bounded, cycle-safe rendering: recursion is at most [`SHOW_DEPTH`] deep.
fn show(v: &Value, out: &mut String, depth: usize, path: &mut Vec<usize>) {
    use std::fmt::Write;
    if out.len() >= SHOW_CHARS {
        if !out.ends_with("...") {
            out.push_str("...");
        }
        return;
    }
    let _ = match v {
        Value::None => write!(out, "None"),
        Value::Bool(b) => write!(out, "{}", if *b { "True" } else { "False" }),
        Value::Int(i) => write!(out, "{i}"),
        Value::Float(x) => write!(out, "{x:?}"),
        Value::Str(s) => write!(out, "'{}'", clip(s, SHOW_STR)),
        Value::Bytes(b) => write!(out, "<{} bytes>", b.len()),
        Value::BigInt(b) => write!(out, "<{}-byte int>", b.len()),
        Value::Global(g) => write!(out, "{g:?}"),
        Value::Storage(s) => write!(out, "<{:?} storage '{}'>", s.kind, clip(&s.key, SHOW_STR)),
        Value::Tensor(t) => write!(out, "<tensor of size {:?}>", t.size),
        Value::Dtype(d) => write!(out, "dtype('{}')", clip(d, SHOW_STR)),
        Value::Tuple(_) | Value::List(_) | Value::Dict(_) | Value::Namespace(_) => {
            show_container(v, out, depth, path);
            Ok(())
        }
    };
}

fn show_container(v: &Value, out: &mut String, depth: usize, path: &mut Vec<usize>) {
    use std::fmt::Write;
    let (open, close) = match v {
        Value::Tuple(_) => ("(", ")"),
        Value::List(_) => ("[", "]"),
        Value::Dict(_) => ("{", "}"),
        _ => ("Namespace(", ")"),
    };
    let id = container_id(v).expect("a container");
    let len = match v {
        Value::Tuple(t) => t.len(),
        Value::List(l) => l.try_borrow().map(|l| l.len()).unwrap_or(0),
        Value::Dict(d) => d.try_borrow().map(|d| d.len()).unwrap_or(0),
        Value::Namespace(ns) => ns.try_borrow().map(|ns| ns.len()).unwrap_or(0),
        _ => 0,
    };
    if path.contains(&id) {
        let _ = write!(out, "{open}...{close}");
        return;
    }
    if depth >= SHOW_DEPTH && len > 0 {
        let _ = write!(out, "{open}<{len} items>{close}");
        return;
    }
    out.push_str(open);
    path.push(id);
    for i in 0..len.min(SHOW_ITEMS) {
        if i > 0 {
            out.push_str(", ");
        }
        match v {
            Value::Dict(d) => {
                let Ok(d) = d.try_borrow() else { break };
                let Some((k, val)) = d.entries.get(i) else {
                    break;
                };
                show(k, out, depth + 1, path);
                out.push_str(": ");
                show(val, out, depth + 1, path);
            }
            Value::Namespace(ns) => {
                let Ok(ns) = ns.try_borrow() else { break };
                let Some((k, val)) = ns.get(i) else { break };
                let _ = write!(out, "{}=", clip(k, SHOW_STR));
                show(val, out, depth + 1, path);
            }
            _ => match child(v, i) {
                Some(c) => show(&c, out, depth + 1, path),
                None => break,
            },
        }
        if out.len() >= SHOW_CHARS {
            break;
        }
    }
    path.pop();
    if len > SHOW_ITEMS || (len > 0 && out.len() >= SHOW_CHARS) {
        let _ = write!(out, ", ... ({len} items)");
    } else if len == 1 && matches!(v, Value::Tuple(_)) {
        out.push(',');
    }
    out.push_str(close);
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        show(self, &mut out, 0, &mut Vec::new());
        f.write_str(&out)
    }
}

/// The same bounded rendering as `Display`: no `{:?}` of a hostile value
/// can run away.
impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where the pickle's persistent ids come from.
pub trait PersistentLoad {
    fn load(&mut self, pid: Value) -> Result<Value, String>;
}

/// The persistent ids of `torch.save`: `('storage', torch.XStorage, key,
/// location, numel[, view_metadata])`. The location (`cuda:0`, `cpu`) is
/// ignored: everything is read on the CPU.
pub struct TorchStorages;

impl PersistentLoad for TorchStorages {
    fn load(&mut self, pid: Value) -> Result<Value, String> {
        let Value::Tuple(items) = &pid else {
            return Err(format!(
                "persistent id is a {}, expected a tuple",
                pid.type_name()
            ));
        };
        let bad = || {
            format!("unexpected persistent id {pid}, expected ('storage', torch.XStorage, key, location, numel)")
        };
        if items.len() < 5 || items[0].as_str() != Some("storage") {
            return Err(bad());
        }
        let Value::Global(Global::Storage(kind)) = items[1] else {
            return Err(bad());
        };
        let key = items[2].as_rc_str().ok_or_else(bad)?.clone();
        if key.len() > MAX_KEY_LEN {
            return Err(format!(
                "a storage key of {} bytes, expected at most {MAX_KEY_LEN}",
                key.len()
            ));
        }
        let numel = match &items[4] {
            Value::Int(n) if *n < 0 => {
                return Err(format!("storage {key} has a negative size {n}"));
            }
            v => v.as_usize().ok_or_else(bad)?,
        };
        let (offset, elements) = match items.get(5) {
            None | Some(Value::None) => (0, numel),
            // A view into another storage: (view_key, offset, size).
            Some(Value::Tuple(view)) if view.len() == 3 => (
                view[1].as_usize().ok_or_else(bad)?,
                view[2].as_usize().ok_or_else(bad)?,
            ),
            Some(_) => return Err(bad()),
        };
        if offset.checked_add(elements).is_none_or(|end| end > numel) {
            return Err(format!(
                "storage view {offset}+{elements} runs past its storage of {numel} elements"
            ));
        }
        Ok(Value::Storage(StorageRef {
            kind,
            key,
            offset,
            elements,
        }))
    }
}

/// Refuses every persistent id (for the header pickles of the legacy format).
pub struct NoPersistent;

impl PersistentLoad for NoPersistent {
    fn load(&mut self, _pid: Value) -> Result<Value, String> {
        Err("unexpected persistent id".into())
    }
}

/// Runs one pickle from `data[start..]`, returning the value and the offset
/// just past its STOP opcode.
///
/// Hostile input ends in an error, in time and memory linear in
/// `data.len()`: containers nest at most [`MAX_DEPTH`] deep and never
/// contain themselves, memo indices are bounded by the input, and the work
/// beyond reading opcodes is capped at [`WORK_PER_BYTE`] per byte.
pub fn unpickle(
    data: &[u8],
    start: usize,
    persistent: &mut dyn PersistentLoad,
) -> Result<(Value, usize), ConvertError> {
    let work = data
        .len()
        .saturating_mul(WORK_PER_BYTE)
        .saturating_add(WORK_SLACK);
    let mut m = Machine {
        data,
        pos: start,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        work_left: work,
        work,
        containers: Vec::new(),
    };
    match m.run(persistent) {
        Ok(value) => Ok((value, m.pos)),
        Err(e) => {
            m.break_cycles();
            Err(e)
        }
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<usize, Value>,
    work_left: usize,
    work: usize,
    /// Every list, dict and Namespace made: checked for cycles at STOP and
    /// emptied on failure, so that nothing leaks.
    containers: Vec<Value>,
}

impl<'a> Machine<'a> {
    fn err(&self, at: usize, msg: impl Into<String>) -> ConvertError {
        ConvertError::Pickle {
            offset: at,
            msg: msg.into(),
        }
    }

    /// Spends `units` of the work budget.
    fn charge(&mut self, units: usize, at: usize) -> Result<(), ConvertError> {
        match self.work_left.checked_sub(units) {
            Some(left) => {
                self.work_left = left;
                Ok(())
            }
            None => Err(ConvertError::Limit(format!(
                "the pickle needs more than {} steps of work at byte {at}; a file of {} bytes may take at most {WORK_PER_BYTE} per byte plus {WORK_SLACK}",
                self.work,
                self.data.len()
            ))),
        }
    }

    /// Registers a new mutable container.
    fn fresh(&mut self, v: Value) -> Value {
        if matches!(v, Value::List(_) | Value::Dict(_) | Value::Namespace(_)) {
            self.containers.push(v.clone());
        }
        v
    }

    /// Empties every container made, breaking any reference cycle.
    fn break_cycles(&mut self) {
        let mut graveyard = Vec::new();
        for c in self.containers.drain(..) {
            match &c {
                Value::List(l) => {
                    if let Ok(mut l) = l.try_borrow_mut() {
                        graveyard.append(&mut l);
                    }
                }
                Value::Dict(d) => {
                    if let Ok(mut d) = d.try_borrow_mut() {
                        d.drain_into(&mut graveyard);
                    }
                }
                Value::Namespace(ns) => {
                    if let Ok(mut ns) = ns.try_borrow_mut() {
                        graveyard.extend(ns.drain(..).map(|(_, v)| v));
                    }
                }
                _ => {}
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ConvertError> {
        let data: &'a [u8] = self.data;
        let end = self.pos.checked_add(n).filter(|&e| e <= data.len());
        match end {
            Some(end) => {
                let s = &data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(ConvertError::Truncated(format!(
                "the pickle needs {n} more bytes at offset {} but the file has {}",
                self.pos,
                data.len()
            ))),
        }
    }

    fn u8(&mut self) -> Result<u8, ConvertError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ConvertError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, ConvertError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn i32(&mut self) -> Result<i32, ConvertError> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, ConvertError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn line(&mut self) -> Result<String, ConvertError> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(ConvertError::Truncated(format!(
                "a GLOBAL name at offset {} has no end of line",
                self.pos
            )));
        };
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn utf8(&mut self, n: usize, at: usize) -> Result<Value, ConvertError> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(|s| Value::Str(s.into()))
            .map_err(|_| self.err(at, "string is not valid UTF-8"))
    }

    fn pop(&mut self, at: usize) -> Result<Value, ConvertError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err(at, "stack underflow"));
        }
        Ok(self.stack.pop().unwrap())
    }

    fn top(&self, at: usize) -> Result<&Value, ConvertError> {
        self.stack
            .last()
            .ok_or_else(|| self.err(at, "stack underflow"))
    }

    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>, ConvertError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err(at, "no MARK to pop to"))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, idx: usize, at: usize) -> Result<(), ConvertError> {
        let v = self.top(at)?.clone();
        // A pickler numbers its memo entries 0, 1, 2, ...: an index past the
        // input's length is never one of them.
        if idx > self.data.len() {
            return Err(self.err(
                at,
                format!(
                    "memo index {idx} is out of range (at most {} in a file of that size)",
                    self.data.len()
                ),
            ));
        }
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: usize, at: usize) -> Result<(), ConvertError> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| self.err(at, format!("memo slot {idx} is empty")))?;
        self.stack.push(v);
        Ok(())
    }

    fn global(&self, module: &str, name: &str, at: usize) -> Result<Value, ConvertError> {
        Global::resolve(module, name)
            .map(Value::Global)
            .ok_or_else(|| ConvertError::ForbiddenGlobal {
                name: format!("{}.{}", clip(module, 100), clip(name, 100)),
                offset: at,
            })
    }

    fn set_items(
        &mut self,
        target: &Value,
        items: Vec<Value>,
        at: usize,
    ) -> Result<(), ConvertError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err(at, "SETITEMS with an odd number of values"));
        }
        let Value::Dict(d) = target else {
            return Err(self.err(at, format!("SETITEM on a {}", target.type_name())));
        };
        // Hashing a key costs its length: a key shared through the memo
        // must not be hashed for free a million times.
        let cost = items
            .iter()
            .step_by(2)
            .map(|k| 1 + k.as_str().map_or(0, str::len))
            .fold(0usize, usize::saturating_add);
        self.charge(cost, at)?;
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.insert(k, v);
        }
        Ok(())
    }

    fn append(&mut self, target: &Value, items: Vec<Value>, at: usize) -> Result<(), ConvertError> {
        let Value::List(l) = target else {
            return Err(self.err(at, format!("APPEND on a {}", target.type_name())));
        };
        l.borrow_mut().extend(items);
        Ok(())
    }

    /// A tensor's size or stride: non-negative, at most [`MAX_NDIM`] of them.
    fn dims(&self, v: &Value, what: &str, at: usize) -> Result<Vec<usize>, ConvertError> {
        let Value::Tuple(t) = v else {
            return Err(self.err(
                at,
                format!(
                    "_rebuild_tensor_v2: the {what} is a {}, expected a tuple",
                    v.type_name()
                ),
            ));
        };
        if t.len() > MAX_NDIM {
            return Err(ConvertError::Limit(format!(
                "a tensor {what} of {} dimensions at byte {at}, at most {MAX_NDIM} are supported",
                t.len()
            )));
        }
        t.iter()
            .map(|d| match d {
                Value::Int(n) => usize::try_from(*n).map_err(|_| {
                    self.err(
                        at,
                        format!("_rebuild_tensor_v2: the {what} {v} has the negative entry {n}, expected sizes >= 0"),
                    )
                }),
                other => Err(self.err(
                    at,
                    format!(
                        "_rebuild_tensor_v2: the {what} {v} holds a {}, expected integers",
                        other.type_name()
                    ),
                )),
            })
            .collect()
    }

    fn call(&mut self, f: Value, args: Value, at: usize) -> Result<Value, ConvertError> {
        let Value::Global(g) = &f else {
            return Err(self.err(at, format!("REDUCE calls a {}, not a class", f.type_name())));
        };
        let Value::Tuple(args) = &args else {
            return Err(self.err(at, "REDUCE arguments are not a tuple"));
        };
        let bad = |what: &str| ConvertError::Pickle {
            offset: at,
            msg: format!("bad arguments to {what}: {}", Value::Tuple(args.clone())),
        };
        Ok(match g {
            Global::OrderedDict if args.is_empty() => self.fresh(Value::Dict(Rc::default())),
            Global::Namespace if args.is_empty() => self.fresh(Value::Namespace(Rc::default())),
            Global::RebuildTensorV2 => {
                if args.len() < 4 {
                    return Err(bad("_rebuild_tensor_v2"));
                }
                let Value::Storage(storage) = &args[0] else {
                    return Err(bad("_rebuild_tensor_v2"));
                };
                let offset = match &args[1] {
                    Value::Int(n) if *n < 0 => {
                        return Err(self.err(
                            at,
                            format!("_rebuild_tensor_v2: the storage offset {n} is negative"),
                        ))
                    }
                    v => v.as_usize().ok_or_else(|| bad("_rebuild_tensor_v2"))?,
                };
                let size = self.dims(&args[2], "size", at)?;
                let stride = self.dims(&args[3], "stride", at)?;
                if size.len() != stride.len() {
                    return Err(self.err(
                        at,
                        format!(
                            "_rebuild_tensor_v2: a size of {} dimensions with a stride of {}",
                            size.len(),
                            stride.len()
                        ),
                    ));
                }
                Value::Tensor(Rc::new(TensorRef {
                    storage: storage.clone(),
                    offset,
                    size,
                    stride,
                }))
            }
            Global::RebuildParameter => match args.first() {
                Some(t @ Value::Tensor(_)) => t.clone(),
                _ => return Err(bad("_rebuild_parameter")),
            },
            Global::NumpyDtype => match args.first() {
                Some(Value::Str(s)) => Value::Dtype(s.clone()),
                _ => return Err(bad("numpy.dtype")),
            },
            Global::NumpyScalar => match (args.first(), args.get(1)) {
                (Some(Value::Dtype(dt)), Some(Value::Bytes(b))) => {
                    numpy_scalar(dt, b).ok_or_else(|| {
                        self.err(
                            at,
                            format!("unsupported numpy scalar of dtype {}", clip(dt, SHOW_STR)),
                        )
                    })?
                }
                _ => return Err(bad("numpy scalar")),
            },
            Global::CodecsEncode => match (args.first(), args.get(1)) {
                // How protocol 2 spells a bytes object: encode(text, 'latin1').
                (Some(Value::Str(s)), Some(Value::Str(enc))) if &**enc == "latin1" => {
                    self.charge(s.len(), at)?;
                    Value::Bytes(s.chars().map(|c| c as u32 as u8).collect())
                }
                _ => return Err(bad("_codecs.encode")),
            },
            other => {
                return Err(self.err(
                    at,
                    format!(
                        "{other:?} cannot be called with {}",
                        Value::Tuple(args.clone())
                    ),
                ))
            }
        })
    }

    fn build(&mut self, target: &Value, state: Value, at: usize) -> Result<(), ConvertError> {
        match (target, &state) {
            (Value::Namespace(ns), Value::Dict(d)) => {
                let d = d.borrow();
                self.charge(d.len().saturating_add(1), at)?;
                let mut ns = ns.borrow_mut();
                for (k, v) in d.iter() {
                    let Value::Str(k) = k else {
                        return Err(self.err(at, "Namespace attribute name is not a string"));
                    };
                    ns.push((k.clone(), v.clone()));
                }
                Ok(())
            }
            // OrderedDict state: attributes such as the state dict's `_metadata`.
            (Value::Dict(_), Value::Dict(_) | Value::None) => Ok(()),
            (Value::Dtype(_), Value::Tuple(_)) => Ok(()),
            _ => Err(self.err(
                at,
                format!(
                    "BUILD of a {} with a {}",
                    target.type_name(),
                    state.type_name()
                ),
            )),
        }
    }

    /// At STOP: nothing made may nest deeper than [`MAX_DEPTH`] or contain itself.
    fn check_shapes(&self, result: &Value, at: usize) -> Result<(), ConvertError> {
        match check_nesting(std::iter::once(result).chain(&self.containers), MAX_DEPTH) {
            Ok(()) => Ok(()),
            Err(Shape::TooDeep) => Err(ConvertError::Limit(format!(
                "the pickle ending at byte {at} nests containers more than {MAX_DEPTH} levels deep, the most a checkpoint may"
            ))),
            Err(Shape::Cycle(what)) => Err(self.err(
                at,
                format!("a {what} contains itself; a checkpoint holds no reference cycles"),
            )),
        }
    }

    fn run(&mut self, persistent: &mut dyn PersistentLoad) -> Result<Value, ConvertError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.err(at, format!("unsupported pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let v = self.pop(at)?;
                    self.check_shapes(&v, at)?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => {
                    let v = self.fresh(Value::Dict(Rc::default()));
                    self.stack.push(v);
                }
                b']' => {
                    let v = self.fresh(Value::List(Rc::default()));
                    self.stack.push(v);
                }
                b')' => self.stack.push(Value::Tuple(Rc::default())),
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop(at)?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b'l' => {
                    let items = self.pop_mark(at)?;
                    let v = self.fresh(Value::List(Rc::new(RefCell::new(items))));
                    self.stack.push(v);
                }
                b'd' => {
                    let items = self.pop_mark(at)?;
                    let d = self.fresh(Value::Dict(Rc::default()));
                    self.set_items(&d, items, at)?;
                    self.stack.push(d);
                }
                b's' => {
                    let v = self.pop(at)?;
                    let k = self.pop(at)?;
                    let target = self.top(at)?.clone();
                    self.set_items(&target, vec![k, v], at)?;
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    let target = self.top(at)?.clone();
                    self.set_items(&target, items, at)?;
                }
                b'a' => {
                    let v = self.pop(at)?;
                    let target = self.top(at)?.clone();
                    self.append(&target, vec![v], at)?;
                }
                b'e' => {
                    let items = self.pop_mark(at)?;
                    let target = self.top(at)?.clone();
                    self.append(&target, items, at)?;
                }
                b'J' => {
                    let v = self.i32()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        let n = self.i32()?;
                        usize::try_from(n).map_err(|_| self.err(at, "negative LONG4 length"))?
                    };
                    let bytes = self.take(n)?;
                    self.stack.push(long_value(bytes));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.utf8(n, at)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.utf8(n, at)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).unwrap_or(usize::MAX);
                    let v = self.utf8(n, at)?;
                    self.stack.push(v);
                }
                b'T' | b'U' | b'B' | b'C' => {
                    let n = match op {
                        b'U' | b'C' => self.u8()? as usize,
                        _ => self.u32()? as usize,
                    };
                    let bytes = self.take(n)?;
                    // Python 2 `str` (T/U) holds text in these files: field names.
                    let v = match op {
                        b'T' | b'U' => match std::str::from_utf8(bytes) {
                            Ok(s) => Value::Str(s.into()),
                            Err(_) => Value::Bytes(bytes.into()),
                        },
                        _ => Value::Bytes(bytes.into()),
                    };
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(&module, &name, at)?;
                    self.stack.push(g);
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (Some(module), Some(name)) = (module.as_str(), name.as_str()) else {
                        return Err(self.err(at, "STACK_GLOBAL needs two strings"));
                    };
                    let g = self.global(module, name, at)?;
                    self.stack.push(g);
                }
                b'R' | 0x81 => {
                    let args = self.pop(at)?;
                    let f = self.pop(at)?;
                    let v = self.call(f, args, at)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop(at)?;
                    let target = self.top(at)?.clone();
                    self.build(&target, state, at)?;
                }
                b'Q' => {
                    let pid = self.pop(at)?;
                    let v = persistent.load(pid).map_err(|m| self.err(at, m))?;
                    self.stack.push(v);
                }
                b'q' => {
                    let i = self.u8()? as usize;
                    self.memo_put(i, at)?;
                }
                b'r' => {
                    let i = self.u32()? as usize;
                    self.memo_put(i, at)?;
                }
                0x94 => {
                    let i = self.memo.len();
                    self.memo_put(i, at)?;
                }
                b'h' => {
                    let i = self.u8()? as usize;
                    self.memo_get(i, at)?;
                }
                b'j' => {
                    let i = self.u32()? as usize;
                    self.memo_get(i, at)?;
                }
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = self.top(at)?.clone();
                    self.stack.push(v);
                }
                other => {
                    return Err(self.err(at, format!("unsupported or invalid opcode 0x{other:02x}")))
                }
            }
        }
    }
}

/// LONG1/LONG4 payload: little-endian two's complement.
fn long_value(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() > 8 {
        return Value::BigInt(bytes.into());
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut buf = [if negative { 0xff } else { 0 }; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(buf))
}

fn numpy_scalar(dtype: &str, b: &[u8]) -> Option<Value> {
    let arr = |n: usize| -> Option<[u8; 8]> {
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(b.get(..n)?);
        Some(buf)
    };
    Some(match dtype {
        "f8" => Value::Float(f64::from_le_bytes(arr(8)?)),
        "f4" => Value::Float(f32::from_le_bytes(arr(4)?[..4].try_into().ok()?) as f64),
        "i8" => Value::Int(i64::from_le_bytes(arr(8)?)),
        "i4" => Value::Int(i32::from_le_bytes(arr(4)?[..4].try_into().ok()?) as i64),
        _ => return None,
    })
}
