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
    /// The flat ranges of the others (biases, norm weights).
    not_decayed: Vec<(i64, i64)>,
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
        // Adjacent parameters of the same kind merge into one range.
        let mut decayed: Vec<(i64, i64)> = Vec::new();
        let mut not_decayed: Vec<(i64, i64)> = Vec::new();
        for (name, &(off, n)) in names.iter().zip(&offsets) {
            let ranges = if no_decay(name) {
                &mut not_decayed
            } else {
                &mut decayed
            };
            match ranges.last_mut() {
                Some((o, len)) if *o + *len == off => *len += n,
                _ => ranges.push((off, n)),
            }
        }
        Ok(FlatAdamW {
            not_decayed,
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

    /// The flat fp32 buffer every trained tensor is a view of (sorted by name): writing it
    /// (e.g. a broadcast from another rank) writes the parameters.
    pub fn params_buffer(&self) -> &Tensor {
        &self.flat
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

    /// One AdamW step at learning rate `lr` with the given flat gradient; see
    /// [`Self::step_scaled`] (no gradient scale).
    pub fn step(&mut self, grad: &Tensor, lr: f64, ok: Option<&Tensor>) -> Result<()> {
        self.step_scaled(grad, lr, None, ok)
    }

    /// One AdamW step at learning rate `lr` with the flat gradient `grad` divided by
    /// `grad_scale` (a 0-d tensor, e.g. the clipping divisor of [`clip_divisor`]; None: 1).
    /// When `ok` (a 0-d bool tensor) is false the step leaves parameters and moments
    /// untouched, without a host sync on CUDA; the caller checks `ok` when it syncs anyway.
    ///
    /// torch.optim.AdamW's update (torch/optim/adamw.py): `p *= 1 - lr*wd` (decayed
    /// parameters), `m = lerp(m, g, 1 - b1)`, `v = b2*v + (1 - b2)*g*g`,
    /// `p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)`, computed by ATen's fused AdamW kernel
    /// (`torch._fused_adamw_`, one pass over the four flat buffers; csrc/fused_adamw.cpp)
    /// once for the decayed ranges and once for the others. `grad` may be rewritten.
    pub fn step_scaled(
        &mut self,
        grad: &Tensor,
        lr: f64,
        grad_scale: Option<&Tensor>,
        ok: Option<&Tensor>,
    ) -> Result<()> {
        let c = self.config;
        self.step += 1;
        let found_inf = ok.map(|o| o.logical_not().to_kind(Kind::Float));
        for (ranges, wd) in [(&self.decayed, c.weight_decay), (&self.not_decayed, 0.0)] {
            if ranges.is_empty() {
                continue;
            }
            fused_adamw(FusedArgs {
                param: &self.flat,
                grad,
                exp_avg: &self.exp_avg,
                exp_avg_sq: &self.exp_avg_sq,
                ranges,
                step: self.step as f64,
                lr,
                weight_decay: wd,
                config: &c,
                grad_scale,
                found_inf: found_inf.as_ref(),
            })?;
        }
        Ok(())
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

/// The global L2 norm of `grad` (0-d, no host sync) and the divisor that clips it to
/// `max_norm` as torch.nn.utils.clip_grad_norm_ does (coefficient `max_norm / (norm +
/// 1e-6)` clamped at 1; the divisor is its inverse), for [`FlatAdamW::step_scaled`], which
/// applies it inside the update instead of in a pass of its own.
pub fn clip_divisor(grad: &Tensor, max_norm: f64) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let norm = grad.norm();
        let divisor = ((&norm + 1e-6) / max_norm).clamp_min(1.0);
        (norm, divisor)
    })
}

extern "C" {
    fn embtune_fused_adamw(
        param: *const torch_sys::C_tensor,
        grad: *const torch_sys::C_tensor,
        exp_avg: *const torch_sys::C_tensor,
        exp_avg_sq: *const torch_sys::C_tensor,
        ranges: *const i64,
        n_ranges: usize,
        step: f64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        grad_scale: *const torch_sys::C_tensor,
        found_inf: *const torch_sys::C_tensor,
        err: *mut std::os::raw::c_char,
        err_len: usize,
    ) -> std::os::raw::c_int;
}

/// The arguments of one fused AdamW call over `ranges` of the flat buffers.
struct FusedArgs<'a> {
    param: &'a Tensor,
    grad: &'a Tensor,
    exp_avg: &'a Tensor,
    exp_avg_sq: &'a Tensor,
    ranges: &'a [(i64, i64)],
    step: f64,
    lr: f64,
    weight_decay: f64,
    config: &'a AdamWConfig,
    grad_scale: Option<&'a Tensor>,
    found_inf: Option<&'a Tensor>,
}

