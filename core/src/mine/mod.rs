//! Hard-negative mining (`embtune mine`): sentence-transformers v6's `mine_hard_negatives`
//! (`sentence_transformers/util/hard_negatives.py`) on embtune's encoder, with an exact
//! search in bounded memory.
//!
//! The pipeline, in the reference's order:
//! 1. [`Plan::new`]: the anchors are the first column (or the one named), the positives the
//!    second; duplicate anchors are one query whose positives are all excluded from its
//!    negatives; the corpus is the given corpus plus the positives, deduplicated, first
//!    appearance first; `range_max` gets the reference's default and the reference's checks.
//! 2. Embedding ([`mine`]): corpus then queries, unit length, with the query and corpus
//!    prompts, optionally cached on disk by model, prompt and texts.
//! 3. [`search::top_k_blocked`]: the `range_max + max_positives` nearest corpus rows of
//!    every query, block by block (never the full score matrix).
//! 4. [`filter::select_negatives`]: positives masked, margins, score bounds, the
//!    `range_min..range_max` window, `top` or `random` sampling.
//! 5. [`output`]: the rows of the four output formats, the statistics ([`stats`]) and the
//!    CSV / JSON Lines writer.
//!
//! [`mine`] runs it all; [`mine_embedded`] starts from embeddings (the benchmark feeds it
//! random unit vectors).

pub mod filter;
pub mod output;
pub mod search;
pub mod stats;

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::dist::{gather_parts_with_own_grad, ProcessGroup};
use crate::encoder::{Precision, SentenceEncoder};
use crate::error::{Error, Result};
use crate::sampler::groups::FxHashMap;
use crate::table::Table;

pub use filter::{select_negatives, Candidates, Selection, Skipped};
pub use output::{Mined, Value};
pub use search::{top_k_blocked, top_k_blocked_with_progress, DEFAULT_BLOCK_ROWS};
pub use stats::{MineStats, Summary};

/// How negatives are drawn from the candidates that survive the filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SamplingStrategy {
    /// The highest-scoring candidates (the reference's default).
    #[default]
    Top,
    /// A uniform sample of the surviving candidates, then sorted by score.
    Random,
}

impl std::str::FromStr for SamplingStrategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "top" => Ok(SamplingStrategy::Top),
            "random" => Ok(SamplingStrategy::Random),
            _ => Err(Error::Invalid(format!(
                "unknown sampling strategy '{s}'; use top or random"
            ))),
        }
    }
}

/// The shape of the output rows (the reference's `output_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// `(anchor, positive, negative)`, one row per negative (the default).
    #[default]
    Triplet,
    /// `(anchor, positive, negative_1, ..., negative_n)`, rows with all n negatives only.
    NTuple,
    /// `(anchor, document, label)`: each positive with label 1, each negative with 0.
    LabeledPair,
    /// `(anchor, [positive, negatives...], [1, 0, ...])`.
    LabeledList,
}

impl OutputFormat {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Triplet => "triplet",
            OutputFormat::NTuple => "n-tuple",
            OutputFormat::LabeledPair => "labeled-pair",
            OutputFormat::LabeledList => "labeled-list",
        }
    }
}

impl std::str::FromStr for OutputFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "triplet" => Ok(OutputFormat::Triplet),
            "n-tuple" => Ok(OutputFormat::NTuple),
            "labeled-pair" => Ok(OutputFormat::LabeledPair),
            "labeled-list" => Ok(OutputFormat::LabeledList),
            _ => Err(Error::Invalid(format!(
                "unknown output format '{s}'; use triplet, n-tuple, labeled-pair or labeled-list"
            ))),
        }
    }
}

