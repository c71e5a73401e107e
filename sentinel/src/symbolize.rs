//! User-space stack symbolization for the hang and deadlock evidence.
//!
//! The eBPF side records user stacks as raw instruction pointers of a process.
//! [`Symbolizer::symbolize`] turns them into one string per frame:
//!
//! - `libc.so.6!pthread_mutex_lock+0x1c4`: the basename of the mapped file,
//!   the symbol that contains the address, and the offset into that symbol;
//! - `libc.so.6+0x8a2f4`: the file is known but no symbol plausibly contains
//!   the address (a stripped local function, for instance). The offset is the
//!   ELF virtual address, what `addr2line -e` and `objdump` take; only when the
//!   file cannot be read or is not ELF is it the file offset instead;
//! - `[vdso]!clock_gettime+0x12` (or `[vdso]+0x..`) for the vDSO;
//! - `0x7f3a...` when the address is in no file mapping (anonymous memory,
//!   heap, stack, JIT code), or when the process is gone.
//!
//! Files are opened through `/proc/PID/map_files/<range>` first (which works
//! for files inside containers and for deleted-but-mapped files), then
//! `/proc/PID/root/<path>`, then the plain path, each fallback checked against
//! the inode that `/proc/PID/maps` reports. Only the ELF headers, the symbol
//! tables (`.symtab` and `.dynsym`) and their string tables are read, never
//! the whole file. When the object carries a GNU build-id and a separate debug
//! file exists under `/usr/lib/debug/.build-id/` (Debian's `-dbg`/`-dbgsym`
//! packages), its `.symtab` is merged in, which names libc's local functions
//! such as `__futex_abstimed_wait_common`.
//!
//! Parsed tables are cached by (device, inode, mtime, size) of the opened
//! file; at most [`CACHE_CAPACITY`] objects, least recently used evicted.
//! Nothing here panics on malformed input: a bad ELF only costs its names.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

use object::elf;
use object::read::elf::{FileHeader, NoteIterator, ProgramHeader, SectionHeader, Sym as _};
use object::{Endianness, ReadCache, ReadRef, SectionIndex};

/// How many parsed objects the cache keeps.
pub const CACHE_CAPACITY: usize = 64;
/// A symbol table or string table larger than this is ignored.
const SECTION_CAP: u64 = 512 << 20;
/// A symbol without a size is accepted only this close to the address.
const UNSIZED_REACH: u64 = 64 << 10;
/// How far back to look for a sized symbol that encloses the address.
const ENCLOSING_LOOKBACK: usize = 16;
/// The vDSO is a few pages; anything bigger is not read.
const VDSO_CAP: u64 = 1 << 20;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    /// As printed, e.g. `r-xp`.
    pub perms: String,
    /// Offset into the file of `start`.
    pub offset: u64,
    /// (major, minor) of the device holding the file; (0, 0) when anonymous.
    pub dev: (u32, u32),
    pub inode: u64,
    /// As printed: empty when anonymous, `[heap]`, `[vdso]`, or a path, which
    /// ends with ` (deleted)` when the file was unlinked.
    pub path: String,
}

impl Mapping {
    /// Whether the kernel marked the mapped file as unlinked.
    pub fn is_deleted(&self) -> bool {
        self.path.ends_with(" (deleted)")
    }

    /// The path without the ` (deleted)` marker.
    pub fn file_path(&self) -> &str {
        self.path.strip_suffix(" (deleted)").unwrap_or(&self.path)
    }

    /// Whether this maps a file (a path, not `[heap]` or anonymous memory).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/')
    }

    fn basename(&self) -> &str {
        let p = self.file_path();
        p.rsplit('/').next().unwrap_or(p)
    }
}

/// Parses the text of `/proc/PID/maps`. Malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    // start-end perms offset dev inode [padding path]
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start_matches(' ');
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let path = rest.trim_start_matches(' ');
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms: perms.to_string(),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        path: path.to_string(),
    })
}

