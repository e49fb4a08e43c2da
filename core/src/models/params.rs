//! The trainable parameters of a sentence encoder: one `tch::nn::VarStore` whose variable
//! names are the checkpoint names (`embeddings.word_embeddings.weight`,
//! `layers.0.self_attn.q_proj.weight`, and `2_Dense.linear.weight` for module folders),
//! plus a flat, indexable list of the same tensors so forward passes address them by a
//! `usize` resolved once at load time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{nn, Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Index of a parameter in a [`ParamTable`].
pub type ParamId = usize;

/// Every trainable tensor of an encoder (fp32 masters) in one VarStore.
pub struct ParamTable {
    vs: nn::VarStore,
    names: Vec<String>,
    tensors: Vec<Tensor>,
}

impl ParamTable {
    /// An empty table on `device`.
    pub fn new(device: Device) -> Self {
        ParamTable {
            vs: nn::VarStore::new(device),
            names: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Adds a trainable variable named `name` (dots separate path components) holding a
    /// fp32 copy of `value`; returns its id.
    pub fn add(&mut self, name: &str, value: &Tensor) -> ParamId {
        let mut parts: Vec<&str> = name.split('.').collect();
        let leaf = parts.pop().unwrap_or(name);
        let mut path = self.vs.root();
        for p in parts {
            path = path.sub(p);
        }
        let value = value.to_kind(Kind::Float);
        let t = path.var_copy(leaf, &value);
        self.names.push(name.to_string());
        self.tensors.push(t);
        self.names.len() - 1
    }

    /// The VarStore holding every variable.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The VarStore, mutably (e.g. to freeze or to move it).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The tensors in id order (shallow clones of the VarStore's variables).
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The names in id order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The tensors cast to `kind` for a forward pass (the masters stay fp32; the cast is
    /// differentiable, so gradients reach the masters). `keep` lists ids left uncast
    /// (embedding tables, which are gathered first and cast after).
    pub fn cast(&self, kind: Kind, keep: &[ParamId]) -> Vec<Tensor> {
        self.tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if kind == Kind::Float || keep.contains(&i) {
                    t.shallow_clone()
                } else {
                    t.to_kind(kind)
                }
            })
            .collect()
    }
}

/// The tensors of a checkpoint being taken apart into a [`ParamTable`]: each lookup checks
/// the shape the config implies and names both shapes when they differ.
pub struct Checkpoint {
    dir: PathBuf,
    file: String,
    tensors: BTreeMap<String, Tensor>,
    prefix: String,
}

impl Checkpoint {
    /// Wraps the tensors read from `dir/file`. `prefix` is stripped from names when the
    /// un-prefixed name is absent (e.g. `bert.` in a BertForMaskedLM checkpoint).
    pub fn new(dir: &Path, file: &str, tensors: BTreeMap<String, Tensor>) -> Self {
        Checkpoint {
            dir: dir.to_path_buf(),
            file: file.to_string(),
            tensors,
            prefix: String::new(),
        }
    }

    /// Uses `prefix` when `probe` exists only with it.
    pub fn detect_prefix(&mut self, probe: &str, prefixes: &[&str]) {
        if self.tensors.contains_key(probe) {
            return;
        }
        for p in prefixes {
            if self.tensors.contains_key(&format!("{p}{probe}")) {
                self.prefix = p.to_string();
                return;
            }
        }
    }

    /// Removes the tensor `name` after checking its shape.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let t = self.tensors.remove(&full).ok_or_else(|| {
            Error::model(&self.dir, format!("{} has no tensor '{full}' (the config needs it); the checkpoint does not match config.json", self.file))
        })?;
        if t.size() != shape {
            return Err(Error::model(
                &self.dir,
                format!(
                    "{}: tensor '{full}' has shape {:?}, config.json implies {:?}",
                    self.file,
                    t.size(),
                    shape
                ),
            ));
        }
        if !matches!(
            t.kind(),
            Kind::Float | Kind::BFloat16 | Kind::Half | Kind::Double
        ) {
            return Err(Error::model(
                &self.dir,
                format!(
                    "{}: tensor '{full}' has dtype {:?}, expected a float",
                    self.file,
                    t.kind()
                ),
            ));
        }
        Ok(t)
    }

    /// Takes `name` and adds it to `params` as a trainable variable named `name`
    /// (prefixed with `var_prefix`).
    pub fn param(
        &mut self,
        params: &mut ParamTable,
        var_prefix: &str,
        name: &str,
        shape: &[i64],
    ) -> Result<ParamId> {
        let t = self.take(name, shape)?;
        Ok(params.add(
            &format!("{var_prefix}{name}"),
            &t.to_device(params.var_store().device()),
        ))
    }

    /// The tensors nobody took (kept so that a save writes them back unchanged).
    pub fn into_rest(self) -> Vec<(String, Tensor)> {
        self.tensors.into_iter().collect()
    }
}