/// The parameters of one mining run; field names and defaults are the reference's keyword
/// arguments (`mine_hard_negatives(...)`).
#[derive(Debug, Clone, PartialEq)]
pub struct MineConfig {
    /// Candidates skipped at the top of each query's ranking (after the filters).
    pub range_min: usize,
    /// Candidates considered per query; None: `range_min + num_negatives + max_positives`,
    /// or `range_min + 10 * num_negatives + max_positives` when a margin or `max_score` is
    /// set (the reference's default).
    pub range_max: Option<usize>,
    /// Candidates scoring above this are skipped.
    pub max_score: Option<f64>,
    /// Candidates scoring below this are skipped.
    pub min_score: Option<f64>,
    /// Skip candidates with `score + absolute_margin > positive score`.
    pub absolute_margin: Option<f64>,
    /// Skip candidates with `score > positive - |positive| * relative_margin`.
    pub relative_margin: Option<f64>,
    /// Negatives per query.
    pub num_negatives: usize,
    /// Top or random.
    pub sampling_strategy: SamplingStrategy,
    /// Keep the positives among the candidates (forces the `n-tuple` format, as the
    /// reference does).
    pub include_positives: bool,
    /// Row shape.
    pub output_format: OutputFormat,
    /// Add the similarity scores (`scores`/`score` columns) to the output.
    pub output_scores: bool,
    /// Text prepended to the queries; None: the model's `query` prompt if it has one, else
    /// its default prompt (the reference's `encode_query`).
    pub query_prompt: Option<String>,
    /// Text prepended to the corpus; None: the model's `document`, `passage` or `corpus`
    /// prompt, else its default prompt (`encode_document`).
    pub corpus_prompt: Option<String>,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Rows per block of the search ([`top_k_blocked`]).
    pub block_rows: usize,
    /// Seed of the `random` sampling.
    pub seed: u64,
    /// Folder caching the embeddings (`query_embeddings_<hash>.npy`,
    /// `corpus_embeddings_<hash>.npy`); the hash covers `model_name`, the prompt, the
    /// precision and the texts.
    pub cache_folder: Option<PathBuf>,
    /// Identity of the model in the cache hash (the command line uses the model folder and
    /// its weights' size and time).
    pub model_name: String,
}

impl Default for MineConfig {
    fn default() -> Self {
        MineConfig {
            range_min: 0,
            range_max: None,
            max_score: None,
            min_score: None,
            absolute_margin: None,
            relative_margin: None,
            num_negatives: 3,
            sampling_strategy: SamplingStrategy::Top,
            include_positives: false,
            output_format: OutputFormat::Triplet,
            output_scores: false,
            query_prompt: None,
            corpus_prompt: None,
            batch_size: 32,
            block_rows: DEFAULT_BLOCK_ROWS,
            seed: 42,
            cache_folder: None,
            model_name: String::new(),
        }
    }
}

/// The (anchor, positive) pairs to mine for, with their column names (which the output
/// keeps).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pairs {
    /// Name of the anchor column.
    pub anchor_column: String,
    /// Name of the positive column.
    pub positive_column: String,
    /// One anchor per row.
    pub anchors: Vec<String>,
    /// One positive per row.
    pub positives: Vec<String>,
}

impl Pairs {
    /// The pairs of `table` (read from `path`, which errors name): the anchor column is
    /// `anchor` or the first column, the positive column `positive` or the second. A table
    /// with one column, or a named column it lacks, is an error.
    pub fn from_table(
        table: &Table,
        path: &Path,
        anchor: Option<&str>,
        positive: Option<&str>,
    ) -> Result<Pairs> {
        let headers = table.headers();
        if headers.len() < 2 && (anchor.is_none() || positive.is_none()) {
            return Err(Error::data(
                path,
                None,
                format!(
                    "has one column ({}); mining needs (anchor, positive) pairs: add a positive column",
                    headers.first().map(String::as_str).unwrap_or("")
                ),
            ));
        }
        table.require_columns(anchor.into_iter().chain(positive), path)?;
        let a = anchor
            .map_or(Some(0), |n| table.column(n))
            .expect("checked");
        let p = positive
            .map_or(Some(1), |n| table.column(n))
            .expect("checked");
        if a == p {
            return Err(Error::Invalid(format!(
                "{}: the anchor and the positive column are both '{}'; name two different columns with --anchor-column and --positive-column",
                path.display(),
                headers[a]
            )));
        }
        let col = |c: usize| -> Vec<String> {
            (0..table.n_rows())
                .map(|r| table.cell(r, c).to_string())
                .collect()
        };
        Ok(Pairs {
            anchor_column: headers[a].clone(),
            positive_column: headers[p].clone(),
            anchors: col(a),
            positives: col(p),
        })
    }
}