/// Symbolizes user stacks; keeps parsed symbol tables between calls.
pub struct Symbolizer {
    cache: HashMap<ObjKey, Cached>,
    tick: u64,
    /// Roots of separate debug files (`<root>/.build-id/ab/cdef….debug`),
    /// tried inside the process's root first, then on the host.
    debug_dirs: Vec<PathBuf>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Symbolizer {
        Symbolizer {
            cache: HashMap::new(),
            tick: 0,
            debug_dirs: vec![PathBuf::from("/usr/lib/debug")],
        }
    }

    /// Symbolizes the user stack `ips` of process `pid`, innermost frame
    /// first. Frame 0 is looked up at its exact address; the deeper frames
    /// are return addresses, looked up at `ip - 1` so that a call ending a
    /// function is attributed to that function (the printed offset is still
    /// that of `ip`). Returns one string per ip; all raw hex when the process
    /// has exited.
    pub fn symbolize(&mut self, pid: u32, ips: &[u64]) -> Vec<String> {
        let maps = match std::fs::read(format!("/proc/{pid}/maps")) {
            Ok(bytes) => parse_maps(&String::from_utf8_lossy(&bytes)),
            Err(_) => return ips.iter().map(|&ip| hex(ip)).collect(),
        };
        let mut maps = maps;
        maps.sort_by_key(|m| m.start);
        // Which cached object each mapping resolved to during this call.
        let mut memo: HashMap<usize, Option<ObjKey>> = HashMap::new();
        ips.iter()
            .enumerate()
            .map(|(i, &ip)| self.frame(pid, &maps, &mut memo, ip, i > 0))
            .collect()
    }

    fn frame(
        &mut self,
        pid: u32,
        maps: &[Mapping],
        memo: &mut HashMap<usize, Option<ObjKey>>,
        ip: u64,
        return_address: bool,
    ) -> String {
        let adj = u64::from(return_address && ip > 0);
        let at = ip - adj;
        let idx = maps.partition_point(|m| m.start <= at);
        let Some(mi) = idx.checked_sub(1).filter(|&i| at < maps[i].end) else {
            return hex(ip);
        };
        let m = &maps[mi];
        let vdso = m.path == "[vdso]";
        if !vdso && !m.is_file() {
            return hex(ip);
        }
        let base = if vdso { "[vdso]" } else { m.basename() };
        let file_off = (at - m.start).wrapping_add(m.offset);

        let key = match memo.get(&mi) {
            Some(k) => *k,
            None => {
                let k = self.load(pid, m, vdso);
                memo.insert(mi, k);
                k
            }
        };
        self.tick += 1;
        let tick = self.tick;
        let obj = key.and_then(|k| self.cache.get_mut(&k)).map(|c| {
            c.last_used = tick;
            &c.syms
        });
        let Some(vaddr) = obj.and_then(|o| o.vaddr(file_off).map(|v| (o, v))) else {
            return format!("{base}+{:#x}", file_off.wrapping_add(adj));
        };
        let (obj, vaddr) = vaddr;
        match obj.lookup(vaddr) {
            Some(s) => format!(
                "{base}!{}+{:#x}",
                display_name(&s.name),
                vaddr - s.addr + adj
            ),
            None => format!("{base}+{:#x}", vaddr.wrapping_add(adj)),
        }
    }

