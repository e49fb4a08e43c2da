//! Reading and writing `.safetensors` files with the `safetensors` crate.
//!
//! Reading goes through tch's `Tensor::read_safetensors` (the crate's parser over one read
//! of the file, each tensor built from its byte slice, any dtype tch has: bf16, f16, f32,
//! ...). Writing goes through the crate's serializer with metadata `{"format":"pt"}`, which
//! transformers wants and tch's own writer leaves out.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ::safetensors::tensor::{Dtype, SafeTensors, View};
use tch::Tensor;

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
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, dir, &name)
}

/// The tensors of a safetensors file's `bytes` (as tch's `Tensor::read_safetensors` builds
/// them: the crate's parser, each tensor copied from its byte slice); `dir` and `name` name
/// the file in errors. A malformed header, offsets outside the data or a dtype tch lacks is
/// a [`Error::Model`].
pub fn from_bytes(bytes: &[u8], dir: &Path, name: &str) -> Result<BTreeMap<String, Tensor>> {
    let bad = |e: String| {
        Error::model(
            dir,
            format!(
                "{name} is not a valid safetensors file ({}); re-save or re-download it",
                crate::error::one_line(&e)
            ),
        )
    };
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("{e:?}")))?;
    st.tensors()
        .into_iter()
        .map(|(n, view)| {
            let t: Tensor = view
                .try_into()
                .map_err(|e: tch::TchError| bad(e.to_string()))?;
            Ok((n, t))
        })
        .collect()
}

/// One tensor's bytes (CPU, contiguous, little-endian as tch holds them) for the writer.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Bytes {
    fn new(t: &Tensor) -> Result<Self> {
        let t = t.detach().to_device(tch::Device::Cpu).contiguous();
        let kind = t.kind();
        let dtype = Dtype::try_from(kind).map_err(|_| {
            Error::Invalid(format!("cannot write a {kind:?} tensor to safetensors"))
        })?;
        let n = t.numel();
        let mut data = vec![0u8; n * kind.elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, n)?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        Ok(Bytes { dtype, shape, data })
    }
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes `tensors` (any device, any layout) to `path` with metadata `{"format":"pt"}`.
pub fn write(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let bytes = tensors
        .iter()
        .map(|(n, t)| Ok((n.as_str(), Bytes::new(t)?)))
        .collect::<Result<Vec<_>>>()?;
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    ::safetensors::tensor::serialize_to_file(bytes.iter().map(|(n, b)| (*n, b)), &metadata, path)
        .map_err(|e| match e {
            ::safetensors::SafeTensorError::IoError(e) => Error::io(path, e),
            e => Error::Invalid(format!(
                "{}: cannot write safetensors: {e:?}",
                path.display()
            )),
        })
}

/// The `__metadata__` of a safetensors file (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::model(
            path.parent().unwrap_or(path),
            format!(
                "{} has a malformed safetensors header ({e:?})",
                path.display()
            ),
        )
    })?;
    Ok(meta
        .metadata()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let a = Tensor::arange(6, (Kind::Float, tch::Device::Cpu)).view([2, 3]);
        let b = Tensor::from_slice(&[1i64, 2, 3]);
        let c = Tensor::ones([3], (Kind::BFloat16, tch::Device::Cpu));
        let d = Tensor::from_slice(&[0.5f32, -2.0]).to_kind(Kind::Half);
        // Not contiguous: written in its logical layout.
        let e = a.transpose(0, 1);
        write(
            &p,
            &[
                ("a.weight".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
                ("c".into(), c.shallow_clone()),
                ("d".into(), d.shallow_clone()),
                ("e".into(), e.shallow_clone()),
            ],
        )
        .unwrap();
        let got = read(&p).unwrap();
        assert_eq!(got["a.weight"].size(), vec![2, 3]);
        assert!(got["a.weight"].equal(&a));
        assert!(got["b"].equal(&b));
        assert_eq!(got["c"].kind(), Kind::BFloat16);
        assert!(got["c"].equal(&c));
        assert_eq!(got["d"].kind(), Kind::Half);
        assert!(got["d"].equal(&d));
        assert!(got["e"].equal(&e));
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
        assert!(read_metadata(&p).is_err());
    }
}