/// The texts and indices of a run, and its resolved parameters: everything the reference
/// computes before embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Name of the anchor column (kept in the output).
    pub anchor_column: String,
    /// Name of the positive column (kept in the output).
    pub positive_column: String,
    /// Unique anchors, in order of first appearance.
    pub queries: Vec<String>,
    /// The corpus plus the positives, deduplicated, in order of first appearance.
    pub corpus: Vec<String>,
    /// For each query, the corpus rows of its positives (each once, in row order).
    pub positives: Vec<Vec<usize>>,
    /// Input rows.
    pub n_rows: usize,
    /// The most rows one anchor has (duplicate rows counted, as the reference's
    /// `groupby().count()`).
    pub max_positives: usize,
    /// The `range_max` used.
    pub range_max: usize,
    /// The output format used (`include_positives` forces `n-tuple`).
    pub output_format: OutputFormat,
    /// The reference's messages before embedding (the derived `range_max`, duplicate
    /// anchors, warnings), in order.
    pub notes: Vec<String>,
}

impl Plan {
    /// Checks the parameters as the reference does and deduplicates queries and corpus.
    pub fn new(pairs: &Pairs, corpus: Option<&[String]>, cfg: &MineConfig) -> Result<Plan> {
        let n_rows = pairs.anchors.len();
        if n_rows == 0 {
            return Err(Error::Invalid(
                "the pairs are empty; give a data file with at least one (anchor, positive) row"
                    .into(),
            ));
        }
        let mut notes = Vec::new();
        let mut output_format = cfg.output_format;
        if cfg.include_positives {
            if cfg.range_min != 0
                || cfg.range_max.is_some()
                || cfg.max_score.is_some()
                || cfg.sampling_strategy != SamplingStrategy::Top
            {
                notes.push("When using --include-positives, changing --range-min, --range-max, --max-score or --sampling-strategy from their defaults may still discard the positives.".into());
            }
            if output_format != OutputFormat::NTuple {
                notes.push("When using --include-positives, the output format is set to n-tuple to keep the ranking order.".into());
                output_format = OutputFormat::NTuple;
            }
        }

        // Queries, first appearance first; rows per anchor (duplicates counted).
        let mut query_idx: FxHashMap<&str, usize> = FxHashMap::default();
        let mut queries: Vec<String> = Vec::new();
        let mut rows_per_query: Vec<usize> = Vec::new();
        for a in &pairs.anchors {
            let q = *query_idx.entry(a.as_str()).or_insert_with(|| {
                queries.push(a.clone());
                rows_per_query.push(0);
                queries.len() - 1
            });
            rows_per_query[q] += 1;
        }
        let max_positives = rows_per_query.iter().copied().max().unwrap_or(0);

        if cfg.num_negatives < 1 {
            return Err(Error::Invalid(format!(
                "--num-negatives must be at least 1, got {}",
                cfg.num_negatives
            )));
        }
        let range_max = match cfg.range_max {
            Some(r) => r,
            None => {
                let filtered = cfg.absolute_margin.is_some()
                    || cfg.relative_margin.is_some()
                    || cfg.max_score.is_some();
                // The reference: max_positives, num_negatives (x10 when filters may skip
                // some) and range_min skipped.
                let r = cfg.range_min
                    + cfg.num_negatives * if filtered { 10 } else { 1 }
                    + max_positives;
                notes.push(format!(
                    "Setting range_max to {r} based on the provided parameters."
                ));
                r
            }
        };
        if cfg.range_min >= range_max {
            return Err(Error::Invalid(format!(
                "--range-min {} must be smaller than --range-max {range_max}; lower --range-min or raise --range-max",
                cfg.range_min
            )));
        }
        if cfg.num_negatives > range_max - cfg.range_min {
            return Err(Error::Invalid(format!(
                "cannot mine {} negatives per query: only {} candidates remain after skipping the first --range-min {} of --range-max {range_max}; lower --num-negatives or --range-min, or raise --range-max",
                cfg.num_negatives,
                range_max - cfg.range_min,
                cfg.range_min
            )));
        }

        // The corpus: given corpus (or none) + positives, deduplicated.
        let mut corpus_idx: FxHashMap<&str, usize> = FxHashMap::default();
        let mut texts: Vec<String> = Vec::new();
        for t in corpus.unwrap_or(&[]).iter().chain(&pairs.positives) {
            corpus_idx.entry(t.as_str()).or_insert_with(|| {
                texts.push(t.clone());
                texts.len() - 1
            });
        }
        let mut positives: Vec<Vec<usize>> = vec![Vec::new(); queries.len()];
        for (a, p) in pairs.anchors.iter().zip(&pairs.positives) {
            let list = &mut positives[query_idx[a.as_str()]];
            let c = corpus_idx[p.as_str()];
            if !list.contains(&c) {
                list.push(c);
            }
        }
        if queries.len() != n_rows {
            notes.push(format!(
                "Found {} unique queries out of {n_rows} total queries.",
                queries.len()
            ));
        }
        if max_positives > 1 {
            notes.push(format!(
                "Found an average of {:.3} positives per query.",
                n_rows as f64 / queries.len() as f64
            ));
        }
        Ok(Plan {
            anchor_column: pairs.anchor_column.clone(),
            positive_column: pairs.positive_column.clone(),
            queries,
            corpus: texts,
            positives,
            n_rows,
            max_positives,
            range_max,
            output_format,
            notes,
        })
    }
}

