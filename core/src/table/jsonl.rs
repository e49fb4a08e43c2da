//! JSON Lines: one JSON object per line, read into a [`Table`] (cells copied into one new
//! buffer, since JSON strings are unescaped).

use std::borrow::Cow;
use std::path::Path;

use serde_json::Value;

use super::{header_names, Table};
use crate::error::{Error, Result};

/// Parses `text` (decoded, without a byte-order mark): the first object's keys are the
/// columns, every other line must have the same keys; blank lines are skipped.
pub(super) fn parse_jsonl(text: &str, path: &Path) -> Result<Table> {
    const TOO_BIG: &str = "the table holds more than 4 GiB of text; split the input file";
    // The keys of the first object, as written (the header holds them trimmed).
    let mut keys: Vec<String> = Vec::new();
    let mut table: Option<Table> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let ln = i as u64 + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            // serde_json places the error on line 1 of the one-line input: give the column.
            let msg = e.to_string();
            let msg = msg
                .rsplit_once(" at line ")
                .map_or(msg.as_str(), |(m, _)| m);
            Error::data(
                path,
                Some(ln),
                format!("not a JSON object: {msg} at column {}", e.column()),
            )
        })?;
        let Value::Object(obj) = value else {
            return Err(Error::data(
                path,
                Some(ln),
                format!(
                    "expected a JSON object ({{\"column\": \"text\", ...}}) on each line, found {}",
                    kind(&value)
                ),
            ));
        };
        let t = table.get_or_insert_with(|| {
            keys = obj.keys().cloned().collect();
            Table::new(header_names(keys.iter().map(String::as_str)))
        });
        let first_keys = || keys.join(", ");
        let mut cells: Vec<Cow<str>> = Vec::with_capacity(keys.len());
        for (c, key) in keys.iter().enumerate() {
            let column = &t.headers[c];
            let cell = match obj.get(key) {
                None => {
                    return Err(Error::cell(
                        path,
                        Some(ln),
                        column,
                        format!(
                            "missing; every line has the first line's keys ({})",
                            first_keys()
                        ),
                    ))
                }
                Some(Value::String(s)) => Cow::Borrowed(s.as_str()),
                Some(Value::Number(n)) => Cow::Owned(n.to_string()),
                Some(Value::Bool(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
                Some(Value::Null) => Cow::Borrowed(""),
                // A list of numbers (the score lists `embtune mine --output-scores` writes)
                // is kept as its compact JSON text, as the CSV writer stores it.
                Some(Value::Array(a)) if a.iter().all(Value::is_number) => {
                    Cow::Owned(Value::Array(a.clone()).to_string())
                }
                Some(nested) => {
                    return Err(Error::cell(
                        path,
                        Some(ln),
                        column,
                        format!(
                            "a nested value ({}); cells are strings, numbers, booleans or null",
                            kind(nested)
                        ),
                    ))
                }
            };
            cells.push(cell);
        }
        if obj.len() > keys.len() {
            let extra = obj.keys().find(|k| !keys.contains(k)).map_or("", |k| k);
            return Err(Error::cell(
                path,
                Some(ln),
                extra,
                format!(
                    "not a key of the first line ({}); every line has the same keys",
                    first_keys()
                ),
            ));
        }
        let bytes: usize = cells.iter().map(|c| c.len()).sum();
        if t.buf.len() + bytes > u32::MAX as usize {
            return Err(Error::data(path, Some(ln), TOO_BIG));
        }
        t.push_row(cells.iter().map(|c| c.as_ref()));
        t.lines.push(ln as u32);
    }
    table.ok_or_else(|| Error::data(path, None, "empty file: expected one JSON object per line"))
}

/// What a JSON value is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::super::ReadOptions;
    use super::*;

    fn parse(s: &str) -> Result<Table> {
        Table::from_bytes(
            s.as_bytes().to_vec(),
            &ReadOptions::default(),
            Path::new("t.jsonl"),
        )
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn reads_objects_in_key_order_with_scalars_as_text() {
        let t = parse(
            "{\"query\":\" 사과 \",\"doc\":\"과일\",\"score\":0.5,\"ok\":true}\n\n\
             {\"doc\":\"b\\n\\\"q\\\"\",\"query\":\"a\",\"ok\":false,\"score\":1}\r\n\
             {\"query\":null,\"doc\":\"\",\"score\":-2.0,\"ok\":true}",
        )
        .unwrap();
        assert_eq!(t.headers(), &["query", "doc", "score", "ok"]);
        assert_eq!(t.n_rows(), 3);
        let row = |r: usize| (0..4).map(|c| t.cell(r, c)).collect::<Vec<_>>();
        assert_eq!(row(0), ["사과", "과일", "0.5", "true"]);
        assert_eq!(row(1), ["a", "b\n\"q\"", "1", "false"]);
        assert_eq!(row(2), ["", "", "-2.0", "true"]);
        assert_eq!(
            (t.line(0), t.line(1), t.line(2)),
            (Some(1), Some(3), Some(4))
        );
    }

    #[test]
    fn bad_lines_name_the_line_and_key() {
        let e = err("{\"a\":\"x\"}\n{\"a\":\"y\"\n");
        assert!(
            e.contains("t.jsonl, line 2")
                && e.contains("not a JSON object")
                && e.contains("column"),
            "{e}"
        );
        let e = err("{\"a\":\"x\"}\n\n[1,2]\n");
        assert!(e.contains("line 3") && e.contains("found an array"), "{e}");
        let e = err("{\"a\":\"x\",\"b\":\"y\"}\n{\"a\":\"x\",\"b\":{\"k\":1}}\n");
        assert!(
            e.contains("line 2, column 'b'") && e.contains("nested value (an object)"),
            "{e}"
        );
        // A list of numbers is a cell (score lists); any other array is not.
        assert_eq!(parse("{\"a\":[1, 0.5]}\n").unwrap().cell(0, 0), "[1,0.5]");
        let e = err("{\"a\":[\"x\"]}\n");
        assert!(
            e.contains("line 1, column 'a'") && e.contains("an array"),
            "{e}"
        );
        let e = err("{\"a\":\"x\",\"b\":\"y\"}\n{\"a\":\"x\"}\n");
        assert!(
            e.contains("line 2, column 'b'") && e.contains("missing"),
            "{e}"
        );
        let e = err("{\"a\":\"x\"}\n{\"a\":\"x\",\"c\":\"z\"}\n");
        assert!(
            e.contains("line 2, column 'c'") && e.contains("not a key of the first line (a)"),
            "{e}"
        );
        assert!(err("\n \n").contains("empty file"));
    }

    #[test]
    fn bom_and_legacy_encodings() {
        let mut bytes = vec![0xEF, 0xBB, 0xBF];
        bytes.extend_from_slice("{\"설명\":\"사과\"}\n".as_bytes());
        let t = Table::from_bytes(bytes, &ReadOptions::default(), Path::new("t.jsonl")).unwrap();
        assert_eq!((t.headers()[0].as_str(), t.cell(0, 0)), ("설명", "사과"));
        let (cp, _, bad) = encoding_rs::EUC_KR.encode("{\"설명\":\"사과\"}\n");
        assert!(!bad);
        let opts = ReadOptions {
            format: None,
            encoding: Some("cp949"),
        };
        let t = Table::from_bytes(cp.to_vec(), &opts, Path::new("t.jsonl")).unwrap();
        assert_eq!(t.cell(0, 0), "사과");
    }
}
