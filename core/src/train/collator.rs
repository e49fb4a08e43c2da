//! The batch collator, as sentence-transformers' data collator: turns the rows of one
//! micro-batch into what a training step consumes, the texts of every loss input column
//! (gathered once), their token ids grouped by prompt (one forward per group), the labels
//! and the duplicate mask. Everything that does not change between batches is computed
//! once: the prompts' token lengths at construction, the row order once per epoch.

use std::ops::Range;

use tch::{Device, Tensor};

use crate::encoder::tokenize::TextTokenizer;
use crate::error::Result;
use crate::loss::LossInputs;
use crate::train::data::{batches_per_epoch, epoch_order, Dataset};
use crate::train::TrainConfig;

/// Loss input columns that share one prompt, so one forward embeds them all.
#[derive(Debug, Clone, PartialEq)]
struct PromptGroup {
    /// The loss input columns of the group (contiguous, in loss order).
    columns: Range<usize>,
    /// The prompt prepended to every text of the group (None: no prompt).
    prompt: Option<String>,
    /// The prompt's token count for `include_prompt: false` pooling.
    prompt_length: Option<usize>,
}

/// The token ids of one prompt group of a [`Batch`]: the group's columns one after the
/// other, `ids[k * B + i]` being row i of the group's k-th column.
pub struct GroupIds {
    /// The loss input columns the ids cover (contiguous, in loss order).
    pub columns: Range<usize>,
    /// Token ids of each text, prompt included (special tokens added, truncated).
    pub ids: Vec<Vec<u32>>,
    /// Prompt tokens at the start of every row (None: no prompt).
    pub prompt_length: Option<usize>,
}

/// This process's share of every micro-batch in a data-parallel run of `world` ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's rank, `0..world`.
    pub rank: usize,
    /// Ranks in the run.
    pub world: usize,
    /// Each rank's loss sees its own rows only (no gathered negatives).
    pub local: bool,
}

impl Shard {
    /// One process: the whole batch.
    pub const SINGLE: Shard = Shard {
        rank: 0,
        world: 1,
        local: false,
    };
}

/// The rows of a global micro-batch of `rows` rows each of `world` ranks embeds: contiguous
/// parts in rank order, as equal as possible (the first `rows % world` ranks one more).
pub fn shard_sizes(rows: usize, world: usize) -> Vec<usize> {
    let world = world.max(1);
    (0..world)
        .map(|r| rows / world + usize::from(r < rows % world))
        .collect()
}

/// The rows of part `rank` of contiguous parts of `sizes` (e.g. [`shard_sizes`]).
pub fn part_range(sizes: &[usize], rank: usize) -> std::ops::Range<usize> {
    let start: usize = sizes[..rank].iter().sum();
    start..start + sizes[rank]
}

/// One micro-batch of B rows, ready for the encoder and the loss. In a data-parallel run
/// (see [`Shard`]) the micro-batch is global (`world` × `--batch-size` rows, cut into
/// [`Self::parts`]); this process embeds its own part ([`Self::groups`]) and, unless
/// negatives are local, the loss sees every rank's rows.
pub struct Batch<'d> {
    /// `texts[c][i]`: loss input column c of row i of the rows the loss sees, without
    /// prompt (for [`LossInputs::SingleTextTwice`] the text column twice).
    pub texts: Vec<Vec<&'d str>>,
    /// The prompt prepended to each loss input column's texts (None: none), one per column.
    pub prompts: Vec<Option<String>>,
    /// Token ids by prompt group of this process's rows, covering every loss input column
    /// once, in order.
    pub groups: Vec<GroupIds>,
    /// How the loss's rows split into the ranks' parts, in rank order (`[B]` for one
    /// process or local negatives): part `part` is this process's.
    pub parts: Vec<usize>,
    /// The index of this process's part in [`Self::parts`].
    pub part: usize,
    /// Rows of the global micro-batch (over all ranks).
    pub global_rows: usize,
    /// Float labels on the training device: `(B,)` for scored pairs (and a float label
    /// column of a distillation loss), `(B, K)` teacher scores from a score-list column for
    /// [`LossInputs::TextsWithScores`].
    pub labels: Option<Tensor>,
    /// The `(B, B*(C-1))` false-negative mask of [`crate::loss::duplicate_mask`] on the
    /// training device; None with deduplication off or for scored pairs.
    pub duplicate_mask: Option<Tensor>,
}

