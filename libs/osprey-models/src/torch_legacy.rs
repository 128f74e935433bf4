//! A reader for PyTorch's legacy `torch.save` format (before 1.6, the one
//! without a zip container), enough to load a state dict of tensors.
//!
//! The file is five parts back to back:
//! 1. a pickle of the magic number `0x1950a86a20f9469cfc6c`;
//! 2. a pickle of the protocol version, 1001;
//! 3. a pickle of a dict describing the writer (byte order, type sizes);
//! 4. the object itself, pickled with persistent ids in place of storages:
//!    `("storage", torch.FloatStorage, key, location, numel, view_metadata)`;
//!    tensors are rebuilt by `torch._utils._rebuild_tensor_v2(storage,
//!    offset, shape, stride, ...)`;
//! 5. a pickle of the list of storage keys, then for each key in that order
//!    its element count (u64, little-endian) and its raw elements.
//!
//! Only the pickle opcodes and globals a state dict uses are understood;
//! anything else, and any truncated or inconsistent input, is an `Err` that
//! names the byte offset and what was expected. Nothing here panics on bad
//! input.

use candle_core::{DType, Device, Error, Result, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

const MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const PROTOCOL_VERSION: i128 = 1001;

/// Reads the legacy-format state dict at `path` onto `device`; tensors keep
/// their stored dtype.
pub fn load_state_dict(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Msg(format!("reading {}: {e}", path.display())))?;
    read_state_dict(&bytes, device).map_err(|e| Error::Msg(format!("{}: {e}", path.display())))
}

/// Parses a legacy-format state dict held in memory (see the module docs).
pub fn read_state_dict(bytes: &[u8], device: &Device) -> Result<HashMap<String, Tensor>> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(Error::Msg(
            "a zip-format torch file (saved by torch >= 1.6); only the legacy format is supported".into(),
        ));
    }
    if cfg!(target_endian = "big") {
        return Err(Error::Msg("legacy torch files can only be read on little-endian hosts".into()));
    }
    let mut cur = Cursor { data: bytes, pos: 0 };

    match unpickle(&mut cur) {
        Ok(Value::Int(MAGIC)) => {}
        Ok(v) => {
            return Err(at(0, format!("not a legacy torch file: starts with {}, not the magic number", v.describe())));
        }
        Err(e) => return Err(Error::Msg(format!("not a legacy torch file: no magic number at the start ({e})"))),
    }
    let pos = cur.pos;
    match unpickle(&mut cur)? {
        Value::Int(PROTOCOL_VERSION) => {}
        v => return Err(at(pos, format!("expected protocol version {PROTOCOL_VERSION}, found {}", v.describe()))),
    }
    let pos = cur.pos;
    check_sys_info(&unpickle(&mut cur)?, pos)?;

    let pos = cur.pos;
    let Value::Dict(entries) = unpickle(&mut cur)? else {
        return Err(at(pos, "expected the pickled state dict (a dict of tensors)"));
    };

    // Every storage a tensor references, by key, as its persistent id
    // declared it.
    let mut declared: HashMap<&str, &StorageRef> = HashMap::new();
    let entries = entries.borrow();
    for (_, v) in entries.iter() {
        if let Value::Tensor(t) = v {
            declared.insert(&t.storage.key, &t.storage);
        }
    }

    let pos = cur.pos;
    let Value::List(keys) = unpickle(&mut cur)? else {
        return Err(at(pos, "expected the pickled list of storage keys"));
    };
    let mut storages: HashMap<&str, (DType, &[u8])> = HashMap::new();
    for key in keys.borrow().iter() {
        let Value::Str(key) = key else {
            return Err(at(pos, format!("a storage key is not a string but {}", key.describe())));
        };
        let count_at = cur.pos;
        let count = cur.u64("a storage's element count")?;
        // Only the tensors say how wide a storage's elements are.
        let Some(storage) = declared.get(key.as_str()) else {
            return Err(at(count_at, format!("storage {key} is not referenced by any tensor")));
        };
        if usize::try_from(count).ok() != Some(storage.numel) {
            return Err(at(
                count_at,
                format!("storage {key} holds {count} elements but was declared with {}", storage.numel),
            ));
        }
        let len = storage
            .numel
            .checked_mul(storage.dtype.size_in_bytes())
            .ok_or_else(|| at(count_at, format!("storage {key}: element count {count} is too large")))?;
        let data = cur.take(len, &format!("{count} elements of storage {key}"))?;
        storages.insert(&storage.key, (storage.dtype, data));
    }

    let mut out = HashMap::new();
    for (name, value) in entries.iter() {
        let Value::Str(name) = name else {
            return Err(Error::Msg(format!("state dict key is not a string but {}", name.describe())));
        };
        let Value::Tensor(t) = value else {
            return Err(Error::Msg(format!("state dict entry {name} is not a tensor but {}", value.describe())));
        };
        let &(dtype, data) = storages
            .get(t.storage.key.as_str())
            .ok_or_else(|| Error::Msg(format!("{name}: storage {} is missing from the file", t.storage.key)))?;
        if dtype != t.storage.dtype {
            return Err(Error::Msg(format!("{name}: storage {} is declared with two dtypes", t.storage.key)));
        }
        let tensor = materialize(t, data, device).map_err(|e| Error::Msg(format!("{name}: {e}")))?;
        out.insert(name.clone(), tensor);
    }
    Ok(out)
}

