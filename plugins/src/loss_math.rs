//! Tensor math shared by the contrastive losses: similarities that match
//! sentence-transformers' `util` functions op for op (so values and gradients agree to
//! rounding), shape checks that name both sides, and the duplicate-mask plumbing.
//!
//! Shapes: embeddings are `(B, D)`; `cos_sim` gives `(N, M)`, the pairwise functions `(B,)`.

use embtune_core::{Error, LossBatch, Result};
use tch::{Kind, Tensor};

/// `torch.nn.functional.normalize(x, p=2, dim=1)`: `x / max(||x||, 1e-12)`, row-wise.
pub fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    Ok(x.f_div(&norm.f_expand_as(x)?)?)
}

/// `util.cos_sim`: `(N, D) x (M, D) -> (N, M)` cosine similarities.
pub fn cos_sim(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(normalize(a)?.f_mm(&normalize(b)?.f_transpose(0, 1)?)?)
}

/// `util.pairwise_cos_sim`: `(B, D) x (B, D) -> (B,)`.
pub fn pairwise_cos_sim(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(normalize(a)?.f_mul(&normalize(b)?)?.f_sum_dim_intlist(
        [-1i64].as_slice(),
        false,
        None::<Kind>,
    )?)
}

/// `util.pairwise_angle_sim` (AnglE): each vector's two halves are the real and imaginary
/// parts of a complex vector; the score is `|sum(re + im)|` of the normalized quotient
/// `x / y`. An odd dimension is padded with one zero, as the reference does.
/// `(B, D) x (B, D) -> (B,)`.
pub fn pairwise_angle_sim(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (x, y) = if x.size()[1] % 2 != 0 {
        (
            x.f_constant_pad_nd([0i64, 1].as_slice())?,
            y.f_constant_pad_nd([0i64, 1].as_slice())?,
        )
    } else {
        (x.shallow_clone(), y.shallow_clone())
    };
    let (xs, ys) = (x.f_chunk(2, 1)?, y.f_chunk(2, 1)?);
    let (a, b, c, d) = (&xs[0], &xs[1], &ys[0], &ys[1]);
    let sum1 = |t: Tensor| t.f_sum_dim_intlist([1i64].as_slice(), true, None::<Kind>);
    let z = sum1(c.f_square()?.f_add(&d.f_square()?)?)?;
    let re = a.f_mul(c)?.f_add(&b.f_mul(d)?)?.f_div(&z)?;
    let im = b.f_mul(c)?.f_sub(&a.f_mul(d)?)?.f_div(&z)?;
    let dz = sum1(a.f_square()?.f_add(&b.f_square()?)?)?.f_pow_tensor_scalar(0.5)?;
    let dw = z.f_pow_tensor_scalar(0.5)?;
    let ratio = dz.f_div(&dw)?;
    let (re, im) = (re.f_div(&ratio)?, im.f_div(&ratio)?);
    Ok(Tensor::f_cat(&[re, im], 1)?
        .f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?
        .f_abs()?)
}

/// Checks the embedding columns of a batch: between `min` and `max` tensors, all `(B, D)`
/// with one B and one D. Returns `(B, D)`. `loss` names the loss in the error.
pub fn check_columns(
    loss: &str,
    embeddings: &[Tensor],
    min: usize,
    max: Option<usize>,
) -> Result<(i64, i64)> {
    let n = embeddings.len();
    if n < min || max.is_some_and(|m| n > m) {
        let want = match max {
            Some(m) if m == min => format!("{min}"),
            Some(m) => format!("{min} to {m}"),
            None => format!("at least {min}"),
        };
        return Err(Error::Invalid(format!(
            "loss '{loss}': expected {want} embedding columns, got {n}"
        )));
    }
    let (b, d) = match embeddings[0].size()[..] {
        [b, d] => (b, d),
        ref other => {
            return Err(Error::Invalid(format!(
                "loss '{loss}': column 0 has shape {other:?}, expected (B, D)"
            )));
        }
    };
    for (k, e) in embeddings.iter().enumerate().skip(1) {
        if e.size() != [b, d] {
            return Err(Error::Invalid(format!(
                "loss '{loss}': column {k} has shape {:?} but column 0 has [{b}, {d}]",
                e.size()
            )));
        }
    }
    if b == 0 {
        return Err(Error::Invalid(format!("loss '{loss}': empty batch")));
    }
    Ok((b, d))
}

/// The batch's duplicate mask checked to be `(B, B*docs)` and moved to `device`, with row
/// i's own positive (column i) forced off. None when the batch has no mask.
pub fn checked_mask(
    loss: &str,
    batch: &LossBatch<'_>,
    b: i64,
    docs: i64,
    device: tch::Device,
) -> Result<Option<Tensor>> {
    let Some(mask) = batch.duplicate_mask else {
        return Ok(None);
    };
    if mask.size() != [b, b * docs] {
        return Err(Error::Invalid(format!(
            "loss '{loss}': duplicate mask has shape {:?} but the batch needs [{b}, {}] (B x B*document columns)",
            mask.size(),
            b * docs
        )));
    }
    let mask = mask.f_to_device(device)?.f_to_kind(Kind::Bool)?;
    let own = own_positive(b, docs, device)?;
    Ok(Some(mask.f_logical_and(&own.f_logical_not()?)?))
}

