//! The forward-pass side of LoRA adapters (`embtune train --lora`, [`crate::lora`]): what an
//! architecture's [`super::Architecture::prepare`] reads ([`CastWeights`]: the parameters
//! cast for the forward precision plus the adapter branches of the adapted weights) and the
//! linear layer it prepares from them ([`PreparedLinear`]).
//!
//! A LoRA branch follows PEFT's `lora.Linear.forward` (peft/tuners/lora/layer.py):
//! `y = base(x) + lora_B(lora_A(dropout(x))) * scaling` with `scaling = alpha / r`, the base
//! weight frozen and only `A (r, in)` and `B (out, r)` trained. The branch runs beside the
//! base matmul in every forward (never merged into the weight during training), so the
//! base weight gets no gradient, the dropout of the branch input is PEFT's, and each
//! forward has its own small graph (GradCache and gradient accumulation backpropagate
//! several times per prepared weights). When q/k/v (or gate/up) are fused into one matrix,
//! each part's branch adds into that part's rows of the fused output.

use std::collections::HashMap;
use std::ops::Index;

use tch::Tensor;

use super::params::ParamId;

/// One adapter as a forward pass uses it: `A (r, in)` and `B (out, r)` in the forward's
/// precision (differentiable casts of the fp32 adapter parameters), the scaling and the
/// dropout probability of the branch input.
pub struct Branch {
    /// `lora_A.weight`, `(r, in)`.
    pub a: Tensor,
    /// `lora_B.weight`, `(out, r)`.
    pub b: Tensor,
    /// `alpha / r`.
    pub scale: f64,
    /// Dropout probability of the branch input (training only).
    pub dropout: f64,
}

impl Branch {
    /// `lora_B(lora_A(dropout(x))) * scale` for `x (t, in)`: `(t, out)`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let x = if train && self.dropout > 0.0 {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        x.linear::<Tensor>(&self.a, None)
            .linear::<Tensor>(&self.b, None)
            * self.scale
    }
}

/// What [`super::Architecture::prepare`] reads: every parameter cast to the forward's
/// precision (indexed by [`ParamId`], the embedding tables left fp32) and, when the encoder
/// carries LoRA adapters, the branch of each adapted weight.
pub struct CastWeights<'a> {
    tensors: &'a [Tensor],
    branches: Option<&'a HashMap<ParamId, Branch>>,
}

impl<'a> CastWeights<'a> {
    /// Weights without adapters.
    pub fn plain(tensors: &'a [Tensor]) -> Self {
        CastWeights {
            tensors,
            branches: None,
        }
    }

    /// Weights whose entries in `branches` (keyed by the adapted weight's id) carry a LoRA
    /// branch.
    pub fn with_branches(tensors: &'a [Tensor], branches: &'a HashMap<ParamId, Branch>) -> Self {
        CastWeights {
            tensors,
            branches: Some(branches),
        }
    }

    /// A linear layer whose weight is the row-wise concatenation of `weights` (one part:
    /// that weight; q/k/v: the fused matrix) and whose bias is the concatenation of
    /// `biases` (None: no bias; else one bias per weight). Each part that carries an
    /// adapter gets its branch at its rows.
    pub fn linear(&self, weights: &[ParamId], biases: Option<&[ParamId]>) -> PreparedLinear {
        let parts: Vec<&Tensor> = weights.iter().map(|&id| &self.tensors[id]).collect();
        let w = if parts.len() == 1 {
            parts[0].shallow_clone()
        } else {
            Tensor::cat(&parts, 0)
        };
        let b = biases.map(|ids| {
            if ids.len() == 1 {
                self.tensors[ids[0]].shallow_clone()
            } else {
                let bs: Vec<&Tensor> = ids.iter().map(|&id| &self.tensors[id]).collect();
                Tensor::cat(&bs, 0)
            }
        });
        let mut branches = Vec::new();
        let mut offset = 0;
        for (&id, part) in weights.iter().zip(&parts) {
            let rows = part.size()[0];
            if let Some(br) = self.branches.and_then(|m| m.get(&id)) {
                branches.push(PlacedBranch {
                    offset,
                    rows,
                    branch: Branch {
                        a: br.a.shallow_clone(),
                        b: br.b.shallow_clone(),
                        scale: br.scale,
                        dropout: br.dropout,
                    },
                });
            }
            offset += rows;
        }
        PreparedLinear {
            w,
            b,
            out: offset,
            branches,
        }
    }
}