/// The writer must have been little-endian (the raw storages are in its
/// byte order).
fn check_sys_info(info: &Value, pos: usize) -> Result<()> {
    let Value::Dict(entries) = info else {
        return Err(at(pos, "expected the sys-info dict"));
    };
    let little = entries
        .borrow()
        .iter()
        .find(|(k, _)| matches!(k, Value::Str(s) if s == "little_endian"))
        .map(|(_, v)| matches!(v, Value::Bool(true)));
    match little {
        Some(true) => Ok(()),
        Some(false) => Err(at(pos, "the file was written on a big-endian machine")),
        None => Err(at(pos, "the sys-info dict has no little_endian entry")),
    }
}

/// Copies a tensor's elements (storage offset and strides applied) from its
/// storage's raw bytes into a contiguous candle tensor.
fn materialize(t: &TensorRef, data: &[u8], device: &Device) -> Result<Tensor> {
    let size = t.storage.dtype.size_in_bytes();
    let available = data.len() / size;
    let numel = t.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let numel = numel.ok_or_else(|| Error::Msg(format!("shape {:?} overflows", t.shape)))?;
    let mut bytes = Vec::new();
    if numel > 0 {
        // The last element's storage index bounds every other one.
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (&d, &s)| (d - 1).checked_mul(s).and_then(|v| acc.checked_add(v)));
        match last {
            Some(last) if last < available => {}
            _ => {
                return Err(Error::Msg(format!(
                    "shape {:?}, stride {:?} and offset {} reach past the storage's {available} elements",
                    t.shape, t.stride, t.offset
                )));
            }
        }
        let contiguous = (0..t.shape.len()).all(|d| t.stride[d] == t.shape[d + 1..].iter().product::<usize>());
        if contiguous {
            bytes.extend_from_slice(&data[t.offset * size..(t.offset + numel) * size]);
        } else {
            bytes.reserve(numel * size);
            let mut index = vec![0usize; t.shape.len()];
            for _ in 0..numel {
                let e = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
                bytes.extend_from_slice(&data[e * size..(e + 1) * size]);
                // Advance the row-major multi-index.
                for d in (0..index.len()).rev() {
                    index[d] += 1;
                    if index[d] < t.shape[d] {
                        break;
                    }
                    index[d] = 0;
                }
            }
        }
    }
    Tensor::from_raw_buffer(&bytes, t.storage.dtype, &t.shape, device)
}

fn at(pos: usize, msg: impl std::fmt::Display) -> Error {
    Error::Msg(format!("torch legacy file, byte {pos}: {msg}"))
}

/// The storage a persistent id names.
struct StorageRef {
    key: String,
    dtype: DType,
    numel: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it, in elements.
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// The pickle values a state dict is made of. Lists and dicts are shared
/// (as in Python) so that items added after memoisation are seen by every
/// reference.
#[derive(Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i128),
    /// A float, skipped: a state dict's structure never needs its value.
    Float,
    Str(String),
    /// A byte string, skipped likewise.
    Bytes,
    Tuple(Vec<Value>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(String, String),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    /// Something built by a callable this reader doesn't interpret; kept
    /// so that state-dict metadata (which nobody reads) can pass through.
    Opaque(String),
}

impl Value {
    /// A one-line description for error messages (never recursive, so a
    /// self-referencing list in a hostile file cannot overflow the stack).
    fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::Float => "a float".into(),
            Value::Str(s) => format!("string {s:?}"),
            Value::Bytes => "a byte string".into(),
            Value::Tuple(items) => format!("a tuple of {}", items.len()),
            Value::List(items) => format!("a list of {}", items.borrow().len()),
            Value::Dict(items) => format!("a dict of {}", items.borrow().len()),
            Value::Global(module, name) => format!("global {module}.{name}"),
            Value::Storage(s) => format!("storage {}", s.key),
            Value::Tensor(t) => format!("a tensor of shape {:?}", t.shape),
            Value::Opaque(built_by) => format!("an object built by {built_by}"),
        }
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(at(
                self.pos,
                format!("truncated: expected {what} ({n} bytes), {} left", self.data.len() - self.pos),
            ));
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn len_u32(&mut self, what: &str) -> Result<usize> {
        Ok(u32::from_le_bytes(self.array(what)?) as usize)
    }

