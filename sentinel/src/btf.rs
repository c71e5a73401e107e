//! Just enough of a BTF reader to find kernel struct member offsets and enum
//! values. Rust eBPF has no CO-RE relocations, so the few kernel struct
//! fields a probe reads get their offsets from the running kernel's BTF here
//! and reach the program as load-time constants.
use std::{collections::HashMap, fs, path::Path};

use anyhow::{Context, Result, bail, ensure};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: String,
    /// `type` for modifiers and typedefs, the element type for arrays.
    referent: u32,
    /// Byte size of structs and unions.
    size: u32,
    members: Vec<Member>,
}

pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
    enum_values: HashMap<String, i64>,
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Btf> {
        let data =
            fs::read(path).with_context(|| format!("reading BTF from {}", path.display()))?;
        Self::parse(&data).with_context(|| format!("parsing BTF from {}", path.display()))
    }

    pub fn parse(data: &[u8]) -> Result<Btf> {
        let u16_at = |o: usize| -> Result<u16> {
            Ok(u16::from_le_bytes(
                data.get(o..o + 2).context("truncated")?.try_into()?,
            ))
        };
        let u32_at = |o: usize| -> Result<u32> {
            Ok(u32::from_le_bytes(
                data.get(o..o + 4).context("truncated")?.try_into()?,
            ))
        };
        ensure!(
            u16_at(0)? == 0xeb9f,
            "bad magic (big-endian BTF is not supported)"
        );
        let hdr_len = u32_at(4)? as usize;
        let type_off = hdr_len + u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let str_off = hdr_len + u32_at(16)? as usize;
        let str_len = u32_at(20)? as usize;
        let strings = data
            .get(str_off..str_off + str_len)
            .context("string section out of bounds")?;
        let name = |off: u32| -> String {
            let s = strings.get(off as usize..).unwrap_or_default();
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };

        // Type ids start at 1; slot 0 is `void`.
        let mut types = vec![Type {
            kind: 0,
            name: String::new(),
            referent: 0,
            size: 0,
            members: vec![],
        }];
        let mut enum_values = HashMap::new();
        let mut at = type_off;
        let end = type_off + type_len;
        while at < end {
            let name_off = u32_at(at)?;
            let info = u32_at(at + 4)?;
            let size_or_type = u32_at(at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut t = Type {
                kind,
                name: name(name_off),
                referent: size_or_type,
                size: size_or_type,
                members: vec![],
            };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => {
                    // struct btf_array { type, index_type, nelems }
                    t.referent = u32_at(at)?;
                    at += 12;
                }
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let off = u32_at(at + 8)?;
                        t.members.push(Member {
                            name: name(u32_at(at)?),
                            type_id: u32_at(at + 4)?,
                            bit_offset: if kind_flag { off & 0xff_ffff } else { off },
                        });
                        at += 12;
                    }
                }
                KIND_ENUM => {
                    for _ in 0..vlen {
                        enum_values.insert(name(u32_at(at)?), u32_at(at + 4)? as i32 as i64);
                        at += 8;
                    }
                }
                KIND_ENUM64 => {
                    for _ in 0..vlen {
                        let v = (u32_at(at + 4)? as u64) | ((u32_at(at + 8)? as u64) << 32);
                        enum_values.insert(name(u32_at(at)?), v as i64);
                        at += 12;
                    }
                }
                KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC => at += 12 * vlen,
                0..=19 => {}
                other => bail!("unknown BTF kind {other} at byte {at}"),
            }
            types.push(t);
        }
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, t) in types.iter().enumerate() {
            if !t.name.is_empty() && matches!(t.kind, KIND_STRUCT | KIND_UNION) {
                by_name.entry(t.name.clone()).or_default().push(id as u32);
            }
        }
        Ok(Btf {
            types,
            by_name,
            enum_values,
        })
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous
    /// structs and unions the way C does.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        self.by_name
            .get(name)?
            .iter()
            // A forward-declared duplicate has no members; take one that does.
            .find_map(|&id| self.find_member(id, member, 0))
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits / 8)
    }

    fn find_member(&self, id: u32, member: &str, base_bits: u32) -> Option<u32> {
        self.find_member_typed(id, member, base_bits)
            .map(|(bits, _)| bits)
    }

    /// (bit offset, type id) of a member, through anonymous members.
    fn find_member_typed(&self, id: u32, member: &str, base_bits: u32) -> Option<(u32, u32)> {
        let t = self.types.get(self.resolve(id) as usize)?;
        for m in &t.members {
            if m.name == member {
                return Some((base_bits + m.bit_offset, m.type_id));
            }
        }
        for m in t.members.iter().filter(|m| m.name.is_empty()) {
            if let Some(found) = self.find_member_typed(m.type_id, member, base_bits + m.bit_offset)
            {
                return Some(found);
            }
        }
        None
    }

    /// Byte size of `struct name`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.by_name
            .get(name)?
            .iter()
            .map(|&id| self.types[id as usize].size)
            .find(|&s| s > 0)
    }

    /// For a member declared as an array of structs, the struct's name.
    pub fn array_elem_struct(&self, name: &str, member: &str) -> Option<String> {
        let (_, ty) = self
            .by_name
            .get(name)?
            .iter()
            .find_map(|&id| self.find_member_typed(id, member, 0))?;
        let arr = self.types.get(self.resolve(ty) as usize)?;
        if arr.kind != KIND_ARRAY {
            return None;
        }
        let elem = self.types.get(self.resolve(arr.referent) as usize)?;
        (elem.kind == KIND_STRUCT).then(|| elem.name.clone())
    }

    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.referent
                }
                _ => break,
            }
        }
        id
    }

    pub fn enum_value(&self, name: &str) -> Option<i64> {
        self.enum_values.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: struct outer { int a; union { struct { long x; }; long y; }; }
    /// plus enum e { V_ONE = 1, V_SIX = 6 }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0x\0y\0long\0e\0V_ONE\0V_SIX\0".to_vec();
        let s = |n: &str| -> u32 {
            let needle = format!("\0{n}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t: Vec<u8> = Vec::new();
        let mut push = |v: u32| t.extend_from_slice(&v.to_le_bytes());
        // 1: int
        push(s("int"));
        push(KIND_INT << 24);
        push(4);
        push(32);
        // 2: long
        push(s("long"));
        push(KIND_INT << 24);
        push(8);
        push(64);
        // 3: anonymous struct { long x; }
        push(0);
        push(KIND_STRUCT << 24 | 1);
        push(8);
        push(s("x"));
        push(2);
        push(0);
        // 4: anonymous union { struct {x}; long y; }
        push(0);
        push(KIND_UNION << 24 | 2);
        push(8);
        push(0);
        push(3);
        push(0);
        push(s("y"));
        push(2);
        push(0);
        // 5: struct outer { int a; union ...; } (the union at byte 8)
        push(s("outer"));
        push(KIND_STRUCT << 24 | 2);
        push(16);
        push(s("a"));
        push(1);
        push(0);
        push(0);
        push(4);
        push(64);
        // 6: enum e
        push(s("e"));
        push(KIND_ENUM << 24 | 2);
        push(4);
        push(s("V_ONE"));
        push(1);
        push(s("V_SIX"));
        push(6);
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.push(1);
        out.push(0);
        out.extend_from_slice(&24u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&t);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_offset("outer", "a"), Some(0));
        assert_eq!(btf.member_offset("outer", "x"), Some(8));
        assert_eq!(btf.member_offset("outer", "y"), Some(8));
        assert_eq!(btf.member_offset("outer", "z"), None);
        assert_eq!(btf.member_offset("missing", "a"), None);
        assert_eq!(btf.enum_value("V_SIX"), Some(6));
        assert_eq!(btf.struct_size("outer"), Some(16));
        assert_eq!(btf.array_elem_struct("outer", "a"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, clearly").is_err());
        assert!(Btf::parse(&[]).is_err());
    }

    #[test]
    fn reads_the_running_kernel_when_present() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("SKIP: {VMLINUX} absent");
            return;
        }
        let btf = Btf::from_file(Path::new(VMLINUX)).unwrap();
        assert_eq!(btf.member_offset("folio", "flags"), Some(0));
        assert!(btf.enum_value("PG_head").is_some());
        assert!(btf.struct_size("task_struct").is_some_and(|s| s > 1000));
        // Linux 6.2+: per-CPU RSS counters.
        if let Some(elem) = btf.array_elem_struct("mm_struct", "rss_stat") {
            assert_eq!(elem, "percpu_counter");
        }
    }
}
