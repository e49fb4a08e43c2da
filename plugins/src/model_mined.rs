//! `model-mined`: hard negatives mined with an embedding model, the way
//! sentence-transformers' `mine_hard_negatives` picks them (nearest neighbours by cosine
//! similarity, false negatives dropped by a margin to the positive's score, a rank window,
//! top or random), inside `embtune gen`.
//!
//! The filters follow sentence-transformers v6 `sentence_transformers/util/hard_negatives.py`
//! in its order: the anchor's own text and its positive are never candidates; with a margin
//! a candidate goes when `score + absolute_margin > positive_score` or
//! `score > positive_score - |positive_score| * relative_margin`; then `score > max_score` and
//! `score < min_score` go; of the survivors the best `range_max` are kept and the first
//! `range_min` skipped; `top` takes the first k of that window, `random` k distinct ones of it.
//! The search is `embtune_core::mine::top_k_blocked` (exact, blocked, bounded memory).
//!
//! The configuration is torch-free, so every build lists the sampler; only a build with
//! libtorch can run it (the torch-free `embtune` front end hands `gen --sampler model-mined`
//! to `embtune-torch`).

use embtune_core::register_sampler;
use serde::{Deserialize, Serialize};

/// Config of `model-mined`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelMinedConfig {
    /// Model folder or Hugging Face id; "" is the default model.
    pub model: String,
    /// `group`: candidates are the anchors of the anchor's category group (the original's
    /// "hard negatives come from the same group"); `part`: every anchor of the part.
    pub scope: String,
    /// Survivors skipped first (the reference's `range_min`).
    pub range_min: usize,
    /// Survivors considered, counted from the best (the reference's `range_max`).
    pub range_max: usize,
    /// Candidates scoring above this are dropped (likely paraphrases of the anchor).
    pub max_score: Option<f64>,
    /// Candidates scoring below this are dropped.
    pub min_score: Option<f64>,
    /// Drop a candidate when `score + absolute_margin > positive_score`.
    pub absolute_margin: Option<f64>,
    /// Drop a candidate when `score > positive_score - |positive_score| * relative_margin`.
    pub relative_margin: Option<f64>,
    /// `top` (the best of the window) or `random` (uniform over the window, seeded).
    pub sampling: String,
    /// Texts per encoder batch.
    pub batch_size: usize,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Text prepended to every text before it is embedded (e.g. an instruction).
    pub prompt: String,
}

impl Default for ModelMinedConfig {
    fn default() -> Self {
        Self {
            model: String::new(),
            scope: "group".into(),
            range_min: 0,
            range_max: 30,
            max_score: None,
            min_score: None,
            absolute_margin: None,
            relative_margin: None,
            sampling: "top".into(),
            batch_size: 32,
            device: "auto".into(),
            prompt: String::new(),
        }
    }
}

impl ModelMinedConfig {
    /// Checks the options without loading anything; errors name the option and the valid
    /// values.
    fn validate(&self) -> embtune_core::Result<()> {
        let bad = |m: String| {
            Err(embtune_core::Error::PluginConfig {
                kind: "sampler",
                plugin: "model-mined".into(),
                message: m,
            })
        };
        if !matches!(self.scope.as_str(), "group" | "part") {
            return bad(format!("scope '{}': use group or part", self.scope));
        }
        if !matches!(self.sampling.as_str(), "top" | "random") {
            return bad(format!("sampling '{}': use top or random", self.sampling));
        }
        if self.range_min >= self.range_max {
            return bad(format!(
                "range_min ({}) must be smaller than range_max ({})",
                self.range_min, self.range_max
            ));
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if let (Some(lo), Some(hi)) = (self.min_score, self.max_score) {
            if lo > hi {
                return bad(format!("min_score ({lo}) is above max_score ({hi})"));
            }
        }
        Ok(())
    }
}

#[cfg(feature = "torch")]
fn build(c: ModelMinedConfig) -> embtune_core::Result<Box<dyn embtune_core::NegativeSampler>> {
    c.validate()?;
    Ok(Box::new(imp::ModelMined::new(c)))
}

#[cfg(not(feature = "torch"))]
fn build(c: ModelMinedConfig) -> embtune_core::Result<Box<dyn embtune_core::NegativeSampler>> {
    c.validate()?;
    Err(embtune_core::Error::NeedsLibtorch {
        what: "the sampler model-mined".into(),
    })
}

register_sampler!(
    name: "model-mined",
    summary: "hard negatives mined with an embedding model (sentence-transformers' mine_hard_negatives filters)",
    long: "Embeds the part's anchors with `model` (default: the default model) and ranks, for each\n\
           anchor, the other anchors of its category group (scope=group) or of the whole part\n\
           (scope=part) by cosine similarity, exactly and block by block. The anchor's own text and\n\
           its first positive column's text are never candidates. With absolute_margin or\n\
           relative_margin a candidate scoring too close to the anchor-positive score is dropped as a\n\
           likely false negative; max_score and min_score bound the scores; of the survivors the best\n\
           range_max are kept and the first range_min skipped; sampling=top takes the best k of that\n\
           window, sampling=random k distinct ones (seeded). Needs libtorch (embtune-torch).",
    config: ModelMinedConfig,
    build: build,
);

#[cfg(feature = "torch")]
mod imp {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use embtune_core::encoder::SentenceEncoder;
    use embtune_core::mine::search::{top_k_blocked, DEFAULT_BLOCK_ROWS};
    use embtune_core::{CandidatePool, Error, NegativeSampler, Result, Rng};
    use rand::seq::index::sample;
    use tch::{Device, Kind, Tensor};

