//! Output files: staged under temporary names and renamed into place only when the whole
//! run succeeded, so a failed or interrupted run never leaves a half-written file that
//! looks complete. Writers for CSV (UTF-8 with a byte-order mark, like the original) and
//! JSON Lines.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The file format of training files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CSV with a header row, UTF-8 with a byte-order mark (spreadsheet tools read Korean
    /// text correctly), minimal quoting, `\n` line ends.
    Csv,
    /// One JSON object per line, keys = the header.
    Jsonl,
}

impl Format {
    /// File extension without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

/// Files being written for one run. Dropping it without [`commit`](Staging::commit) removes
/// every temporary file (and the output folder, if this run created it and it is empty).
#[derive(Debug, Default)]
pub struct Staging {
    /// (temporary, final) paths.
    files: Vec<(PathBuf, PathBuf)>,
    created_dirs: Vec<PathBuf>,
    committed: bool,
}

impl Staging {
    /// Creates `dir` (and parents) if needed, remembering what it created.
    pub fn ensure_dir(&mut self, dir: &Path) -> Result<()> {
        if dir.as_os_str().is_empty() || dir.is_dir() {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut d = Some(dir);
        while let Some(p) = d {
            if p.as_os_str().is_empty() || p.exists() {
                break;
            }
            missing.push(p.to_path_buf());
            d = p.parent();
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // Deepest first, so cleanup removes children before parents.
        self.created_dirs.extend(missing);
        Ok(())
    }

    /// Opens a temporary file that becomes `path` on commit.
    pub fn create(&mut self, path: &Path) -> Result<BufWriter<File>> {
        if self.files.iter().any(|(_, f)| f == path) {
            return Err(Error::Invalid(format!(
                "two outputs would be written to the same file {}",
                path.display()
            )));
        }
        let dir = path.parent().unwrap_or(Path::new(""));
        self.ensure_dir(dir)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.embtune-tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        self.files.push((tmp, path.to_path_buf()));
        Ok(BufWriter::with_capacity(1 << 20, file))
    }

    /// Renames every staged file to its final name. Writers must be flushed and closed.
    /// If a rename fails, the files this commit already renamed are removed again and the
    /// remaining temporary files are dropped, so a failed run leaves no new output.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        for (i, (tmp, path)) in self.files.iter().enumerate() {
            if let Err(e) = std::fs::rename(tmp, path) {
                for (_, done) in &self.files[..i] {
                    let _ = std::fs::remove_file(done);
                }
                return Err(Error::io(path, e)); // Drop removes the remaining temporaries
            }
        }
        self.committed = true;
        Ok(self.files.iter().map(|(_, p)| p.clone()).collect())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for (tmp, _) in &self.files {
            let _ = std::fs::remove_file(tmp);
        }
        for d in &self.created_dirs {
            let _ = std::fs::remove_dir(d); // only succeeds when empty
        }
    }
}

/// Writes rows of one file (CSV or JSON Lines) and counts them.
///
/// Encoding and writing happen on a thread of the writer's own, so they overlap the work
/// that produces the rows (sampling, composing texts). [`RowWriter::write`] only records
/// each field: a cell of the table given to [`RowWriter::with_table`] as an offset into the
/// table's shared text (no copy), any other text copied into the current block. Blocks go
/// to the thread in order; the thread prefetches the cells of the rows a few places ahead
/// (negatives sit at random places of a large table) and encodes them exactly as before,
/// so the file is byte-identical to encoding in place.
pub struct RowWriter {
    path: PathBuf,
    header: Vec<String>,
    rows: u64,
    /// Address range of the table text, for telling cells from other text.
    table: Option<(usize, usize)>,
    block: Block,
    pipe: Pipe,
}

/// Rows recorded on the producing side, encoded on the writer thread.
#[derive(Default)]
struct Block {
    /// Per field: offset and length in the table text (`TABLE` bit set) or in `arena`.
    fields: Vec<(u32, u32)>,
    /// Per row: the index in `fields` after its last field.
    row_ends: Vec<u32>,
    /// Bytes of fields that are not table cells.
    arena: Vec<u8>,
}

impl Block {
    /// Empties the block, keeping its capacity.
    fn clear(&mut self) {
        self.fields.clear();
        self.row_ends.clear();
        self.arena.clear();
    }
}

/// Marks a field of [`Block::fields`] as an offset into the table text.
const TABLE: u32 = 1 << 31;

/// Where field `(off, len)` of a block lies: its source (the table text or the block's
/// arena) and its offset in it.
#[inline]
fn locate<'t>(off: u32, table: &'t str, arena: &'t str) -> (&'t str, usize) {
    if off & TABLE != 0 {
        (table, (off & !TABLE) as usize)
    } else {
        (arena, off as usize)
    }
}

