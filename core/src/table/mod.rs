//! Tabular input: the one reader of embtune. `gen` reads its table with it, `train` and
//! `eval` their data files (through [`Dataset`]), `encode` its `--column` inputs.
//!
//! A [`Table`] is a header row and every cell as text, stored in one string buffer with
//! offsets (one allocation for the whole table, so a million rows stay cheap; `gen`'s
//! writer threads share the buffer).
//!
//! Formats ([`InputFormat`], chosen from the file's extension unless given):
//! - CSV (`.csv` and any other extension): RFC 4180 with a header row, as pandas reads it;
//!   large files are read and parsed in two halves on two threads.
//! - JSON Lines (`.jsonl`, `.ndjson`, `.json`): one JSON object per line, the first line's
//!   keys are the header and every line has the same keys (in any order). Strings are
//!   taken as they are, numbers and booleans as their JSON text (`1`, `0.5`, `true`),
//!   `null` as an empty cell; an array or object is an error naming the line and key.
//!
//! Encodings: any encoding_rs label (`utf-8`, `cp949`, `euc-kr`, `shift_jis`, ...), or
//! UTF-8 where a command has no `--encoding`; a byte-order mark (UTF-8 or UTF-16) wins over
//! the label and is dropped.
//!
//! **The trimming rule**, one for every format and caller: each cell and each column name
//! loses its leading and trailing Unicode White_Space (`str::trim`), once, when read;
//! nothing inside a cell changes, and a quoted CSV cell is trimmed like an unquoted one.
//! Empty lines are skipped (in JSON Lines, lines of white space too).
//!
//! Errors are [`Error::Data`] with the file and 1-based line (ragged rows, broken quoting,
//! bytes invalid in the encoding, a line that is not a JSON object), or [`Error::Cell`] with
//! the line and the column as well (a nested JSON value, a missing key, a label that is not a
//! number); [`Table::line`] keeps each row's line for messages raised after reading.

mod csv;
mod dataset;
mod decode;
mod jsonl;

use std::path::Path;

pub use dataset::Dataset;
pub use decode::{encoding_for, read_text};

use crate::error::{Error, Result};

/// A table of text cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    /// Every cell's text; shared (never copied) with the threads that write output files.
    buf: std::sync::Arc<String>,
    /// Row-major `(start, end)` byte offsets into `buf`.
    spans: Vec<(u32, u32)>,
    /// The 1-based line of the file each row starts on; empty for tables built in memory.
    lines: Vec<u32>,
}

impl Table {
    /// An empty table with these column names.
    pub fn new(headers: Vec<String>) -> Self {
        Table {
            headers,
            buf: Default::default(),
            spans: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Builds a table from rows of cells (trimmed by the rule of this module); rows must have
    /// the header's width.
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

    /// Appends one row; each cell is trimmed once here (the rule of this module).
    pub fn push_row<'c>(&mut self, cells: impl IntoIterator<Item = &'c str>) {
        let buf = std::sync::Arc::make_mut(&mut self.buf);
        for c in cells {
            let c = trim_cell(c);
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

    /// The 1-based line of the file where `row` starts, for messages; None for rows not
    /// read from a file (built in memory, or a [`Table::select_rows`] selection).
    pub fn line(&self, row: usize) -> Option<u64> {
        self.lines.get(row).map(|&l| u64::from(l))
    }

    /// A table of the given rows (in that order) with the same columns, its cells copied
    /// into one new buffer (without line numbers: see [`Table::line`]).
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
            lines: Vec::new(),
        }
    }

    /// The buffer every cell borrows from (cells are slices of it). Output writers keep a
    /// handle so rows made of cells travel to their thread as offsets, not copies.
    pub fn shared_text(&self) -> std::sync::Arc<String> {
        self.buf.clone()
    }
}

/// A file format the reader knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// CSV with a header row.
    Csv,
    /// JSON Lines: one JSON object per line.
    Jsonl,
}

impl InputFormat {
    /// The format named by the extension of `path` (case-insensitive): `.csv` is CSV;
    /// `.jsonl`, `.ndjson` and `.json` are JSON Lines; None for any other extension.
    pub fn from_extension(path: &Path) -> Option<InputFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(InputFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(InputFormat::Jsonl),
            _ => None,
        }
    }
}