impl Batch<'_> {
    /// Rows the loss sees (B).
    pub fn rows(&self) -> usize {
        self.texts.first().map_or(0, Vec::len)
    }

    /// This process's rows: their range within the loss's rows.
    pub fn own_rows(&self) -> Range<usize> {
        let start: usize = self.parts[..self.part].iter().sum();
        start..start + self.parts[self.part]
    }
}

/// Cuts a [`Dataset`] into seeded micro-batches and collates each into a [`Batch`].
pub struct Collator<'a> {
    data: &'a Dataset,
    tokenizer: &'a TextTokenizer,
    /// The data column of each loss input column.
    sources: Vec<usize>,
    groups: Vec<PromptGroup>,
    /// Rows of a global micro-batch (`--batch-size` × ranks).
    batch_size: usize,
    shard: Shard,
    seed: u64,
    dedupe: bool,
    /// Labels from the score-list column, `(B, K)` (distillation losses).
    score_lists: bool,
    device: Device,
    per_epoch: usize,
    /// The row order of epoch `epoch`, drawn when a batch of another epoch is asked for.
    order: Vec<usize>,
    epoch: Option<usize>,
}

impl<'a> Collator<'a> {
    /// A collator for `data` as `inputs` needs it, with `cfg`'s batch size, seed, prompts
    /// (the query prompt on the first column, the document prompt on the others),
    /// deduplication and device; the prompts are tokenized here, once.
    pub fn new(
        data: &'a Dataset,
        inputs: &LossInputs,
        tokenizer: &'a TextTokenizer,
        cfg: &TrainConfig,
    ) -> Result<Self> {
        let query = cfg.query_prompt.as_deref().filter(|p| !p.is_empty());
        let document = cfg.document_prompt.as_deref().filter(|p| !p.is_empty());
        let sources: Vec<usize> = match inputs {
            LossInputs::SingleTextTwice => vec![0, 0],
            _ => (0..data.columns.len()).collect(),
        };
        let n = sources.len();
        // SimCSE embeds one column twice, both copies with the query prompt; otherwise the
        // anchors get their own forward only when their prompt differs.
        let spans: Vec<(Range<usize>, Option<&str>)> =
            if matches!(inputs, LossInputs::SingleTextTwice) || query == document {
                vec![(0..n, query)]
            } else {
                vec![(0..1, query), (1..n, document)]
            };
        let groups = spans
            .into_iter()
            .map(|(columns, prompt)| {
                Ok(PromptGroup {
                    columns,
                    prompt: prompt.map(str::to_string),
                    prompt_length: prompt.map(|p| tokenizer.prompt_length(p)).transpose()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Collator {
            data,
            tokenizer,
            sources,
            groups,
            batch_size: cfg.batch_size,
            shard: Shard::SINGLE,
            seed: cfg.seed,
            // Scored pairs and distillation losses have no in-batch candidates to mask.
            dedupe: cfg.dedupe
                && !matches!(
                    inputs,
                    LossInputs::ScoredPairs { .. } | LossInputs::TextsWithScores { .. }
                ),
            score_lists: matches!(inputs, LossInputs::TextsWithScores { .. })
                && data.score_lists.is_some(),
            device: cfg.device,
            per_epoch: batches_per_epoch(data.len(), cfg.batch_size),
            order: Vec::new(),
            epoch: None,
        })
    }

    /// The collator of rank `shard.rank` of a data-parallel run: micro-batches of
    /// `world` × `--batch-size` rows drawn from the same seeded order on every rank, of
    /// which this rank embeds its part ([`shard_sizes`]).
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.batch_size = self.batch_size / self.shard.world.max(1) * shard.world.max(1);
        self.shard = shard;
        self.per_epoch = batches_per_epoch(self.data.len(), self.batch_size);
        self
    }

    /// Micro-batches in one pass over the data (the last one may be smaller).
    pub fn batches_per_epoch(&self) -> usize {
        self.per_epoch
    }

    /// The `micro_batch`-th micro-batch of the run (counted over all epochs): rows
    /// `epoch_order(n, seed, epoch)[k*B .. (k+1)*B]` of epoch `micro_batch / per_epoch`.
    pub fn batch(&mut self, micro_batch: usize) -> Result<Batch<'a>> {
        let (epoch, k) = (micro_batch / self.per_epoch, micro_batch % self.per_epoch);
        if self.epoch != Some(epoch) {
            self.order = epoch_order(self.data.len(), self.seed, epoch as u64);
            self.epoch = Some(epoch);
        }
        let end = ((k + 1) * self.batch_size).min(self.order.len());
        let global = &self.order[k * self.batch_size..end];
        let sizes = shard_sizes(global.len(), self.shard.world);
        let own = part_range(&sizes, self.shard.rank);
        // The rows the loss sees: all of them, or this rank's alone with local negatives.
        let (rows, parts, part) = if self.shard.local {
            (&global[own.clone()], vec![own.len()], 0)
        } else {
            (global, sizes, self.shard.rank)
        };
        let own = if self.shard.local { 0..own.len() } else { own };
        let data = self.data;
        let texts: Vec<Vec<&'a str>> = self
            .sources
            .iter()
            .map(|&c| rows.iter().map(|&r| data.texts[c][r].as_str()).collect())
            .collect();
        let own_texts: Vec<Vec<&str>> = texts.iter().map(|c| c[own.clone()].to_vec()).collect();
        let groups = self
            .groups
            .iter()
            .map(|g| self.group_ids(g, &own_texts))
            .collect::<Result<_>>()?;
        let labels = match (&data.score_lists, self.score_lists) {
            // Rows of one length, checked by `Dataset::prepare_for`.
            (Some(lists), true) => {
                let k = lists[global[0]].len() as i64;
                let v: Vec<f32> = rows
                    .iter()
                    .flat_map(|&r| lists[r].iter().map(|&x| x as f32))
                    .collect();
                Some(
                    Tensor::from_slice(&v)
                        .reshape([rows.len() as i64, k])
                        .to_device(self.device),
                )
            }
            _ => data.labels.as_ref().map(|l| {
                let v: Vec<f32> = rows.iter().map(|&r| l[r] as f32).collect();
                Tensor::from_slice(&v).to_device(self.device)
            }),
        };
        let duplicate_mask = if self.dedupe && !rows.is_empty() {
            let columns: Vec<&[&str]> = texts.iter().map(Vec::as_slice).collect();
            Some(crate::loss::duplicate_mask(&columns)?.to_device(self.device))
        } else {
            None
        };
        let mut prompts = vec![None; texts.len()];
        for g in &self.groups {
            for c in g.columns.clone() {
                prompts[c] = g.prompt.clone();
            }
        }
        Ok(Batch {
            texts,
            prompts,
            groups,
            parts,
            part,
            global_rows: global.len(),
            labels,
            duplicate_mask,
        })
    }

    /// Tokenizes the texts of group `g`'s columns in one call, the prompt prepended as the
    /// reference prepends it.
    fn group_ids(&self, g: &PromptGroup, texts: &[Vec<&str>]) -> Result<GroupIds> {
        let columns = &texts[g.columns.clone()];
        let prompt = g.prompt.as_deref();
        // SimCSE's two copies of one column: tokenized once, the ids repeated.
        let sources = &self.sources[g.columns.clone()];
        let ids = if sources.len() > 1 && sources.iter().all(|&s| s == sources[0]) {
            let once = self.tokenizer.encode_ids_with_prompt(&columns[0], prompt)?;
            let mut ids = Vec::with_capacity(once.len() * sources.len());
            for _ in 1..sources.len() {
                ids.extend(once.iter().cloned());
            }
            ids.extend(once);
            ids
        } else {
            let all: Vec<&str> = columns.iter().flatten().copied().collect();
            self.tokenizer.encode_ids_with_prompt(&all, prompt)?
        };
        Ok(GroupIds {
            columns: g.columns.clone(),
            ids,
            prompt_length: g.prompt_length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A word-level tokenizer over the test texts' words, written to a temporary folder.
    fn tokenizer() -> (tempfile::TempDir, TextTokenizer) {
        let words = [
            "[PAD]", "[UNK]", "anchor", "positive", "negative", "text", "query", ":", "0", "1", "2",
        ];
        let vocab: serde_json::Map<String, serde_json::Value> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i.into()))
            .collect();
        let special = |id: usize, content: &str| {
            serde_json::json!({"id": id, "content": content, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        };
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]")],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), json.to_string()).unwrap();
        let tok = TextTokenizer::load(dir.path(), 16, Some(0), false).unwrap();
        (dir, tok)
    }

    fn dataset(columns: &[&str], rows: usize) -> Dataset {
        Dataset {
            path: PathBuf::from("t.csv"),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            texts: columns
                .iter()
                .map(|c| (0..rows).map(|r| format!("{c} {}", r % 3)).collect())
                .collect(),
            label_column: None,
            labels: None,
            score_list_column: None,
            score_lists: None,
        }
    }

    fn config(batch_size: usize) -> TrainConfig {
        let mut cfg = TrainConfig::new(
            PathBuf::new(),
            PathBuf::new(),
            "mnrl",
            Path::new("out").into(),
        );
        cfg.batch_size = batch_size;
        cfg
    }

    #[test]
    fn batches_follow_the_epoch_order_and_share_one_group_without_prompts() {
        let (_dir, tok) = tokenizer();
        let data = dataset(&["anchor", "positive", "negative"], 10);
        let inputs = LossInputs::Texts { min: 2, max: None };
        let mut c = Collator::new(&data, &inputs, &tok, &config(4)).unwrap();
        assert_eq!(c.batches_per_epoch(), 3);
        for epoch in 0..2 {
            let order = epoch_order(10, 42, epoch as u64);
            for k in 0..3 {
                let b = c.batch(epoch * 3 + k).unwrap();
                let rows = &order[k * 4..((k + 1) * 4).min(10)];
                assert_eq!(b.rows(), rows.len());
                for (col, texts) in b.texts.iter().enumerate() {
                    let want: Vec<&str> =
                        rows.iter().map(|&r| data.texts[col][r].as_str()).collect();
                    assert_eq!(texts, &want);
                }
                assert_eq!(b.groups.len(), 1);
                assert_eq!(b.groups[0].columns, 0..3);
                assert_eq!(b.groups[0].ids.len(), 3 * rows.len());
                assert_eq!(
                    b.groups[0].ids[rows.len()],
                    tok.encode_ids(&[b.texts[1][0]]).unwrap()[0]
                );
                let mask = b.duplicate_mask.unwrap();
                assert_eq!(mask.size(), [rows.len() as i64, 2 * rows.len() as i64]);
            }
        }
    }

    #[test]
    fn shards_split_the_global_batch_into_contiguous_parts() {
        assert_eq!(shard_sizes(16, 2), [8, 8]);
        assert_eq!(shard_sizes(5, 2), [3, 2]);
        assert_eq!(shard_sizes(3, 4), [1, 1, 1, 0]);
        assert_eq!(shard_sizes(7, 1), [7]);
        assert_eq!(part_range(&shard_sizes(5, 2), 0), 0..3);
        assert_eq!(part_range(&shard_sizes(5, 2), 1), 3..5);
        assert_eq!(part_range(&shard_sizes(3, 4), 3), 3..3);
        let (_dir, tok) = tokenizer();
        let data = dataset(&["anchor", "positive"], 10);
        let inputs = LossInputs::Texts { min: 2, max: None };
        // One process with batch 8 and two ranks with batch 4 see the same global batches.
        let mut whole = Collator::new(&data, &inputs, &tok, &config(8)).unwrap();
        for local in [false, true] {
            let mut ranks: Vec<Collator> = (0..2)
                .map(|rank| {
                    Collator::new(&data, &inputs, &tok, &config(4))
                        .unwrap()
                        .with_shard(Shard {
                            rank,
                            world: 2,
                            local,
                        })
                })
                .collect();
            assert_eq!(ranks[0].batches_per_epoch(), whole.batches_per_epoch());
            for k in 0..3 {
                let w = whole.batch(k).unwrap();
                let mut own_ids = Vec::new();
                let mut own_texts = Vec::new();
                for c in &mut ranks {
                    let b = c.batch(k).unwrap();
                    assert_eq!(b.global_rows, w.rows());
                    let own = b.own_rows();
                    if local {
                        assert_eq!(b.parts.len(), 1);
                        assert_eq!(b.rows(), own.len());
                        let mask = b.duplicate_mask.as_ref().unwrap();
                        assert_eq!(mask.size(), [own.len() as i64, own.len() as i64]);
                    } else {
                        assert_eq!(b.texts, w.texts);
                        assert_eq!(b.parts, shard_sizes(w.rows(), 2));
                    }
                    own_texts.extend(b.texts[1][own.clone()].to_vec());
                    let n = own.len();
                    own_ids.extend(b.groups[0].ids[n..2 * n].to_vec());
                }
                // The parts, in rank order, are the whole batch's rows.
                let n = w.rows();
                assert_eq!(own_texts, w.texts[1]);
                assert_eq!(own_ids, w.groups[0].ids[n..2 * n].to_vec());
            }
        }
    }

    #[test]
    fn a_distinct_query_prompt_splits_the_anchors_off() {
        let (_dir, tok) = tokenizer();
        let data = dataset(&["anchor", "positive"], 4);
        let inputs = LossInputs::Texts { min: 2, max: None };
        let mut cfg = config(4);
        cfg.query_prompt = Some("query: ".into());
        cfg.document_prompt = Some(String::new());
        let b = Collator::new(&data, &inputs, &tok, &cfg)
            .unwrap()
            .batch(0)
            .unwrap();
        assert_eq!(b.groups.len(), 2);
        assert_eq!(
            (b.groups[0].columns.clone(), b.groups[1].columns.clone()),
            (0..1, 1..2)
        );
        let pl = tok.prompt_length("query: ").unwrap();
        assert_eq!(b.groups[0].prompt_length, Some(pl));
        assert_eq!(b.groups[1].prompt_length, None);
        let joined = format!("query: {}", b.texts[0][2]);
        assert_eq!(
            b.groups[0].ids[2],
            tok.encode_ids(&[joined.as_str()]).unwrap()[0]
        );
    }

    #[test]
    fn teacher_score_lists_become_a_b_by_k_label_tensor() {
        let (_dir, tok) = tokenizer();
        let mut data = dataset(&["anchor", "positive", "negative"], 5);
        data.score_lists = Some((0..5).map(|r| vec![r as f64, -(r as f64)]).collect());
        data.score_list_column = Some("scores".into());
        let inputs = LossInputs::TextsWithScores {
            min: 3,
            max: None,
            margins: false,
        };
        let b = Collator::new(&data, &inputs, &tok, &config(4))
            .unwrap()
            .batch(0)
            .unwrap();
        let labels = b.labels.unwrap();
        assert_eq!(labels.size(), [4, 2]);
        let order = epoch_order(5, 42, 0);
        let got: Vec<Vec<f32>> = Vec::try_from(&labels).unwrap();
        for (i, &r) in order[..4].iter().enumerate() {
            assert_eq!(got[i], [r as f32, -(r as f32)]);
        }
        assert!(b.duplicate_mask.is_none());
        // Other losses ignore a score-list column.
        let b = Collator::new(
            &data,
            &LossInputs::Texts { min: 2, max: None },
            &tok,
            &config(4),
        )
        .unwrap()
        .batch(0)
        .unwrap();
        assert!(b.labels.is_none());
    }

    #[test]
    fn simcse_embeds_its_column_twice_in_one_group() {
        let (_dir, tok) = tokenizer();
        let data = dataset(&["text"], 5);
        let b = Collator::new(&data, &LossInputs::SingleTextTwice, &tok, &config(5))
            .unwrap()
            .batch(0)
            .unwrap();
        assert_eq!(b.texts.len(), 2);
        assert_eq!(b.texts[0], b.texts[1]);
        assert_eq!(b.groups[0].columns, 0..2);
        assert_eq!(b.groups[0].ids[..5], b.groups[0].ids[5..]);
        assert_eq!(b.duplicate_mask.unwrap().size(), [5, 5]);
    }
}
