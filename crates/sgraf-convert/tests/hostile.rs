//! Hostile checkpoints, built here byte by byte: each must end in one clear
//! error (no panic, no abort, no stack overflow), fast, and without asking
//! for memory out of proportion to the file. A case that regressed to an
//! unbounded allocation would abort the test binary (4 TiB, say) rather
//! than fail politely; one that regressed to recursion would overflow the
//! stack; one that regressed to copying would blow the time limit.

use std::io::Write;
use std::time::{Duration, Instant};

use sgraf_convert::pickle::{unpickle, TorchStorages, Value};
use sgraf_convert::{read_checkpoint, read_state_dict, ConvertError};

/// Every case must finish within this (debug build, a slow CI machine).
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// Longest acceptable error message: errors never print a whole value.
const MESSAGE_LIMIT: usize = 1000;

/// Runs `f`, which must fail in time with a short message holding `fragment`.
fn refused<T>(
    name: &str,
    fragment: &str,
    f: impl FnOnce() -> Result<T, ConvertError>,
) -> ConvertError {
    let t = Instant::now();
    let result = f();
    let took = t.elapsed();
    eprintln!("{name}: {took:?}");
    let err = match result {
        Ok(_) => panic!("{name}: accepted, expected an error containing {fragment:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(took < TIME_LIMIT, "{name}: took {took:?}: {msg}");
    assert!(
        msg.len() < MESSAGE_LIMIT,
        "{name}: a message of {} bytes: {}...",
        msg.len(),
        &msg[..MESSAGE_LIMIT.min(msg.len())]
    );
    assert!(
        msg.contains(fragment),
        "{name}: expected {fragment:?} in: {msg}"
    );
    err
}

fn timed<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    eprintln!("{name}: {:?}", t.elapsed());
    assert!(t.elapsed() < TIME_LIMIT, "{name}: took {:?}", t.elapsed());
    v
}

/// A pickle written opcode by opcode.
#[derive(Default, Clone)]
struct P(Vec<u8>);

impl P {
    fn new() -> Self {
        P(vec![0x80, 0x02])
    }
    fn op(mut self, op: u8) -> Self {
        self.0.push(op);
        self
    }
    fn ops(mut self, op: &[u8], times: usize) -> Self {
        for _ in 0..times {
            self.0.extend_from_slice(op);
        }
        self
    }
    fn str(mut self, s: &str) -> Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn int(mut self, v: i64) -> Self {
        match i32::try_from(v) {
            Ok(v) => {
                self.0.push(b'J');
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            Err(_) => {
                self.0.extend_from_slice(&[0x8a, 8]);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
        }
        self
    }
    fn global(mut self, module: &str, name: &str) -> Self {
        self.0.push(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }
    fn put(mut self, i: u32) -> Self {
        self.0.push(b'r');
        self.0.extend_from_slice(&i.to_le_bytes());
        self
    }
    fn get(mut self, i: u32) -> Self {
        self.0.push(b'j');
        self.0.extend_from_slice(&i.to_le_bytes());
        self
    }
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn stop(self) -> Vec<u8> {
        self.op(b'.').0
    }
}

/// How a tensor is described: `_rebuild_tensor_v2(storage, offset, size, stride)`
/// over the storage `key` of `numel` float32 elements.
struct T<'a> {
    key: &'a str,
    numel: i64,
    offset: i64,
    size: &'a [i64],
    stride: &'a [i64],
}

impl P {
    fn tensor(self, t: &T) -> Self {
        let mut p = self
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(b'(')
            .op(b'(')
            .str("storage")
            .global("torch", "FloatStorage")
            .str(t.key)
            .str("cpu")
            .int(t.numel)
            .op(b't')
            .op(b'Q')
            .int(t.offset)
            .op(b'(');
        for &s in t.size {
            p = p.int(s);
        }
        p = p.op(b't').op(b'(');
        for &s in t.stride {
            p = p.int(s);
        }
        p.op(b't').op(b't').op(b'R')
    }

    /// `{name: tensor, ...}` as the object's pickle.
    fn state_dict(tensors: &[(&str, T)]) -> Vec<u8> {
        let mut p = P::new().op(b'}').op(b'(');
        for (name, t) in tensors {
            p = p.str(name).tensor(t);
        }
        p.op(b'u').stop()
    }
}

const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// A legacy `torch.save` file: magic, protocol, sys_info, the object, the
/// storage keys, then each storage as (element count, data).
fn legacy(object: &[u8], storages: &[(&str, u64, &[u8])]) -> Vec<u8> {
    let mut f = P::new().raw(&[0x8a, 10]).raw(&LEGACY_MAGIC).stop();
    f.extend(P::new().raw(&[b'M', 0xe9, 0x03]).stop());
    f.extend(P::new().op(b'}').stop());
    f.extend_from_slice(object);
    let mut keys = P::new().op(b']').op(b'(');
    for (k, _, _) in storages {
        keys = keys.str(k);
    }
    f.extend(keys.op(b'e').stop());
    for (_, count, data) in storages {
        f.extend_from_slice(&count.to_le_bytes());
        f.extend_from_slice(data);
    }
    f
}

/// A zip `torch.save` file with these members (stored, not compressed).
fn zipped(members: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(true);
    for (name, data) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A legacy checkpoint of SGRAF's shape: `model` (three state dicts) and
/// `opt`, a Namespace whose attribute `a` is built by `value`.
fn sgraf_checkpoint(value: impl FnOnce(P) -> P) -> Vec<u8> {
    let p = P::new()
        .op(b'}')
        .op(b'(')
        .str("model")
        .op(b'(')
        .op(b'}')
        .op(b'}')
        .op(b'}')
        .op(b'l')
        .str("opt")
        .global("argparse", "Namespace")
        .op(b')')
        .op(b'R')
        .op(b'}')
        .op(b'(')
        .str("a");
    let object = value(p).op(b'u').op(b'b').op(b'u').stop();
    legacy(&object, &[])
}

fn run(pickle: &[u8]) -> Result<Value, ConvertError> {
    unpickle(pickle, 0, &mut TorchStorages).map(|(v, _)| v)
}

const DEEP: usize = 1_000_000;

#[test]
fn deep_tuples_are_refused_not_overflowed() {
    // A million TUPLE1s: one tuple inside the next.
    let p = P::new().op(b')').ops(&[0x85], DEEP).stop();
    refused("tuple1", "more than 100 levels deep", || run(&p));
    // The same without STOP: the half-built value is freed without recursion.
    let p = P::new().op(b')').ops(&[0x85], DEEP).0;
    refused("tuple1-truncated", "truncated", || run(&p));
    // Inside a checkpoint, as the object's pickle.
    let object = P::new().op(b')').ops(&[0x85], DEEP).stop();
    refused("tuple1-checkpoint", "more than 100 levels deep", || {
        read_checkpoint(&legacy(&object, &[]))
    });
}

#[test]
fn deep_lists_are_refused_not_overflowed() {
    // A million EMPTY_LISTs, each appended to the one below.
    let p = P::new().ops(b"]", DEEP).ops(b"a", DEEP - 1).stop();
    refused("empty-list", "more than 100 levels deep", || run(&p));
    // MARK ... LIST nested the same way.
    let p = P::new().ops(b"(", DEEP).ops(b"l", DEEP).stop();
    refused("mark-list", "more than 100 levels deep", || run(&p));
    // Dicts in dicts, through SETITEM.
    let p = P::new()
        .op(b'}')
        .ops(b"K\x00}", DEEP / 4)
        .ops(b"s", DEEP / 4)
        .stop();
    refused("dicts", "more than 100 levels deep", || run(&p));
    // Never finished: freed on the error path.
    let p = P::new().ops(b"]", DEEP).ops(b"a", DEEP - 1).0;
    refused("empty-list-truncated", "truncated", || run(&p));
    // Just a million lists on the stack is flat, and fine.
    let p = P::new().ops(b"]", DEEP).stop();
    timed("flat", || run(&p).unwrap());
}

#[test]
fn nesting_within_the_limit_is_fine() {
    let p = P::new().op(b')').ops(&[0x85], 98).stop();
    timed("99 levels", || run(&p).unwrap());
}

#[test]
fn containers_that_contain_themselves_are_refused() {
    // l = []; l.append(l)
    let cyclic = |p: P| p.op(b']').put(0).get(0).op(b'a');
    // Passed to an allowed REDUCE: the error prints it, briefly.
    let p = cyclic(P::new().global("collections", "OrderedDict"))
        .op(0x85)
        .op(b'R')
        .stop();
    let err = refused("reduce", "cannot be called with", || run(&p));
    assert!(err.to_string().contains("[[...]]"), "{err}");
    let p = cyclic(P::new().global("torch._utils", "_rebuild_tensor_v2"))
        .op(0x85)
        .op(b'R')
        .stop();
    refused("rebuild", "bad arguments to _rebuild_tensor_v2", || run(&p));
    // Returned: refused at STOP (and nothing leaks).
    let p = cyclic(P::new()).stop();
    refused("result", "contains itself", || run(&p));
    // Made but dropped: refused as well.
    let p = cyclic(P::new()).op(b'0').op(b'N').stop();
    refused("dropped", "contains itself", || run(&p));
    // A dict holding itself through a tuple.
    let p = P::new()
        .op(b'}')
        .put(0)
        .op(b'K')
        .op(1)
        .get(0)
        .op(0x85)
        .op(b's')
        .stop();
    refused("dict-tuple", "contains itself", || run(&p));
    // As the value of an `opt` attribute, which is converted to JSON.
    let ckpt = sgraf_checkpoint(cyclic);
    refused("opt", "contains itself", || read_checkpoint(&ckpt));
}

#[test]
fn shared_values_are_never_copied() {
    // One 1 MB string, then a million DUPs or BINGETs: 1 TB if copied.
    let big = "x".repeat(1 << 20);
    let p = P::new().str(&big).ops(b"2", DEEP).stop();
    timed("dup", || run(&p).unwrap());
    let p = P::new().str(&big).put(0).ops(b"h\x00", DEEP).stop();
    timed("binget", || run(&p).unwrap());
    // In a checkpoint, the object is not a dict: one error.
    let object = P::new().str(&big).put(0).ops(b"h\x00", DEEP).stop();
    refused("binget-checkpoint", "expected a dict", || {
        read_checkpoint(&legacy(&object, &[]))
    });
    // Shared a million times into a list, then into opt: JSON copies are capped.
    let ckpt = sgraf_checkpoint(|p| {
        p.op(b']')
            .op(b'(')
            .str(&big)
            .put(9)
            .ops(b"h\x09", 10_000)
            .op(b'e')
    });
    refused("opt-json", "expand to more values", || {
        read_checkpoint(&ckpt)
    });
}

#[test]
fn amplified_work_is_capped() {
    // A 1 MB key set a million times: hashing it each time is 1 TB of work.
    let big = "k".repeat(1 << 20);
    let p = P::new()
        .op(b'}')
        .str(&big)
        .put(0)
        .op(b'N')
        .op(b's')
        .ops(b"h\x00Ns", DEEP)
        .stop();
    refused("setitem", "steps of work", || run(&p));
    // _codecs.encode on a 1 MB string, over and over.
    let p = P::new()
        .global("_codecs", "encode")
        .put(1)
        .op(b'0')
        .str(&big)
        .put(0)
        .str("latin1")
        .put(2)
        .op(b'0')
        .op(b'0')
        .ops(b"h\x01h\x00h\x02\x86R0", DEEP / 10)
        .op(b'N')
        .stop();
    refused("codecs", "steps of work", || run(&p));
    // BUILD of a Namespace from a 10 000-entry dict, 100 000 times.
    let mut p = P::new()
        .global("argparse", "Namespace")
        .op(b')')
        .op(b'R')
        .op(b'}')
        .op(b'(');
    for i in 0..10_000 {
        p = p.str(&format!("k{i}")).op(b'N');
    }
    let p = p.op(b'u').put(0).op(b'b').ops(b"h\x00b", 100_000).stop();
    refused("build", "steps of work", || run(&p));
}

#[test]
fn large_dicts_are_hashed() {
    let n = 200_000;
    let mut p = P::new().op(b'}').op(b'(');
    for i in 0..n {
        p = p.str(&format!("key{i}")).int(i);
    }
    let p = p.op(b'u').stop();
    let v = timed("200k SETITEMS", || run(&p).unwrap());
    let Value::Dict(d) = &v else {
        panic!("not a dict")
    };
    assert_eq!(d.borrow().len(), n as usize);
    assert_eq!(v.get("key123456").and_then(|v| v.as_int()), Some(123_456));
}

#[test]
fn memo_indices_are_bounded_by_the_input() {
    let p = P::new().op(b'N').put(u32::MAX).stop();
    refused("memo", "memo index 4294967295 is out of range", || run(&p));
    let p = P::new().get(7).stop();
    refused("memo-get", "memo slot 7 is empty", || run(&p));
}

fn one_tensor(t: T, storage: &[u8], count: u64) -> Vec<u8> {
    let key = t.key.to_string();
    legacy(&P::state_dict(&[("w", t)]), &[(&key, count, storage)])
}

#[test]
fn tensor_sizes_are_checked() {
    let one = 1.0f32.to_le_bytes();
    // 2^40 elements of stride 0 over one element: in bounds, but 4 TiB.
    let f = one_tensor(
        T {
            key: "0",
            numel: 1,
            offset: 0,
            size: &[1 << 40],
            stride: &[0],
        },
        &one,
        1,
    );
    refused("broadcast", "needs 4398046511104 bytes", || {
        read_state_dict(&f)
    });
    // An empty tensor whose offset lies past its storage.
    let f = one_tensor(
        T {
            key: "0",
            numel: 1,
            offset: 100,
            size: &[0],
            stride: &[1],
        },
        &one,
        1,
    );
    refused("empty-offset", "past the end of storage 0", || {
        read_state_dict(&f)
    });
    // A size whose element count overflows usize.
    let f = one_tensor(
        T {
            key: "0",
            numel: 1,
            offset: 0,
            size: &[1 << 40, 1 << 40],
            stride: &[0, 0],
        },
        &one,
        1,
    );
    refused("numel-overflow", "overflows", || read_state_dict(&f));
    // ... or whose last element's index does.
    let f = one_tensor(
        T {
            key: "0",
            numel: 1,
            offset: 0,
            size: &[3, 2],
            stride: &[i64::MAX, 2],
        },
        &one,
        1,
    );
    refused("index-overflow", "overflows", || read_state_dict(&f));
    // Reaching past the storage.
    let f = one_tensor(
        T {
            key: "0",
            numel: 1,
            offset: 0,
            size: &[2],
            stride: &[1],
        },
        &one,
        1,
    );
    refused("past-end", "past the end of storage 0", || {
        read_state_dict(&f)
    });
    // Negative sizes, strides and offsets.
    let f = one_tensor(
        T {
            key: "0",
            numel: 1,
            offset: 0,
            size: &[-1],
            stride: &[1],
        },
        &one,
        1,
    );
    refused("negative-size", "negative entry -1", || read_state_dict(&f));
    let f = one_tensor(
        T {
            key: "0",
            numel: 1,
            offset: 0,
            size: &[1],
            stride: &[-3],
        },
        &one,
        1,
    );
    refused("negative-stride", "negative entry -3", || {
        read_state_dict(&f)
    });
    let f = one_tensor(
        T {
            key: "0",
            numel: 1,
            offset: -2,
            size: &[1],
            stride: &[1],
        },
        &one,
        1,
    );
    refused("negative-offset", "storage offset -2 is negative", || {
        read_state_dict(&f)
    });
    // Too many dimensions.
    let f = one_tensor(
        T {
            key: "0",
            numel: 1,
            offset: 0,
            size: &[1; 65],
            stride: &[1; 65],
        },
        &one,
        1,
    );
    refused("ndim", "at most 64 are supported", || read_state_dict(&f));
    // A sane tensor still reads.
    let f = one_tensor(
        T {
            key: "0",
            numel: 1,
            offset: 0,
            size: &[1, 1],
            stride: &[1, 1],
        },
        &one,
        1,
    );
    let (_, sd) = read_state_dict(&f).unwrap();
    assert_eq!(sd[0].1.shape, [1, 1]);
}

#[test]
fn storages_must_hold_what_they_declare() {
    // An enormous element count, in the pickle and the storage header alike.
    let huge = 1i64 << 62;
    let f = one_tensor(
        T {
            key: "0",
            numel: huge,
            offset: 0,
            size: &[1],
            stride: &[1],
        },
        &[0; 4],
        huge as u64,
    );
    refused("huge-storage", "the checkpoint is truncated", || {
        read_state_dict(&f)
    });
    // Data shorter than declared.
    let f = one_tensor(
        T {
            key: "0",
            numel: 1000,
            offset: 0,
            size: &[1000],
            stride: &[1],
        },
        &[0; 40],
        1000,
    );
    refused("short-storage", "needs 1000 elements", || {
        read_state_dict(&f)
    });
    // The storage header and the pickle disagree.
    let f = one_tensor(
        T {
            key: "0",
            numel: 1,
            offset: 0,
            size: &[1],
            stride: &[1],
        },
        &[0; 4],
        2,
    );
    refused("count-mismatch", "the pickle says 1", || {
        read_state_dict(&f)
    });
    // A storage key as long as the file.
    let key = "9".repeat(100_000);
    let f = one_tensor(
        T {
            key: &key,
            numel: 1,
            offset: 0,
            size: &[1],
            stride: &[1],
        },
        &[0; 4],
        1,
    );
    refused("long-key", "a storage key of 100000 bytes", || {
        read_state_dict(&f)
    });
    // A view running past its storage (offset + size overflowing).
    let p = P::new()
        .op(b'(')
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(1)
        .op(b'(')
        .str("0")
        .int(i64::MAX)
        .int(i64::MAX)
        .op(b't')
        .op(b't')
        .op(b'Q')
        .stop();
    refused("view", "runs past its storage", || run(&p));
}

fn zip_checkpoint(object: &[u8], data: &[u8], method: zip::CompressionMethod) -> Vec<u8> {
    zipped(
        &[("archive/data.pkl", object), ("archive/data/0", data)],
        method,
    )
}

/// Sets the uncompressed size every header of the member `name` declares
/// (the zip64 extra fields the writer left for it).
fn declare_size(zip: &mut [u8], name: &str, size: u64) {
    let mut patched = 0;
    let mut at = 0;
    while let Some(i) = zip[at..]
        .windows(name.len())
        .position(|w| w == name.as_bytes())
    {
        let start = at + i;
        // The zip64 extra field (id 1) follows the name; its first value is the size.
        let extra = start + name.len();
        if zip.get(extra..extra + 2) == Some(&[1, 0]) {
            zip[extra + 4..extra + 12].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
        at = start + name.len();
    }
    assert!(patched >= 1, "no zip64 field found for {name}");
}

#[test]
fn zip_members_are_read_within_the_archive_size() {
    let sd = P::state_dict(&[(
        "w",
        T {
            key: "0",
            numel: 1,
            offset: 0,
            size: &[1],
            stride: &[1],
        },
    )]);
    let stored = zip::CompressionMethod::Stored;
    let deflated = zip::CompressionMethod::Deflated;
    // A sane archive reads.
    let ok = zip_checkpoint(&sd, &1f32.to_le_bytes(), stored);
    read_state_dict(&ok).unwrap();
    // A member declaring 2^62 bytes.
    let mut f = ok.clone();
    declare_size(&mut f, "archive/data/0", 1 << 62);
    refused("2^62", "needs 4611686018427387904 bytes", || {
        read_state_dict(&f)
    });
    // A deflate bomb that says how large it is: 256 MiB from a few hundred KiB.
    let zeros = vec![0u8; 256 << 20];
    let bomb = zip_checkpoint(&sd, &zeros, deflated);
    assert!(bomb.len() < 2 << 20, "{}", bomb.len());
    refused("bomb", "needs 268435456 bytes", || read_state_dict(&bomb));
    // One that lies about it: stopped where its declared size ends.
    let mut liar = bomb.clone();
    declare_size(&mut liar, "archive/data/0", 4);
    refused(
        "lying bomb",
        "larger than its declared uncompressed size",
        || read_state_dict(&liar),
    );
    // A storage that declares more elements than any file holds.
    let sd = P::state_dict(&[(
        "w",
        T {
            key: "0",
            numel: 1 << 62,
            offset: 0,
            size: &[1],
            stride: &[1],
        },
    )]);
    let f = zip_checkpoint(&sd, &1f32.to_le_bytes(), stored);
    refused("zip-numel", "more than any file holds", || {
        read_state_dict(&f)
    });
    let sd = P::state_dict(&[(
        "w",
        T {
            key: "0",
            numel: 1 << 20,
            offset: 0,
            size: &[1],
            stride: &[1],
        },
    )]);
    let f = zip_checkpoint(&sd, &1f32.to_le_bytes(), stored);
    refused("zip-short", "has 4 bytes, 4194304 expected", || {
        read_state_dict(&f)
    });
}

#[test]
fn error_messages_stay_short() {
    // A forbidden global with a name as long as the file.
    let long = "m".repeat(1 << 20);
    let p = P::new().global(&long, "system").stop();
    refused("global", "refusing to load it", || run(&p));
    // A persistent id holding a huge tuple of huge strings.
    let big = "s".repeat(1 << 16);
    let p = P::new()
        .op(b'(')
        .str(&big)
        .put(0)
        .ops(b"h\x00", 10_000)
        .op(b't')
        .op(b'Q')
        .stop();
    refused("pid", "unexpected persistent id", || run(&p));
    // A state dict key of 1 MB.
    let f = legacy(&P::new().op(b'}').str(&long).op(b'N').op(b's').stop(), &[]);
    refused("key", "expected a parameter name of at most 4096", || {
        read_state_dict(&f)
    });
}
