//! sentence-transformers' `Dense` module (sentence_transformers/base/modules/dense.py):
//! `activation(linear(x))` (+ an optional residual), weights in `k_Dense/model.safetensors`
//! as `linear.weight (out, in)`, `linear.bias (out,)` and `residual.weight (out, in)`.
//! The VarStore names are `{folder}.linear.weight`, e.g. `2_Dense.linear.weight`.

use std::path::Path;

use tch::Tensor;

use crate::error::{Error, Result};
use crate::models::params::{Checkpoint, ParamId, ParamTable};

/// The activation after the linear map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `torch.nn.Identity`.
    Identity,
    /// `torch.nn.Tanh` (the reference's default).
    Tanh,
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.Sigmoid`.
    Sigmoid,
    /// `torch.nn.GELU` (exact erf form).
    Gelu,
}

impl Activation {
    /// Parses the reference's `activation_function` (a torch class path; default Tanh).
    pub fn parse(dir: &Path, s: Option<&str>) -> Result<Self> {
        let Some(s) = s else {
            return Ok(Activation::Tanh);
        };
        Ok(match s.rsplit('.').next().unwrap_or(s) {
            "Identity" => Activation::Identity,
            "Tanh" => Activation::Tanh,
            "ReLU" => Activation::Relu,
            "Sigmoid" => Activation::Sigmoid,
            "GELU" => Activation::Gelu,
            _ => {
                return Err(Error::model(
                    dir,
                    format!("config.json: activation_function '{s}' is not supported (supported: torch.nn Identity, Tanh, ReLU, Sigmoid, GELU)"),
                ))
            }
        })
    }

    fn apply(self, x: Tensor) -> Tensor {
        match self {
            Activation::Identity => x,
            Activation::Tanh => x.tanh(),
            Activation::Relu => x.relu(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Gelu => x.gelu("none"),
        }
    }
}

/// A Dense module with its weights in a [`ParamTable`].
pub struct Dense {
    /// The module's folder in the model (`2_Dense`), also its VarStore name prefix.
    pub folder: String,
    /// Input width.
    pub in_features: i64,
    /// Output width.
    pub out_features: i64,
    /// The activation after the linear map.
    pub activation: Activation,
    /// The folder's `config.json`, written back unchanged on save.
    pub config: serde_json::Value,
    weight: ParamId,
    bias: Option<ParamId>,
    residual: Option<ParamId>,
    use_residual: bool,
}

impl Dense {
    /// Loads `dir` (a `k_Dense` folder) whose name in the model is `folder`.
    pub fn load(dir: &Path, folder: &str, params: &mut ParamTable) -> Result<Self> {
        let config = super::folder::read_json(&dir.join("config.json"))?;
        let get = |k: &str| {
            config
                .get(k)
                .and_then(|v| v.as_i64())
                .ok_or_else(|| Error::model(dir, format!("config.json: '{k}' is missing")))
        };
        let in_features = get("in_features")?;
        let out_features = get("out_features")?;
        let has_bias = config.get("bias").and_then(|v| v.as_bool()).unwrap_or(true);
        let use_residual = config
            .get("use_residual")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let activation = Activation::parse(
            dir,
            config.get("activation_function").and_then(|v| v.as_str()),
        )?;
        let file = dir.join("model.safetensors");
        if !file.is_file() && dir.join("pytorch_model.bin").is_file() {
            return Err(Error::model(dir, "only model.safetensors is supported, found pytorch_model.bin; re-save the model with safe_serialization=True"));
        }
        let mut ckpt = Checkpoint::new(dir, "model.safetensors", super::safetensors::read(&file)?);
        let pre = format!("{folder}.");
        let weight = ckpt.param(params, &pre, "linear.weight", &[out_features, in_features])?;
        let bias = if has_bias {
            Some(ckpt.param(params, &pre, "linear.bias", &[out_features])?)
        } else {
            None
        };
        let residual = if use_residual && in_features != out_features {
            Some(ckpt.param(
                params,
                &pre,
                "residual.weight",
                &[out_features, in_features],
            )?)
        } else {
            None
        };
        Ok(Dense {
            folder: folder.to_string(),
            in_features,
            out_features,
            activation,
            config,
            weight,
            bias,
            residual,
            use_residual,
        })
    }

    /// `(b, in) -> (b, out)` with the (possibly cast) tensors `w`.
    pub fn forward(&self, w: &[Tensor], x: &Tensor) -> Tensor {
        let y = self
            .activation
            .apply(x.linear(&w[self.weight], self.bias.map(|b| &w[b])));
        if !self.use_residual {
            return y;
        }
        match self.residual {
            Some(r) => y + x.linear::<Tensor>(&w[r], None),
            None => y + x,
        }
    }

    /// The tensors to write to `k_Dense/model.safetensors`, under their file names.
    pub fn checkpoint(&self, w: &[Tensor]) -> Vec<(String, Tensor)> {
        let mut out = vec![("linear.weight".to_string(), w[self.weight].shallow_clone())];
        if let Some(b) = self.bias {
            out.push(("linear.bias".into(), w[b].shallow_clone()));
        }
        if let Some(r) = self.residual {
            out.push(("residual.weight".into(), w[r].shallow_clone()));
        }
        out
    }
}
