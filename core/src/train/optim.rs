//! AdamW over one flat parameter buffer, the linear warm-up/decay schedule and gradient-norm
//! clipping.
//!
//! Every trainable tensor is re-pointed (`set_data`) at a slice of one flat fp32 buffer, so
//! an optimizer step is a handful of tensor ops over the whole model instead of several
//! kernels per parameter tensor (a BERT has ~100, EmbeddingGemma ~340). The math follows
//! torch.optim.AdamW (torch/optim/adamw.py, `_single_tensor_adamw`): decoupled weight
//! decay `p *= 1 - lr*wd`, bias-corrected moments, `denom = sqrt(v)/sqrt(1-b2^t) + eps`.
//! The schedule follows transformers' `get_linear_schedule_with_warmup`
//! (transformers/optimization.py) with `warmup_steps = ceil(ratio * total)` as in
//! `TrainingArguments.get_warmup_steps`.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// AdamW hyper-parameters (defaults: the reference trainer's).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay, applied to every tensor except biases and norm weights.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 5e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// True for parameters that get no weight decay: biases and normalisation weights (the
/// reference excludes `bias` and LayerNorm/RMSNorm weights by name).
pub fn no_decay(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with("bias")
        || lower.contains("layernorm")
        || lower.contains("layer_norm")
        || lower.contains("norm.")
        || lower.ends_with("norm")
}

/// The flat-buffer AdamW state.
pub struct FlatAdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    offsets: Vec<(i64, i64)>,
    flat: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// The flat ranges (offset, length) of the parameters that get weight decay.
    decayed: Vec<(i64, i64)>,
    /// Work space of the flat size, reused every step (no allocation per step).
    scratch: Tensor,
    /// The flat gradient, rewritten by [`FlatAdamW::flat_grad`] every step.
    grad_buf: Tensor,
    /// Steps taken (t in the bias corrections).
    pub step: i64,
}