impl Index<ParamId> for CastWeights<'_> {
    type Output = Tensor;
    fn index(&self, id: ParamId) -> &Tensor {
        &self.tensors[id]
    }
}

/// A branch and the rows of the (possibly fused) output it adds into.
struct PlacedBranch {
    offset: i64,
    rows: i64,
    branch: Branch,
}

/// A linear layer prepared for forward passes: weight `(out, in)`, optional bias, and the
/// LoRA branches of its parts (none without adapters, and then [`Self::forward`] is the
/// plain `x W^T + b`).
pub struct PreparedLinear {
    w: Tensor,
    b: Option<Tensor>,
    out: i64,
    branches: Vec<PlacedBranch>,
}

impl PreparedLinear {
    /// `x W^T + b` plus every branch in its rows, for `x (.., in)`: `(.., out)`. Branch
    /// dropout only when `train`.
    // Out of place on purpose: tch's `+=` is an in-place add on a tensor in the graph.
    #[allow(clippy::assign_op_pattern)]
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.linear(&self.w, self.b.as_ref());
        for p in &self.branches {
            let d = p.branch.forward(x, train);
            let d = if p.rows == self.out {
                d
            } else {
                d.constant_pad_nd([p.offset, self.out - p.offset - p.rows])
            };
            y = y + d;
        }
        y
    }

    /// Output features (rows of the fused weight).
    pub fn out_features(&self) -> i64 {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// A fused q/k/v layer with branches on q and v equals three separate layers with
    /// `base(x) + B(A(x)) * s` on q and v (PEFT's formula), part by part.
    #[test]
    fn fused_branches_land_in_their_rows() {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let (h, r, t) = (6, 2, 5);
        let ws: Vec<Tensor> = (0..3).map(|_| Tensor::randn([h, h], opts)).collect();
        let bs: Vec<Tensor> = (0..3).map(|_| Tensor::randn([h], opts)).collect();
        let mut tensors = ws.iter().map(|t| t.shallow_clone()).collect::<Vec<_>>();
        tensors.extend(bs.iter().map(|t| t.shallow_clone()));
        let mut branches = HashMap::new();
        for id in [0usize, 2] {
            branches.insert(
                id,
                Branch {
                    a: Tensor::randn([r, h], opts),
                    b: Tensor::randn([h, r], opts),
                    scale: 2.0,
                    dropout: 0.0,
                },
            );
        }
        let cw = CastWeights::with_branches(&tensors, &branches);
        let lin = cw.linear(&[0, 1, 2], Some(&[3, 4, 5]));
        assert_eq!(lin.out_features(), 3 * h);
        let x = Tensor::randn([t, h], opts);
        let got = lin.forward(&x, true);
        for part in 0..3usize {
            let mut want = x.linear(&ws[part], Some(&bs[part]));
            if let Some(br) = branches.get(&part) {
                want += x.matmul(&br.a.tr()).matmul(&br.b.tr()) * 2.0;
            }
            let g = got.narrow(1, part as i64 * h, h);
            let diff = (g - want).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "part {part}: {diff}");
        }
    }

    /// Dropout on the branch input only: with p > 0 in training the branch changes, the
    /// base part does not, and outside training the branch is deterministic.
    #[test]
    fn dropout_applies_to_the_branch_input_in_training_only() {
        tch::manual_seed(4);
        let opts = (Kind::Float, Device::Cpu);
        let w = Tensor::randn([4, 4], opts);
        let tensors = vec![w.shallow_clone()];
        let mut branches = HashMap::new();
        branches.insert(
            0,
            Branch {
                a: Tensor::randn([2, 4], opts),
                b: Tensor::randn([4, 2], opts),
                scale: 1.0,
                dropout: 0.5,
            },
        );
        let lin = CastWeights::with_branches(&tensors, &branches).linear(&[0], None);
        let x = Tensor::randn([64, 4], opts);
        let eval = lin.forward(&x, false);
        let full = x.linear::<Tensor>(&w, None)
            + x.matmul(&branches[&0].a.tr()).matmul(&branches[&0].b.tr());
        assert!((&eval - &full).abs().max().double_value(&[]) < 1e-5);
        let train = lin.forward(&x, true);
        assert!((&train - &full).abs().max().double_value(&[]) > 1e-3);
    }
}