/// Hooks for progress and messages; every method has a no-op default (`()` is the silent
/// observer).
pub trait MineObserver {
    /// One of the reference's messages (a derived parameter, a warning, a cache hit).
    fn note(&mut self, _line: &str) {}
    /// A phase starts: `name` ("encoding corpus", "encoding queries", "searching") over
    /// `total` items.
    fn phase(&mut self, _name: &str, _total: usize) {}
    /// Items of the current phase done so far.
    fn progress(&mut self, _done: usize) {}
    /// The current phase ended.
    fn phase_done(&mut self) {}
}

impl MineObserver for () {}

/// The query prompt as the reference's `encode_query` resolves it: `given`, else the
/// model's `query` prompt, else its default prompt.
pub fn query_prompt(encoder: &SentenceEncoder, given: Option<&str>) -> Option<String> {
    given
        .map(String::from)
        .or_else(|| encoder.prompts().get("query").cloned())
        .or_else(|| encoder.default_prompt().map(String::from))
}

/// The corpus prompt as the reference's `encode_document` resolves it: `given`, else the
/// model's `document`, `passage` or `corpus` prompt, else its default prompt.
pub fn corpus_prompt(encoder: &SentenceEncoder, given: Option<&str>) -> Option<String> {
    given
        .map(String::from)
        .or_else(|| {
            ["document", "passage", "corpus"]
                .iter()
                .find_map(|n| encoder.prompts().get(*n).cloned())
        })
        .or_else(|| encoder.default_prompt().map(String::from))
}

/// Mines hard negatives for `pairs` with `encoder`, searching `corpus` plus the positives.
pub fn mine(
    encoder: &SentenceEncoder,
    pairs: &Pairs,
    corpus: Option<&[String]>,
    cfg: &MineConfig,
    observer: &mut dyn MineObserver,
) -> Result<Mined> {
    let mined = mine_with_group(encoder, pairs, corpus, cfg, observer, None)?;
    Ok(mined.expect("one process mines"))
}

/// [`mine`] as one rank of a data-parallel run over `group` (None: one process): every
/// rank embeds its share of the corpus and the queries (contiguous parts in rank order)
/// and the embeddings are gathered; rank 0 searches and returns the result, the other
/// ranks return None. A cache hit is rank 0's to find: it tells the others to skip
/// embedding.
pub fn mine_with_group(
    encoder: &SentenceEncoder,
    pairs: &Pairs,
    corpus: Option<&[String]>,
    cfg: &MineConfig,
    observer: &mut dyn MineObserver,
    group: Option<&ProcessGroup>,
) -> Result<Option<Mined>> {
    let plan = Plan::new(pairs, corpus, cfg)?;
    for n in &plan.notes {
        observer.note(n);
    }
    let qp = query_prompt(encoder, cfg.query_prompt.as_deref());
    let cp = corpus_prompt(encoder, cfg.corpus_prompt.as_deref());
    let corpus_emb = embed(
        encoder,
        &plan.corpus,
        cp.as_deref(),
        cfg,
        "corpus",
        observer,
        group,
    )?;
    let query_emb = embed(
        encoder,
        &plan.queries,
        qp.as_deref(),
        cfg,
        "query",
        observer,
        group,
    )?;
    if group.is_some_and(|g| g.rank() != 0) {
        return Ok(None);
    }
    mine_embedded(plan, &query_emb, &corpus_emb, cfg, observer).map(Some)
}