    use super::ModelMinedConfig;

    /// The sampler: the encoder (loaded on the first part) and, per part, each pool entry's
    /// window of candidates.
    pub struct ModelMined {
        cfg: ModelMinedConfig,
        /// Behind a mutex only because samplers are `Sync` and the encoder is not; it is
        /// used in `prepare` (`&mut self`), never locked in `sample`.
        encoder: Mutex<Option<SentenceEncoder>>,
        /// Candidate lists, best first, as pool indices.
        lists: Vec<Vec<usize>>,
        /// The list of each pool entry.
        list_of: Vec<usize>,
    }

    impl ModelMined {
        pub fn new(cfg: ModelMinedConfig) -> Self {
            Self {
                cfg,
                encoder: Mutex::new(None),
                lists: Vec::new(),
                list_of: Vec::new(),
            }
        }

        /// The encoder, loaded on first use.
        fn encoder(&mut self) -> Result<&SentenceEncoder> {
            let slot = self
                .encoder
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if slot.is_none() {
                *slot = Some(load_encoder(&self.cfg)?);
            }
            Ok(slot.as_ref().expect("just loaded"))
        }
    }

    /// Loads the configured model on the configured device.
    fn load_encoder(cfg: &ModelMinedConfig) -> Result<SentenceEncoder> {
        let dir = if cfg.model.is_empty() {
            embtune_core::default_model::default_model_dir()
        } else {
            resolve_model(&cfg.model)?
        };
        let device = match cfg.device.as_str() {
            "auto" => Device::cuda_if_available(),
            "cpu" => Device::Cpu,
            "cuda" => Device::Cuda(0),
            d => match d.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
                Some(i) => Device::Cuda(i),
                None => {
                    return Err(Error::PluginConfig {
                        kind: "sampler",
                        plugin: "model-mined".into(),
                        message: format!("device '{d}': use auto, cpu, cuda or cuda:N"),
                    })
                }
            },
        };
        SentenceEncoder::load(&dir, device)
    }

    /// Unit-length embeddings `(n, d)` fp32 on the CPU of `texts`, with the configured
    /// prompt.
    fn embed(enc: &SentenceEncoder, cfg: &ModelMinedConfig, texts: &[&str]) -> Result<Tensor> {
        let prompt = Some(cfg.prompt.as_str()).filter(|p| !p.is_empty());
        let e = enc.encode_with_prompt(texts, prompt, cfg.batch_size)?;
        let norm = e.f_norm_scalaropt_dim(2, [1i64], true)?.clamp_min(1e-12);
        Ok(e.f_div(&norm)?.to_kind(Kind::Float))
    }

    /// A model folder, or a Hugging Face id resolved the way every command resolves one
    /// (the cache first, then the hub).
    fn resolve_model(model: &str) -> Result<PathBuf> {
        embtune_core::hub::resolve_model(
            std::path::Path::new(model),
            &embtune_core::hub::HubConfig::from_env(),
        )
    }

