//! Float32 matrices in NumPy's `.npy` format (version 1.0 written; 1.0-3.0 read):
//! the `embtune encode` output and the reference fixtures. Only little-endian `<f4`,
//! C order.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes a `rows x cols` f32 matrix (row-major `data`) to `path`.
pub fn write_f32(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    write_f32_to(&mut w, data, rows, cols).map_err(|e| Error::io(path, e))?;
    w.flush().map_err(|e| Error::io(path, e))
}

/// Writes the `.npy` bytes of a `rows x cols` f32 matrix to `w`.
pub fn write_f32_to(
    w: &mut impl Write,
    data: &[f32],
    rows: usize,
    cols: usize,
) -> std::io::Result<()> {
    assert_eq!(
        data.len(),
        rows * cols,
        "npy: data length does not match the shape"
    );
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    let mut buf = Vec::with_capacity(data.len() * 4);
    for v in data {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    w.write_all(&buf)
}

/// Reads a 1-D or 2-D `<f4` C-order `.npy` file: (data, rows, cols).
pub fn read_f32(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: &str| Error::data(path, None, format!("not a float32 .npy matrix: {m}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing magic"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        _ => return Err(bad("unknown version")),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + hlen)
            .ok_or_else(|| bad("truncated header"))?,
    )
    .map_err(|_| bad("header"))?;
    if !header.contains("'<f4'") {
        return Err(bad("dtype is not <f4"));
    }
    if header.contains("'fortran_order': True") {
        return Err(bad("fortran order"));
    }
    let shape_str = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape_str
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("shape")))
        .collect::<Result<_>>()?;
    let (rows, cols) = match dims.as_slice() {
        [n] => (*n, 1),
        [r, c] => (*r, *c),
        _ => return Err(bad("not 1-D or 2-D")),
    };
    let data_bytes = &bytes[start + hlen..];
    if data_bytes.len() != rows * cols * 4 {
        return Err(bad("data length does not match the shape"));
    }
    let data = data_bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((data, rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_f32(&p, &data, 3, 4).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!((bytes.len() - 48) % 16, 0);
        let (got, r, c) = read_f32(&p).unwrap();
        assert_eq!((r, c), (3, 4));
        assert_eq!(got, data);
    }
}