/// Rows per block (a block also goes when its arena passes [`BLOCK_BYTES`]).
const BLOCK_ROWS: usize = 8192;
const BLOCK_BYTES: usize = 1 << 20;

/// Encoded bytes are handed to the file (directly, not through a `BufWriter`) in chunks
/// this large: small enough that the kernel copies them out of the CPU's cache, large
/// enough that system calls are few.
const FLUSH_AT: usize = 128 << 10;

/// Files are written by the encoding thread itself up to this size; past it, a thread of
/// their own does the writing.
const DIRECT_BYTES: usize = 4 << 20;

/// How many rows ahead of the one being encoded the thread prefetches.
const PREFETCH_ROWS: usize = 8;

/// Buffers reused across files: a run with many parts (one file pair per domain) would
/// otherwise fault in fresh megabytes for every file's thread.
static SPARE_BYTES: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
static SPARE_BLOCKS: std::sync::Mutex<Vec<Block>> = std::sync::Mutex::new(Vec::new());
const SPARES_KEPT: usize = 8;

fn take_bytes() -> Vec<u8> {
    let spare = SPARE_BYTES.lock().ok().and_then(|mut v| v.pop());
    spare.unwrap_or_else(|| Vec::with_capacity(2 * FLUSH_AT))
}

fn give_bytes(mut b: Vec<u8>) {
    b.clear();
    if let Ok(mut v) = SPARE_BYTES.lock() {
        if v.len() < SPARES_KEPT {
            v.push(b);
        }
    }
}

fn take_block() -> Block {
    let spare = SPARE_BLOCKS.lock().ok().and_then(|mut v| v.pop());
    spare.unwrap_or_default()
}

fn give_block(mut b: Block) {
    b.clear();
    if let Ok(mut v) = SPARE_BLOCKS.lock() {
        if v.len() < SPARES_KEPT {
            v.push(b);
        }
    }
}

/// The channel to the writer thread and its handle.
struct Pipe {
    tx: Option<std::sync::mpsc::SyncSender<Block>>,
    back: std::sync::mpsc::Receiver<Block>,
    handle: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// Why the thread could not be started.
    failed: Option<std::io::Error>,
}

impl Pipe {
    fn spawn(enc: Encoder) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Block>(2);
        let (back_tx, back) = std::sync::mpsc::channel::<Block>();
        let handle = std::thread::Builder::new()
            .name("embtune-writer".into())
            .spawn(move || enc.run(rx, back_tx));
        match handle {
            Ok(h) => Pipe {
                tx: Some(tx),
                back,
                handle: Some(h),
                failed: None,
            },
            Err(e) => Pipe {
                tx: None,
                back,
                handle: None,
                failed: Some(e),
            },
        }
    }

    /// Queues `full`; returns an empty block to fill next, or `Err` when the thread has
    /// stopped (its write failed: [`Pipe::finish`] returns why).
    fn send(&mut self, full: Block) -> std::result::Result<Block, ()> {
        let tx = self.tx.as_ref().ok_or(())?;
        tx.send(full).map_err(|_| ())?;
        Ok(self.back.try_recv().unwrap_or_else(|_| take_block()))
    }

    /// Waits until every queued row is written and the file flushed.
    fn finish(&mut self) -> std::io::Result<()> {
        self.tx = None;
        let r = match self.handle.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the writer thread panicked"))),
            None => self.failed.take().map_or(Ok(()), Err),
        };
        while let Ok(b) = self.back.try_recv() {
            give_block(b);
        }
        r
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The writer thread's side: encodes blocks and writes the bytes.
struct Encoder {
    out: Option<BufWriter<File>>,
    format: Format,
    header: Vec<String>,
    table: Option<std::sync::Arc<String>>,
    buf: Vec<u8>,
    scratch: String,
}