    impl NegativeSampler for ModelMined {
        fn prepare(&mut self, pool: &CandidatePool<'_>) -> Result<()> {
            self.lists.clear();
            self.list_of = vec![usize::MAX; pool.len()];
            if pool.is_empty() {
                return Ok(());
            }
            let cfg = self.cfg.clone();
            let has_pos = pool.positives.len() == pool.len();
            let margin = cfg.absolute_margin.is_some() || cfg.relative_margin.is_some();

            // Groups of pool entries, in order of first appearance.
            let mut group_of: HashMap<&str, usize> = HashMap::new();
            let mut groups: Vec<Vec<usize>> = Vec::new();
            for i in 0..pool.len() {
                let key = if cfg.scope == "group" {
                    pool.categories[i]
                } else {
                    ""
                };
                let g = *group_of.entry(key).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[g].push(i);
            }

            // Every distinct anchor text embedded once for the whole part.
            let mut uid_of: HashMap<&str, usize> = HashMap::new();
            let mut texts: Vec<&str> = Vec::new();
            for &a in &pool.anchors {
                uid_of.entry(a).or_insert_with(|| {
                    texts.push(a);
                    texts.len() - 1
                });
            }
            let enc = self.encoder()?;
            let emb = embed(enc, &cfg, &texts)?; // (u, d)

            // Anchor-positive scores, for the margins.
            let pos_score: Vec<f32> = if margin && has_pos {
                let pe = embed(enc, &cfg, &pool.positives)?; // (n, d)
                let ids: Vec<i64> = pool.anchors.iter().map(|a| uid_of[a] as i64).collect();
                let ae = emb.f_index_select(0, &Tensor::from_slice(&ids))?;
                Vec::<f32>::try_from(ae.f_mul(&pe)?.sum_dim_intlist(
                    &[1i64][..],
                    false,
                    Kind::Float,
                ))?
            } else {
                Vec::new()
            };

            let k_search = cfg.range_max + 1;
            for members in &groups {
                // The group's distinct texts, each represented by its first member.
                let mut rep: Vec<usize> = Vec::new();
                let mut local: HashMap<usize, usize> = HashMap::new();
                for &i in members {
                    let u = uid_of[pool.anchors[i]];
                    local.entry(u).or_insert_with(|| {
                        rep.push(i);
                        rep.len() - 1
                    });
                }
                let ids: Vec<i64> = rep
                    .iter()
                    .map(|&i| uid_of[pool.anchors[i]] as i64)
                    .collect();
                let ge = emb.f_index_select(0, &Tensor::from_slice(&ids))?;
                let (scores, idx) = top_k_blocked(&ge, &ge, k_search, DEFAULT_BLOCK_ROWS)?;
                let width = scores.size()[1] as usize;
                let scores = Vec::<f32>::try_from(scores.reshape([-1]))?;
                let idx = Vec::<i64>::try_from(idx.reshape([-1]))?;

                // The hardest (lowest) positive score of each distinct text in the group,
                // as the reference takes the smallest score among a query's positives.
                let mut min_pos = vec![f32::INFINITY; rep.len()];
                let mut positives: Vec<Vec<&str>> = vec![Vec::new(); rep.len()];
                for &i in members {
                    let q = local[&uid_of[pool.anchors[i]]];
                    if has_pos && !pool.positives[i].is_empty() {
                        if !positives[q].contains(&pool.positives[i]) {
                            positives[q].push(pool.positives[i]);
                        }
                        if let Some(&s) = pos_score.get(i) {
                            min_pos[q] = min_pos[q].min(s);
                        }
                    }
                }

                let base = self.lists.len();
                for q in 0..rep.len() {
                    let anchor = pool.anchors[rep[q]];
                    let p = min_pos[q];
                    let mut list = Vec::new();
                    for j in 0..width {
                        let s = scores[q * width + j];
                        let c = rep[idx[q * width + j] as usize];
                        let text = pool.anchors[c];
                        if text == anchor || positives[q].contains(&text) {
                            continue;
                        }
                        if p.is_finite() {
                            if let Some(m) = cfg.absolute_margin {
                                if s + m as f32 > p {
                                    continue;
                                }
                            }
                            if let Some(m) = cfg.relative_margin {
                                if s > p - p.abs() * m as f32 {
                                    continue;
                                }
                            }
                        }
                        if cfg.max_score.is_some_and(|m| s > m as f32)
                            || cfg.min_score.is_some_and(|m| s < m as f32)
                        {
                            continue;
                        }
                        list.push(c);
                        if list.len() == cfg.range_max {
                            break;
                        }
                    }
                    list.drain(..cfg.range_min.min(list.len()));
                    self.lists.push(list);
                }
                for &i in members {
                    self.list_of[i] = base + local[&uid_of[pool.anchors[i]]];
                }
            }
            Ok(())
        }

