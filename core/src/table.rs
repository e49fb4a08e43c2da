//! The in-memory table: a header row and every cell as trimmed text, stored in one string
//! buffer with offsets (one allocation for the whole table, so a million rows stay cheap).

/// A table of text cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    /// Every cell's text; shared (never copied) with the threads that write output files.
    buf: std::sync::Arc<String>,
    /// Row-major `(start, end)` byte offsets into `buf`.
    spans: Vec<(u32, u32)>,
}

impl Table {
    /// An empty table with these column names.
    pub fn new(headers: Vec<String>) -> Self {
        Table {
            headers,
            buf: Default::default(),
            spans: Vec::new(),
        }
    }

    /// Builds a table from rows of cells (trimmed here); rows must have the header's width.
    pub fn from_rows<S: AsRef<str>>(headers: &[&str], rows: &[Vec<S>]) -> Self {
        let mut t = Table::new(headers.iter().map(|h| h.to_string()).collect());
        for r in rows {
            assert_eq!(
                r.len(),
                headers.len(),
                "row width differs from header width"
            );
            t.push_row(r.iter().map(|c| c.as_ref()));
        }
        t
    }

    /// Appends one row; each cell is trimmed once here.
    pub fn push_row<'c>(&mut self, cells: impl IntoIterator<Item = &'c str>) {
        let buf = std::sync::Arc::make_mut(&mut self.buf);
        for c in cells {
            let c = c.trim();
            let start = buf.len() as u32;
            buf.push_str(c);
            self.spans.push((start, buf.len() as u32));
        }
    }

    /// Column names, in file order.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// Number of data rows.
    pub fn n_rows(&self) -> usize {
        if self.headers.is_empty() {
            0
        } else {
            self.spans.len() / self.headers.len()
        }
    }

    /// The trimmed cell at (`row`, `col`).
    pub fn cell(&self, row: usize, col: usize) -> &str {
        let (s, e) = self.spans[row * self.headers.len() + col];
        &self.buf[s as usize..e as usize]
    }

    /// The trimmed cell at `row` in column `name`, if the column exists.
    pub fn cell_by_name(&self, row: usize, name: &str) -> Option<&str> {
        self.column(name).map(|c| self.cell(row, c))
    }

    /// Bytes held by the cell buffer (for memory accounting in benchmarks).
    pub fn text_bytes(&self) -> usize {
        self.buf.len()
    }

    /// A table of the given rows (in that order) with the same columns, its cells copied
    /// into one new buffer.
    pub fn select_rows(&self, rows: &[usize]) -> Table {
        let w = self.headers.len();
        let bytes: usize = rows
            .iter()
            .flat_map(|&r| &self.spans[r * w..(r + 1) * w])
            .map(|&(s, e)| (e - s) as usize)
            .sum();
        let mut buf = String::with_capacity(bytes);
        let mut spans = Vec::with_capacity(rows.len() * w);
        let row_bytes = |r: usize| {
            let (s, _) = self.spans[r * w];
            let (_, e) = self.spans[r * w + w - 1];
            (s as usize, e.saturating_sub(s) as usize)
        };
        for (j, &r) in rows.iter().enumerate() {
            // The rows are scattered: prefetch the spans 16 rows ahead and the text 8 ahead
            // (a row's cells are adjacent in the buffer).
            if w > 0 {
                if let Some(&ahead) = rows.get(j + 16) {
                    let sp = &self.spans[ahead * w..(ahead + 1) * w];
                    crate::mem::prefetch(sp.as_ptr() as *const u8, std::mem::size_of_val(sp));
                }
                if let Some(&ahead) = rows.get(j + 8) {
                    let (s, len) = row_bytes(ahead);
                    crate::mem::prefetch(self.buf.as_ptr().wrapping_add(s), len);
                }
            }
            for &(s, e) in &self.spans[r * w..(r + 1) * w] {
                let start = buf.len() as u32;
                buf.push_str(&self.buf[s as usize..e as usize]);
                spans.push((start, buf.len() as u32));
            }
        }
        Table {
            headers: self.headers.clone(),
            buf: std::sync::Arc::new(buf),
            spans,
        }
    }

    /// The buffer every cell borrows from (cells are slices of it). Output writers keep a
    /// handle so rows made of cells travel to their thread as offsets, not copies.
    pub fn shared_text(&self) -> std::sync::Arc<String> {
        self.buf.clone()
    }
}