    /// Text up to the next newline (the newline is consumed).
    fn line(&mut self, what: &str) -> Result<String> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(at(self.pos, format!("truncated: expected {what} ending in a newline")));
        };
        let pos = self.pos;
        let s = self.take(n + 1, what)?;
        String::from_utf8(s[..n].to_vec()).map_err(|_| at(pos, format!("{what} is not UTF-8")))
    }

    fn utf8(&mut self, n: usize, what: &str) -> Result<String> {
        let pos = self.pos;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| at(pos, format!("{what} is not UTF-8")))
    }
}

/// Runs one pickle from the cursor up to and including its STOP opcode and
/// returns the value it leaves.
fn unpickle(cur: &mut Cursor) -> Result<Value> {
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    loop {
        let pos = cur.pos;
        let op = cur.u8("a pickle opcode")?;
        let pop =
            |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| at(pos, format!("opcode 0x{op:02x}: empty stack")));
        let pop_mark = |stack: &mut Vec<Value>, marks: &mut Vec<usize>| -> Result<Vec<Value>> {
            let m = marks.pop().ok_or_else(|| at(pos, format!("opcode 0x{op:02x}: no MARK")))?;
            if m > stack.len() {
                return Err(at(pos, "MARK above the stack top"));
            }
            Ok(stack.split_off(m))
        };
        match op {
            // PROTO n, FRAME len: nothing to do beyond skipping the operand.
            0x80 => {
                cur.u8("the protocol number")?;
            }
            0x95 => {
                cur.u64("a frame length")?;
            }
            b'.' => return pop(&mut stack),
            b'(' => marks.push(stack.len()),
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_mark(&mut stack, &mut marks)?;
            }
            b'2' => {
                let top = stack.last().cloned().ok_or_else(|| at(pos, "DUP on an empty stack"))?;
                stack.push(top);
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(cur.u8("BININT1's operand")?.into())),
            b'M' => stack.push(Value::Int(u16::from_le_bytes(cur.array("BININT2's operand")?).into())),
            b'J' => stack.push(Value::Int(i32::from_le_bytes(cur.array("BININT's operand")?).into())),
            0x8a | 0x8b => {
                let n = if op == 0x8a { cur.u8("LONG1's length")? as usize } else { cur.len_u32("LONG4's length")? };
                if n > 16 {
                    return Err(at(pos, format!("integer of {n} bytes is too large")));
                }
                let b = cur.take(n, "a long integer's bytes")?;
                // Little-endian two's complement, sign-extended to 128 bits.
                let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xff } else { 0 };
                let mut full = [fill; 16];
                full[..n].copy_from_slice(b);
                stack.push(Value::Int(i128::from_le_bytes(full)));
            }
            b'G' => {
                cur.take(8, "BINFLOAT's operand")?;
                stack.push(Value::Float);
            }
            b'X' => {
                let n = cur.len_u32("BINUNICODE's length")?;
                stack.push(Value::Str(cur.utf8(n, "a string")?));
            }
            0x8c => {
                let n = cur.u8("SHORT_BINUNICODE's length")? as usize;
                stack.push(Value::Str(cur.utf8(n, "a string")?));
            }
            0x8d => {
                let n = usize::try_from(cur.u64("BINUNICODE8's length")?).map_err(|_| at(pos, "string too long"))?;
                stack.push(Value::Str(cur.utf8(n, "a string")?));
            }
            b'U' | b'C' => {
                let n = cur.u8("a short byte string's length")? as usize;
                cur.take(n, "a byte string")?;
                stack.push(Value::Bytes);
            }
            b'T' | b'B' => {
                let n = cur.len_u32("a byte string's length")?;
                cur.take(n, "a byte string")?;
                stack.push(Value::Bytes);
            }
            b')' => stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(at(pos, format!("TUPLE{n} with {} items on the stack", stack.len())));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b']' => stack.push(Value::List(Rc::default())),
            b'l' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::List(Rc::new(RefCell::new(items))));
            }
            b'a' | b'e' => {
                let items = if op == b'a' { vec![pop(&mut stack)?] } else { pop_mark(&mut stack, &mut marks)? };
                match stack.last() {
                    Some(Value::List(l)) => l.borrow_mut().extend(items),
                    _ => return Err(at(pos, "APPEND(S) onto something that is not a list")),
                }
            }
            b'}' => stack.push(Value::Dict(Rc::default())),
            b'd' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::Dict(Rc::new(RefCell::new(pairs(items, pos)?))));
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack, &mut marks)?
                };
                match stack.last() {
                    Some(Value::Dict(d)) => d.borrow_mut().extend(pairs(items, pos)?),
                    _ => return Err(at(pos, "SETITEM(S) onto something that is not a dict")),
                }
            }
            b'c' => {
                let module = cur.line("a GLOBAL's module")?;
                let name = cur.line("a GLOBAL's name")?;
                stack.push(Value::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                let (Value::Str(module), Value::Str(name)) = (module, name) else {
                    return Err(at(pos, "STACK_GLOBAL needs two strings"));
                };
                stack.push(Value::Global(module, name));
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                let Value::Tuple(args) = args else {
                    return Err(at(pos, "REDUCE/NEWOBJ arguments are not a tuple"));
                };
                stack.push(call(&callable, args, pos)?);
            }
            b'b' => {
                // BUILD sets an object's state (an OrderedDict's `_metadata`
                // here), which a state-dict reader has no use for.
                pop(&mut stack)?;
                if stack.is_empty() {
                    return Err(at(pos, "BUILD with no object"));
                }
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(Value::Storage(Rc::new(persistent_storage(pid, pos)?)));
            }
            b'q' | b'r' | 0x94 => {
                let index = match op {
                    b'q' => cur.u8("BINPUT's index")? as u32,
                    b'r' => u32::from_le_bytes(cur.array("LONG_BINPUT's index")?),
                    _ => memo.len() as u32,
                };
                let top = stack.last().cloned().ok_or_else(|| at(pos, "memoising an empty stack"))?;
                memo.insert(index, top);
            }
            b'h' | b'j' => {
                let index = if op == b'h' {
                    cur.u8("BINGET's index")? as u32
                } else {
                    u32::from_le_bytes(cur.array("LONG_BINGET's index")?)
                };
                let v =
                    memo.get(&index).cloned().ok_or_else(|| at(pos, format!("memo entry {index} was never stored")))?;
                stack.push(v);
            }
            _ => return Err(at(pos, format!("unsupported pickle opcode 0x{op:02x}"))),
        }
    }
}