impl Encoder {
    fn run(
        mut self,
        rx: std::sync::mpsc::Receiver<Block>,
        back: std::sync::mpsc::Sender<Block>,
    ) -> std::io::Result<()> {
        let table = self.table.take();
        let text: &str = table.as_deref().map_or("", String::as_str);
        // Chunks go straight to the file (the buffered writer is empty: nothing is lost),
        // from a thread of their own: the kernel's copy into the page cache then overlaps
        // the encoding of the next chunk.
        let file = self
            .out
            .take()
            .map(|w| w.into_inner().map_err(|e| e.into_error()))
            .transpose()?;
        let (io_tx, io_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::scope(|sc| -> std::io::Result<()> {
            // Small files are written from this thread; the file's own writer thread starts
            // once the file passes DIRECT_BYTES (a thread costs more than it saves there).
            let mut file = file;
            let mut written = 0usize;
            let mut io: Option<std::thread::ScopedJoinHandle<'_, std::io::Result<()>>> = None;
            let mut io_rx = Some(io_rx);
            let mut free_tx = Some(free_tx);
            let mut stopped = false;
            'blocks: for mut block in rx {
                // Whole `&str`s were appended, so the arena is UTF-8 (checked, cheaply).
                let arena = simdutf8::basic::from_utf8(&block.arena).unwrap_or("");
                let resolve = |&(off, len): &(u32, u32)| -> &str {
                    let (src, off) = locate(off, text, arena);
                    src.get(off..off + len as usize).unwrap_or("")
                };
                let mut fields: Vec<&str> = Vec::with_capacity(8);
                let mut start = 0usize;
                for (r, &end) in block.row_ends.iter().enumerate() {
                    if let Some(&ahead_end) = block.row_ends.get(r + PREFETCH_ROWS) {
                        let ahead_start = block.row_ends[r + PREFETCH_ROWS - 1] as usize;
                        for &(off, len) in &block.fields[ahead_start..ahead_end as usize] {
                            let (src, off) = locate(off, text, arena);
                            // Addresses only: the bounds and boundary checks of `resolve`
                            // read memory, which is what the prefetch is for.
                            crate::mem::prefetch(src.as_ptr().wrapping_add(off), len as usize);
                        }
                    }
                    fields.clear();
                    fields.extend(block.fields[start..end as usize].iter().map(resolve));
                    start = end as usize;
                    match self.format {
                        Format::Csv => encode_csv(&mut self.buf, &fields),
                        Format::Jsonl => {
                            encode_json(&mut self.buf, &mut self.scratch, &self.header, &fields)
                        }
                    }
                    if self.buf.len() >= FLUSH_AT {
                        written += self.buf.len();
                        if io.is_none() && written < DIRECT_BYTES {
                            if let Some(f) = &mut file {
                                f.write_all(&self.buf)?;
                            }
                            self.buf.clear();
                            continue;
                        }
                        if io.is_none() {
                            let (mut file, rx, back) = (file.take(), io_rx.take(), free_tx.take());
                            io = Some(sc.spawn(move || -> std::io::Result<()> {
                                for mut chunk in rx.into_iter().flatten() {
                                    if let Some(f) = &mut file {
                                        f.write_all(&chunk)?;
                                    }
                                    chunk.clear();
                                    if let Some(b) = &back {
                                        let _ = b.send(chunk);
                                    }
                                }
                                if let Some(f) = &mut file {
                                    f.flush()?;
                                }
                                Ok(())
                            }));
                        }
                        let next = free_rx
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(2 * FLUSH_AT));
                        let full = std::mem::replace(&mut self.buf, next);
                        if io_tx.send(full).is_err() {
                            stopped = true; // the write failed: its error comes from join
                            break 'blocks;
                        }
                    }
                }
                drop(fields);
                block.clear();
                let _ = back.send(block);
            }
            let rest = std::mem::take(&mut self.buf);
            let r = match io {
                Some(io) => {
                    if !stopped {
                        let _ = io_tx.send(rest);
                    }
                    drop(io_tx);
                    io.join().unwrap_or_else(|_| {
                        Err(std::io::Error::other("the file writer thread panicked"))
                    })
                }
                None => {
                    drop(io_tx);
                    let r = match &mut file {
                        Some(f) => f.write_all(&rest).and_then(|()| f.flush()),
                        None => Ok(()),
                    };
                    give_bytes(rest);
                    r
                }
            };
            while let Ok(b) = free_rx.try_recv() {
                give_bytes(b);
            }
            r
        })
    }
}

