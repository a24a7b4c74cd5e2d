//! BTF access for the loader.
//!
//! The `.BTF` type section is parsed with the `btfparse` crate (bounds-checked reads, no
//! panics on our fuzz corpus). On top of it we resolve modifiers and sizes ourselves with a
//! depth limit, because btfparse's `size_of` recurses without a bound (a corrupted object
//! with a typedef cycle would overflow the stack) and does not size pointers without
//! `struct list_head`.
//!
//! `.BTF.ext` (func_info, line_info, CO-RE relocations) is parsed here by hand: no
//! maintained crate exposes it publicly (aya-obj keeps its parser crate-private and
//! unwraps on bad string offsets). The format is small: a header with offsets and three
//! subsections of `rec_size` + per-section record arrays. The writer re-serializes it.

use btfparse::{Readable, TypeInformation, TypeVariant};

pub(crate) const BTF_MAGIC: u16 = 0xeb9f;
const MAX_DEPTH: u32 = 32;

struct Buf<'a>(&'a [u8]);

impl Readable for Buf<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).ok();
        let end = start.and_then(|s| s.checked_add(buffer.len()));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.0.len() => {
                buffer.copy_from_slice(&self.0[s..e]);
                Ok(())
            }
            _ => Err(btfparse::Error::new(
                btfparse::ErrorKind::IOError,
                "read past the end of the BTF section",
            )),
        }
    }
}

pub(crate) fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}
pub(crate) fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

/// Parsed `.BTF`.
pub(crate) struct Btf {
    pub types: TypeInformation,
    strings: Vec<u8>,
}

impl Btf {
    pub fn parse(data: &[u8]) -> Result<Btf, String> {
        if rd_u16(data, 0) != Some(BTF_MAGIC) {
            return Err("bad magic (not little-endian BTF)".into());
        }
        let hdr_len = rd_u32(data, 4).ok_or("header truncated")? as usize;
        let str_off = rd_u32(data, 16).ok_or("header truncated")? as usize;
        let str_len = rd_u32(data, 20).ok_or("header truncated")? as usize;
        let start = hdr_len.checked_add(str_off).ok_or("string section offset overflows")?;
        let end = start.checked_add(str_len).ok_or("string section length overflows")?;
        let strings = data
            .get(start..end)
            .ok_or_else(|| format!("string section {start}..{end} outside the {} byte section", data.len()))?
            .to_vec();
        let types = TypeInformation::new(&Buf(data)).map_err(|e| format!("{e:?}"))?;
        Ok(Btf { types, strings })
    }