/// `(B, B*docs)` boolean: true at row i, column i (each row's own positive).
pub fn own_positive(b: i64, docs: i64, device: tch::Device) -> Result<Tensor> {
    let eye = Tensor::f_eye(b, (Kind::Bool, device))?;
    let zeros = Tensor::f_zeros([b, b * (docs - 1)], (Kind::Bool, device))?;
    Ok(Tensor::f_cat(&[eye, zeros], 1)?)
}

/// `(B, B*docs)` boolean: true where the candidate belongs to row i (its positive and its
/// own hard negatives), the reference's `eye(B).repeat(1, docs)`.
pub fn own_documents(b: i64, docs: i64, device: tch::Device) -> Result<Tensor> {
    Ok(Tensor::f_eye(b, (Kind::Bool, device))?.f_repeat([1i64, docs].as_slice())?)
}

/// Naive, loop-based references and batch helpers for the losses' property tests.
#[cfg(test)]
pub(crate) mod test_support {
    use tch::Tensor;

    /// Rows of each `(B, D)` column as plain vectors.
    pub fn rows(emb: &[Tensor]) -> Vec<Vec<Vec<f64>>> {
        emb.iter()
            .map(|e| Vec::<Vec<f64>>::try_from(e).unwrap())
            .collect()
    }

    /// A 2-d boolean tensor as nested vectors.
    pub fn to_vec2(t: &Tensor) -> Vec<Vec<bool>> {
        Vec::<Vec<bool>>::try_from(t).unwrap()
    }

    /// Every column with its rows reordered by `perm` (row k of the result = row perm[k]).
    pub fn permute_rows(emb: &[Tensor], perm: &[i64]) -> Vec<Tensor> {
        let idx = Tensor::from_slice(perm);
        emb.iter().map(|e| e.index_select(0, &idx)).collect()
    }

    pub fn cos(x: &[f64], y: &[f64]) -> f64 {
        let dot: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
        let n = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        dot / (n(x) * n(y))
    }

    pub fn logsumexp(v: &[f64]) -> f64 {
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    }

    /// MNRL by loops: `cols = [queries, positives, negatives...]` as rows; `mask[i][c*B + j]`
    /// drops candidate (c, j) of row i (never the own positive). `symmetric` adds the
    /// doc->query term with its own softmax and averages the two log-partitions.
    pub fn naive_ranking(
        cols: &[Vec<Vec<f64>>],
        scale: f64,
        symmetric: bool,
        mask: Option<&[Vec<bool>]>,
    ) -> f64 {
        let b = cols[0].len();
        let masked = |i: usize, col: usize| mask.is_some_and(|m| m[i][col]) && col != i;
        let mut total = 0.0;
        for i in 0..b {
            let q = &cols[0][i];
            let mut terms = Vec::new();
            for (c, doc) in cols[1..].iter().enumerate() {
                for (j, d) in doc.iter().enumerate() {
                    if !masked(i, c * b + j) {
                        terms.push(scale * cos(q, d));
                    }
                }
            }
            let mut log_z = logsumexp(&terms);
            if symmetric {
                let p = &cols[1][i];
                let back: Vec<f64> = (0..b)
                    .filter(|&j| !(j != i && masked(j, i)))
                    .map(|j| scale * cos(&cols[0][j], p))
                    .collect();
                log_z = (log_z + logsumexp(&back)) / 2.0;
            }
            total += log_z - scale * cos(q, &cols[1][i]);
        }
        total / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_core::testing::random_embeddings;

    #[test]
    fn cos_sim_is_bounded_and_one_on_the_diagonal() {
        let a = random_embeddings(4, 6, 1);
        let s = cos_sim(&a, &a).unwrap();
        let diag = s.diagonal(0, 0, 1);
        assert!(diag.allclose(
            &Tensor::ones([4], (Kind::Double, tch::Device::Cpu)),
            1e-12,
            1e-12,
            false
        ));
        assert!(s.abs().max().double_value(&[]) <= 1.0 + 1e-12);
        let p = pairwise_cos_sim(&a, &random_embeddings(4, 6, 2)).unwrap();
        assert_eq!(p.size(), [4]);
    }

    #[test]
    fn angle_sim_of_a_vector_with_itself_is_one() {
        for d in [6, 7] {
            let a = random_embeddings(3, d, 3);
            let s = pairwise_angle_sim(&a, &a).unwrap();
            assert!(
                s.allclose(
                    &Tensor::ones([3], (Kind::Double, tch::Device::Cpu)),
                    1e-12,
                    1e-12,
                    false
                ),
                "d={d}"
            );
        }
    }

    #[test]
    fn column_checks_name_both_sides() {
        let cols = [random_embeddings(3, 4, 1), random_embeddings(2, 4, 2)];
        let e = check_columns("mnrl", &cols, 2, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("column 1 has shape [2, 4] but column 0 has [3, 4]"),
            "{e}"
        );
        let e = check_columns("triplet", &cols[..1], 3, Some(3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected 3 embedding columns, got 1"), "{e}");
    }

    #[test]
    fn own_masks() {
        let own = own_documents(2, 2, tch::Device::Cpu);
        let v: Vec<bool> = Vec::try_from(own.unwrap().flatten(0, 1)).unwrap();
        assert_eq!(v, [true, false, true, false, false, true, false, true]);
        let pos: Vec<bool> =
            Vec::try_from(own_positive(2, 2, tch::Device::Cpu).unwrap().flatten(0, 1)).unwrap();
        assert_eq!(pos, [true, false, false, false, false, true, false, false]);
    }
}
