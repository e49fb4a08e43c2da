//! The layers the backbones share, as functions over prepared (cast, fused) tensors:
//! attention through `scaled_dot_product_attention` with additive padding, sliding-window
//! and causal masks; LayerNorm; RMSNorm (Gemma's `(1 + w)` and the plain `w` scale); rotary
//! position embeddings (rotate-half); gated MLPs (GeGLU, SwiGLU) over a fused gate/up
//! matrix; and [`Unpad`], which runs everything but attention on the real tokens only.
//!
//! Shapes: token rows are `(t, c)` (unpadded) or `(b * s, c)`; attention works on
//! `(b, heads, s, head_dim)`; masks are additive, `0` where a key is visible and the compute
//! dtype's lowest value where it is not, broadcast over heads.

use super::lora::PreparedLinear;
use tch::{Device, Kind, Tensor};

use crate::error::Result;

/// The value an additive mask puts on hidden keys: the lowest finite value of `kind`
/// (bf16's for bf16, fp32's otherwise), so that softmax gives them zero weight.
pub fn mask_min(kind: Kind) -> f64 {
    if kind == Kind::BFloat16 {
        -3.3895313892515355e38
    } else {
        f32::MIN as f64
    }
}

/// The additive form of a boolean `visible` tensor: 0 where true, [`mask_min`] where false.
fn additive(visible: &Tensor, kind: Kind) -> Tensor {
    Tensor::zeros(visible.size(), (kind, visible.device()))
        .masked_fill(&visible.logical_not(), mask_min(kind))
}

/// Key padding mask `(b, 1, 1, s)` in `kind` for `mask (b, s)` (1 = real token): every query
/// sees every real key (bidirectional attention).
pub fn padding_mask(mask: &Tensor, kind: Kind) -> Result<Tensor> {
    let (b, s) = mask.size2()?;
    let real = mask.to_kind(Kind::Bool).view([b, 1, 1, s]);
    Ok(additive(&real, kind))
}

/// Bidirectional sliding-window mask `(b, 1, s, s)` in `kind`: query `q` sees the real keys
/// `k` with `|q - k| < window`.
pub fn sliding_window_mask(mask: &Tensor, window: i64, kind: Kind) -> Result<Tensor> {
    let (b, s) = mask.size2()?;
    let real = mask.to_kind(Kind::Bool).view([b, 1, 1, s]);
    let pos = Tensor::arange(s, (Kind::Int64, mask.device()));
    let dist = (pos.unsqueeze(1) - pos.unsqueeze(0)).abs(); // (s, s): |q - k|
    let visible = dist.lt(window).view([1, 1, s, s]).logical_and(&real);
    Ok(additive(&visible, kind))
}

/// Causal mask `(b, 1, s, s)` in `kind` for decoders: query `q` sees the real keys `k <= q`,
/// and with `window: Some(w)` only those with `q - k < w` (a causal sliding window, as
/// transformers' `sliding_window` in causal models). Padding is on the right, so every
/// query, padded ones included, sees at least the first token and no row is all hidden.
pub fn causal_mask(mask: &Tensor, window: Option<i64>, kind: Kind) -> Result<Tensor> {
    let (b, s) = mask.size2()?;
    let real = mask.to_kind(Kind::Bool).view([b, 1, 1, s]);
    let pos = Tensor::arange(s, (Kind::Int64, mask.device()));
    let ahead = pos.unsqueeze(1) - pos.unsqueeze(0); // (s, s): q - k
    let mut visible = ahead.ge(0);
    if let Some(w) = window {
        visible = visible.logical_and(&ahead.lt(w));
    }
    let visible = visible.view([1, 1, s, s]).logical_and(&real);
    Ok(additive(&visible, kind))
}

/// Scaled dot-product attention of `q (b, nh, s, hd)` over `k, v (b, nkv, s, hd)` with an
/// additive `mask` (one of the masks above). Grouped-query attention (`nkv < nh`) repeats
/// each key/value head `nh / nkv` times. `scale` defaults to `hd^-0.5`; `dropout` is the
/// attention dropout probability (0 outside training). Returns `(b, nh, s, hd)`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    dropout: f64,
    scale: Option<f64>,
) -> Result<Tensor> {
    let (nh, nkv) = (q.size()[1], k.size()[1]);
    let (k, v) = if nkv != nh {
        let rep = nh / nkv;
        (
            k.repeat_interleave_self_int(rep, 1, None),
            v.repeat_interleave_self_int(rep, 1, None),
        )
    } else {
        (k.shallow_clone(), v.shallow_clone())
    };
    Ok(Tensor::f_scaled_dot_product_attention(
        q,
        &k,
        &v,
        Some(mask),
        dropout,
        false,
        scale,
        false,
    )?)
}