    /// NUL-terminated string at `off` in the string section.
    pub fn str_at(&self, off: u32) -> Option<String> {
        let rest = self.strings.get(off as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    pub fn get(&self, id: u32) -> Option<TypeVariant> {
        self.types.from_id(id)
    }

    /// Skips typedef/const/volatile/restrict/type-tag.
    pub fn skip_mods(&self, mut id: u32) -> Result<(u32, TypeVariant), String> {
        for _ in 0..MAX_DEPTH {
            let t = self.get(id).ok_or_else(|| format!("type id {id} does not exist"))?;
            id = match &t {
                TypeVariant::Typedef(x) => *x.tid(),
                TypeVariant::Const(x) => *x.tid(),
                TypeVariant::Volatile(x) => *x.tid(),
                TypeVariant::Restrict(x) => *x.tid(),
                TypeVariant::TypeTag(x) => *x.tid(),
                _ => return Ok((id, t)),
            };
        }
        Err(format!("type chain at id {id} is deeper than {MAX_DEPTH}"))
    }

    pub fn size_of(&self, id: u32) -> Result<u64, String> {
        self.size_depth(id, 0)
    }

    fn size_depth(&self, id: u32, depth: u32) -> Result<u64, String> {
        if depth > MAX_DEPTH {
            return Err(format!("type chain at id {id} is deeper than {MAX_DEPTH}"));
        }
        let (id, t) = self.skip_mods(id)?;
        Ok(match &t {
            TypeVariant::Int(x) => *x.size() as u64,
            TypeVariant::Float(x) => *x.size() as u64,
            TypeVariant::Enum(x) => *x.size() as u64,
            TypeVariant::Enum64(x) => *x.size() as u64,
            TypeVariant::Struct(x) => *x.size() as u64,
            TypeVariant::Union(x) => *x.size() as u64,
            TypeVariant::DataSec(x) => *x.size() as u64,
            TypeVariant::Ptr(_) => 8,
            TypeVariant::Var(x) => self.size_depth(*x.tid(), depth + 1)?,
            TypeVariant::Array(a) => {
                let elem = self.size_depth(*a.element_tid(), depth + 1)?;
                elem.checked_mul(*a.element_count() as u64)
                    .ok_or_else(|| format!("array type {id} size overflows"))?
            }
            other => return Err(format!("type {id} ({}) has no size", kind_name(other))),
        })
    }

    /// Id of the DATASEC called `name`.
    /// The exception callback declared for function `func` (`__exception_cb(cb)`: a BTF
    /// decl tag `exception_callback:cb` on the function), by name.
    pub fn exception_callback(&self, func: &str) -> Option<String> {
        let types = self.types.get();
        let fid = types.iter().find_map(|(id, t)| match t {
            TypeVariant::Func(f) if f.name().as_deref() == Some(func) => Some(*id),
            _ => None,
        })?;
        types.iter().find_map(|(_, t)| match t {
            TypeVariant::DeclTag(d) if *d.tid() == fid && *d.component_index() == u32::MAX => {
                d.name().as_deref().and_then(|n| n.strip_prefix("exception_callback:")).map(str::to_string)
            }
            _ => None,
        })
    }

    pub fn datasec(&self, name: &str) -> Option<(u32, btfparse::DataSec)> {
        self.types.get().iter().find_map(|(id, t)| match t {
            TypeVariant::DataSec(d) if d.name().as_deref() == Some(name) => Some((*id, d.clone())),
            _ => None,
        })
    }
}

pub(crate) fn kind_name(t: &TypeVariant) -> &'static str {
    match t {
        TypeVariant::Void => "void",
        TypeVariant::Int(_) => "int",
        TypeVariant::Typedef(_) => "typedef",
        TypeVariant::Enum(_) => "enum",
        TypeVariant::Ptr(_) => "pointer",
        TypeVariant::Const(_) => "const",
        TypeVariant::Volatile(_) => "volatile",
        TypeVariant::Array(_) => "array",
        TypeVariant::FuncProto(_) => "func_proto",
        TypeVariant::Struct(_) => "struct",
        TypeVariant::Union(_) => "union",
        TypeVariant::Fwd(_) => "fwd",
        TypeVariant::Var(_) => "var",
        TypeVariant::Enum64(_) => "enum64",
        TypeVariant::Func(_) => "func",
        TypeVariant::Float(_) => "float",
        TypeVariant::Restrict(_) => "restrict",
        TypeVariant::DataSec(_) => "datasec",
        TypeVariant::TypeTag(_) => "type_tag",
        TypeVariant::DeclTag(_) => "decl_tag",
    }
}

/// One subsection of `.BTF.ext` (func_info, line_info or core_relo).
#[derive(Debug, Clone, Default)]
pub(crate) struct ExtInfo {
    pub rec_size: u32,
    /// Per ELF section: name offset in the `.BTF` string table, and its raw records.
    pub secs: Vec<ExtSec>,
}

#[derive(Debug, Clone)]
pub(crate) struct ExtSec {
    pub name_off: u32,
    /// Raw records (each `rec_size` bytes, first u32 = insn_off in bytes) and their byte
    /// offset in the original `.BTF.ext` (for moving `.rel.BTF.ext` entries).
    pub recs: Vec<(usize, Vec<u8>)>,
}

impl ExtSec {
    pub fn insn_off(rec: &[u8]) -> u32 {
        rd_u32(rec, 0).unwrap_or(0)
    }
}

/// Parsed `.BTF.ext`.
#[derive(Debug, Clone)]
pub(crate) struct BtfExt {
    /// Raw header bytes (length `hdr_len`), re-emitted with updated offsets.
    pub header: Vec<u8>,
    pub func: ExtInfo,
    pub line: ExtInfo,
    /// Present when the header is long enough to have the CO-RE fields.
    pub core: Option<ExtInfo>,
}

impl BtfExt {
    pub fn parse(data: &[u8]) -> Result<BtfExt, String> {
        if rd_u16(data, 0) != Some(BTF_MAGIC) {
            return Err("bad .BTF.ext magic".into());
        }
        let hdr_len = rd_u32(data, 4).ok_or("header truncated")? as usize;
        if hdr_len < 24 || hdr_len > data.len() {
            return Err(format!("header length {hdr_len} invalid for a {} byte section", data.len()));
        }
        let header = data[..hdr_len].to_vec();
        let sub = |off_at: usize, min_rec: u32, what: &str| -> Result<ExtInfo, String> {
            let off = rd_u32(data, off_at).ok_or("header truncated")? as usize;
            let len = rd_u32(data, off_at + 4).ok_or("header truncated")? as usize;
            parse_info(data, hdr_len, off, len, min_rec).map_err(|e| format!("{what}: {e}"))
        };
        let func = sub(8, 8, "func_info")?;
        let line = sub(16, 16, "line_info")?;
        let core = if hdr_len >= 32 { Some(sub(24, 16, "core_relo")?) } else { None };
        Ok(BtfExt { header, func, line, core })
    }

