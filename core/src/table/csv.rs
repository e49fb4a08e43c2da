//! CSV with a header row (RFC 4180, as pandas reads it), parsed into a [`Table`] whose cell
//! buffer is the decoded input itself.

use std::path::Path;

use super::{header_names, trim_cell, Table};
use crate::error::{Error, Result};

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
pub(super) fn parse_csv(text: String, start: usize, path: &Path) -> Result<Table> {
    parse_csv_split(text, start, path, PARALLEL_PARSE_BYTES)
}

/// [`parse_csv`], parsing in two chunks when the data records hold more than `parallel`
/// bytes (a parameter so tests can split small inputs).
pub(super) fn parse_csv_split(
    text: String,
    start: usize,
    path: &Path,
    parallel: usize,
) -> Result<Table> {
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
    let headers = header_names(rec.fields.iter().map(|f| rec.cell(&text, f)));

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
    // The first chunk's spans and record lines become the table's (no copy of them); the
    // lines, relative to their chunk's first line, are shifted here.
    let mut text = text;
    let mut spans: Vec<(u32, u32)> = Vec::new();
    let mut lines: Vec<u32> = Vec::new();
    let mut first_line = line;
    for mut c in chunks {
        let base = text.len();
        let first = spans.len();
        if first == 0 {
            spans = std::mem::take(&mut c.spans);
        } else {
            spans.extend_from_slice(&c.spans);
        }
        let shift = first_line as u32;
        if first == 0 {
            lines = std::mem::take(&mut c.lines_of_rows);
            lines.iter_mut().for_each(|l| *l += shift);
        } else {
            lines.extend(c.lines_of_rows.iter().map(|&l| l + shift));
        }
        first_line += c.lines;
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
        lines,
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
    /// The line each record starts on, relative to the chunk's first line (0).
    lines_of_rows: Vec<u32>,
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
            lines_of_rows: Vec::with_capacity(rows + rows / 8 + 16),
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
            // Lines never outnumber the bytes, which fit in u32 (checked by the caller).
            c.lines_of_rows.push(record_line as u32);
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
mod tests {
    use super::super::{encoding_for, InputFormat, ReadOptions};
    use super::*;

    /// [`Table::from_bytes`] on CSV in the encoding labelled `label`.
    fn from_bytes(bytes: Vec<u8>, label: &str) -> Result<Table> {
        let opts = ReadOptions {
            format: Some(InputFormat::Csv),
            encoding: Some(label),
        };
        Table::from_bytes(bytes, &opts, Path::new("t.csv"))
    }

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
                    assert_eq!(a.lines, b.lines, "{t:?}");
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
        from_bytes(s.as_bytes().to_vec(), "utf-8")
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
        let t = from_bytes(bytes.clone(), "utf-8").unwrap();
        assert_eq!(t.headers(), &["설명", "분류"]);
        // A BOM wins over a wrong label.
        let t = from_bytes(bytes, "cp949").unwrap();
        assert_eq!(t.cell(0, 1), "과일");
        let (cp, _, bad) = encoding_rs::EUC_KR.encode("설명,분류\n사과,과일\n");
        assert!(!bad);
        let t = from_bytes(cp.to_vec(), "cp949").unwrap();
        assert_eq!((t.headers()[0].as_str(), t.cell(0, 0)), ("설명", "사과"));
        let e = from_bytes(cp.to_vec(), "utf-8").unwrap_err().to_string();
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
        let e = from_bytes(b"a\n1\n".to_vec(), "klingon")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown --encoding"), "{e}");
    }

    #[test]
    fn invalid_bytes_in_legacy_encoding_name_the_line() {
        // 0x80 alone is not valid EUC-KR/cp949 lead byte followed by newline.
        let e = from_bytes(b"a,b\n1,2\n\x80\n".to_vec(), "euc-kr")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("EUC-KR"), "{e}");
    }

    #[test]
    fn duplicate_headers_get_suffixes() {
        let t = parse("a,a,b\n1,2,3\n").unwrap();
        assert_eq!(t.headers(), &["a", "a.1", "b"]);
    }

    #[test]
    fn rows_keep_their_lines() {
        let t = parse("a,b\r\n\n1,\"two\nlines\"\n\n3,4\n").unwrap();
        assert_eq!((t.line(0), t.line(1)), (Some(3), Some(6)));
        assert_eq!(t.select_rows(&[1]).line(0), None);
    }
}