    /// Makes sure the object behind `m` is in the cache; returns its key.
    fn load(&mut self, pid: u32, m: &Mapping, vdso: bool) -> Option<ObjKey> {
        if vdso {
            let len = m.end.saturating_sub(m.start);
            if len == 0 || len > VDSO_CAP {
                return None;
            }
            let mem = File::open(format!("/proc/{pid}/mem")).ok()?;
            let mut image = vec![0u8; len as usize];
            mem.read_exact_at(&mut image, m.start).ok()?;
            let key = ObjKey::Vdso {
                len,
                hash: fnv1a(&image),
            };
            if !self.cache.contains_key(&key) {
                let syms = parse_elf(image.as_slice())
                    .map(ObjectSyms::from)
                    .unwrap_or_default();
                self.insert(key, syms);
            }
            return Some(key);
        }
        let (file, meta) = open_mapped(pid, m)?;
        let key = ObjKey::File {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            size: meta.size(),
        };
        if !self.cache.contains_key(&key) {
            let syms = self.load_file(pid, file);
            self.insert(key, syms);
        }
        Some(key)
    }

    fn load_file(&self, pid: u32, file: File) -> ObjectSyms {
        let data = ReadCache::new(file);
        let Some(mut parsed) = parse_elf(&data) else {
            return ObjectSyms::default();
        };
        drop(data);
        if let Some(id) = parsed.build_id.as_deref().filter(|id| id.len() >= 2)
            && let Some(debug) = self.debug_file(pid, id)
            && let Some(d) = parse_elf(&ReadCache::new(debug))
        {
            parsed.syms.extend(d.syms);
        }
        ObjectSyms::from(parsed)
    }

    fn debug_file(&self, pid: u32, build_id: &[u8]) -> Option<File> {
        let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
        let rel = format!(".build-id/{}/{}.debug", &hex[..2], &hex[2..]);
        self.debug_dirs.iter().find_map(|dir| {
            let in_root = PathBuf::from(format!("/proc/{pid}/root{}", dir.display())).join(&rel);
            File::open(in_root)
                .or_else(|_| File::open(dir.join(&rel)))
                .ok()
        })
    }

    fn insert(&mut self, key: ObjKey, syms: ObjectSyms) {
        if self.cache.len() >= CACHE_CAPACITY
            && let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| *k)
        {
            self.cache.remove(&oldest);
        }
        self.tick += 1;
        self.cache.insert(
            key,
            Cached {
                syms,
                last_used: self.tick,
            },
        );
    }
}

fn hex(ip: u64) -> String {
    format!("{ip:#x}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ObjKey {
    File {
        dev: u64,
        ino: u64,
        mtime: i64,
        mtime_nsec: i64,
        size: u64,
    },
    Vdso {
        len: u64,
        hash: u64,
    },
}

struct Cached {
    syms: ObjectSyms,
    last_used: u64,
}

/// Opens the file behind a mapping, preferring the paths that see what the
/// process sees. Returns the file and its metadata.
fn open_mapped(pid: u32, m: &Mapping) -> Option<(File, std::fs::Metadata)> {
    let open = |p: &str| {
        let f = File::open(p).ok()?;
        let meta = f.metadata().ok()?;
        meta.is_file().then_some((f, meta))
    };
    // The very file the process mapped, even when deleted or in another
    // mount namespace. Needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE).
    if let Some(found) = open(&format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)) {
        return Some(found);
    }
    let path = m.file_path();
    // Through the process's root. On overlayfs the inode may differ from the
    // one in maps, so only a deleted file needs the inode to match.
    if let Some((f, meta)) = open(&format!("/proc/{pid}/root{path}"))
        && (!m.is_deleted() || meta.ino() == m.inode)
    {
        return Some((f, meta));
    }
    // The host's path: only if it is the very same file.
    let (f, meta) = open(path)?;
    (meta.ino() == m.inode && dev_pair(meta.dev()) == m.dev).then_some((f, meta))
}

/// (major, minor) of a Linux `dev_t`.
fn dev_pair(dev: u64) -> (u32, u32) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    (major as u32, minor as u32)
}

/// A PT_LOAD segment: file range and where it is linked.
#[derive(Debug, Clone, Copy)]
struct Load {
    offset: u64,
    filesz: u64,
    vaddr: u64,
}

#[derive(Debug)]
struct Symbol {
    addr: u64,
    size: u64,
    name: Box<str>,
}