/// The part of [`mine`] after embedding: `queries` `(plan.queries.len(), d)` and `corpus`
/// `(plan.corpus.len(), d)`, unit rows, any float kind, on one device.
pub fn mine_embedded(
    plan: Plan,
    queries: &Tensor,
    corpus: &Tensor,
    cfg: &MineConfig,
    observer: &mut dyn MineObserver,
) -> Result<Mined> {
    let (nq, _) = queries.size2()?;
    let (nc, _) = corpus.size2()?;
    if nq as usize != plan.queries.len() || nc as usize != plan.corpus.len() {
        return Err(Error::Invalid(format!(
            "mine: {nq} query and {nc} corpus embeddings for {} queries and {} documents",
            plan.queries.len(),
            plan.corpus.len()
        )));
    }
    let positive_scores = positive_scores(&plan, queries, corpus, cfg.block_rows)?;
    let asked = plan.range_max + plan.max_positives;
    observer.phase("searching", plan.queries.len());
    let (s, i) = top_k_blocked_with_progress(queries, corpus, asked, cfg.block_rows, &mut |d| {
        observer.progress(d)
    })?;
    observer.phase_done();
    let found = s.size()[1] as usize;
    let candidates = Candidates {
        found,
        asked,
        scores: Vec::<f32>::try_from(s.view([-1]))?,
        indices: Vec::<i64>::try_from(i.view([-1]))?,
    };
    drop((s, i));
    let mut rng = crate::seeded_rng(cfg.seed);
    let selection = select_negatives(
        &candidates,
        &plan.positives,
        &positive_scores,
        cfg,
        plan.range_max,
        &mut rng,
    );
    drop(candidates);
    Ok(output::build(plan, &selection, &positive_scores, cfg))
}

/// The score of every (query, positive) pair, queries in order, each query's positives in
/// the order of [`Plan::positives`] (the reference's `similarity_pairwise`), in fp32.
fn positive_scores(
    plan: &Plan,
    queries: &Tensor,
    corpus: &Tensor,
    block: usize,
) -> Result<Vec<f32>> {
    let _guard = tch::no_grad_guard();
    let pairs: Vec<(i64, i64)> = plan
        .positives
        .iter()
        .enumerate()
        .flat_map(|(q, ps)| ps.iter().map(move |&p| (q as i64, p as i64)))
        .collect();
    let device = queries.device();
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(block.max(1)) {
        let qi: Vec<i64> = chunk.iter().map(|p| p.0).collect();
        let ci: Vec<i64> = chunk.iter().map(|p| p.1).collect();
        let qi = Tensor::from_slice(&qi).to_device(device);
        let ci = Tensor::from_slice(&ci).to_device(device);
        let a = queries.f_index_select(0, &qi)?.to_kind(Kind::Float);
        let b = corpus.f_index_select(0, &ci)?.to_kind(Kind::Float);
        let s = (a * b).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        out.extend(Vec::<f32>::try_from(s.to_device(Device::Cpu))?);
    }
    Ok(out)
}

