//! A restricted pickle interpreter: just the opcodes and globals that a
//! PyTorch checkpoint needs.
//!
//! A pickle is a program for a stack machine that may import and call any
//! Python function. This one imports nothing: every `GLOBAL` is looked up in
//! a fixed allow-list of the classes `torch.save` writes, and anything else
//! stops the load with an error that names it.

use std::cell::RefCell;
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

/// A storage named by a persistent id: `elements` elements of `kind`
/// starting `offset` elements into the raw storage `key`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub kind: StorageKind,
    pub key: String,
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
#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Rc<Vec<Value>>),
    List(Shared<Vec<Value>>),
    /// `dict` and `OrderedDict`, in insertion order.
    Dict(Shared<Vec<(Value, Value)>>),
    /// `argparse.Namespace`, its attributes in pickle order.
    Namespace(Shared<Vec<(String, Value)>>),
    Global(Global),
    Storage(StorageRef),
    Tensor(Rc<TensorRef>),
    /// A numpy dtype, e.g. `"f8"`.
    Dtype(String),
    /// An integer too wide for i64 (little-endian two's complement bytes).
    BigInt(Vec<u8>),
}

impl Value {
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

    /// Looks `key` up in a dict with string keys.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => d
                .borrow()
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v.clone()),
            Value::Namespace(ns) => ns
                .borrow()
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone()),
            _ => None,
        }
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
        let bad = || format!("unexpected persistent id {items:?}");
        if items.len() < 5 || items[0].as_str() != Some("storage") {
            return Err(bad());
        }
        let Value::Global(Global::Storage(kind)) = items[1] else {
            return Err(bad());
        };
        let key = items[2].as_str().ok_or_else(bad)?.to_string();
        let numel = items[4].as_usize().ok_or_else(bad)?;
        let (offset, elements) = match items.get(5) {
            None | Some(Value::None) => (0, numel),
            // A view into another storage: (view_key, offset, size).
            Some(Value::Tuple(view)) if view.len() == 3 => (
                view[1].as_usize().ok_or_else(bad)?,
                view[2].as_usize().ok_or_else(bad)?,
            ),
            Some(_) => return Err(bad()),
        };
        if offset + elements > numel {
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
pub fn unpickle(
    data: &[u8],
    start: usize,
    persistent: &mut dyn PersistentLoad,
) -> Result<(Value, usize), ConvertError> {
    let mut m = Machine {
        data,
        pos: start,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Vec::new(),
    };
    let value = m.run(persistent)?;
    Ok((value, m.pos))
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Vec<Option<Value>>,
}

impl Machine<'_> {
    fn err(&self, at: usize, msg: impl Into<String>) -> ConvertError {
        ConvertError::Pickle {
            offset: at,
            msg: msg.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ConvertError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(ConvertError::Truncated(format!(
                "the pickle needs {n} more bytes at offset {} but the file has {}",
                self.pos,
                self.data.len()
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
        let bytes = self.take(n)?.to_vec();
        String::from_utf8(bytes)
            .map(Value::Str)
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
        if idx > self.data.len() {
            return Err(self.err(at, format!("memo index {idx} is out of range")));
        }
        if self.memo.len() <= idx {
            self.memo.resize(idx + 1, None);
        }
        self.memo[idx] = Some(v);
        Ok(())
    }

    fn memo_get(&mut self, idx: usize, at: usize) -> Result<(), ConvertError> {
        let v = self
            .memo
            .get(idx)
            .cloned()
            .flatten()
            .ok_or_else(|| self.err(at, format!("memo slot {idx} is empty")))?;
        self.stack.push(v);
        Ok(())
    }

    fn global(&self, module: &str, name: &str, at: usize) -> Result<Value, ConvertError> {
        Global::resolve(module, name)
            .map(Value::Global)
            .ok_or_else(|| ConvertError::ForbiddenGlobal {
                name: format!("{module}.{name}"),
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
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match d.iter_mut().find(|(old, _)| same_key(old, &k)) {
                Some(slot) => slot.1 = v,
                None => d.push((k, v)),
            }
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

    fn call(&self, f: Value, args: Value, at: usize) -> Result<Value, ConvertError> {
        let Value::Global(g) = f else {
            return Err(self.err(at, format!("REDUCE calls a {}, not a class", f.type_name())));
        };
        let Value::Tuple(args) = args else {
            return Err(self.err(at, "REDUCE arguments are not a tuple"));
        };
        let bad = |what: &str| self.err(at, format!("bad arguments to {what}: {args:?}"));
        Ok(match g {
            Global::OrderedDict if args.is_empty() => Value::Dict(Rc::default()),
            Global::Namespace if args.is_empty() => Value::Namespace(Rc::default()),
            Global::RebuildTensorV2 => {
                if args.len() < 4 {
                    return Err(bad("_rebuild_tensor_v2"));
                }
                let Value::Storage(storage) = &args[0] else {
                    return Err(bad("_rebuild_tensor_v2"));
                };
                let offset = args[1]
                    .as_usize()
                    .ok_or_else(|| bad("_rebuild_tensor_v2"))?;
                let dims = |v: &Value| -> Option<Vec<usize>> {
                    match v {
                        Value::Tuple(t) => t.iter().map(Value::as_usize).collect(),
                        _ => None,
                    }
                };
                let size = dims(&args[2]).ok_or_else(|| bad("_rebuild_tensor_v2"))?;
                let stride = dims(&args[3]).ok_or_else(|| bad("_rebuild_tensor_v2"))?;
                if size.len() != stride.len() {
                    return Err(bad("_rebuild_tensor_v2"));
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
                        self.err(at, format!("unsupported numpy scalar of dtype {dt}"))
                    })?
                }
                _ => return Err(bad("numpy scalar")),
            },
            Global::CodecsEncode => match (args.first(), args.get(1)) {
                // How protocol 2 spells a bytes object: encode(text, 'latin1').
                (Some(Value::Str(s)), Some(Value::Str(enc))) if enc == "latin1" => {
                    Value::Bytes(s.chars().map(|c| c as u32 as u8).collect())
                }
                _ => return Err(bad("_codecs.encode")),
            },
            other => return Err(self.err(at, format!("{other:?} cannot be called with {args:?}"))),
        })
    }

    fn build(&self, target: &Value, state: Value, at: usize) -> Result<(), ConvertError> {
        match (target, &state) {
            (Value::Namespace(ns), Value::Dict(d)) => {
                let mut ns = ns.borrow_mut();
                for (k, v) in d.borrow().iter() {
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
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b']' => self.stack.push(Value::List(Rc::default())),
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
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'd' => {
                    let items = self.pop_mark(at)?;
                    let d = Value::Dict(Rc::default());
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
                    let bytes = self.take(n)?.to_vec();
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
                    let bytes = self.take(n)?.to_vec();
                    // Python 2 `str` (T/U) holds text in these files: field names.
                    let v = match op {
                        b'T' | b'U' => match String::from_utf8(bytes) {
                            Ok(s) => Value::Str(s),
                            Err(e) => Value::Bytes(e.into_bytes()),
                        },
                        _ => Value::Bytes(bytes),
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
                b'R' => {
                    let args = self.pop(at)?;
                    let f = self.pop(at)?;
                    let v = self.call(f, args, at)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let args = self.pop(at)?;
                    let cls = self.pop(at)?;
                    let v = self.call(cls, args, at)?;
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

fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        _ => false,
    }
}

/// LONG1/LONG4 payload: little-endian two's complement.
fn long_value(bytes: Vec<u8>) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() > 8 {
        return Value::BigInt(bytes);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut buf = [if negative { 0xff } else { 0 }; 8];
    buf[..bytes.len()].copy_from_slice(&bytes);
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