/// A symbol candidate as read, with what decides between aliases.
struct RawSym {
    addr: u64,
    size: u64,
    func: bool,
    bind: u8,
    name: Box<str>,
}

impl RawSym {
    /// Smaller is better: sized, typed as a function, the public spelling
    /// (`getpid` over `__getpid`), global over weak over local, short.
    fn rank(&self) -> (bool, bool, usize, u8, usize) {
        let bind = match self.bind {
            elf::STB_GLOBAL => 0,
            elf::STB_WEAK => 1,
            _ => 2,
        };
        let underscores = self.name.bytes().take_while(|&b| b == b'_').count();
        (
            self.size == 0,
            !self.func,
            underscores,
            bind,
            self.name.len(),
        )
    }
}

struct Parsed {
    loads: Vec<Load>,
    syms: Vec<RawSym>,
    build_id: Option<Vec<u8>>,
}

/// The parsed symbols of one object, sorted by address, one per address.
#[derive(Debug, Default)]
struct ObjectSyms {
    loads: Vec<Load>,
    syms: Vec<Symbol>,
}

impl From<Parsed> for ObjectSyms {
    fn from(p: Parsed) -> Self {
        let mut raw = p.syms;
        raw.sort_by(|a, b| a.addr.cmp(&b.addr).then_with(|| a.rank().cmp(&b.rank())));
        raw.dedup_by_key(|s| s.addr);
        let syms = raw
            .into_iter()
            .map(|s| Symbol {
                addr: s.addr,
                size: s.size,
                name: s.name,
            })
            .collect();
        ObjectSyms {
            loads: p.loads,
            syms,
        }
    }
}

impl ObjectSyms {
    /// File offset to ELF virtual address, through the PT_LOAD holding it.
    fn vaddr(&self, file_off: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|l| file_off >= l.offset && file_off - l.offset < l.filesz)
            .map(|l| file_off - l.offset + l.vaddr)
    }

    /// The symbol that plausibly contains `vaddr`: the nearest one at or
    /// below it, if its size covers it; else a sized symbol just before that
    /// encloses it; else a size-less one not too far away.
    fn lookup(&self, vaddr: u64) -> Option<&Symbol> {
        let i = self
            .syms
            .partition_point(|s| s.addr <= vaddr)
            .checked_sub(1)?;
        let covers = |s: &Symbol| s.size > 0 && vaddr - s.addr < s.size;
        let nearest = &self.syms[i];
        if covers(nearest) {
            return Some(nearest);
        }
        if let Some(outer) = self.syms[..i]
            .iter()
            .rev()
            .take(ENCLOSING_LOOKBACK)
            .find(|s| covers(s))
        {
            return Some(outer);
        }
        (nearest.size == 0 && vaddr - nearest.addr < UNSIZED_REACH).then_some(nearest)
    }
}

/// Reads the load segments, build-id and function symbols of an ELF file.
fn parse_elf<'d, R: ReadRef<'d>>(data: R) -> Option<Parsed> {
    let ident = data.read_bytes_at(0, 16).ok()?;
    if ident.get(..4)? != elf::ELFMAG {
        return None;
    }
    // e_ident[EI_CLASS]
    match ident[4] {
        elf::ELFCLASS32 => parse_elf_as::<elf::FileHeader32<Endianness>, R>(data),
        elf::ELFCLASS64 => parse_elf_as::<elf::FileHeader64<Endianness>, R>(data),
        _ => None,
    }
}