/// One CSV row (Python's csv QUOTE_MINIMAL, `\n` line end).
fn encode_csv(b: &mut Vec<u8>, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        push_csv_field(b, f.as_bytes(), fields.len() == 1);
    }
    b.push(b'\n');
}

/// One JSON Lines row: an object with the header's keys.
fn encode_json(b: &mut Vec<u8>, s: &mut String, header: &[String], fields: &[&str]) {
    s.clear();
    s.push('{');
    for (i, (k, v)) in header.iter().zip(fields).enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_json_string(s, k);
        s.push(':');
        push_json_string(s, v);
    }
    s.push_str("}\n");
    b.extend_from_slice(s.as_bytes());
}

impl RowWriter {
    /// Starts a file: the BOM and header for CSV; nothing for JSON Lines.
    pub fn new(
        out: BufWriter<File>,
        path: &Path,
        format: Format,
        header: Vec<String>,
    ) -> Result<Self> {
        Ok(Self::start(out, path, format, header, true, None))
    }

    /// Like [`RowWriter::new`] without the byte-order mark (files meant for programs).
    pub fn without_bom(
        out: BufWriter<File>,
        path: &Path,
        format: Format,
        header: Vec<String>,
    ) -> Result<Self> {
        Ok(Self::start(out, path, format, header, false, None))
    }

    /// Like [`RowWriter::new`] for rows made mostly of cells of `table`: those travel to
    /// the writer thread as offsets into the table's text instead of copies.
    pub fn with_table(
        out: BufWriter<File>,
        path: &Path,
        format: Format,
        header: Vec<String>,
        table: &crate::table::Table,
    ) -> Result<Self> {
        let text = table.shared_text();
        // Offsets must fit beside the TABLE bit; larger tables copy their cells.
        let text = (text.len() < TABLE as usize).then_some(text);
        Ok(Self::start(out, path, format, header, true, text))
    }

    fn start(
        out: BufWriter<File>,
        path: &Path,
        format: Format,
        header: Vec<String>,
        bom: bool,
        table: Option<std::sync::Arc<String>>,
    ) -> Self {
        let mut buf = take_bytes();
        if format == Format::Csv {
            if bom {
                buf.extend_from_slice(b"\xEF\xBB\xBF");
            }
            encode_csv(
                &mut buf,
                &header.iter().map(String::as_str).collect::<Vec<_>>(),
            );
        }
        let range = table.as_ref().map(|t| (t.as_ptr() as usize, t.len()));
        let enc = Encoder {
            out: Some(out),
            format,
            header: header.clone(),
            table,
            buf,
            scratch: String::new(),
        };
        RowWriter {
            path: path.to_path_buf(),
            header,
            rows: 0,
            table: range,
            block: take_block(),
            pipe: Pipe::spawn(enc),
        }
    }

    /// Column names.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// Rows written (not counting the header).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The final path of this file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one row; `fields.len()` must equal the header's.
    pub fn write(&mut self, fields: &[&str]) -> Result<()> {
        if fields.len() != self.header.len() {
            return Err(Error::Invalid(format!(
                "{}: a row of {} field(s) for a header of {} ({})",
                self.path.display(),
                fields.len(),
                self.header.len(),
                self.header.join(",")
            )));
        }
        let b = &mut self.block;
        for f in fields {
            let p = f.as_ptr() as usize;
            match self.table {
                // A cell of the table: its offset (the address lies inside the text).
                Some((base, len)) if p >= base && p + f.len() <= base + len => {
                    b.fields.push((((p - base) as u32) | TABLE, f.len() as u32));
                }
                _ if f.len() >= TABLE as usize => {
                    return Err(Error::Invalid(format!(
                        "{}: a field of {} bytes is too large to write",
                        self.path.display(),
                        f.len()
                    )));
                }
                _ => {
                    let off = b.arena.len();
                    b.arena.extend_from_slice(f.as_bytes());
                    b.fields.push((off as u32, f.len() as u32));
                }
            }
        }
        b.row_ends.push(b.fields.len() as u32);
        self.rows += 1;
        if b.row_ends.len() >= BLOCK_ROWS || b.arena.len() >= BLOCK_BYTES {
            self.send()?;
        }
        Ok(())
    }