/// Unit-length embeddings of `texts` with `prompt`, on the encoder's device, bf16 when the
/// encoder runs in bf16 (fp32 otherwise); loaded from or saved to the cache folder.
#[allow(clippy::too_many_arguments)]
fn embed(
    encoder: &SentenceEncoder,
    texts: &[String],
    prompt: Option<&str>,
    cfg: &MineConfig,
    what: &str,
    observer: &mut dyn MineObserver,
    group: Option<&ProcessGroup>,
) -> Result<Tensor> {
    let kind = match encoder.precision() {
        Precision::Bf16 => Kind::BFloat16,
        _ => Kind::Float,
    };
    let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world_size()));
    let cache = cfg.cache_folder.as_ref().map(|dir| {
        let key = cache_key(&cfg.model_name, prompt, encoder.precision(), texts);
        dir.join(format!("{what}_embeddings_{key}.npy"))
    });
    let mut hit = None;
    if let Some(path) = cache.as_ref().filter(|p| rank == 0 && p.is_file()) {
        let t = Tensor::read_npy(path).map_err(|e| Error::io(path, e))?;
        if t.size() == [texts.len() as i64, encoder.dimension()] {
            observer.note(&format!(
                "[Cache] Loaded {what} embeddings from {} (shape=({}, {}))",
                path.display(),
                texts.len(),
                encoder.dimension()
            ));
            hit = Some(t.to_kind(kind).to_device(encoder.device()));
        }
    }
    if let Some(g) = group {
        // Rank 0 alone reads the cache; the others learn whether to embed.
        let flag = Tensor::from_slice(&[i32::from(hit.is_some())]).to_device(g.device());
        g.broadcast(&flag, 0)?;
        if i32::try_from(&flag)? == 1 {
            return Ok(hit.unwrap_or_else(|| Tensor::zeros([0], (kind, encoder.device()))));
        }
    } else if let Some(t) = hit {
        return Ok(t);
    }
    // This rank's share of the texts (all of them for one process).
    let parts = crate::train::collator::shard_sizes(texts.len(), world);
    let own = &texts[crate::train::collator::part_range(&parts, rank)];
    observer.phase(&format!("encoding {what}"), own.len());
    let refs: Vec<&str> = own.iter().map(String::as_str).collect();
    let emb = if refs.is_empty() {
        Tensor::zeros([0, encoder.dimension()], (Kind::Float, encoder.device()))
    } else {
        encoder
            .encode_with_progress(&refs, prompt, cfg.batch_size, &mut |d| observer.progress(d))?
    };
    observer.phase_done();
    // `normalize_embeddings=True`: x / max(|x|, 1e-12), as torch's F.normalize.
    let emb = &emb / emb.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    let emb = match group {
        Some(g) => {
            let local = emb.to_kind(Kind::Float).to_device(g.device());
            gather_parts_with_own_grad(g, &local, &parts)?
        }
        None => emb,
    };
    if let Some(path) = cache.as_ref().filter(|_| rank == 0) {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        emb.write_npy(&tmp).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path, e)
        })?;
        observer.note(&format!(
            "[Cache] Saved {what} embeddings to {}",
            path.display()
        ));
    }
    Ok(emb.to_kind(kind).to_device(encoder.device()))
}