fn parse_elf_as<'d, Elf, R>(data: R) -> Option<Parsed>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'d>,
{
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let mut loads = Vec::new();
    let mut build_id = None;
    for ph in header.program_headers(endian, data).unwrap_or(&[]) {
        match ph.p_type(endian) {
            elf::PT_LOAD => loads.push(Load {
                offset: ph.p_offset(endian).into(),
                filesz: ph.p_filesz(endian).into(),
                vaddr: ph.p_vaddr(endian).into(),
            }),
            elf::PT_NOTE if build_id.is_none() => {
                build_id = ph
                    .notes(endian, data)
                    .ok()
                    .flatten()
                    .and_then(|n| find_build_id(n, endian));
            }
            _ => {}
        }
    }

    let mut syms = Vec::new();
    let Ok(sections) = header.sections(endian, data) else {
        return Some(Parsed {
            loads,
            syms,
            build_id,
        });
    };
    let executable = |shndx: u16| {
        sections
            .section(SectionIndex(usize::from(shndx)))
            .is_ok_and(|s| s.sh_flags(endian).into() & u64::from(elf::SHF_EXECINSTR) != 0)
    };
    for sh in sections.iter() {
        let kind = sh.sh_type(endian);
        if kind == elf::SHT_NOTE && build_id.is_none() {
            build_id = sh
                .notes(endian, data)
                .ok()
                .flatten()
                .and_then(|n| find_build_id(n, endian));
        }
        if kind != elf::SHT_SYMTAB && kind != elf::SHT_DYNSYM {
            continue;
        }
        if sh.sh_size(endian).into() > SECTION_CAP {
            continue;
        }
        let Ok(table) = sh.data_as_array::<Elf::Sym, R>(endian, data) else {
            continue;
        };
        let Ok(strsec) = sections.section(SectionIndex(sh.sh_link(endian) as usize)) else {
            continue;
        };
        if strsec.sh_size(endian).into() > SECTION_CAP {
            continue;
        }
        let Ok(strings) = strsec.data(endian, data) else {
            continue;
        };
        for sym in table {
            let shndx = sym.st_shndx(endian);
            if shndx == elf::SHN_UNDEF || (shndx >= elf::SHN_LORESERVE && shndx != elf::SHN_XINDEX)
            {
                continue;
            }
            let func = match sym.st_type() {
                elf::STT_FUNC | elf::STT_GNU_IFUNC => true,
                // Assembly functions often lack a type.
                elf::STT_NOTYPE if shndx != elf::SHN_XINDEX && executable(shndx) => false,
                _ => continue,
            };
            let addr: u64 = sym.st_value(endian).into();
            if addr == 0 {
                continue;
            }
            let Some(name) = c_str(strings, sym.st_name(endian) as usize) else {
                continue;
            };
            if name.is_empty() || name[0] == b'$' || name.starts_with(b".L") {
                continue;
            }
            syms.push(RawSym {
                addr,
                size: sym.st_size(endian).into(),
                func,
                bind: sym.st_bind(),
                name: String::from_utf8_lossy(name).into(),
            });
        }
    }
    Some(Parsed {
        loads,
        syms,
        build_id,
    })
}

fn find_build_id<Elf: FileHeader>(
    mut notes: NoteIterator<'_, Elf>,
    endian: Elf::Endian,
) -> Option<Vec<u8>> {
    while let Ok(Some(note)) = notes.next() {
        if note.name() == elf::ELF_NOTE_GNU && note.n_type(endian) == elf::NT_GNU_BUILD_ID {
            return Some(note.desc().to_vec());
        }
    }
    None
}

fn c_str(table: &[u8], offset: usize) -> Option<&[u8]> {
    let s = table.get(offset..)?;
    let end = s.iter().position(|&b| b == 0)?;
    Some(&s[..end])
}

/// A Rust legacy-mangled name as a path, anything else as is.
fn display_name(name: &str) -> Cow<'_, str> {
    demangle_rust_legacy(name).map_or(Cow::Borrowed(name), Cow::Owned)
}