fn fused_adamw(a: FusedArgs<'_>) -> Result<()> {
    let flat_ranges: Vec<i64> = a.ranges.iter().flat_map(|&(o, n)| [o, n]).collect();
    let ptr = |t: Option<&Tensor>| t.map_or(std::ptr::null(), |t| t.as_ptr());
    let mut err = vec![0 as std::os::raw::c_char; 512];
    // Safety: every pointer is a live at::Tensor (tch's C_tensor) or null where the C side
    // allows it; `ranges` lie inside the flat buffers (built from their own offsets).
    let rc = unsafe {
        embtune_fused_adamw(
            a.param.as_ptr(),
            a.grad.as_ptr(),
            a.exp_avg.as_ptr(),
            a.exp_avg_sq.as_ptr(),
            flat_ranges.as_ptr(),
            a.ranges.len(),
            a.step,
            a.lr,
            a.config.beta1,
            a.config.beta2,
            a.weight_decay,
            a.config.eps,
            ptr(a.grad_scale),
            ptr(a.found_inf),
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
    Err(Error::Torch(format!(
        "fused AdamW step: {}",
        crate::error::one_line(&msg.to_string_lossy())
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn optimizer(values: &[f32]) -> (FlatAdamW, Tensor, Tensor) {
        let w = Tensor::from_slice(&values[..4]).set_requires_grad(true);
        let b = Tensor::from_slice(&values[4..]).set_requires_grad(true);
        let params = vec![
            ("layer.weight".to_string(), w.shallow_clone()),
            ("layer.bias".to_string(), b.shallow_clone()),
        ];
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        (FlatAdamW::new(params, cfg, Device::Cpu).unwrap(), w, b)
    }

    /// The divisor inside the fused step equals clipping the gradient first (the
    /// reference's clip_grad_norm_ then AdamW), and decay reaches only decayed tensors.
    #[test]
    fn clip_divisor_in_the_step_equals_clipping_first() {
        let values = [0.5f32, -1.0, 2.0, 0.25, 0.1, -0.2];
        let grad = Tensor::from_slice(&[3.0f32, -4.0, 1.0, 0.5, 2.0, -1.0]);
        let (mut a, wa, ba) = optimizer(&values);
        let (mut b, wb, bb) = optimizer(&values);
        for step in 0..3 {
            let lr = 1e-2 * (step + 1) as f64;
            let mut g = grad.copy();
            let norm_a = clip_grad_norm(&mut g, 1.0);
            a.step(&g, lr, None).unwrap();
            let (norm_b, divisor) = clip_divisor(&grad.copy(), 1.0);
            b.step_scaled(&grad.copy(), lr, Some(&divisor), Some(&Tensor::from(true)))
                .unwrap();
            assert_eq!(
                f64::try_from(&norm_a).unwrap(),
                f64::try_from(&norm_b).unwrap()
            );
        }
        for (x, y) in [(&wa, &wb), (&ba, &bb)] {
            let (x, y) = (
                Vec::<f32>::try_from(x.detach()).unwrap(),
                Vec::<f32>::try_from(y.detach()).unwrap(),
            );
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() <= 1e-6 * p.abs().max(1.0), "{x:?} vs {y:?}");
            }
        }
        // The step moved the weights (the comparison above is not between two no-ops).
        assert_ne!(
            Vec::<f32>::try_from(wa.detach()).unwrap(),
            values[..4].to_vec()
        );
    }
}
