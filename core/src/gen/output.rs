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
pub struct RowWriter {
    out: BufWriter<File>,
    path: PathBuf,
    format: Format,
    header: Vec<String>,
    rows: u64,
    /// Bytes of whole rows not yet handed to `out` (flushed every [`FLUSH_AT`] bytes).
    buf: Vec<u8>,
    /// One JSON row being built.
    scratch: String,
}

/// Rows are encoded into [`RowWriter::buf`] and handed to the file in chunks this large:
/// one `write_all` per chunk instead of one per row. At least the capacity of the
/// `BufWriter` ([`Staging::create`]: 1 MiB), so chunks bypass its buffer (no second copy).
const FLUSH_AT: usize = 1 << 20;

impl RowWriter {
    /// Starts a file: the BOM and header for CSV; nothing for JSON Lines.
    pub fn new(
        out: BufWriter<File>,
        path: &Path,
        format: Format,
        header: Vec<String>,
    ) -> Result<Self> {
        Self::start(out, path, format, header, true)
    }

    /// Like [`RowWriter::new`] without the byte-order mark (files meant for programs).
    pub fn without_bom(
        out: BufWriter<File>,
        path: &Path,
        format: Format,
        header: Vec<String>,
    ) -> Result<Self> {
        Self::start(out, path, format, header, false)
    }

    fn start(
        out: BufWriter<File>,
        path: &Path,
        format: Format,
        header: Vec<String>,
        bom: bool,
    ) -> Result<Self> {
        let mut w = RowWriter {
            out,
            path: path.to_path_buf(),
            format,
            header,
            rows: 0,
            buf: Vec::with_capacity(FLUSH_AT + (1 << 16)),
            scratch: String::new(),
        };
        if format == Format::Csv {
            let header = w.header.clone();
            if bom {
                w.buf.extend_from_slice(b"\xEF\xBB\xBF");
            }
            w.write_csv(&header.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        Ok(w)
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
        match self.format {
            Format::Csv => self.write_csv(fields)?,
            Format::Jsonl => self.write_json(fields)?,
        }
        self.rows += 1;
        Ok(())
    }

    fn write_csv(&mut self, fields: &[&str]) -> Result<()> {
        let b = &mut self.buf;
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            push_csv_field(b, f.as_bytes(), fields.len() == 1);
        }
        b.push(b'\n');
        self.maybe_flush()
    }

    /// Hands the buffered rows to the file once there are [`FLUSH_AT`] bytes of them.
    #[inline]
    fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= FLUSH_AT {
            self.out
                .write_all(&self.buf)
                .map_err(|e| Error::io(&self.path, e))?;
            self.buf.clear();
        }
        Ok(())
    }

    fn write_json(&mut self, fields: &[&str]) -> Result<()> {
        let s = &mut self.scratch;
        s.clear();
        s.push('{');
        for (i, (k, v)) in self.header.iter().zip(fields).enumerate() {
            if i > 0 {
                s.push(',');
            }
            push_json_string(s, k);
            s.push(':');
            push_json_string(s, v);
        }
        s.push_str("}\n");
        self.buf.extend_from_slice(s.as_bytes());
        self.maybe_flush()
    }

    /// Flushes and closes the file (call before [`Staging::commit`]).
    pub fn finish(mut self) -> Result<u64> {
        self.out
            .write_all(&self.buf)
            .map_err(|e| Error::io(&self.path, e))?;
        self.buf.clear();
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
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
    if !special && !(only && f.is_empty()) {
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