/// `_ZN3std2rt10lang_start17h0123456789abcdefE` → `std::rt::lang_start`.
/// Only names that end in Rust's 17-character hash are touched, so C++
/// names stay as they are. Returns None for anything it does not understand.
fn demangle_rust_legacy(name: &str) -> Option<String> {
    let rest = name.strip_prefix("_ZN")?;
    let bytes = rest.as_bytes();
    let mut parts = Vec::new();
    let mut i = 0;
    loop {
        match bytes.get(i)? {
            b'E' => {
                i += 1;
                break;
            }
            b'0'..=b'9' => {
                let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                let len: usize = rest[i..i + digits].parse().ok()?;
                i += digits;
                let part = rest.get(i..i.checked_add(len)?)?;
                if len == 0 || !part.is_ascii() {
                    return None;
                }
                parts.push(part);
                i += len;
            }
            _ => return None,
        }
    }
    // Allow LLVM's suffixes such as `.llvm.1234`, nothing else (C++
    // parameter types would follow here).
    if !(rest[i..].is_empty() || rest[i..].starts_with('.')) {
        return None;
    }
    let hash = parts.pop()?;
    if parts.is_empty()
        || hash.len() != 17
        || !hash.starts_with('h')
        || !hash[1..].bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let mut out = String::new();
    for (n, part) in parts.iter().enumerate() {
        if n > 0 {
            out.push_str("::");
        }
        unescape_rust_part(part, &mut out)?;
    }
    Some(out)
}