/// LayerNorm over the last dimension with weight `w` and bias `b`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
    let h = x.size()[x.dim() - 1];
    x.layer_norm([h], Some(w), Some(b), eps, true)
}

/// How an RMSNorm applies its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmsWeight {
    /// Gemma: `x * rsqrt(mean(x^2) + eps) * (1 + w)`, all in fp32, cast back at the end.
    OnePlus,
    /// Llama / Qwen: `w * (x * rsqrt(mean(x^2) + eps))`, normalized in fp32, cast back to
    /// the input dtype before the weight (in the compute dtype) multiplies it.
    Plain,
}

/// RMSNorm over the last dimension, computed in fp32 (see [`RmsWeight`]).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, weight: RmsWeight) -> Tensor {
    let kind = x.kind();
    let xf = x.to_kind(Kind::Float);
    let var = xf.square().mean_dim(-1, true, Kind::Float);
    let out = xf * (var + eps).rsqrt();
    match weight {
        RmsWeight::OnePlus => (out * (w.to_kind(Kind::Float) + 1.0)).to_kind(kind),
        RmsWeight::Plain => w * out.to_kind(kind),
    }
}

/// Rotary position embeddings of one frequency base: inverse frequencies `(dim / 2,)` fp32,
/// kept as numbers so that a backbone holding a `Rope` holds no tensor (and is `Sync`).
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    /// transformers' default rope: `1 / base^(arange(0, dim, 2) / dim)`, divided by
    /// `linear_factor` (1 without `linear` rope scaling).
    pub fn new(base: f64, dim: i64, linear_factor: f64) -> Result<Self> {
        let exponent = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, Device::Cpu))
            .to_kind(Kind::Float)
            / (dim as f64);
        let inv_freq = Tensor::from(base as f32).pow(&exponent).reciprocal();
        let inv_freq = if linear_factor != 1.0 {
            inv_freq / linear_factor
        } else {
            inv_freq
        };
        Ok(Rope {
            inv_freq: Vec::<f32>::try_from(&inv_freq)?,
        })
    }

    /// `(cos, sin)`, each `(s, dim)` in `kind`, for positions `0..s` (the angles are
    /// computed in fp32, then cast).
    pub fn cos_sin(&self, s: i64, device: Device, kind: Kind) -> (Tensor, Tensor) {
        let pos = Tensor::arange(s, (Kind::Float, device));
        let freqs = pos.unsqueeze(1)
            * Tensor::from_slice(&self.inv_freq)
                .to_device(device)
                .unsqueeze(0); // (s, dim/2)
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

/// The two halves of the last dimension swapped, the first negated: `[-x2, x1]`.
pub fn rotate_half(x: &Tensor) -> Tensor {
    let d = x.size()[x.dim() - 1];
    let x1 = x.narrow(-1, 0, d / 2);
    let x2 = x.narrow(-1, d / 2, d / 2);
    Tensor::cat(&[&x2.neg(), &x1], -1)
}

/// Rotary embedding of `x (b, heads, s, dim)` with `cos, sin (s, dim)` from [`Rope::cos_sin`]:
/// `x * cos + rotate_half(x) * sin`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    x * cos + rotate_half(x) * sin
}

/// The activation of a gated MLP's gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateActivation {
    /// GeGLU with the tanh GELU (`gelu_pytorch_tanh`: Gemma).
    GeluTanh,
    /// SwiGLU (`silu`: Llama, Qwen).
    Silu,
}

/// `down(act(gate(x)) * up(x))` with `gate_up (2 i, h)` the gate and up projections fused
/// (gate rows first, as `CastWeights::linear(&[gate, up], None)` fuses them) and
/// `down (h, i)`; no biases. `train` enables the LoRA branches' dropout.
pub fn gated_mlp(
    x: &Tensor,
    gate_up: &PreparedLinear,
    down: &PreparedLinear,
    act: GateActivation,
    train: bool,
) -> Tensor {
    let i = gate_up.out_features() / 2;
    let gu = gate_up.forward(x, train);
    let gate = gu.narrow(-1, 0, i);
    let up = gu.narrow(-1, i, i);
    let gate = match act {
        GateActivation::GeluTanh => gate.gelu("tanh"),
        GateActivation::Silu => gate.silu(),
    };
    down.forward(&(gate * up), train)
}