    /// Serializes back; returns the bytes and, for every record that survived, the map
    /// from its original byte offset to its new byte offset.
    pub fn to_bytes(&self) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut out = self.header.clone();
        let hdr_len = out.len();
        let mut moved = Vec::new();
        let mut put_sub = |out: &mut Vec<u8>, info: &ExtInfo, off_at: usize| {
            let start = out.len();
            let has = !info.secs.is_empty() || info.rec_size != 0;
            if has {
                out.extend_from_slice(&info.rec_size.to_le_bytes());
                for s in &info.secs {
                    out.extend_from_slice(&s.name_off.to_le_bytes());
                    out.extend_from_slice(&(s.recs.len() as u32).to_le_bytes());
                    for (old, r) in &s.recs {
                        moved.push((*old, out.len()));
                        out.extend_from_slice(r);
                    }
                }
            }
            let len = out.len() - start;
            let rel = (start - hdr_len) as u32;
            out[off_at..off_at + 4].copy_from_slice(&rel.to_le_bytes());
            out[off_at + 4..off_at + 8].copy_from_slice(&(len as u32).to_le_bytes());
        };
        put_sub(&mut out, &self.func, 8);
        put_sub(&mut out, &self.line, 16);
        if let Some(core) = &self.core {
            put_sub(&mut out, core, 24);
        }
        (out, moved)
    }
}

fn parse_info(data: &[u8], hdr_len: usize, off: usize, len: usize, min_rec: u32) -> Result<ExtInfo, String> {
    if len == 0 {
        return Ok(ExtInfo::default());
    }
    let start = hdr_len.checked_add(off).ok_or("offset overflows")?;
    let end = start.checked_add(len).ok_or("length overflows")?;
    if end > data.len() {
        return Err(format!("subsection {start}..{end} outside the {} byte section", data.len()));
    }
    let rec_size = rd_u32(data, start).ok_or("missing record size")?;
    if rec_size < min_rec || rec_size % 4 != 0 {
        return Err(format!("record size {rec_size} is invalid"));
    }
    let mut secs = Vec::new();
    let mut p = start + 4;
    while p < end {
        let name_off = rd_u32(data, p).filter(|_| p + 8 <= end).ok_or("section header truncated")?;
        let num = rd_u32(data, p + 4).ok_or("section header truncated")? as usize;
        p += 8;
        let bytes = num.checked_mul(rec_size as usize).ok_or("record count overflows")?;
        if p.checked_add(bytes).is_none_or(|e| e > end) {
            return Err(format!("{num} records of {rec_size} bytes run past the subsection end"));
        }
        let recs = (0..num)
            .map(|i| {
                let o = p + i * rec_size as usize;
                (o, data[o..o + rec_size as usize].to_vec())
            })
            .collect();
        p += bytes;
        secs.push(ExtSec { name_off, recs });
    }
    Ok(ExtInfo { rec_size, secs })
}