fn unescape_rust_part(part: &str, out: &mut String) -> Option<()> {
    // A leading `_` only protects a `$` escape at the start.
    let mut s = if part.starts_with("_$") {
        &part[1..]
    } else {
        part
    };
    while !s.is_empty() {
        if let Some(r) = s.strip_prefix("..") {
            out.push_str("::");
            s = r;
        } else if let Some(r) = s.strip_prefix('$') {
            let end = r.find('$')?;
            let code = &r[..end];
            let c = match code {
                "SP" => '@',
                "BP" => '*',
                "RF" => '&',
                "LT" => '<',
                "GT" => '>',
                "LP" => '(',
                "RP" => ')',
                "C" => ',',
                _ => {
                    let hex = code.strip_prefix('u')?;
                    char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
                }
            };
            out.push(c);
            s = &r[end + 1..];
        } else {
            let c = s.chars().next()?;
            out.push(c);
            s = &s[c.len_utf8()..];
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn sentinel_test_marker() -> u64 {
        std::hint::black_box(0x5e47_71e1)
    }

    const MAPS: &str = "\
55c76401f000-55c764021000 r--p 00000000 fe:00 247030                     /usr/bin/cat
55c764021000-55c764026000 r-xp 00002000 fe:00 247030                     /usr/bin/cat
55c79c6dd000-55c79c6fe000 rw-p 00000000 00:00 0                          [heap]
7fc477c3a000-7fc477c5c000 rw-p 00000000 00:00 0 
7fc477ce5000-7fc477e3b000 r-xp 00026000 103:0a 326279                    /usr/lib/x86_64-linux-gnu/libc.so.6
7fc477ea2000-7fc477ea9000 r--s 00000000 fe:00 325745                     /tmp/a dir/with spaces.so (deleted)
7fc477eb2000-7fc477eb4000 r-xp 00000000 00:00 0                          [vdso]
garbage line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn symbolize_parse_maps() {
        let maps = parse_maps(MAPS);
        assert_eq!(maps.len(), 8);
        assert_eq!(
            maps[1],
            Mapping {
                start: 0x55c7_6402_1000,
                end: 0x55c7_6402_6000,
                perms: "r-xp".into(),
                offset: 0x2000,
                dev: (0xfe, 0),
                inode: 247_030,
                path: "/usr/bin/cat".into(),
            }
        );
        assert_eq!(maps[2].path, "[heap]");
        assert!(!maps[2].is_file());
        assert_eq!(maps[3].path, "");
        assert_eq!(maps[3].inode, 0);
        assert_eq!(maps[4].dev, (0x103, 0x0a));
        assert_eq!(maps[4].basename(), "libc.so.6");
        assert!(maps[5].is_deleted());
        assert_eq!(maps[5].file_path(), "/tmp/a dir/with spaces.so");
        assert_eq!(maps[5].basename(), "with spaces.so");
        assert_eq!(maps[5].perms, "r--s");
        assert_eq!(maps[6].path, "[vdso]");
        assert_eq!(maps[7].start, 0xffff_ffff_ff60_0000);
    }

    #[test]
    fn symbolize_self_marker_and_libc() {
        let marker = sentinel_test_marker as *const () as usize as u64;
        let getpid = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"getpid".as_ptr()) } as u64;
        assert_ne!(getpid, 0);
        let mut s = Symbolizer::new();
        let pid = std::process::id();
        let out = s.symbolize(pid, &[getpid]);
        eprintln!("{out:?}");
        assert!(out[0].contains("getpid+0x0"), "{}", out[0]);
        assert!(out[0].starts_with("libc"), "{}", out[0]);
        let out = s.symbolize(pid, &[marker, getpid + 2, marker + 1, marker]);
        eprintln!("{out:?}");
        assert!(out[0].contains("!sentinel_test_marker+0x0"), "{}", out[0]);
        assert!(
            out[1].starts_with("libc") && out[1].contains("getpid+0x2"),
            "{}",
            out[1]
        );
        // A return address: looked up at ip-1, offset of the ip itself.
        assert!(out[2].ends_with("!sentinel_test_marker+0x1"), "{}", out[2]);
        // A return address at a function's first byte belongs to the code before.
        assert!(!out[3].contains("sentinel_test_marker"), "{}", out[3]);
        // Again, from the cache.
        assert_eq!(s.symbolize(pid, &[marker, getpid + 2]), out[..2]);
    }

    #[test]
    fn symbolize_anonymous_and_exited() {
        let len = 4096;
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let addr = p as u64 + 16;
        let out = Symbolizer::new().symbolize(std::process::id(), &[addr, addr]);
        unsafe { libc::munmap(p, len) };
        assert_eq!(out, [format!("{addr:#x}"), format!("{addr:#x}")]);

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let out = Symbolizer::new().symbolize(pid, &[0x7f00_1234_5678, 0x40_1000]);
        assert_eq!(out, ["0x7f0012345678", "0x401000"]);
    }

    #[test]
    fn symbolize_vdso() {
        let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
        if base == 0 {
            return;
        }
        let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
        let Some(v) = maps.iter().find(|m| m.path == "[vdso]") else {
            return;
        };
        let mut s = Symbolizer::new();
        let key = s.load(std::process::id(), v, true).expect("vdso readable");
        let obj = &s.cache[&key].syms;
        let sym = obj
            .syms
            .iter()
            .find(|s| s.name.contains("clock_gettime"))
            .expect("vdso exports clock_gettime");
        // The vDSO is mapped at offset 0; its first PT_LOAD maps its image.
        let load = obj.loads[0];
        let ip = v.start + (sym.addr - load.vaddr + load.offset) + 3;
        let out = s.symbolize(std::process::id(), &[ip]);
        assert!(out[0].starts_with("[vdso]!"), "{}", out[0]);
        assert!(out[0].ends_with("clock_gettime+0x3"), "{}", out[0]);
    }

    /// A stripped copy of this test binary gets its names back from a
    /// separate debug file found by build-id.
    #[test]
    fn symbolize_separate_debug_file() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stripped = dir.path().join("stripped");
        let ok = std::process::Command::new("strip")
            .args(["--strip-all", "-o"])
            .arg(&stripped)
            .arg(&exe)
            .status()
            .is_ok_and(|s| s.success());
        let full = parse_elf(&ReadCache::new(File::open(&exe).unwrap())).unwrap();
        let (Some(id), true) = (full.build_id.clone(), ok) else {
            eprintln!("no strip(1) or no build-id; skipped");
            return;
        };
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let debug_dir = dir.path().join("debug");
        let debug = debug_dir.join(format!(".build-id/{}/{}.debug", &hex[..2], &hex[2..]));
        std::fs::create_dir_all(debug.parent().unwrap()).unwrap();
        let ok = std::process::Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&exe)
            .arg(&debug)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("no objcopy(1); skipped");
            return;
        }
        let marker = ObjectSyms::from(full)
            .syms
            .into_iter()
            .find(|s| &*s.name == "sentinel_test_marker")
            .unwrap();
        let pid = std::process::id();
        let mut s = Symbolizer::new();
        s.debug_dirs = vec![dir.path().join("nowhere")];
        let bare = s.load_file(pid, File::open(&stripped).unwrap());
        assert!(
            bare.lookup(marker.addr)
                .is_none_or(|m| &*m.name != "sentinel_test_marker")
        );
        s.debug_dirs = vec![debug_dir];
        let with_debug = s.load_file(pid, File::open(&stripped).unwrap());
        assert_eq!(
            with_debug.lookup(marker.addr + 1).map(|m| &*m.name),
            Some("sentinel_test_marker")
        );
    }

    #[test]
    fn symbolize_lookup_rules() {
        let raw = |addr, size, name: &str, bind| RawSym {
            addr,
            size,
            func: true,
            bind,
            name: name.into(),
        };
        let obj = ObjectSyms::from(Parsed {
            loads: vec![Load {
                offset: 0x1000,
                filesz: 0x10_0000,
                vaddr: 0x40_1000,
            }],
            syms: vec![
                raw(0x40_1000, 0x10, "__getpid", elf::STB_GLOBAL),
                raw(0x40_1000, 0x10, "getpid", elf::STB_WEAK),
                raw(0x40_2000, 0x100, "outer", elf::STB_GLOBAL),
                raw(0x40_2010, 0x8, "inner", elf::STB_LOCAL),
                raw(0x40_3000, 0, "asm_label", elf::STB_LOCAL),
            ],
            build_id: None,
        });
        assert_eq!(obj.vaddr(0x1234), Some(0x40_1234));
        assert_eq!(obj.vaddr(0x10), None);
        let name = |v| obj.lookup(v).map(|s| &*s.name);
        assert_eq!(name(0x40_1008), Some("getpid"));
        assert_eq!(name(0x40_1010), None); // past its size: be honest
        assert_eq!(name(0x40_2012), Some("inner"));
        assert_eq!(name(0x40_2040), Some("outer")); // enclosing
        assert_eq!(name(0x40_3100), Some("asm_label"));
        assert_eq!(name(0x40_3000 + UNSIZED_REACH), None);
        assert_eq!(name(0x40_0fff), None);
    }

    #[test]
    fn symbolize_demangle() {
        assert_eq!(
            demangle_rust_legacy("_ZN3std2rt10lang_start17h0123456789abcdefE").as_deref(),
            Some("std::rt::lang_start")
        );
        assert_eq!(
            demangle_rust_legacy(
                "_ZN66_$LT$core..option..Option$LT$T$GT$$u20$as$u20$core..fmt..Debug$GT$3fmt17h0123456789abcdefE.llvm.42"
            )
            .as_deref(),
            Some("<core::option::Option<T> as core::fmt::Debug>::fmt")
        );
        // C++ and v0 names stay as they are.
        assert_eq!(demangle_rust_legacy("_ZN3foo3barEv"), None);
        assert_eq!(demangle_rust_legacy("_ZN3foo3barE"), None);
        assert_eq!(demangle_rust_legacy("_RNvCs1234_7mycrate3foo"), None);
        assert_eq!(demangle_rust_legacy("_ZN3foo"), None);
        assert_eq!(
            display_name("__futex_abstimed_wait_common"),
            "__futex_abstimed_wait_common"
        );
    }
}
