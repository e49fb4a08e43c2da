//! Reading and writing `.safetensors` files.
//!
//! Reading goes through tch (`Tensor::read_safetensors`). Writing is done here because
//! tch 0.24 writes no `__metadata__`, and transformers refuses (or warns about) a
//! checkpoint without `{"format":"pt"}`. The format: an 8-byte little-endian header
//! length, a JSON header `{"__metadata__":{..}, name: {"dtype","shape","data_offsets"}}`
//! (padded with spaces to a multiple of 8 bytes), then the raw little-endian data.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Reads every tensor of a safetensors file onto the CPU, keyed by name. A missing or
/// truncated file is a [`Error::Model`] naming the file.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let dir = path.parent().unwrap_or(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !path.is_file() {
        return Err(Error::model(dir, format!("{name} is missing")));
    }
    let tensors = Tensor::read_safetensors(path).map_err(|e| {
        Error::model(
            dir,
            format!(
                "{name} is not a valid safetensors file ({}); re-save or re-download it",
                crate::error::one_line(&e.to_string())
            ),
        )
    })?;
    Ok(tensors.into_iter().collect())
}

fn dtype_name(kind: Kind) -> Result<&'static str> {
    Ok(match kind {
        Kind::Bool => "BOOL",
        Kind::Uint8 => "U8",
        Kind::Int8 => "I8",
        Kind::Int16 => "I16",
        Kind::Int => "I32",
        Kind::Int64 => "I64",
        Kind::BFloat16 => "BF16",
        Kind::Half => "F16",
        Kind::Float => "F32",
        Kind::Double => "F64",
        k => {
            return Err(Error::Invalid(format!(
                "cannot write a {k:?} tensor to safetensors"
            )))
        }
    })
}

/// Writes `tensors` (any device, any layout) to `path` with metadata `{"format":"pt"}`.
/// Tensors are written in name order.
pub fn write(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    meta.insert("format".into(), "pt".into());
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut blobs: Vec<Vec<u8>> = Vec::with_capacity(sorted.len());
    let mut offset = 0usize;
    for (name, t) in &sorted {
        let t = t.detach().to_device(tch::Device::Cpu).contiguous();
        let kind = t.kind();
        let n = t.numel();
        let mut data = vec![0u8; n * kind.elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, n)?;
        let shape: Vec<i64> = t.size();
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype_name(kind)?,
                "shape": shape,
                "data_offsets": [offset, offset + data.len()],
            }),
        );
        offset += data.len();
        blobs.push(data);
    }
    let mut json = serde_json::to_string(&serde_json::Value::Object(header))
        .map_err(|e| Error::Invalid(format!("safetensors header: {e}")))?
        .into_bytes();
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    let io = |e: std::io::Error| Error::io(path, e);
    w.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&json).map_err(io)?;
    for b in &blobs {
        w.write_all(b).map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(())
}

/// The `__metadata__` of a safetensors file (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = || {
        Error::model(
            path.parent().unwrap_or(path),
            format!("{} has a malformed safetensors header", path.display()),
        )
    };
    if bytes.len() < 8 {
        return Err(bad());
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = bytes.get(8..8 + n).ok_or_else(bad)?;
    let v: serde_json::Value = serde_json::from_slice(header).map_err(|_| bad())?;
    let mut out = BTreeMap::new();
    if let Some(m) = v.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in m {
            out.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let a = Tensor::arange(6, (Kind::Float, tch::Device::Cpu)).view([2, 3]);
        let b = Tensor::from_slice(&[1i64, 2, 3]);
        let c = Tensor::ones([3], (Kind::BFloat16, tch::Device::Cpu));
        write(
            &p,
            &[
                ("a.weight".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
                ("c".into(), c.shallow_clone()),
            ],
        )
        .unwrap();
        let got = read(&p).unwrap();
        assert_eq!(got["a.weight"].size(), vec![2, 3]);
        assert!(got["a.weight"].equal(&a));
        assert!(got["b"].equal(&b));
        assert_eq!(got["c"].kind(), Kind::BFloat16);
        assert_eq!(
            read_metadata(&p).unwrap().get("format").map(String::as_str),
            Some("pt")
        );
    }

    #[test]
    fn truncated_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        write(
            &p,
            &[(
                "a".into(),
                Tensor::ones([100], (Kind::Float, tch::Device::Cpu)),
            )],
        )
        .unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("not a valid safetensors"), "{e}");
    }
}