fn pairs(items: Vec<Value>, pos: usize) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err(at(pos, "odd number of items for a dict"));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn as_usize(v: &Value, what: &str, pos: usize) -> Result<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| at(pos, format!("{what} {i} is out of range"))),
        _ => Err(at(pos, format!("expected an integer for {what}, found {}", v.describe()))),
    }
}

fn usize_tuple(v: &Value, what: &str, pos: usize) -> Result<Vec<usize>> {
    match v {
        Value::Tuple(items) => items.iter().map(|i| as_usize(i, what, pos)).collect(),
        _ => Err(at(pos, format!("expected a tuple for the {what}, found {}", v.describe()))),
    }
}

/// Applies the few callables a state dict uses; any other call yields an
/// opaque value that fails only if it is used as a tensor.
fn call(callable: &Value, args: Vec<Value>, pos: usize) -> Result<Value> {
    let Value::Global(module, name) = callable else {
        return Err(at(pos, format!("calling {}, which is not a global", callable.describe())));
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Rc::default())),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            let [storage, offset, shape, stride, ..] = args.as_slice() else {
                return Err(at(
                    pos,
                    format!("{name} needs (storage, offset, shape, stride), got {} arguments", args.len()),
                ));
            };
            let Value::Storage(storage) = storage else {
                return Err(at(pos, format!("{name}: first argument is {}, not a storage", storage.describe())));
            };
            let shape = usize_tuple(shape, "shape", pos)?;
            let stride = usize_tuple(stride, "stride", pos)?;
            if shape.len() != stride.len() {
                return Err(at(pos, format!("shape {shape:?} and stride {stride:?} differ in rank")));
            }
            Ok(Value::Tensor(Rc::new(TensorRef {
                storage: storage.clone(),
                offset: as_usize(offset, "storage offset", pos)?,
                shape,
                stride,
            })))
        }
        ("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err(at(pos, "_rebuild_parameter without a tensor")),
        },
        _ => Ok(Value::Opaque(format!("{module}.{name}"))),
    }
}