/// Unpadding for the backbones' forward passes: the linear layers, norms, residuals and
/// dropout (nearly all the work) run on the real tokens of a right-padded `(b, s)` batch
/// only, as `(t, c)` matrices; attention alone needs the `(b, s)` layout and gets the rows
/// scattered into it (zeros at padding, which the key mask hides) and gathered back. Row
/// results equal the padded computation's. A batch without padding keeps the plain layout.
pub struct Unpad {
    /// Flat indices `(t,)` of the real tokens in the `(b * s)` layout.
    real: Tensor,
    b: i64,
    s: i64,
    /// False when every token is real (nothing to gather or scatter).
    active: bool,
}

impl Unpad {
    /// For `mask (b, s)` (1 = real token).
    pub fn new(mask: &Tensor, b: i64, s: i64) -> Self {
        let real = mask.view([-1]).nonzero().squeeze_dim(1);
        let active = real.size()[0] < b * s;
        Unpad { real, b, s, active }
    }

    /// The real tokens' entries `(t,)` of a `(b, s)` tensor (token ids, say).
    pub fn tokens(&self, m: &Tensor) -> Tensor {
        self.from_padded(&m.view([-1]))
    }

    /// The position in its row of each real token, `(t,)` int64.
    pub fn positions(&self) -> Tensor {
        if self.active {
            self.real.remainder(self.s)
        } else {
            Tensor::arange(self.s, (Kind::Int64, self.real.device())).repeat([self.b])
        }
    }

    /// `(t, c)` rows into the `(b * s, c)` layout, zeros at padding.
    pub fn to_padded(&self, m: &Tensor) -> Tensor {
        if self.active {
            let c = m.size()[1];
            Tensor::zeros([self.b * self.s, c], (m.kind(), m.device())).index_copy(0, &self.real, m)
        } else {
            m.shallow_clone()
        }
    }

    /// The real tokens' rows `(t, ...)` of a `(b * s, ...)` tensor.
    pub fn from_padded(&self, m: &Tensor) -> Tensor {
        if self.active {
            m.index_select(0, &self.real)
        } else {
            m.shallow_clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two rows, right padded: 5 real tokens, then 3.
    fn batch_mask() -> Tensor {
        Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 0, 0]).view([2, 5])
    }

    /// Checks an additive `(b, 1, rows, s)` mask against `visible(b, q, k)`.
    fn check(m: &Tensor, visible: impl Fn(usize, usize, usize) -> bool) {
        let size = m.size();
        let (b, rows, s) = (size[0] as usize, size[2] as usize, size[3] as usize);
        let v = Vec::<f32>::try_from(m.contiguous().view([-1])).unwrap();
        for bi in 0..b {
            for q in 0..rows {
                for k in 0..s {
                    let got = v[(bi * rows + q) * s + k];
                    let want = if visible(bi, q, k) { 0.0 } else { f32::MIN };
                    assert_eq!(got, want, "row {bi}, query {q}, key {k}");
                }
            }
        }
    }