/// sha256 (hex) of the model's identity, the prompt, the precision and the texts, each
/// length-prefixed so that no two inputs share a key.
fn cache_key(model: &str, prompt: Option<&str>, precision: Precision, texts: &[String]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut put = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    put(model.as_bytes());
    put(prompt.map_or(&b"\xff"[..], str::as_bytes));
    put(format!("{precision:?}").as_bytes());
    for t in texts {
        put(t.as_bytes());
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(rows: &[(&str, &str)]) -> Pairs {
        Pairs {
            anchor_column: "query".into(),
            positive_column: "answer".into(),
            anchors: rows.iter().map(|r| r.0.to_string()).collect(),
            positives: rows.iter().map(|r| r.1.to_string()).collect(),
        }
    }

    #[test]
    fn plan_dedups_like_the_reference() {
        let p = pairs(&[("a", "x"), ("b", "y"), ("a", "z"), ("a", "x")]);
        let corpus: Vec<String> = ["w", "y", "v"].iter().map(|s| s.to_string()).collect();
        let plan = Plan::new(&p, Some(&corpus), &MineConfig::default()).unwrap();
        assert_eq!(plan.queries, ["a", "b"]);
        assert_eq!(plan.corpus, ["w", "y", "v", "x", "z"]);
        assert_eq!(plan.positives, [vec![3, 4], vec![1]]);
        // ("a", "x") twice: three rows for "a", as pandas' groupby().count().
        assert_eq!(plan.max_positives, 3);
        // range_min + num_negatives + max_positives.
        assert_eq!(plan.range_max, 6);
        assert_eq!(
            plan.notes,
            [
                "Setting range_max to 6 based on the provided parameters.",
                "Found 2 unique queries out of 4 total queries.",
                "Found an average of 2.000 positives per query."
            ]
        );
        let filtered = MineConfig {
            max_score: Some(0.9),
            range_min: 2,
            ..MineConfig::default()
        };
        assert_eq!(
            Plan::new(&p, None, &filtered).unwrap().range_max,
            2 + 30 + 3
        );
        let no_corpus = Plan::new(&p, None, &MineConfig::default()).unwrap();
        assert_eq!(no_corpus.corpus, ["x", "y", "z"]);
    }

    #[test]
    fn plan_rejects_what_the_reference_rejects() {
        let p = pairs(&[("a", "x")]);
        let err = |cfg: MineConfig| Plan::new(&p, None, &cfg).unwrap_err().to_string();
        let e = err(MineConfig {
            range_min: 5,
            range_max: Some(5),
            ..Default::default()
        });
        assert!(
            e.contains("--range-min 5 must be smaller than --range-max 5"),
            "{e}"
        );
        let e = err(MineConfig {
            range_min: 2,
            range_max: Some(4),
            num_negatives: 3,
            ..Default::default()
        });
        assert!(
            e.contains("cannot mine 3 negatives per query: only 2 candidates"),
            "{e}"
        );
        let e = err(MineConfig {
            num_negatives: 0,
            ..Default::default()
        });
        assert!(e.contains("--num-negatives must be at least 1"), "{e}");
        let e = Plan::new(&pairs(&[]), None, &MineConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        let plan = Plan::new(
            &p,
            None,
            &MineConfig {
                include_positives: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(plan.output_format, OutputFormat::NTuple);
    }

    #[test]
    fn pairs_from_a_table() {
        let t = Table::from_rows(&["q", "d", "x"], &[vec!["a", "b", "c"]]);
        let p = Pairs::from_table(&t, Path::new("t.csv"), None, None).unwrap();
        assert_eq!(
            (p.anchor_column.as_str(), p.positives[0].as_str()),
            ("q", "b")
        );
        let p = Pairs::from_table(&t, Path::new("t.csv"), Some("x"), Some("q")).unwrap();
        assert_eq!((p.anchors[0].as_str(), p.positives[0].as_str()), ("c", "a"));
        let e = Pairs::from_table(&t, Path::new("t.csv"), Some("nope"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'nope'") && e.contains("available columns"),
            "{e}"
        );
        let one = Table::from_rows(&["q"], &[vec!["a"]]);
        let e = Pairs::from_table(&one, Path::new("t.csv"), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one column"), "{e}");
    }

    /// The whole path after embedding, on hand-made unit vectors: the nearest non-positive
    /// documents come out, in every format.
    #[test]
    fn mine_embedded_end_to_end() {
        // Query "a" at angle 0; documents at angles 0 (its positive), 10, 20, 30 degrees.
        let p = pairs(&[("a", "p")]);
        let corpus: Vec<String> = ["d10", "d20", "d30"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cfg = MineConfig {
            num_negatives: 2,
            output_scores: true,
            ..Default::default()
        };
        let plan = Plan::new(&p, Some(&corpus), &cfg).unwrap();
        assert_eq!(plan.corpus, ["d10", "d20", "d30", "p"]);
        let rows = |deg: &[f64]| {
            let v: Vec<f32> = deg
                .iter()
                .flat_map(|d| {
                    let r = d.to_radians();
                    [r.cos() as f32, r.sin() as f32]
                })
                .collect();
            Tensor::from_slice(&v).view([deg.len() as i64, 2])
        };
        let q = rows(&[0.0]);
        let c = rows(&[10.0, 20.0, 30.0, 0.0]);
        let m = mine_embedded(plan, &q, &c, &cfg, &mut ()).unwrap();
        assert_eq!(m.columns, ["query", "answer", "negative", "scores"]);
        assert_eq!(m.n_rows(), 2);
        assert_eq!(m.text_row(0)[..3], ["a", "p", "d10"]);
        assert_eq!(m.text_row(1)[2], "d20");
        let s10 = 10f64.to_radians().cos() as f32;
        assert_eq!(m.row(0)[3], Value::Floats(vec![1.0, s10]));
        assert_eq!(m.stats.rows, 2);
        assert_eq!(m.stats.maximum_possible, 2);
    }
}