/// Resolves `("storage", torch.XStorage, key, location, numel, None)`.
fn persistent_storage(pid: Value, pos: usize) -> Result<StorageRef> {
    let Value::Tuple(items) = pid else {
        return Err(at(pos, format!("persistent id is {}, not a tuple", pid.describe())));
    };
    let [Value::Str(kind), Value::Global(module, class), Value::Str(key), Value::Str(_location), numel, view] =
        items.as_slice()
    else {
        let found: Vec<String> = items.iter().map(Value::describe).collect();
        return Err(at(
            pos,
            format!("expected a ('storage', type, key, location, size, view) persistent id, found {found:?}"),
        ));
    };
    if kind != "storage" || module != "torch" {
        return Err(at(pos, format!("unsupported persistent id kind {kind} / {module}.{class}")));
    }
    if !matches!(view, Value::None) {
        return Err(at(pos, "storage views (pre-0.4 files) are not supported"));
    }
    let dtype = match class.as_str() {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        _ => return Err(at(pos, format!("unsupported storage type torch.{class}"))),
    };
    Ok(StorageRef { key: key.clone(), dtype, numel: as_usize(numel, "storage size", pos)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One protocol-2 pickle around `body`.
    fn pickle(body: &[u8]) -> Vec<u8> {
        [&[0x80, 2][..], body, b"."].concat()
    }

    /// BINUNICODE.
    fn s(text: &str) -> Vec<u8> {
        [&[b'X'][..], &(text.len() as u32).to_le_bytes(), text.as_bytes()].concat()
    }

    /// GLOBAL.
    fn global(module: &str, name: &str) -> Vec<u8> {
        format!("c{module}\n{name}\n").into_bytes()
    }

    /// A legacy file holding `{"w": tensor}` over one float16 storage of
    /// the values 1..=6, viewed with the given offset, shape and stride.
    fn half_file(offset: u8, shape: [u8; 2], stride: [u8; 2]) -> Vec<u8> {
        let magic = pickle(&[0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
        let version = pickle(&[b'M', 0xe9, 0x03]);
        let sys_info = pickle(&[&b"}("[..], &s("little_endian"), &[0x88, b'u']].concat());
        let storage =
            [&b"("[..], &s("storage"), &global("torch", "HalfStorage"), &s("k0"), &s("cpu"), b"K\x06Nt"].concat();
        let tensor = [
            &global("torch._utils", "_rebuild_tensor_v2")[..],
            b"(",
            &storage,
            b"Q",
            &[b'K', offset, b'(', b'K', shape[0], b'K', shape[1], b't', b'(', b'K', stride[0], b'K', stride[1], b't'],
            &[0x89],
            b"}tR",
        ]
        .concat();
        let dict = pickle(&[&global("collections", "OrderedDict")[..], b")R(", &s("w"), &tensor, b"u"].concat());
        let keys = pickle(&[&b"]("[..], &s("k0"), b"e"].concat());
        let values: Vec<u8> =
            [0x3c00u16, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600].iter().flat_map(|v| v.to_le_bytes()).collect();
        [magic, version, sys_info, dict, keys, 6u64.to_le_bytes().to_vec(), values].concat()
    }

    #[test]
    fn reads_a_strided_half_tensor() {
        // Offset 1, transposed 2x2 view: element (i, j) is storage[1 + i + 2j].
        let sd = read_state_dict(&half_file(1, [2, 2], [1, 2]), &Device::Cpu).unwrap();
        let w = &sd["w"];
        assert_eq!(w.dtype(), DType::F16);
        assert_eq!(w.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(), [[2.0, 4.0], [3.0, 5.0]]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let good = half_file(0, [2, 3], [3, 1]);
        assert!(read_state_dict(&good, &Device::Cpu).is_ok());
        for len in 0..good.len() {
            assert!(read_state_dict(&good[..len], &Device::Cpu).is_err(), "prefix of {len} bytes");
        }
        for pos in 0..good.len() {
            let mut bad = good.clone();
            bad[pos] ^= 0xff;
            let _ = read_state_dict(&bad, &Device::Cpu);
        }
        // A view reaching past its storage's six elements.
        let err = read_state_dict(&half_file(1, [2, 2], [1, 5]), &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("reach past"), "{err}");
        let err = read_state_dict(b"PK\x03\x04rest of a zip", &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("zip-format"), "{err}");
        let err = read_state_dict(b"\x80\x02K\x07.", &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("magic number"), "{err}");
    }
}