    fn real(mask: &Tensor) -> Vec<Vec<bool>> {
        let (b, s) = mask.size2().unwrap();
        let v = Vec::<i64>::try_from(mask.view([-1])).unwrap();
        (0..b as usize)
            .map(|r| {
                (0..s as usize)
                    .map(|c| v[r * s as usize + c] == 1)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn padding_mask_hides_padded_keys() {
        let mask = batch_mask();
        let r = real(&mask);
        let m = padding_mask(&mask, Kind::Float).unwrap();
        assert_eq!(m.size(), vec![2, 1, 1, 5]);
        check(&m, |b, _, k| r[b][k]);
    }

    #[test]
    fn sliding_window_mask_matches_a_naive_loop() {
        let mask = batch_mask();
        let r = real(&mask);
        for w in [1i64, 2, 3, 10] {
            let m = sliding_window_mask(&mask, w, Kind::Float).unwrap();
            assert_eq!(m.size(), vec![2, 1, 5, 5]);
            check(&m, |b, q, k| r[b][k] && (q as i64 - k as i64).abs() < w);
        }
    }

    #[test]
    fn causal_mask_matches_a_naive_loop() {
        let mask = batch_mask();
        let r = real(&mask);
        let m = causal_mask(&mask, None, Kind::Float).unwrap();
        assert_eq!(m.size(), vec![2, 1, 5, 5]);
        check(&m, |b, q, k| r[b][k] && k <= q);
        for w in [1i64, 2, 4] {
            let m = causal_mask(&mask, Some(w), Kind::Float).unwrap();
            check(&m, |b, q, k| r[b][k] && k <= q && (q - k) < w as usize);
        }
    }

    #[test]
    fn bf16_masks_use_the_bf16_minimum() {
        let m = causal_mask(&batch_mask(), None, Kind::BFloat16).unwrap();
        assert_eq!(m.kind(), Kind::BFloat16);
        let lowest = m.to_kind(Kind::Float).min().double_value(&[]);
        assert_eq!(lowest, mask_min(Kind::BFloat16));
    }

    /// Causal attention against softmax(q k^T / sqrt(d) + hidden) v written out per row.
    #[test]
    fn causal_attention_matches_a_naive_loop() {
        tch::manual_seed(7);
        let (b, nh, nkv, s, d) = (2usize, 4usize, 2usize, 5usize, 3usize);
        let opts = (Kind::Float, Device::Cpu);
        let q = Tensor::randn([b as i64, nh as i64, s as i64, d as i64], opts);
        let k = Tensor::randn([b as i64, nkv as i64, s as i64, d as i64], opts);
        let v = Tensor::randn([b as i64, nkv as i64, s as i64, d as i64], opts);
        let mask = batch_mask();
        let r = real(&mask);
        let m = causal_mask(&mask, None, Kind::Float).unwrap();
        let got = attention(&q, &k, &v, &m, 0.0, None).unwrap();
        let got = Vec::<f32>::try_from(got.contiguous().view([-1])).unwrap();
        let flat = |t: &Tensor| Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap();
        let (qv, kv, vv) = (flat(&q), flat(&k), flat(&v));
        let at = |t: &[f32], heads: usize, bi: usize, h: usize, i: usize, j: usize| {
            t[((bi * heads + h) * s + i) * d + j]
        };
        for (bi, real_keys) in r.iter().enumerate() {
            for h in 0..nh {
                let kh = h / (nh / nkv);
                for qi in 0..s {
                    let keys: Vec<usize> = (0..=qi).filter(|&k| real_keys[k]).collect();
                    let scores: Vec<f64> = keys
                        .iter()
                        .map(|&ki| {
                            (0..d)
                                .map(|j| {
                                    at(&qv, nh, bi, h, qi, j) as f64
                                        * at(&kv, nkv, bi, kh, ki, j) as f64
                                })
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let top = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|x| (x - top).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for j in 0..d {
                        let want: f64 = keys
                            .iter()
                            .zip(&e)
                            .map(|(&ki, w)| w / z * at(&vv, nkv, bi, kh, ki, j) as f64)
                            .sum();
                        let g = at(&got, nh, bi, h, qi, j) as f64;
                        assert!((g - want).abs() < 1e-5, "{bi} {h} {qi} {j}: {g} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn rms_norm_weights() {
        let x = Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]);
        let w = Tensor::from_slice(&[0.5f32, 2.0]);
        let inv = 1.0 / ((9.0f64 + 16.0) / 2.0 + 1e-6).sqrt();
        let one_plus =
            Vec::<f32>::try_from(rms_norm(&x, &w, 1e-6, RmsWeight::OnePlus).view([-1])).unwrap();
        let plain =
            Vec::<f32>::try_from(rms_norm(&x, &w, 1e-6, RmsWeight::Plain).view([-1])).unwrap();
        for (i, (xi, wi)) in [(3.0, 0.5), (4.0, 2.0)].iter().enumerate() {
            assert!((one_plus[i] as f64 - xi * inv * (1.0 + wi)).abs() < 1e-5);
            assert!((plain[i] as f64 - xi * inv * wi).abs() < 1e-5);
        }
    }

    #[test]
    fn rotate_half_swaps_and_negates() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]);
        let got = Vec::<f32>::try_from(rotate_half(&x)).unwrap();
        assert_eq!(got, vec![-3.0, -4.0, 1.0, 2.0]);
    }

    #[test]
    fn unpad_round_trips_real_rows() {
        let mask = batch_mask();
        let u = Unpad::new(&mask, 2, 5);
        let ids = Tensor::arange(10, (Kind::Int64, Device::Cpu)).view([2, 5]);
        let t = u.tokens(&ids);
        assert_eq!(
            Vec::<i64>::try_from(&t).unwrap(),
            vec![0, 1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(
            Vec::<i64>::try_from(u.positions()).unwrap(),
            vec![0, 1, 2, 3, 4, 0, 1, 2]
        );
        let rows = t.to_kind(Kind::Float).view([8, 1]);
        let padded = u.to_padded(&rows);
        assert_eq!(padded.size(), vec![10, 1]);
        assert!(u.from_padded(&padded).equal(&rows));
    }
}
