//! Exact nearest-neighbour search in bounded memory: the top `k` corpus rows of every query
//! row by inner product, computed block by block with a running top-k, so the full
//! `(queries, corpus)` score matrix never exists.
//!
//! This is the search of sentence-transformers' `mine_hard_negatives` without FAISS
//! (`sentence_transformers/util/hard_negatives.py`: `model.similarity` on a batch of
//! queries, then `torch.topk(k=range_max + max_positives)`), bounded in the corpus
//! direction as well. With unit-length embeddings the inner product is the cosine
//! similarity. Used by `embtune mine` and reusable by anything that needs a model's nearest
//! documents (a model-mined sampler, say).

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Default rows per block of [`top_k_blocked`]: a block of scores is at most
/// `4096 * 4096` fp32 values (64 MiB).
pub const DEFAULT_BLOCK_ROWS: usize = 4096;

/// The `k` highest inner products of each query row with the corpus rows.
///
/// - `queries`: `(q, d)`, `corpus`: `(n, d)`, any float kind (bf16 embeddings are upcast
///   block by block; every product is computed in fp32), on one device.
/// - Returns `(scores, indices)`, both `(q, min(k, n))` on the CPU: `scores` fp32, sorted
///   descending along each row; `indices` int64 rows of `corpus`.
/// - Memory: the queries are taken `block_rows` at a time and the corpus `block_rows` rows
///   at a time, so besides the inputs and the result the search holds one
///   `(block_rows, block_rows)` block of scores and two `(block_rows, k)` running top-k
///   buffers. Ties are broken as `torch.topk` breaks them (no promised order).
pub fn top_k_blocked(
    queries: &Tensor,
    corpus: &Tensor,
    k: usize,
    block_rows: usize,
) -> Result<(Tensor, Tensor)> {
    top_k_blocked_with_progress(queries, corpus, k, block_rows, &mut |_| {})
}

/// [`top_k_blocked`] calling `progress(done)` with the number of query rows finished after
/// every chunk of queries.
pub fn top_k_blocked_with_progress(
    queries: &Tensor,
    corpus: &Tensor,
    k: usize,
    block_rows: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<(Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
    let (nq, dq) = queries.size2()?;
    let (nc, dc) = corpus.size2()?;
    if dq != dc {
        return Err(Error::Invalid(format!(
            "top_k_blocked: queries are ({nq}, {dq}) but the corpus is ({nc}, {dc}); the embedding widths must match"
        )));
    }
    if queries.device() != corpus.device() {
        return Err(Error::Invalid(format!(
            "top_k_blocked: queries on {:?} but the corpus on {:?}; move both to one device",
            queries.device(),
            corpus.device()
        )));
    }
    let block = block_rows.max(1) as i64;
    let k = (k as i64).min(nc);
    let mut all_scores: Vec<f32> = Vec::with_capacity((nq * k) as usize);
    let mut all_indices: Vec<i64> = Vec::with_capacity((nq * k) as usize);
    if k > 0 {
        let mut qs = 0;
        while qs < nq {
            let qn = block.min(nq - qs);
            let qchunk = queries.narrow(0, qs, qn).to_kind(Kind::Float); // (qn, d)
            let mut best: Option<(Tensor, Tensor)> = None; // (qn, <= k) each
            let mut cs = 0;
            while cs < nc {
                let cn = block.min(nc - cs);
                let cblock = corpus.narrow(0, cs, cn).to_kind(Kind::Float); // (cn, d)
                let s = qchunk.f_matmul(&cblock.tr())?; // (qn, cn)
                let (bs, bi) = s.f_topk(k.min(cn), 1, true, true)?;
                let bi = bi + cs;
                best = Some(match best {
                    None => (bs, bi),
                    Some((rs, ri)) => {
                        // Earlier blocks first, so equal scores keep the lower corpus row
                        // wherever topk keeps the first of equals.
                        let s = Tensor::f_cat(&[rs, bs], 1)?; // (qn, k + kb)
                        let i = Tensor::f_cat(&[ri, bi], 1)?;
                        let (ms, pos) = s.f_topk(k.min(s.size()[1]), 1, true, true)?;
                        (ms, i.f_gather(1, &pos, false)?)
                    }
                });
                cs += cn;
            }
            let (s, i) = best.expect("the corpus has at least one row when k > 0");
            let s = s.to_device(Device::Cpu).contiguous();
            let i = i.to_device(Device::Cpu).contiguous();
            all_scores.extend(Vec::<f32>::try_from(s.view([-1]))?);
            all_indices.extend(Vec::<i64>::try_from(i.view([-1]))?);
            qs += qn;
            progress(qs as usize);
        }
    }
    Ok((
        Tensor::from_slice(&all_scores).view([nq, k]),
        Tensor::from_slice(&all_indices).view([nq, k]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(n: i64, d: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let x = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
        &x / x.norm_scalaropt_dim(2, [1], true)
    }

    /// Blocks of every size give the full matrix's top-k (a naive `topk` on `q @ c.T`).
    #[test]
    fn blocked_equals_the_full_matrix() {
        let q = unit_rows(37, 16, 1);
        let c = unit_rows(101, 16, 2);
        let full = q.matmul(&c.tr());
        for k in [1usize, 5, 12, 101, 150] {
            let kk = k.min(101) as i64;
            let (ws, wi) = full.topk(kk, 1, true, true);
            for block in [1usize, 7, 16, 50, 4096] {
                let (s, i) = top_k_blocked(&q, &c, k, block).unwrap();
                assert_eq!(s.size(), [37, kk], "k {k} block {block}");
                assert!(
                    (&s - &ws).abs().max().double_value(&[]) < 1e-5,
                    "k {k} block {block}"
                );
                // Random unit vectors have no ties: the same rows, in the same order.
                assert!(i.equal(&wi), "k {k} block {block}");
            }
        }
    }

    #[test]
    fn progress_reaches_every_query_and_widths_are_checked() {
        let q = unit_rows(10, 4, 3);
        let c = unit_rows(9, 4, 4);
        let mut seen = Vec::new();
        let _ = top_k_blocked_with_progress(&q, &c, 3, 4, &mut |d| seen.push(d)).unwrap();
        assert_eq!(seen, [4, 8, 10]);
        let e = top_k_blocked(&q, &unit_rows(9, 5, 5), 3, 4).unwrap_err();
        assert!(e.to_string().contains("widths must match"), "{e}");
        let (s, i) = top_k_blocked(&q, &c, 0, 4).unwrap();
        assert_eq!((s.size(), i.size()), (vec![10, 0], vec![10, 0]));
    }

    #[test]
    fn bf16_storage_is_searched_in_fp32() {
        let q = unit_rows(5, 32, 6);
        let c = unit_rows(40, 32, 7);
        let (s, _) =
            top_k_blocked(&q.to_kind(Kind::BFloat16), &c.to_kind(Kind::BFloat16), 3, 8).unwrap();
        assert_eq!(s.kind(), Kind::Float);
        let (ws, _) = q.matmul(&c.tr()).topk(3, 1, true, true);
        assert!((&s - &ws).abs().max().double_value(&[]) < 0.05);
    }
}
