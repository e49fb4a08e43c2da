//! Bytes to text: the file read (two threads for big files, huge pages where offered) and
//! the decoding, with any encoding_rs label; a byte-order mark wins over the label.

use std::path::Path;

use crate::error::{Error, Result};

/// Reads a whole file into a vector sized from its metadata and backed by huge pages
/// where the system offers them ([`crate::mem::advise_huge`]). Large files are read as two
/// halves on two threads (the kernel's copy from the page cache is most of the cost).
pub(super) fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
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

/// Decodes `bytes` with the encoding labelled `label` (None: UTF-8, for commands without
/// an `--encoding` option), without replacement characters.
///
/// Returns the text and where the data starts in it (after a UTF-8 byte-order mark, which
/// stays in place rather than shifting the whole buffer).
pub(super) fn decode(bytes: Vec<u8>, label: Option<&str>, path: &Path) -> Result<(String, usize)> {
    let encoding = match label {
        None => encoding_rs::UTF_8,
        Some(label) => encoding_for(label).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown --encoding '{label}'; use a WHATWG label such as utf-8, cp949, euc-kr, shift_jis, gbk, windows-1252, utf-16le"
            ))
        })?,
    };
    // What to do about bytes the encoding rejects: name the option where there is one.
    let advice = if label.is_some() {
        "if the file was saved by Excel or another Korean tool, pass --encoding cp949 (or the file's encoding)"
    } else {
        "convert the file to UTF-8 (e.g. iconv -f cp949 -t utf-8)"
    };
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
                    "bytes invalid in UTF-8 (byte offset {}); {advice}",
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
                    "bytes invalid in {} near byte offset {}; {}",
                    encoding.name(),
                    read + bom,
                    if label.is_some() {
                        "check --encoding (utf-8, cp949, euc-kr, ...)"
                    } else {
                        advice
                    }
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

/// The text of the file at `path`, decoded as [`super::Table::read`] decodes (encoding
/// `label`, None for UTF-8; a byte-order mark wins and is dropped): for inputs that are not
/// tables, such as one text per line.
pub fn read_text(path: &Path, label: Option<&str>) -> Result<String> {
    let bytes = read_file(path).map_err(|e| Error::io(path, e))?;
    let (mut text, start) = decode(bytes, label, path)?;
    text.drain(..start);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_text_drops_any_bom_and_names_the_bad_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.txt");
        std::fs::write(&p, "\u{feff}첫 줄\n two \n").unwrap();
        assert_eq!(read_text(&p, None).unwrap(), "첫 줄\n two \n");
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend("가\n".encode_utf16().flat_map(u16::to_le_bytes));
        std::fs::write(&p, utf16).unwrap();
        assert_eq!(read_text(&p, None).unwrap(), "가\n");
        let (cp, _, _) = encoding_rs::EUC_KR.encode("ok\n사과\n");
        std::fs::write(&p, &cp).unwrap();
        let e = read_text(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("t.txt, line 2") && e.contains("iconv -f cp949"),
            "{e}"
        );
        assert_eq!(read_text(&p, Some("cp949")).unwrap(), "ok\n사과\n");
    }
}