// ---------------------------------------------------------------------------------------
// Ingest: CSV with a header row, any encoding encoding_rs knows.
// ---------------------------------------------------------------------------------------

use std::path::Path;

use crate::error::{Error, Result};

impl Table {
    /// Reads the CSV file at `path`, decoded with the encoding `encoding` (a WHATWG label:
    /// `utf-8`, `cp949`, `euc-kr`, `shift_jis`, ...). A byte-order mark, when present,
    /// wins over the label (and is dropped).
    ///
    /// The first record is the header; every cell is text, trimmed once. Fully empty lines
    /// are skipped (like pandas). Errors carry the 1-based line: ragged rows, an unclosed
    /// quote, text after a closing quote, bytes invalid in the encoding (a UTF-8 failure
    /// suggests `--encoding cp949`), an empty file, or a header without data rows.
    pub fn read_csv(path: impl AsRef<Path>, encoding: &str) -> Result<Table> {
        let path = path.as_ref();
        let bytes = read_file(path).map_err(|e| Error::io(path, e))?;
        Table::from_csv_bytes(bytes, encoding, path)
    }

    /// Like [`Table::read_csv`] on bytes already in memory; `path` only names the source in
    /// errors.
    pub fn from_csv_bytes(bytes: Vec<u8>, encoding: &str, path: &Path) -> Result<Table> {
        let (text, start) = decode(bytes, encoding, path)?;
        parse_csv(text, start, path)
    }