    /// Hands the current block to the writer thread.
    fn send(&mut self) -> Result<()> {
        let full = std::mem::take(&mut self.block);
        match self.pipe.send(full) {
            Ok(next) => {
                self.block = next;
                Ok(())
            }
            Err(()) => {
                let e = self
                    .pipe
                    .finish()
                    .err()
                    .unwrap_or_else(|| std::io::Error::other("the writer thread stopped"));
                Err(Error::io(&self.path, e))
            }
        }
    }

    /// Writes what is left, flushes and closes the file (call before [`Staging::commit`]).
    pub fn finish(self) -> Result<u64> {
        self.close()?.wait()
    }

    /// Hands the last rows to the writer thread and lets it finish on its own: the caller
    /// goes on (with the next part, say) and calls [`Closing::wait`] before committing.
    pub fn close(mut self) -> Result<Closing> {
        if !self.block.row_ends.is_empty() {
            self.send()?;
        }
        // No more blocks: the thread drains its queue, flushes and ends.
        self.pipe.tx = None;
        give_block(std::mem::take(&mut self.block));
        Ok(Closing {
            path: std::mem::take(&mut self.path),
            rows: self.rows,
            pipe: self.pipe,
        })
    }
}

/// A file whose last rows are being written by its thread ([`RowWriter::close`]).
pub struct Closing {
    path: PathBuf,
    rows: u64,
    pipe: Pipe,
}

impl Closing {
    /// Waits until the file is written and flushed; returns its row count.
    pub fn wait(mut self) -> Result<u64> {
        self.pipe.finish().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.rows)
    }
}

/// Appends one CSV field as Python's csv QUOTE_MINIMAL writes it: quoted when it holds the
/// separator, a quote or a line break (quotes doubled); a lone empty field (`only`: the row
/// has one field) is quoted so the row is not blank. The common case, nothing to quote, is
/// one branch-free scan (vectorised by the compiler) and one copy.
#[inline]
fn push_csv_field(b: &mut Vec<u8>, f: &[u8], only: bool) {
    let special = needs_quoting(f);
    if !(special || only && f.is_empty()) {
        b.extend_from_slice(f);
        return;
    }
    b.push(b'"');
    let mut rest = f;
    while let Some(q) = memchr::memchr(b'"', rest) {
        b.extend_from_slice(&rest[..=q]);
        b.push(b'"');
        rest = &rest[q + 1..];
    }
    b.extend_from_slice(rest);
    b.push(b'"');
}

/// Whether `f` holds `,`, `"`, `\n` or `\r`. No early exit, so the loop vectorises: fields
/// are short (tens of bytes), where a per-call `memchr` dispatch costs more than the scan.
#[inline]
fn needs_quoting(f: &[u8]) -> bool {
    let mut rest = f;
    #[cfg(target_arch = "x86_64")]
    {
        // SSE2 (baseline on x86_64): 16 bytes per step, four compares and one movemask.
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is always present on x86_64; loads are unaligned and in bounds.
        unsafe {
            let (comma, quote, lf, cr) = (
                _mm_set1_epi8(b',' as i8),
                _mm_set1_epi8(b'"' as i8),
                _mm_set1_epi8(b'\n' as i8),
                _mm_set1_epi8(b'\r' as i8),
            );
            let hit = |p: *const u8| {
                let v = _mm_loadu_si128(p as *const __m128i);
                let m = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, comma), _mm_cmpeq_epi8(v, quote)),
                    _mm_or_si128(_mm_cmpeq_epi8(v, lf), _mm_cmpeq_epi8(v, cr)),
                );
                _mm_movemask_epi8(m) != 0
            };
            if f.len() >= 16 {
                while rest.len() >= 16 {
                    if hit(rest.as_ptr()) {
                        return true;
                    }
                    rest = &rest[16..];
                }
                // The tail: the last 16 bytes of the field (overlapping what was checked).
                return !rest.is_empty() && hit(f.as_ptr().add(f.len() - 16));
            }
        }
    }
    rest.iter()
        .any(|&c| matches!(c, b',' | b'"' | b'\n' | b'\r'))
}

/// Appends `v` as a JSON string literal.
fn push_json_string(s: &mut String, v: &str) {
    s.push('"');
    if !v.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        s.push_str(v);
        s.push('"');
        return;
    }
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
}