        fn sample(
            &self,
            _pool: &CandidatePool<'_>,
            anchor: usize,
            k: usize,
            rng: &mut Rng,
            out: &mut Vec<usize>,
        ) -> Result<()> {
            let list = match self.list_of.get(anchor).and_then(|&l| self.lists.get(l)) {
                Some(l) => l,
                None => return Ok(()),
            };
            let k = k.min(list.len());
            if self.cfg.sampling == "top" {
                out.extend_from_slice(&list[..k]);
            } else {
                let mut picked = sample(rng, list.len(), k).into_vec();
                picked.sort_unstable(); // best first, as the reference re-sorts by score
                out.extend(picked.into_iter().map(|p| list[p]));
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use embtune_core::testing;

        /// A pool over a small table of banking texts in two categories.
        fn table() -> embtune_core::Table {
            let rows: Vec<Vec<String>> = [
                ("정기예금 금리가 높은 상품", "예금", "정기예금"),
                ("목돈을 1년 맡기는 정기예금", "예금", "정기예금"),
                ("매달 적립하는 자유적금", "예금", "적금"),
                ("청년 우대 적금 상품", "예금", "적금"),
                ("해외 결제 수수료 없는 카드", "카드", "체크카드"),
                ("해외 결제 수수료 없는 카드", "카드", "체크카드"),
                ("포인트 적립 신용카드", "카드", "신용카드"),
                ("교통비 할인 체크카드", "카드", "체크카드"),
                ("자동차보험 긴급출동", "보험", "자동차보험"),
            ]
            .iter()
            .map(|(a, c, p)| vec![a.to_string(), c.to_string(), p.to_string()])
            .collect();
            embtune_core::Table::from_rows(&["d", "c", "p"], &rows)
        }

        fn pool_with_positives(t: &embtune_core::Table) -> CandidatePool<'_> {
            let mut pool = testing::pool(t, "d", "c");
            let p = t.column("p").unwrap();
            pool.positives = (0..t.n_rows()).map(|r| t.cell(r, p)).collect();
            pool
        }

        fn sampler(opts: &[&str]) -> Box<dyn NegativeSampler> {
            let mut o = vec!["device=cpu"];
            o.extend_from_slice(opts);
            testing::build::<dyn NegativeSampler>("model-mined", &o).unwrap()
        }

        /// The naive oracle: every other distinct text of the scope, scored with the same
        /// embeddings one pair at a time, sorted by score.
        fn naive(pool: &CandidatePool<'_>, scope_group: bool) -> Vec<Vec<(f32, String)>> {
            let enc = SentenceEncoder::load(
                &embtune_core::default_model::default_model_dir(),
                Device::Cpu,
            )
            .unwrap();
            let e = enc.encode(&pool.anchors, 32).unwrap();
            let e = &e / e.norm_scalaropt_dim(2, [1i64], true);
            (0..pool.len())
                .map(|a| {
                    let mut seen = Vec::new();
                    let mut v: Vec<(f32, String)> = Vec::new();
                    for c in 0..pool.len() {
                        let t = pool.anchors[c];
                        if t == pool.anchors[a]
                            || seen.contains(&t)
                            || (scope_group && pool.categories[c] != pool.categories[a])
                        {
                            continue;
                        }
                        seen.push(t);
                        let s = e.get(a as i64).dot(&e.get(c as i64)).double_value(&[]) as f32;
                        v.push((s, t.to_string()));
                    }
                    v.sort_by(|x, y| y.0.total_cmp(&x.0));
                    v
                })
                .collect()
        }

        #[test]
        fn top_equals_the_naive_ranking_in_group_and_part_scope() {
            let t = table();
            let pool = pool_with_positives(&t);
            for (scope, group) in [("scope=group", true), ("scope=part", false)] {
                let oracle = naive(&pool, group);
                let mut s = sampler(&[scope]);
                let got = testing::run_sampler(s.as_mut(), &pool, 3, 7).unwrap();
                for (a, negs) in got.iter().enumerate() {
                    let want: Vec<&str> =
                        oracle[a].iter().take(3).map(|(_, t)| t.as_str()).collect();
                    let have: Vec<&str> = negs.iter().map(|&i| pool.anchors[i]).collect();
                    assert_eq!(have, want, "{scope} anchor {a}");
                    for &n in negs {
                        assert_ne!(pool.anchors[n], pool.anchors[a]);
                        if group {
                            assert_eq!(pool.categories[n], pool.categories[a]);
                        }
                    }
                }
            }
        }

        #[test]
        fn window_and_score_filters() {
            let t = table();
            let pool = pool_with_positives(&t);
            let oracle = naive(&pool, false);
            let mut s = sampler(&["scope=part", "range_min=1", "range_max=4", "max_score=0.9"]);
            let got = testing::run_sampler(s.as_mut(), &pool, 10, 1).unwrap();
            for (a, negs) in got.iter().enumerate() {
                let survivors: Vec<&str> = oracle[a]
                    .iter()
                    .filter(|(s, _)| *s <= 0.9)
                    .take(4)
                    .skip(1)
                    .map(|(_, t)| t.as_str())
                    .collect();
                let have: Vec<&str> = negs.iter().map(|&i| pool.anchors[i]).collect();
                assert_eq!(have, survivors, "anchor {a}");
            }
        }

        #[test]
        fn random_draws_stay_in_the_window_and_are_seeded() {
            let t = table();
            let pool = pool_with_positives(&t);
            let oracle = naive(&pool, false);
            let mut s = sampler(&["scope=part", "range_max=5", "sampling=random"]);
            let a1 = testing::run_sampler(s.as_mut(), &pool, 2, 3).unwrap();
            let a2 = testing::run_sampler(s.as_mut(), &pool, 2, 3).unwrap();
            assert_eq!(a1, a2, "same seed, same draws");
            for (a, negs) in a1.iter().enumerate() {
                let window: Vec<&str> = oracle[a].iter().take(5).map(|(_, t)| t.as_str()).collect();
                assert_eq!(negs.len(), 2);
                for &n in negs {
                    assert!(window.contains(&pool.anchors[n]), "anchor {a}");
                }
            }
        }

        #[test]
        fn margin_drops_candidates_scored_near_the_positive() {
            let t = table();
            let pool = pool_with_positives(&t);
            let enc = SentenceEncoder::load(
                &embtune_core::default_model::default_model_dir(),
                Device::Cpu,
            )
            .unwrap();
            let unit = |x: &[&str]| {
                let e = enc.encode(x, 32).unwrap();
                &e / e.norm_scalaropt_dim(2, [1i64], true)
            };
            let a = unit(&pool.anchors);
            let p = unit(&pool.positives);
            let m = 0.05f32;
            let mut s = sampler(&["scope=part", "absolute_margin=0.05"]);
            let got = testing::run_sampler(s.as_mut(), &pool, 3, 5).unwrap();
            for (i, negs) in got.iter().enumerate() {
                // The hardest positive of the anchor's text (duplicates share one query).
                let pos = (0..pool.len())
                    .filter(|&j| pool.anchors[j] == pool.anchors[i])
                    .map(|j| a.get(j as i64).dot(&p.get(j as i64)).double_value(&[]) as f32)
                    .fold(f32::INFINITY, f32::min);
                for &n in negs {
                    let s = a.get(i as i64).dot(&a.get(n as i64)).double_value(&[]) as f32;
                    assert!(s + m <= pos + 1e-5, "anchor {i}: {s} + {m} > {pos}");
                }
            }
        }

        #[test]
        fn bad_options_name_the_option() {
            for (opt, needle) in [
                ("scope=table", "scope"),
                ("sampling=best", "sampling"),
                ("range_max=0", "range_min"),
            ] {
                let e = testing::build::<dyn NegativeSampler>("model-mined", &[opt])
                    .err()
                    .unwrap()
                    .to_string();
                assert!(e.contains(needle), "{opt}: {e}");
            }
        }
    }
}
