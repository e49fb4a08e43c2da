//! The in-memory table: a header row and every cell as trimmed text, stored in one string
//! buffer with offsets (one allocation for the whole table, so a million rows stay cheap).

/// A table of text cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    buf: String,
    /// Row-major `(start, end)` byte offsets into `buf`.
    spans: Vec<(u32, u32)>,
}

impl Table {
    /// An empty table with these column names.
    pub fn new(headers: Vec<String>) -> Self {
        Table {
            headers,
            buf: String::new(),
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
        for c in cells {
            let c = c.trim();
            let start = self.buf.len() as u32;
            self.buf.push_str(c);
            self.spans.push((start, self.buf.len() as u32));
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
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Table::from_csv_bytes(bytes, encoding, path)
    }

    /// Like [`Table::read_csv`] on bytes already in memory; `path` only names the source in
    /// errors.
    pub fn from_csv_bytes(bytes: Vec<u8>, encoding: &str, path: &Path) -> Result<Table> {
        let text = decode(bytes, encoding, path)?;
        parse_csv(&text, path)
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

    /// Appends one cell of the row being built (trimmed here); the caller keeps rows whole.
    fn push_cell(&mut self, cell: &str) -> std::result::Result<(), String> {
        let c = cell.trim();
        let start = self.buf.len();
        self.buf.push_str(c);
        let end = self.buf.len();
        if end > u32::MAX as usize {
            return Err("the table holds more than 4 GiB of text; split the input file".into());
        }
        self.spans.push((start as u32, end as u32));
        Ok(())
    }
}

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
fn decode(bytes: Vec<u8>, label: &str, path: &Path) -> Result<String> {
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
        let mut bytes = bytes;
        bytes.drain(..bom);
        // SIMD validation first (several times faster than std's on non-ASCII text); std's
        // check runs only to locate the error.
        if simdutf8::basic::from_utf8(&bytes).is_ok() {
            // SAFETY: validated as UTF-8 just above.
            return Ok(unsafe { String::from_utf8_unchecked(bytes) });
        }
        return String::from_utf8(bytes).map_err(|e| {
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
        encoding_rs::DecoderResult::InputEmpty => Ok(out),
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
fn parse_csv(text: &str, path: &Path) -> Result<Table> {
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0usize;
    let mut line: u64 = 1;
    let mut scratch = String::new();
    let mut fields: Vec<(usize, usize, bool)> = Vec::new(); // (start, end, quoted-with-escapes)
    let mut table = Table::default();
    let mut width = 0usize;
    let mut header_seen = false;
    let data_err = |line: u64, msg: String| Error::data(path, Some(line), msg);

    while i < n {
        // Skip fully empty lines.
        if b[i] == b'\n' || b[i] == b'\r' {
            if b[i] == b'\r' && i + 1 < n && b[i + 1] == b'\n' {
                i += 1;
            }
            i += 1;
            line += 1;
            continue;
        }
        let record_line = line;
        fields.clear();
        scratch.clear();
        // One record.
        loop {
            if i < n && b[i] == b'"' {
                // Quoted field: copy into scratch, undoubling quotes.
                let open_line = line;
                i += 1;
                let s0 = scratch.len();
                loop {
                    let Some(off) = memchr::memchr2(b'"', b'\n', &b[i..]) else {
                        return Err(data_err(
                            open_line,
                            "unclosed quote: a field opened with \" never ends; close it or double the quotes inside (\"\")".into(),
                        ));
                    };
                    scratch.push_str(&text[i..i + off]);
                    i += off;
                    if b[i] == b'\n' {
                        scratch.push('\n');
                        line += 1;
                        i += 1;
                        continue;
                    }
                    // b[i] == '"'
                    if i + 1 < n && b[i + 1] == b'"' {
                        scratch.push('"');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                // Allow spaces/tabs after the closing quote, then a separator.
                while i < n && (b[i] == b' ' || b[i] == b'\t') {
                    i += 1;
                }
                if i < n && !matches!(b[i], b',' | b'\n' | b'\r') {
                    return Err(data_err(
                        line,
                        format!(
                            "broken quoting: text after a closing quote in field {} (a quote inside a quoted field must be doubled: \"\")",
                            fields.len() + 1
                        ),
                    ));
                }
                fields.push((s0, scratch.len(), true));
            } else {
                let start = i;
                i = memchr::memchr3(b',', b'\n', b'\r', &b[i..]).map_or(n, |off| i + off);
                fields.push((start, i, false));
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
            break;
        }
        let cell = |f: &(usize, usize, bool)| -> &str {
            if f.2 {
                &scratch[f.0..f.1]
            } else {
                &text[f.0..f.1]
            }
        };
        if !header_seen {
            header_seen = true;
            width = fields.len();
            let mut headers: Vec<String> = Vec::with_capacity(width);
            for f in &fields {
                let base = cell(f).trim().to_string();
                // Duplicate names get pandas' suffixes: `x`, `x.1`, `x.2`.
                let mut name = base.clone();
                let mut k = 1;
                while headers.contains(&name) {
                    name = format!("{base}.{k}");
                    k += 1;
                }
                headers.push(name);
            }
            table.headers = headers;
            continue;
        }
        if fields.len() != width {
            return Err(data_err(
                record_line,
                format!(
                    "ragged row: {} field(s) where the header has {width}; quote cells that contain commas",
                    fields.len()
                ),
            ));
        }
        for f in &fields {
            table
                .push_cell(cell(f))
                .map_err(|m| data_err(record_line, m))?;
        }
    }
    if !header_seen {
        return Err(Error::data(
            path,
            None,
            "empty file: expected a header row and data rows",
        ));
    }
    if table.spans.is_empty() {
        return Err(Error::data(
            path,
            Some(1),
            "the file has a header row but no data rows",
        ));
    }
    Ok(table)
}

#[cfg(test)]
mod ingest_tests {
    use super::*;

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