/// Writes `bytes` to `path` through the staging (for small files such as the manifest).
pub fn write_small(staging: &mut Staging, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut w = staging.create(path)?;
    w.write_all(bytes).map_err(|e| Error::io(path, e))?;
    w.flush().map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_matches_python_minimal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        let mut st = Staging::default();
        let f = st.create(&p).unwrap();
        let mut w = RowWriter::new(f, &p, Format::Csv, vec!["a".into(), "b".into()]).unwrap();
        w.write(&["plain", "with, comma"]).unwrap();
        w.write(&["say \"hi\"", "two\nlines"]).unwrap();
        w.write(&["", "x"]).unwrap();
        assert!(w.write(&["only one"]).is_err());
        assert_eq!(w.finish().unwrap(), 3);
        assert!(!p.exists(), "visible before commit");
        st.commit().unwrap();
        let got = std::fs::read(&p).unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "\u{feff}a,b\nplain,\"with, comma\"\n\"say \"\"hi\"\"\",\"two\nlines\"\n,x\n"
        );
    }

    /// Many blocks, cells of the table mixed with other text, fields that need quoting:
    /// the file equals a row-by-row encoding done here by hand.
    #[test]
    fn table_cells_and_other_text_across_blocks() {
        let rows: Vec<Vec<String>> = (0..3 * BLOCK_ROWS + 17)
            .map(|i| {
                vec![
                    format!("셀 {i}"),
                    if i % 7 == 0 {
                        format!("a,\"b\" {i}")
                    } else {
                        format!("x{i}")
                    },
                ]
            })
            .collect();
        let t = crate::Table::from_rows(&["a", "b"], &rows);
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::Csv, Format::Jsonl] {
            let p = dir.path().join(format!("t.{}", format.extension()));
            let mut st = Staging::default();
            let header = vec!["a".to_string(), "b".to_string(), "c".to_string()];
            let mut w =
                RowWriter::with_table(st.create(&p).unwrap(), &p, format, header, &t).unwrap();
            let mut want = String::from(if format == Format::Csv {
                "\u{feff}a,b,c\n"
            } else {
                ""
            });
            for r in 0..t.n_rows() {
                // Long enough that the file passes DIRECT_BYTES (its writer thread starts).
                let own = format!("own\n{r} {}", "x".repeat(160));
                let f = [t.cell(r, 0), t.cell((r * 31) % t.n_rows(), 1), own.as_str()];
                w.write(&f).unwrap();
                match format {
                    Format::Csv => {
                        let q = |s: &str| {
                            if s.contains([',', '"', '\n', '\r']) {
                                format!("\"{}\"", s.replace('"', "\"\""))
                            } else {
                                s.to_string()
                            }
                        };
                        want += &format!("{},{},{}\n", q(f[0]), q(f[1]), q(f[2]));
                    }
                    Format::Jsonl => {
                        let v = serde_json::json!({"a": f[0], "b": f[1], "c": f[2]});
                        want += &format!("{v}\n");
                    }
                }
            }
            assert_eq!(w.finish().unwrap(), t.n_rows() as u64);
            st.commit().unwrap();
            let got = std::fs::read_to_string(&p).unwrap();
            assert!(
                got.len() > DIRECT_BYTES,
                "the test must cover the writer thread"
            );
            assert!(got == want, "{format:?} output differs");
        }
    }

    #[test]
    fn jsonl_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        let mut st = Staging::default();
        let f = st.create(&p).unwrap();
        let mut w = RowWriter::new(f, &p, Format::Jsonl, vec!["text".into()]).unwrap();
        w.write(&["a \"q\" \\ \n\u{1}한"]).unwrap();
        w.finish().unwrap();
        st.commit().unwrap();
        let line = std::fs::read_to_string(&p).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["text"], "a \"q\" \\ \n\u{1}한");
    }

    #[test]
    fn dropping_without_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new/sub");
        {
            let mut st = Staging::default();
            let mut f = st.create(&out.join("a.csv")).unwrap();
            f.write_all(b"half").unwrap();
            f.flush().unwrap();
            assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
        }
        assert!(
            !dir.path().join("new").exists(),
            "created folders not removed"
        );
        let mut st = Staging::default();
        st.create(&dir.path().join("a.csv")).unwrap();
        assert!(st.create(&dir.path().join("a.csv")).is_err());
    }
}