/// How [`Table::read`] reads a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions<'a> {
    /// The format; None: from the extension ([`InputFormat::from_extension`]), CSV when
    /// the extension names none.
    pub format: Option<InputFormat>,
    /// The encoding label the user chose (`--encoding`); None: UTF-8, for commands without
    /// the option (errors then suggest converting the file rather than the option).
    pub encoding: Option<&'a str>,
}

impl Table {
    /// Reads the table in the file at `path` (see the module documentation for formats,
    /// encodings, trimming and errors). The CSV header or the first JSON object's keys name
    /// the columns; duplicate names get pandas' suffixes (`x`, `x.1`, `x.2`). A file with no
    /// header, or with a header and no data rows, is an error.
    pub fn read(path: impl AsRef<Path>, options: &ReadOptions) -> Result<Table> {
        let path = path.as_ref();
        let bytes = decode::read_file(path).map_err(|e| Error::io(path, e))?;
        Table::from_bytes(bytes, options, path)
    }

    /// Reads the CSV file at `path` in the encoding labelled `encoding`, whatever its
    /// extension: [`Table::read`] with the format and encoding given.
    pub fn read_csv(path: impl AsRef<Path>, encoding: &str) -> Result<Table> {
        let options = ReadOptions {
            format: Some(InputFormat::Csv),
            encoding: Some(encoding),
        };
        Table::read(path, &options)
    }

    /// Like [`Table::read`] on bytes already in memory; `path` names the source in errors
    /// (and gives the format by its extension where `options` has none).
    pub fn from_bytes(bytes: Vec<u8>, options: &ReadOptions, path: &Path) -> Result<Table> {
        let (text, start) = decode::decode(bytes, options.encoding, path)?;
        let format = options
            .format
            .or_else(|| InputFormat::from_extension(path))
            .unwrap_or(InputFormat::Csv);
        match format {
            InputFormat::Csv => csv::parse_csv(text, start, path),
            InputFormat::Jsonl => jsonl::parse_jsonl(&text[start..], path),
        }
    }

    /// The CSV parse of `text` (already decoded) split in two halves once the data records
    /// hold more than `parallel` bytes, for the fuzz targets and tests that compare it with
    /// the single pass (`parallel` = usize::MAX).
    #[doc(hidden)]
    pub fn parse_csv_split_at(text: String, parallel: usize, path: &Path) -> Result<Table> {
        csv::parse_csv_split(text, 0, path, parallel)
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

/// The trimming rule: `s.trim()` (Unicode White_Space at both ends), answering from the first and last byte
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

/// Column names from the raw header cells: trimmed, duplicates suffixed as pandas does
/// (`x`, `x.1`, `x.2`).
///
/// Each name gets the smallest free suffix. Names are only ever added, so that suffix never
/// decreases for a base: the search resumes where the base's last one ended, and a header
/// of n equal names costs O(n), not O(n³) (a fuzzed 514-byte header of commas took 0.6 s,
/// 4 KiB would take minutes).
fn header_names<'h>(raw: impl IntoIterator<Item = &'h str>) -> Vec<String> {
    let mut headers: Vec<String> = Vec::new();
    let mut used: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut next: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for h in raw {
        let base = trim_cell(h).to_string();
        let mut name = base.clone();
        if used.contains(&name) {
            let k = next.entry(base.clone()).or_insert(1);
            loop {
                name = format!("{base}.{k}");
                *k += 1;
                if !used.contains(&name) {
                    break;
                }
            }
        }
        used.insert(name.clone());
        headers.push(name);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_headers_get_the_smallest_free_suffix_in_linear_time() {
        // As pandas: a later "a.1" that an earlier duplicate already took moves on.
        assert_eq!(
            header_names(["a", "a", "a.1", "b", "a", " a "]),
            ["a", "a.1", "a.1.1", "b", "a.2", "a.3"]
        );
        // Found by the `table` fuzz target (fuzz/regressions/table/): thousands of empty
        // header cells, cubic before.
        let raw = vec![""; 3000];
        let names = header_names(raw.iter().copied());
        assert_eq!(names[0], "");
        assert_eq!(names[1], ".1");
        assert_eq!(names[2999], ".2999");
        let t = Table::from_bytes(
            format!("{0}\nx{0}\n", ",".repeat(4000)).into_bytes(),
            &ReadOptions::default(),
            Path::new("wide.csv"),
        )
        .unwrap();
        assert_eq!(t.headers().len(), 4001);
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
    fn missing_columns_listed_together() {
        let t = Table::from_rows(&["a", "b"], &[vec!["1", "2"]]);
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
}