impl FlatAdamW {
    /// Takes over `params` (name, trainable leaf tensor): their values move into one flat
    /// fp32 buffer on `device` and each tensor becomes a view of its slice.
    pub fn new(
        mut params: Vec<(String, Tensor)>,
        config: AdamWConfig,
        device: Device,
    ) -> Result<Self> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let mut offsets = Vec::with_capacity(params.len());
        let mut total = 0i64;
        for (_, p) in &params {
            let n = p.numel() as i64;
            offsets.push((total, n));
            total += n;
        }
        let opts = (Kind::Float, device);
        let flat = Tensor::f_zeros([total], opts)?;
        let mut names = Vec::with_capacity(params.len());
        let mut tensors = Vec::with_capacity(params.len());
        for ((name, mut p), &(off, n)) in params.into_iter().zip(&offsets) {
            let mut slice = flat.narrow(0, off, n);
            tch::no_grad(|| {
                slice.copy_(
                    &p.detach()
                        .to_kind(Kind::Float)
                        .to_device(device)
                        .reshape([-1]),
                )
            });
            let view = slice.view(p.size().as_slice());
            p.set_data(&view);
            names.push(name);
            tensors.push(p);
        }
        // Adjacent decayed parameters merge into one range.
        let mut decayed: Vec<(i64, i64)> = Vec::new();
        for (name, &(off, n)) in names.iter().zip(&offsets) {
            if no_decay(name) {
                continue;
            }
            match decayed.last_mut() {
                Some((o, len)) if *o + *len == off => *len += n,
                _ => decayed.push((off, n)),
            }
        }
        Ok(FlatAdamW {
            scratch: flat.zeros_like(),
            grad_buf: flat.zeros_like(),
            decayed,
            config,
            names,
            params: tensors,
            offsets,
            exp_avg: flat.zeros_like(),
            exp_avg_sq: flat.zeros_like(),
            flat,
            step: 0,
        })
    }

    /// Number of parameters (scalars) trained.
    pub fn numel(&self) -> i64 {
        self.flat.numel() as i64
    }

    /// Names of the trained tensors, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// The gradients as one flat tensor (zeros where a parameter got none). The tensor is
    /// the optimizer's own buffer: it holds this step's gradient until the next call.
    pub fn flat_grad(&self) -> Tensor {
        let parts: Vec<Tensor> = self
            .params
            .iter()
            .zip(&self.offsets)
            .map(|(p, &(_, n))| {
                let g = p.grad();
                if g.defined() {
                    g.reshape([-1]).to_kind(Kind::Float)
                } else {
                    Tensor::zeros([n], (Kind::Float, self.flat.device()))
                }
            })
            .collect();
        // Into the same buffer every step: no 4-bytes-per-parameter allocation per step.
        tch::no_grad(|| Tensor::cat_out(&self.grad_buf, &parts, 0))
    }

    /// One AdamW step at learning rate `lr` with the given flat gradient. When `ok` (a 0-d
    /// bool tensor) is false the step leaves parameters and moments untouched, without a
    /// host sync (the gradient is zeroed in place then); the caller checks `ok` when it
    /// syncs anyway.
    ///
    /// torch.optim.AdamW's update (torch/optim/adamw.py, single-tensor path), in place on
    /// the flat buffers with one work buffer, so a step allocates nothing:
    /// `p *= 1 - lr*wd` (decayed parameters), `m = lerp(m, g, 1 - b1)`,
    /// `v = lerp(v, g*g, 1 - b2)`, `p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)`.
    pub fn step(&mut self, grad: &Tensor, lr: f64, ok: Option<&Tensor>) {
        let c = self.config;
        self.step += 1;
        let t = self.step as f64;
        tch::no_grad(|| {
            let bias1 = 1.0 - c.beta1.powf(t);
            let bias2 = 1.0 - c.beta2.powf(t);
            let mut g = grad.shallow_clone();
            // Not ok: g = 0, the moments' weights and the decay times 0, and the denominator
            // divided by 0 (infinite), so nothing moves.
            let okf = ok.map(|o| {
                let _ = g.masked_fill_(&o.logical_not(), 0.0);
                o.to_kind(Kind::Float)
            });
            let weight = |w: f64| okf.as_ref().map(|o| o * w);
            if c.weight_decay != 0.0 {
                let keep = okf.as_ref().map(|o| 1.0 - o * (lr * c.weight_decay));
                for &(off, n) in &self.decayed {
                    let mut p = self.flat.narrow(0, off, n);
                    match &keep {
                        Some(k) => {
                            let _ = p.g_mul_(k);
                        }
                        None => {
                            let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
                        }
                    }
                }
            }
            let _ = match weight(1.0 - c.beta1) {
                Some(w) => self.exp_avg.lerp_tensor_(&g, &w),
                None => self.exp_avg.lerp_(&g, 1.0 - c.beta1),
            };
            let mut s = self.scratch.shallow_clone();
            let _ = g.mul_out(&s, &g);
            let _ = match weight(1.0 - c.beta2) {
                Some(w) => self.exp_avg_sq.lerp_tensor_(&s, &w),
                None => self.exp_avg_sq.lerp_(&s, 1.0 - c.beta2),
            };
            let _ = self.exp_avg_sq.sqrt_out(&s);
            let _ = s.g_div_scalar_(bias2.sqrt());
            let _ = s.g_add_scalar_(c.eps);
            if let Some(o) = &okf {
                let _ = s.g_div_(o);
            }
            let _ = self.exp_avg.div_out(&s, &s);
            let _ = s.g_mul_scalar_(-(lr / bias1));
            let _ = self.flat.g_add_(&s);
        });
    }

    /// True when every parameter is finite (one host sync).
    pub fn params_finite(&self) -> bool {
        bool::try_from(self.flat.isfinite().all()).unwrap_or(false)
    }

    /// Writes moments and step to `path` (safetensors).
    pub fn save(&self, path: &Path) -> Result<()> {
        let step = Tensor::from_slice(&[self.step]);
        Tensor::write_safetensors(
            &[
                ("exp_avg", &self.exp_avg),
                ("exp_avg_sq", &self.exp_avg_sq),
                ("step", &step),
            ],
            path,
        )
        .map_err(|e| Error::io(path, e))
    }

    /// Restores moments and step from `path`; the parameter count must match.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors = Tensor::read_safetensors(path).map_err(|e| Error::io(path, e))?;
        let get = |k: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| {
                    Error::data(
                        path,
                        None,
                        format!("optimizer state has no '{k}'; the checkpoint is incomplete"),
                    )
                })
        };
        let (m, v, s) = (get("exp_avg")?, get("exp_avg_sq")?, get("step")?);
        if m.numel() as i64 != self.numel() || v.numel() as i64 != self.numel() {
            return Err(Error::data(
                path,
                None,
                format!(
                    "optimizer state holds {} parameters but the model has {}; the checkpoint is from another model",
                    m.numel(),
                    self.numel()
                ),
            ));
        }
        let dev = self.flat.device();
        tch::no_grad(|| {
            self.exp_avg.copy_(&m.to_device(dev));
            self.exp_avg_sq.copy_(&v.to_device(dev));
        });
        self.step = i64::try_from(&s.reshape([-1]).get(0)).map_err(Error::from)?;
        Ok(())
    }
}

/// Clips `grad` in place to global L2 norm `max_norm` (torch.nn.utils.clip_grad_norm_:
/// coefficient `max_norm / (norm + 1e-6)` clamped at 1) and returns the pre-clip norm as a
/// 0-d tensor (no host sync).
pub fn clip_grad_norm(grad: &mut Tensor, max_norm: f64) -> Tensor {
    tch::no_grad(|| {
        let norm = grad.norm();
        let coef = (max_norm / (&norm + 1e-6)).clamp_max(1.0);
        let _ = grad.g_mul_(&coef);
        norm
    })
}

/// Linear warm-up from 0 to `peak` over `warmup` steps, then linear decay to 0 at `total`.
/// `step` is the 0-based index of the optimizer step about to be taken.
pub fn linear_schedule(step: i64, warmup: i64, total: i64, peak: f64) -> f64 {
    if step < warmup {
        peak * step as f64 / warmup.max(1) as f64
    } else {
        peak * ((total - step) as f64 / (total - warmup).max(1) as f64).max(0.0)
    }
}

/// `ceil(ratio * total)`, the reference's warm-up step count.
pub fn warmup_steps(ratio: f64, total: i64) -> i64 {
    (ratio * total as f64).ceil() as i64
}