    /// Checks that every column in `names` exists; otherwise one error listing all the
    /// missing ones together with the available ones. `path` names the source.
    pub fn require_columns<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
        path: &Path,
    ) -> Result<()> {
        let mut missing: Vec<&str> = Vec::new();
        for n in names {
            if self.column(n).is_none() && !missing.contains(&n) {
                missing.push(n);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::MissingColumns {
            path: path.to_path_buf(),
            missing: missing
                .iter()
                .map(|m| format!("'{m}'"))
                .collect::<Vec<_>>()
                .join(", "),
            available: self
                .headers
                .iter()
                .map(|h| format!("'{h}'"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// `s.trim()` (Unicode White_Space at both ends), answering from the first and last byte
/// when they cannot belong to a white-space character (almost every cell), and asking
/// `trim` otherwise.
#[inline]
fn trim_cell(s: &str) -> &str {
    let b = s.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return s;
    };
    // Leading: ASCII white space, or the lead byte of U+0085/U+00A0 (C2), U+1680 (E1),
    // U+2000-U+205F (E2), U+3000 (E3).
    let lead = matches!(first, 9..=13 | 32 | 0xC2 | 0xE1 | 0xE2 | 0xE3);
    // Trailing: ASCII white space, or the last byte of a multi-byte white-space character:
    // 85, A0 (U+0085, U+00A0), 80-8A (U+1680, U+2000-U+200A, U+3000), A8, A9, AF (U+2028,
    // U+2029, U+202F), 9F (U+205F).
    let tail = matches!(last, 9..=13 | 32 | 0x80..=0x8A | 0x9F | 0xA0 | 0xA8 | 0xA9 | 0xAF);
    if lead || tail {
        s.trim()
    } else {
        s
    }
}

/// The index of the first `,`, `\n` or `\r` at or after `i` in `b` (or `b.len()`). Fields
/// are short, so an inline 16-byte scan beats a call per field.
#[inline]
fn find_separator(b: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64; every load reads 16 bytes inside `b`
        // (`i + 16 <= b.len()`), unaligned.
        unsafe {
            let comma = _mm_set1_epi8(b',' as i8);
            let lf = _mm_set1_epi8(b'\n' as i8);
            let cr = _mm_set1_epi8(b'\r' as i8);
            while i + 16 <= b.len() {
                let v = _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i);
                let m = _mm_or_si128(
                    _mm_cmpeq_epi8(v, comma),
                    _mm_or_si128(_mm_cmpeq_epi8(v, lf), _mm_cmpeq_epi8(v, cr)),
                );
                let mask = _mm_movemask_epi8(m) as u32;
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
    }
    while i < b.len() && !matches!(b[i], b',' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Reads a whole file into a vector sized from its metadata and backed by huge pages
/// where the system offers them ([`crate::mem::advise_huge`]). Large files are read as two
/// halves on two threads (the kernel's copy from the page cache is most of the cost).
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
    #[cfg(unix)]
    if len > PARALLEL_READ_BYTES {
        use std::os::unix::fs::FileExt;
        // Zeroed by the kernel, not by us: the pages are first touched by the reads.
        let mut bytes = vec![0u8; len];
        crate::mem::advise_huge_slice(&mut bytes);
        let (a, b) = bytes.split_at_mut(len / 2);
        let fr = &f;
        let (ra, rb) = std::thread::scope(|sc| {
            let second = sc.spawn(move || fr.read_exact_at(b, (len / 2) as u64));
            let first = fr.read_exact_at(a, 0);
            (first, second.join())
        });
        ra?;
        rb.unwrap_or_else(|_| Err(std::io::Error::other("a reader thread panicked")))?;
        // The file may have grown since the metadata was read: take the rest too.
        f.seek(std::io::SeekFrom::Start(len as u64))?;
        f.read_to_end(&mut bytes)?;
        return Ok(bytes);
    }
    let mut bytes = Vec::with_capacity(len + 1);
    crate::mem::advise_huge(&mut bytes);
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Files larger than this are read on two threads.
const PARALLEL_READ_BYTES: usize = 4 << 20;

/// The encoding for a WHATWG label, or for a Python codec name that users pass out of habit
/// (`cp949`, `ms949`, `uhc`, `cp932`, `cp936`, `cp1252`, `utf-8-sig`, ...).
pub fn encoding_for(label: &str) -> Option<&'static encoding_rs::Encoding> {
    let l = label.trim().to_ascii_lowercase().replace('_', "-");
    let alias = match l.as_str() {
        "cp949" | "ms949" | "uhc" | "euckr" => "euc-kr",
        "cp932" | "ms932" | "sjis" | "shift-jis" => "shift_jis",
        "cp936" | "ms936" => "gbk",
        "utf-8-sig" | "utf8-sig" => "utf-8",
        other => match other.strip_prefix("cp") {
            Some(n) if n.len() == 4 && n.starts_with("125") => {
                return encoding_rs::Encoding::for_label(format!("windows-{n}").as_bytes())
            }
            Some("874") => "windows-874",
            Some("866") => "ibm866",
            _ => other,
        },
    };
    encoding_rs::Encoding::for_label(alias.as_bytes())
        .or_else(|| encoding_rs::Encoding::for_label(label.trim().as_bytes()))
}

/// Decodes `bytes` with the encoding labelled `label`, without replacement characters.
///
/// Returns the text and where the data starts in it (after a UTF-8 byte-order mark, which
/// stays in place rather than shifting the whole buffer).
fn decode(bytes: Vec<u8>, label: &str, path: &Path) -> Result<(String, usize)> {
    let encoding = encoding_for(label).ok_or_else(|| {
        Error::Invalid(format!(
            "unknown --encoding '{label}'; use a WHATWG label such as utf-8, cp949, euc-kr, shift_jis, gbk, windows-1252, utf-16le"
        ))
    })?;
    let (encoding, bom) = match encoding_rs::Encoding::for_bom(&bytes) {
        Some((e, n)) => (e, n),
        None => (encoding, 0),
    };
    if encoding == encoding_rs::UTF_8 {
        // SIMD validation first (several times faster than std's on non-ASCII text); std's
        // check runs only to locate the error. The UTF-8 BOM is itself valid UTF-8.
        if simdutf8::basic::from_utf8(&bytes).is_ok() {
            // SAFETY: validated as UTF-8 just above.
            return Ok((unsafe { String::from_utf8_unchecked(bytes) }, bom));
        }
        let mut bytes = bytes;
        bytes.drain(..bom);
        return String::from_utf8(bytes).map(|t| (t, 0)).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() as u64;
            Error::data(
                path,
                Some(line),
                format!(
                    "bytes invalid in UTF-8 (byte offset {}); if the file was saved by Excel or another Korean tool, pass --encoding cp949 (or the file's encoding)",
                    at + bom
                ),
            )
        });
    }
    let src = &bytes[bom..];
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let cap = decoder
        .max_utf8_buffer_length_without_replacement(src.len())
        .unwrap_or(src.len() * 3 + 16);
    let mut out = String::with_capacity(cap);
    let (result, read) = decoder.decode_to_string_without_replacement(src, &mut out, true);
    match result {
        encoding_rs::DecoderResult::InputEmpty => Ok((out, 0)),
        encoding_rs::DecoderResult::Malformed(..) => {
            let line = 1 + out.bytes().filter(|&b| b == b'\n').count() as u64;
            Err(Error::data(
                path,
                Some(line),
                format!(
                    "bytes invalid in {} near byte offset {}; check --encoding (utf-8, cp949, euc-kr, ...)",
                    encoding.name(),
                    read + bom
                ),
            ))
        }
        encoding_rs::DecoderResult::OutputFull => Err(Error::data(
            path,
            None,
            "internal: decode buffer too small".to_string(),
        )),
    }
}

/// RFC 4180 CSV with a header row: `,` separates, `"` quotes (doubled inside quotes),
/// records end at `\n`, `\r\n` or `\r`. A quote inside an unquoted field is literal (as in
/// pandas); a quoted field must end with a quote followed by `,`, a line end or the end.
///
/// The table keeps `text` as its cell buffer: a cell is a span of the input (trimmed by
/// moving its ends), so no cell is copied. Only quoted cells with doubled quotes, whose
/// text differs from the input, are copied to the end of the buffer.
///
/// Large inputs are parsed in two halves on two threads: the second half starts after the
/// first line break past the middle, on the guess that it is not inside a quoted field. The
/// guess holds when the first half's last record ends exactly there; otherwise the second
/// half is parsed again from where the first really ended. Either way the result (and any
/// error, with its line) is the one a single pass gives.
fn parse_csv(text: String, start: usize, path: &Path) -> Result<Table> {
    parse_csv_split(text, start, path, PARALLEL_PARSE_BYTES)
}

/// [`parse_csv`], parsing in two chunks when the data records hold more than `parallel`
/// bytes (a parameter so tests can split small inputs).
fn parse_csv_split(text: String, start: usize, path: &Path, parallel: usize) -> Result<Table> {
    const TOO_BIG: &str = "the table holds more than 4 GiB of text; split the input file";
    if text.len() > u32::MAX as usize {
        return Err(Error::data(path, None, TOO_BIG.to_string()));
    }
    let b = text.as_bytes();
    let n = b.len();
    let data_err = |line: u64, msg: String| Error::data(path, Some(line), msg);

    // The header: the first non-empty record.
    let mut rec = Record::default();
    let (mut i, mut line) = skip_empty_lines(b, start, 1);
    if i >= n {
        return Err(Error::data(
            path,
            None,
            "empty file: expected a header row and data rows",
        ));
    }
    (i, line) = rec.parse(&text, i, line).map_err(|(l, m)| data_err(l, m))?;
    let width = rec.fields.len();
    let mut headers: Vec<String> = Vec::with_capacity(width);
    for f in &rec.fields {
        let base = rec.cell(&text, f).trim().to_string();
        // Duplicate names get pandas' suffixes: `x`, `x.1`, `x.2`.
        let mut name = base.clone();
        let mut k = 1;
        while headers.contains(&name) {
            name = format!("{base}.{k}");
            k += 1;
        }
        headers.push(name);
    }

    // The data records, in one or two chunks.
    let split = (n - i > parallel)
        .then(|| memchr::memchr(b'\n', &b[i + (n - i) / 2..]).map(|o| i + (n - i) / 2 + o + 1))
        .flatten()
        .filter(|&s| s < n);
    let chunks: Vec<Chunk> = match split {
        None => vec![Chunk::parse(&text, i, n, width).map_err(|(l, m)| data_err(line + l, m))?],
        Some(mid) => {
            let (first, second) = std::thread::scope(|sc| {
                let second = sc.spawn(|| Chunk::parse(&text, mid, n, width));
                let first = Chunk::parse(&text, i, mid, width);
                (first, second.join())
            });
            let first = first.map_err(|(l, m)| data_err(line + l, m))?;
            let line2 = line + first.lines;
            let second = match second {
                Ok(Ok(c)) if first.end == mid => c,
                Ok(Err((l, m))) if first.end == mid => return Err(data_err(line2 + l, m)),
                // The guess was wrong (a quoted field crossed the middle), or the thread
                // died: parse the rest where the first half really ended.
                _ => Chunk::parse(&text, first.end, n, width)
                    .map_err(|(l, m)| data_err(line2 + l, m))?,
            };
            vec![first, second]
        }
    };

    // Join: spans are offsets into `text`, or into the chunk's `extra` (moved to the end).
    // The first chunk's spans become the table's (no copy of them).
    let mut text = text;
    let mut spans: Vec<(u32, u32)> = Vec::new();
    for mut c in chunks {
        let base = text.len();
        let first = spans.len();
        if first == 0 {
            spans = std::mem::take(&mut c.spans);
        } else {
            spans.extend_from_slice(&c.spans);
        }
        if !c.extra.is_empty() {
            if base + c.extra.len() > u32::MAX as usize {
                return Err(Error::data(path, None, TOO_BIG.to_string()));
            }
            text.push_str(&c.extra);
            for &k in &c.in_extra {
                spans[first + k].0 += base as u32;
                spans[first + k].1 += base as u32;
            }
        }
    }
    if spans.is_empty() {
        return Err(Error::data(
            path,
            Some(1),
            "the file has a header row but no data rows",
        ));
    }
    Ok(Table {
        headers,
        buf: std::sync::Arc::new(text),
        spans,
    })
}

/// Inputs larger than this are parsed on two threads.
const PARALLEL_PARSE_BYTES: usize = 4 << 20;

/// Skips fully empty lines from `i`; returns the new position and line.
fn skip_empty_lines(b: &[u8], mut i: usize, mut line: u64) -> (usize, u64) {
    while i < b.len() && (b[i] == b'\n' || b[i] == b'\r') {
        if b[i] == b'\r' && i + 1 < b.len() && b[i + 1] == b'\n' {
            i += 1;
        }
        i += 1;
        line += 1;
    }
    (i, line)
}

/// An error inside a chunk: the line relative to the chunk's first line, and the message.
type ChunkError = (u64, String);

/// The fields of one record: `(start, end, escaped)`, offsets into the input when not
/// escaped, else into `scratch` (a quoted field with doubled quotes, undoubled).
#[derive(Default)]
struct Record {
    fields: Vec<(usize, usize, bool)>,
    scratch: String,
}

impl Record {
    fn cell<'t>(&'t self, text: &'t str, f: &(usize, usize, bool)) -> &'t str {
        if f.2 {
            &self.scratch[f.0..f.1]
        } else {
            &text[f.0..f.1]
        }
    }

    /// Parses the record starting at `i` (not an empty line) on line `line`; returns the
    /// position after its line end and the next line number.
    fn parse(
        &mut self,
        text: &str,
        mut i: usize,
        mut line: u64,
    ) -> std::result::Result<(usize, u64), ChunkError> {
        let b = text.as_bytes();
        let n = b.len();
        self.fields.clear();
        self.scratch.clear();
        loop {
            if i < n && b[i] == b'"' {
                // Quoted field: copy into scratch, undoubling quotes.
                let open_line = line;
                i += 1;
                let s0 = self.scratch.len();
                let content = i;
                let mut escaped = false;
                loop {
                    let Some(off) = memchr::memchr2(b'"', b'\n', &b[i..]) else {
                        return Err((
                            open_line,
                            "unclosed quote: a field opened with \" never ends; close it or double the quotes inside (\"\")".into(),
                        ));
                    };
                    self.scratch.push_str(&text[i..i + off]);
                    i += off;
                    if b[i] == b'\n' {
                        self.scratch.push('\n');
                        line += 1;
                        i += 1;
                        continue;
                    }
                    // b[i] == '"'
                    if i + 1 < n && b[i + 1] == b'"' {
                        self.scratch.push('"');
                        escaped = true;
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                let close = i - 1;
                // Allow spaces/tabs after the closing quote, then a separator.
                while i < n && (b[i] == b' ' || b[i] == b'\t') {
                    i += 1;
                }
                if i < n && !matches!(b[i], b',' | b'\n' | b'\r') {
                    return Err((
                        line,
                        format!(
                            "broken quoting: text after a closing quote in field {} (a quote inside a quoted field must be doubled: \"\")",
                            self.fields.len() + 1
                        ),
                    ));
                }
                if escaped {
                    self.fields.push((s0, self.scratch.len(), true));
                } else {
                    // The content is the input between the quotes, as it stands.
                    self.fields.push((content, close, false));
                }
            } else {
                let start = i;
                i = find_separator(b, i);
                self.fields.push((start, i, false));
            }
            // Separator or record end.
            if i < n && b[i] == b',' {
                i += 1;
                continue;
            }
            if i < n {
                if b[i] == b'\r' && i + 1 < n && b[i + 1] == b'\n' {
                    i += 1;
                }
                i += 1;
                line += 1;
            }
            return Ok((i, line));
        }
    }
}

/// The data records that start in `[from, until)` of the input (the last may run past
/// `until`), as cell spans.
struct Chunk {
    spans: Vec<(u32, u32)>,
    /// Cells with undoubled quotes, and the indices of their spans (offsets into `extra`).
    extra: String,
    in_extra: Vec<usize>,
    /// Where the last record ended, and the number of lines consumed.
    end: usize,
    lines: u64,
}

impl Chunk {
    fn parse(
        text: &str,
        from: usize,
        until: usize,
        width: usize,
    ) -> std::result::Result<Chunk, ChunkError> {
        let b = text.as_bytes();
        // Room for the chunk's cells, estimated from the line length of its first 64 KiB
        // (one allocation, huge pages where offered; it grows if the guess is short).
        let sample = &b[from..until.min(from + (64 << 10))];
        let lines = memchr::memchr_iter(b'\n', sample).count().max(1);
        let rows = (until - from) / sample.len().div_ceil(lines).max(1);
        let mut spans = Vec::with_capacity((rows + rows / 8 + 16) * width);
        crate::mem::advise_huge(&mut spans);
        let mut c = Chunk {
            spans,
            extra: String::new(),
            in_extra: Vec::new(),
            end: from,
            lines: 0,
        };
        let mut rec = Record::default();
        // Lines relative to the chunk's first line (0).
        let (mut i, mut line) = (from, 0u64);
        loop {
            (i, line) = skip_empty_lines(b, i, line);
            if i >= until || i >= b.len() {
                break;
            }
            let record_line = line;
            (i, line) = rec.parse(text, i, line)?;
            if rec.fields.len() != width {
                return Err((
                    record_line,
                    format!(
                        "ragged row: {} field(s) where the header has {width}; quote cells that contain commas",
                        rec.fields.len()
                    ),
                ));
            }
            for f in &rec.fields {
                let cell = rec.cell(text, f);
                let t = trim_cell(cell);
                if f.2 {
                    let off = c.extra.len();
                    c.extra.push_str(t);
                    c.in_extra.push(c.spans.len());
                    c.spans.push((off as u32, (off + t.len()) as u32));
                } else {
                    let s = f.0 + (t.as_ptr() as usize - cell.as_ptr() as usize);
                    c.spans.push((s as u32, (s + t.len()) as u32));
                }
            }
        }
        c.end = i.min(b.len()).max(from);
        c.lines = line;
        Ok(c)
    }
}

#[cfg(test)]
mod ingest_tests {
    use super::*;

    /// Two-chunk parsing gives the same table, or the same error, as one pass, wherever
    /// the middle falls: inside quoted fields with line breaks, on empty lines, on CRLF.
    #[test]
    fn split_parse_equals_single_pass() {
        let mut seed = 7u64;
        let mut next = move |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let pieces = ["a", " b ", "\"q,\n\"", "\"x\"\"y\"", "한글", "", "\"\n\n\""];
        for case in 0..400 {
            let mut t = String::from("h1,h2,h3\n");
            let rows = 1 + next(30);
            for r in 0..rows {
                let w = if case % 50 == 7 && r == rows / 2 {
                    2
                } else {
                    3
                };
                let cells: Vec<&str> = (0..w).map(|_| pieces[next(7) as usize]).collect();
                t += &cells.join(",");
                t += ["\n", "\r\n", "\n\n"][next(3) as usize];
            }
            if case % 60 == 11 {
                t += "\"open,1,2\n";
            }
            let p = Path::new("t.csv");
            let one = parse_csv_split(t.clone(), 0, p, usize::MAX);
            let two = parse_csv_split(t.clone(), 0, p, 0);
            match (one, two) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.n_rows(), b.n_rows(), "{t:?}");
                    for r in 0..a.n_rows() {
                        for c in 0..3 {
                            assert_eq!(a.cell(r, c), b.cell(r, c), "{t:?}");
                        }
                    }
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{t:?}"),
                (a, b) => panic!(
                    "{t:?}: {:?} vs {:?}",
                    a.map(|t| t.n_rows()),
                    b.map(|t| t.n_rows())
                ),
            }
        }
    }

    #[test]
    fn fast_trim_equals_trim() {
        let ws: Vec<char> = (0u32..0x3001)
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .collect();
        assert_eq!(ws.len(), 25, "Unicode White_Space changed: {ws:?}");
        let cores = [
            "",
            "a",
            "한글",
            "x y",
            "\u{1680}z",
            "é",
            "가\u{3000}나",
            "\u{ac00}",
        ];
        for core in cores {
            for pre in ws.iter().map(|c| c.to_string()).chain([String::new()]) {
                for post in ws.iter().map(|c| c.to_string()).chain([String::new()]) {
                    let s = format!("{pre}{core}{post}");
                    assert_eq!(trim_cell(&s), s.trim(), "{s:?}");
                }
            }
        }
        // Every character alone and between letters.
        for c in (0u32..0x11000).filter_map(char::from_u32) {
            for s in [
                c.to_string(),
                format!("a{c}"),
                format!("{c}a"),
                format!("{c}{c}"),
            ] {
                assert_eq!(trim_cell(&s), s.trim(), "{s:?}");
            }
        }
    }

    #[test]
    fn separator_scan_equals_byte_scan() {
        let text =
            "abc,def\n0123456789abcdef0123456789,\r한국어 텍스트가 길게 이어지는 셀입니다 끝";
        let b = text.as_bytes();
        for i in 0..=b.len() {
            let want = (i..b.len())
                .find(|&j| matches!(b[j], b',' | b'\n' | b'\r'))
                .unwrap_or(b.len());
            assert_eq!(find_separator(b, i), want, "from {i}");
        }
    }

    fn parse(s: &str) -> Result<Table> {
        Table::from_csv_bytes(s.as_bytes().to_vec(), "utf-8", Path::new("t.csv"))
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn reads_quotes_crlf_and_trims() {
        let t = parse("a, b ,c\r\n 1 ,\"x, \"\"y\"\"\",\"multi\nline\"\r\n\n3,,\n").unwrap();
        assert_eq!(t.headers(), &["a", "b", "c"]);
        assert_eq!(t.n_rows(), 2);
        assert_eq!(t.cell(0, 0), "1");
        assert_eq!(t.cell(0, 1), "x, \"y\"");
        assert_eq!(t.cell(0, 2), "multi\nline");
        assert_eq!((t.cell(1, 0), t.cell(1, 1), t.cell(1, 2)), ("3", "", ""));
    }

    #[test]
    fn keeps_numeric_looking_text() {
        let t = parse("code,x\n007,1.50\n").unwrap();
        assert_eq!(t.cell(0, 0), "007");
        assert_eq!(t.cell(0, 1), "1.50");
    }

    #[test]
    fn ragged_rows_name_the_line() {
        let e = err("a,b\n1,2\n3\n");
        assert!(e.contains("line 3") && e.contains("ragged"), "{e}");
        let e = err("a,b\n1,2,3\n");
        assert!(e.contains("line 2") && e.contains("3 field(s)"), "{e}");
    }

    #[test]
    fn broken_quoting_names_the_line() {
        let e = err("a,b\n1,2\n3,\"open\n4,5\n");
        assert!(e.contains("line 3") && e.contains("unclosed quote"), "{e}");
        let e = err("a,b\n\"x\"y,2\n");
        assert!(e.contains("line 2") && e.contains("broken quoting"), "{e}");
    }

    #[test]
    fn empty_and_header_only() {
        assert!(err("").contains("empty file"));
        assert!(err("\n\n").contains("empty file"));
        let e = err("a,b\n");
        assert!(e.contains("no data rows"), "{e}");
    }

    #[test]
    fn bom_and_legacy_encodings() {
        let mut bytes = vec![0xEF, 0xBB, 0xBF];
        bytes.extend_from_slice("설명,분류\n사과,과일\n".as_bytes());
        let t = Table::from_csv_bytes(bytes.clone(), "utf-8", Path::new("t.csv")).unwrap();
        assert_eq!(t.headers(), &["설명", "분류"]);
        // A BOM wins over a wrong label.
        let t = Table::from_csv_bytes(bytes, "cp949", Path::new("t.csv")).unwrap();
        assert_eq!(t.cell(0, 1), "과일");
        let (cp, _, bad) = encoding_rs::EUC_KR.encode("설명,분류\n사과,과일\n");
        assert!(!bad);
        let t = Table::from_csv_bytes(cp.to_vec(), "cp949", Path::new("t.csv")).unwrap();
        assert_eq!((t.headers()[0].as_str(), t.cell(0, 0)), ("설명", "사과"));
        let e = Table::from_csv_bytes(cp.to_vec(), "utf-8", Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1") && e.contains("--encoding cp949"),
            "{e}"
        );
        for (label, name) in [
            ("cp949", "EUC-KR"),
            ("MS949", "EUC-KR"),
            ("euc_kr", "EUC-KR"),
            ("cp1252", "windows-1252"),
            ("cp932", "Shift_JIS"),
            ("utf-8-sig", "UTF-8"),
            ("shift_jis", "Shift_JIS"),
        ] {
            assert_eq!(encoding_for(label).map(|e| e.name()), Some(name), "{label}");
        }
        let e = Table::from_csv_bytes(b"a\n1\n".to_vec(), "klingon", Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown --encoding"), "{e}");
    }

    #[test]
    fn invalid_bytes_in_legacy_encoding_name_the_line() {
        // 0x80 alone is not valid EUC-KR/cp949 lead byte followed by newline.
        let e = Table::from_csv_bytes(b"a,b\n1,2\n\x80\n".to_vec(), "euc-kr", Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("EUC-KR"), "{e}");
    }

    #[test]
    fn missing_columns_listed_together() {
        let t = parse("a,b\n1,2\n").unwrap();
        t.require_columns(["a", "b"], Path::new("t.csv")).unwrap();
        let e = t
            .require_columns(["x", "a", "y"], Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'x', 'y'") && e.contains("available columns: 'a', 'b'"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_headers_get_suffixes() {
        let t = parse("a,a,b\n1,2,3\n").unwrap();
        assert_eq!(t.headers(), &["a", "a.1", "b"]);
    }
}
