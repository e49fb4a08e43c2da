//! `bm25`: hard negatives by lexical similarity. Every distinct anchor text of a scope (the
//! anchor's category group, or the whole part) is a document of a BM25 index built once per
//! part; an anchor's negatives are the other documents of its scope that score highest with
//! the anchor's text as the query.
//!
//! Tokens ([`tokenize`]): overlapping character bigrams over runs of Hangul, Han and kana
//! (a one-character run is its own token), as Lucene's `CJKBigramFilter` does; lowercased
//! alphanumeric words elsewhere. Korean needs the bigrams: words carry particles and
//! compounds (`신용카드`, `카드를`) that whole-word tokens would never match.
//!
//! Scoring: Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond"
//! (2009), eq. 3.15 with k3 = 0 (each distinct query term counts once), and the idf of
//! Lucene's `org.apache.lucene.search.similarities.BM25Similarity` (never negative):
//!
//! ```text
//! idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
//! score(q, d) = sum over distinct t in q of
//!               idf(t) * tf(t,d) (k1 + 1) / (tf(t,d) + k1 (1 - b + b |d| / avgdl))
//! ```
//!
//! over the scope's documents: N of them, |d| the tokens of d, avgdl their mean. (Lucene 8+
//! drops the constant `k1 + 1` and stores |d| lossily; neither changes the ranking.
//! rank_bm25's `BM25Okapi` uses ln((N - df + 0.5) / (df + 0.5)) floored at a fraction of the
//! mean idf instead; tests/fixtures/bm25/make_fixture.py checks it against ours with Lucene's
//! idf swapped in.)
//!
//! Speed: an inverted index built once per part (one posting list per term, or per
//! (category, term) with scope=group, so a list holds one scope's documents; each posting
//! carries its precomputed `tf (k1 + 1) / (tf + norm)`), scored term at a time, rarest term
//! first, touching only documents that share a term with the anchor. Once the `top`-th best
//! partial score beats what the remaining (frequent, low-idf) terms could add in total, no
//! new document can enter the top (Moffat & Zobel's "quit/continue", 1996): the remaining
//! terms are walked only for the documents still in reach, and those are scored exactly
//! from a forward index of each document's lists. The result is the exact ranking; per
//! anchor the cost is about the postings of its rare terms. The last anchor's ranking is
//! kept (strategies draw once per positive column, in a row).

use std::sync::{Mutex, PoisonError};

use embtune_core::sampler::groups::FxHashMap;
use embtune_core::{register_sampler, CandidatePool, Error, NegativeSampler, Result, Rng};
use serde::{Deserialize, Serialize};

/// Where an anchor's candidates, and the statistics (N, df, avgdl) that score them, come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The anchor's category group: the original's hard negatives come from the same
    /// category, and `bm25` ranks within it (the default).
    Group,
    /// Every anchor of the part, whatever its category.
    Part,
}

/// Options of `bm25`, one `--sampler-opt key=value` each (`--sampler-opt scope=part`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bm25Config {
    /// Term-frequency saturation (BM25's k1), >= 0.
    pub k1: f64,
    /// Document-length normalisation (BM25's b), in [0, 1].
    pub b: f64,
    /// `group` (the anchor's category) or `part` (every anchor of the part).
    pub scope: Scope,
    /// Draw k negatives at random (seeded) from the best `top`; unset (or below k): the
    /// best k, in order.
    pub top: Option<usize>,
}

impl Default for Bm25Config {
    fn default() -> Self {
        Bm25Config {
            k1: 1.2,
            b: 0.75,
            scope: Scope::Group,
            top: None,
        }
    }
}

/// True for the characters tokenized as bigrams: Hangul (syllables and jamo), Han
/// ideographs (unified, extensions, compatibility) and kana.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF         // Hangul Jamo
        | 0x3040..=0x30FF       // Hiragana, Katakana
        | 0x3130..=0x318F       // Hangul Compatibility Jamo
        | 0x31F0..=0x31FF       // Katakana Phonetic Extensions
        | 0x3400..=0x4DBF       // CJK Unified Ideographs Extension A
        | 0x4E00..=0x9FFF       // CJK Unified Ideographs
        | 0xA960..=0xA97F       // Hangul Jamo Extended-A
        | 0xAC00..=0xD7FF       // Hangul Syllables, Hangul Jamo Extended-B
        | 0xF900..=0xFAFF       // CJK Compatibility Ideographs
        | 0x20000..=0x3FFFF // CJK Extensions B and on (planes 2 and 3)
    )
}

/// Calls `emit` with each token of `text`, in order: the overlapping character bigrams of
/// every run of [`is_cjk`] characters (a one-character run: that character), and every run
/// of other alphanumeric characters as one word, lowercased character by character (in
/// `lower`, a reused buffer). Everything else separates tokens. `"123호 상품입니다"` gives
/// `123`, `호`, `상품`, `품입`, `입니`, `니다`.
pub fn tokenize(text: &str, lower: &mut String, mut emit: impl FnMut(&str)) {
    #[derive(PartialEq, Clone, Copy)]
    enum Run {
        Gap,
        Cjk,
        Word,
    }
    fn word<'t>(w: &'t str, lower: &'t mut String) -> &'t str {
        if w.chars().any(char::is_uppercase) {
            lower.clear();
            lower.extend(w.chars().flat_map(char::to_lowercase));
            lower
        } else {
            w
        }
    }
    let mut run = Run::Gap;
    // Byte offset where the run began; in a CJK run, the previous character's offset and
    // the run's length in characters.
    let (mut start, mut prev, mut chars) = (0usize, 0usize, 0usize);
    for (i, c) in text.char_indices() {
        let class = if is_cjk(c) {
            Run::Cjk
        } else if c.is_alphanumeric() {
            Run::Word
        } else {
            Run::Gap
        };
        if class != run {
            match run {
                Run::Cjk if chars == 1 => emit(&text[start..i]),
                Run::Word => emit(word(&text[start..i], lower)),
                _ => {}
            }
            run = class;
            start = i;
            chars = 0;
        }
        if run == Run::Cjk {
            if chars > 0 {
                emit(&text[prev..i + c.len_utf8()]);
            }
            prev = i;
            chars += 1;
        }
    }
    match run {
        Run::Cjk if chars == 1 => emit(&text[start..]),
        Run::Word => emit(word(&text[start..], lower)),
        _ => {}
    }
}

/// The part's index: documents (distinct texts per scope, numbered scope by scope in pool
/// order) and, per term, the documents holding it.
#[derive(Debug, Default)]
struct Index {
    /// Document `d`'s tokens as posting lists (one list per term with scope=part, per
    /// (scope, term) with scope=group), sorted, repeats kept:
    /// `fwd[fwd_start[d]..fwd_start[d + 1]]`.
    fwd_start: Vec<usize>,
    fwd: Vec<u32>,
    /// Per pool entry: its document.
    doc_of: Vec<u32>,
    /// Per document: the pool index of the first entry with its text.
    rep: Vec<u32>,
    /// Per document: its scope.
    scope_of: Vec<u32>,
    /// Scope `s`'s documents are `scope_start[s]..scope_start[s + 1]`.
    scope_start: Vec<u32>,
    /// Per document: `k1 (1 - b + b |d| / avgdl)` with its scope's avgdl.
    norm: Vec<f64>,
    /// List `l`'s postings are `post_start[l]..post_start[l + 1]` of `post_doc` (ascending)
    /// and `post_w` (`tf (k1 + 1) / (tf + norm)`, the per-document factor of its score).
    post_start: Vec<usize>,
    post_doc: Vec<u32>,
    post_w: Vec<f32>,
}

/// A term of the current query.
#[derive(Debug, Clone, Copy)]
struct QueryTerm {
    list: u32,
    idf: f64,
    /// Its postings inside the anchor's scope.
    from: usize,
    to: usize,
}

/// Buffers reused from call to call (sized in `prepare`), and the last anchor's ranking:
/// strategies ask for the same anchor several times in a row (once per positive column).
#[derive(Debug, Default)]
struct Scratch {
    /// Per document: partial score (0 = untouched).
    acc: Vec<f32>,
    touched: Vec<u32>,
    select: Vec<f32>,
    /// Query terms sorted by list (the order exact scores are summed in), and the order
    /// they are walked in (idf descending).
    query: Vec<QueryTerm>,
    walk: Vec<usize>,
    candidates: Vec<(f64, u32)>,
    /// `ranked` is the best `ranked_want` documents (or all there are) for document
    /// `ranked_for`, with their scores.
    ranked_for: Option<u32>,
    ranked_want: usize,
    ranked: Vec<(f64, u32)>,
    /// Rankings that stopped before walking every query term (for tests and tracing).
    early_stops: usize,
}

/// After the bound stops new documents, at most this many beyond `top` are scored exactly
/// from their text; more, and the next term is walked for them first.
const EXACT_AT_MOST: usize = 32;

/// Relative slack on partial (f32) scores when bounding: pruning stays exact.
const SLACK: f64 = 1e-4;

/// The `bm25` sampler.
#[derive(Debug)]
pub struct Bm25 {
    config: Bm25Config,
    index: Index,
    scratch: Mutex<Scratch>,
}

impl Bm25 {
    /// Checks `config`.
    pub fn new(config: Bm25Config) -> Result<Self> {
        let invalid = |message: String| Error::PluginConfig {
            kind: "sampler",
            plugin: "bm25".to_string(),
            message,
        };
        if !(config.k1 >= 0.0 && config.k1.is_finite()) {
            return Err(invalid(format!(
                "k1 must be a number >= 0 (1.2 is usual), got {}",
                config.k1
            )));
        }
        if !(0.0..=1.0).contains(&config.b) {
            return Err(invalid(format!(
                "b must be between 0 and 1 (0.75 is usual), got {}",
                config.b
            )));
        }
        if config.top == Some(0) {
            return Err(invalid(
                "top must be at least 1 (or left out for the best k)".to_string(),
            ));
        }
        Ok(Bm25 {
            config,
            index: Index::default(),
            scratch: Mutex::new(Scratch::default()),
        })
    }

    /// Ranks the documents of `d0`'s scope other than `d0` against `d0`'s terms: the best
    /// `want` (score descending, then document, i.e. pool order), into `s.ranked`.
    /// Documents sharing no term score 0 and come last, in pool order.
    fn rank(&self, d0: u32, want: usize, s: &mut Scratch) {
        let ix = &self.index;
        let k1p = self.config.k1 + 1.0;
        let g = ix.scope_of[d0 as usize] as usize;
        let (lo, hi) = (ix.scope_start[g], ix.scope_start[g + 1]);
        let n = f64::from(hi - lo);
        s.ranked.clear();
        s.ranked_for = Some(d0);
        s.ranked_want = want;
        // The query: the anchor's distinct terms (its posting lists, sorted), with df =
        // the list's length (lists hold one scope's documents).
        s.query.clear();
        let own = &ix.fwd[ix.fwd_start[d0 as usize]..ix.fwd_start[d0 as usize + 1]];
        for (j, &list) in own.iter().enumerate() {
            if j > 0 && own[j - 1] == list {
                continue;
            }
            s.query.push(QueryTerm {
                list,
                idf: 0.0,
                from: ix.post_start[list as usize],
                to: ix.post_start[list as usize + 1],
            });
        }
        for q in s.query.iter_mut() {
            let df = (q.to - q.from) as f64;
            q.idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        }
        s.walk.clear();
        s.walk.extend(0..s.query.len());
        let query = &s.query;
        s.walk
            .sort_unstable_by(|&x, &y| query[y].idf.total_cmp(&query[x].idf).then(x.cmp(&y)));

        // Term at a time, rarest first. `rest` bounds what the terms not yet walked can
        // add to any document (each factor is below k1 + 1).
        let mut rest: f64 = query.iter().map(|q| q.idf * k1p).sum();
        let mut best = 0f32;
        let mut walked = s.walk.len();
        for (j, &qi) in s.walk.iter().enumerate() {
            if s.touched.len() >= want && f64::from(best) > rest {
                let theta = f64::from(kth_largest(&s.acc, &s.touched, want, &mut s.select));
                if theta * (1.0 - SLACK) > rest * (1.0 + SLACK) {
                    // A document not touched yet scores at most `rest` < theta.
                    walked = j;
                    break;
                }
            }
            let q = query[qi];
            let idf = q.idf as f32;
            for p in q.from..q.to {
                let d = ix.post_doc[p];
                if d == d0 {
                    continue;
                }
                let a = &mut s.acc[d as usize];
                if *a == 0.0 {
                    s.touched.push(d);
                }
                *a += idf * ix.post_w[p];
                best = best.max(*a);
            }
            rest -= q.idf * k1p;
        }
        if walked < s.walk.len() {
            s.early_stops += 1;
        }
        // Documents that can still be among the best `want`: partial + rest reaches the
        // want-th best partial (a lower bound of the want-th best score). While they are
        // many, the next term is walked for the touched documents only ("continue"): a
        // stream through its list, cheaper than scoring them all exactly from their text.
        let theta = loop {
            if walked == s.walk.len() {
                rest = 0.0;
            }
            let theta = if s.touched.len() >= want {
                f64::from(kth_largest(&s.acc, &s.touched, want, &mut s.select)) * (1.0 - SLACK)
            } else {
                f64::NEG_INFINITY
            };
            if walked == s.walk.len() {
                break theta;
            }
            let survivors = s
                .touched
                .iter()
                .filter(|&&d| f64::from(s.acc[d as usize]) * (1.0 + SLACK) + rest >= theta)
                .count();
            if survivors <= want + EXACT_AT_MOST {
                break theta;
            }
            let q = query[s.walk[walked]];
            let idf = q.idf as f32;
            for p in q.from..q.to {
                let a = &mut s.acc[ix.post_doc[p] as usize];
                if *a != 0.0 {
                    *a += idf * ix.post_w[p];
                }
            }
            rest -= q.idf * k1p;
            walked += 1;
        };
        s.candidates.clear();
        for &d in &s.touched {
            if f64::from(s.acc[d as usize]) * (1.0 + SLACK) + rest >= theta {
                let score = self.exact(d, &s.query);
                s.candidates.push((score, d));
            }
        }
        s.candidates
            .sort_unstable_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        s.candidates.truncate(want);
        s.ranked.extend_from_slice(&s.candidates);
        // Fewer sharing a term than wanted: the rest of the scope, in pool order, score 0.
        if s.ranked.len() < want {
            for d in lo..hi {
                if s.ranked.len() == want {
                    break;
                }
                if d != d0 && s.acc[d as usize] == 0.0 {
                    s.ranked.push((0.0, d));
                }
            }
        }
        for &d in &s.touched {
            s.acc[d as usize] = 0.0;
        }
        s.touched.clear();
    }

    /// The exact score of document `d` for `query`, summed in list order
    /// (so equal documents get equal scores, bit for bit).
    fn exact(&self, d: u32, query: &[QueryTerm]) -> f64 {
        let ix = &self.index;
        let doc = &ix.fwd[ix.fwd_start[d as usize]..ix.fwd_start[d as usize + 1]];
        let (k1, norm) = (self.config.k1, ix.norm[d as usize]);
        // Both sorted by list: one merge.
        let (mut i, mut score) = (0, 0.0);
        for q in query {
            while i < doc.len() && doc[i] < q.list {
                i += 1;
            }
            let mut tf = 0u32;
            while i < doc.len() && doc[i] == q.list {
                tf += 1;
                i += 1;
            }
            if tf > 0 {
                let f = f64::from(tf);
                score += q.idf * f * (k1 + 1.0) / (f + norm);
            }
        }
        score
    }
}

/// The key of (scope, term) in the map of posting lists that `prepare` builds: the pair as
/// one u64 through MurmurHash3's fmix64 (a bijection, so keys stay distinct). The Fx hash alone multiplies, which carries
/// no high bit (the scope) into the low bits that pick a bucket: every scope's copy of a
/// term would probe the same bucket chain.
fn list_key(scope: u32, term: u32) -> u64 {
    let mut h = (u64::from(scope) << 32) | u64::from(term);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The `k`-th largest partial score among `touched` (k >= 1, k <= touched.len()).
fn kth_largest(acc: &[f32], touched: &[u32], k: usize, buf: &mut Vec<f32>) -> f32 {
    buf.clear();
    buf.extend(touched.iter().map(|&d| acc[d as usize]));
    let (_, kth, _) = buf.select_nth_unstable_by(k - 1, |x, y| y.total_cmp(x));
    *kth
}

impl NegativeSampler for Bm25 {
    fn prepare(&mut self, pool: &CandidatePool<'_>) -> Result<()> {
        let n = pool.len();
        if n >= u32::MAX as usize {
            return Err(Error::Invalid(format!(
                "sampler 'bm25': a part of {n} rows is over its limit of 4 billion; split the table with --domain-col"
            )));
        }
        let (k1, b) = (self.config.k1, self.config.b);
        // Scopes, then documents: the distinct texts of each scope in first-appearance order.
        let mut scope_ids: FxHashMap<&str, u32> = FxHashMap::default();
        let mut doc_ids: FxHashMap<(u32, &str), u32> = FxHashMap::default();
        doc_ids.reserve(n);
        let (mut first_of, mut scope_of_first, mut tmp_of) =
            (Vec::new(), Vec::new(), Vec::with_capacity(n));
        for (i, (&text, &cat)) in pool.anchors.iter().zip(&pool.categories).enumerate() {
            let s = match self.config.scope {
                Scope::Part => 0,
                Scope::Group => {
                    let next = scope_ids.len() as u32;
                    *scope_ids.entry(cat).or_insert(next)
                }
            };
            let next = first_of.len() as u32;
            let d = *doc_ids.entry((s, text)).or_insert_with(|| {
                first_of.push(i as u32);
                scope_of_first.push(s);
                next
            });
            tmp_of.push(d);
        }
        drop(doc_ids);
        let n_scopes = match self.config.scope {
            Scope::Part => 1,
            Scope::Group => scope_ids.len(),
        };
        // Number documents scope by scope (a stable counting sort), so a scope is a range
        // of document ids and, inside it, ids follow pool order.
        let mut scope_start = vec![0u32; n_scopes + 1];
        for &s in &scope_of_first {
            scope_start[s as usize + 1] += 1;
        }
        for s in 0..n_scopes {
            scope_start[s + 1] += scope_start[s];
        }
        let mut fill = scope_start.clone();
        let n_docs = first_of.len();
        let mut renumber = vec![0u32; n_docs];
        let mut rep = vec![0u32; n_docs];
        let mut scope_of = vec![0u32; n_docs];
        for (t, &s) in scope_of_first.iter().enumerate() {
            let d = fill[s as usize];
            fill[s as usize] += 1;
            renumber[t] = d;
            rep[d as usize] = first_of[t];
            scope_of[d as usize] = s;
        }
        drop((first_of, scope_of_first));
        let doc_of: Vec<u32> = tmp_of.iter().map(|&t| renumber[t as usize]).collect();
        drop((tmp_of, renumber));

        // Tokens of every document (sorted term ids, repeats kept), and per term the
        // documents holding it.
        let mut terms: FxHashMap<Box<str>, u32> = FxHashMap::default();
        let mut tok_start = Vec::with_capacity(n_docs + 1);
        let mut toks: Vec<u32> = Vec::new();
        let mut lower = String::new();
        tok_start.push(0usize);
        for &r in &rep {
            let from = toks.len();
            tokenize(pool.anchors[r as usize], &mut lower, |t| {
                let id = match terms.get(t) {
                    Some(&id) => id,
                    None => {
                        let id = terms.len() as u32;
                        terms.insert(t.into(), id);
                        id
                    }
                };
                toks.push(id);
            });
            toks[from..].sort_unstable();
            tok_start.push(toks.len());
        }
        // Posting lists: one per term (scope=part), or one per (scope, term) (scope=group),
        // so that a list holds just the scope's documents. Tokens become list ids.
        let mut lists: FxHashMap<u64, u32> = FxHashMap::default();
        let mut df: Vec<usize> = Vec::new();
        for d in 0..n_docs {
            let key_of = |t: u32| list_key(scope_of[d], t);
            let doc = &mut toks[tok_start[d]..tok_start[d + 1]];
            let mut j = 0;
            while j < doc.len() {
                let t = doc[j];
                let list = match self.config.scope {
                    Scope::Part => t,
                    Scope::Group => {
                        let next = lists.len() as u32;
                        *lists.entry(key_of(t)).or_insert(next)
                    }
                };
                if list as usize == df.len() {
                    df.push(0);
                } else if df.len() <= list as usize {
                    df.resize(list as usize + 1, 0);
                }
                df[list as usize] += 1;
                while j < doc.len() && doc[j] == t {
                    doc[j] = list;
                    j += 1;
                }
            }
            doc.sort_unstable();
        }
        // |d| / avgdl per scope.
        let mut norm = vec![0f64; n_docs];
        for s in 0..n_scopes {
            let (lo, hi) = (scope_start[s] as usize, scope_start[s + 1] as usize);
            let total = tok_start[hi] - tok_start[lo];
            let avgdl = total as f64 / (hi - lo) as f64;
            for d in lo..hi {
                let dl = (tok_start[d + 1] - tok_start[d]) as f64;
                let ratio = if avgdl > 0.0 { dl / avgdl } else { 0.0 };
                norm[d] = k1 * (1.0 - b + b * ratio);
            }
        }
        let mut post_start = Vec::with_capacity(df.len() + 1);
        post_start.push(0usize);
        for &f in &df {
            post_start.push(post_start[post_start.len() - 1] + f);
        }
        let total = post_start[df.len()];
        let mut post_doc = vec![0u32; total];
        let mut post_w = vec![0f32; total];
        let mut at = post_start.clone();
        for d in 0..n_docs {
            let doc = &toks[tok_start[d]..tok_start[d + 1]];
            let mut j = 0;
            while j < doc.len() {
                let t = doc[j];
                let run = doc[j..].iter().take_while(|&&x| x == t).count();
                let tf = run as f64;
                let p = &mut at[t as usize];
                post_doc[*p] = d as u32;
                post_w[*p] = (tf * (k1 + 1.0) / (tf + norm[d])) as f32;
                *p += 1;
                j += run;
            }
        }
        drop((terms, lists));
        self.index = Index {
            fwd_start: tok_start,
            fwd: toks,
            doc_of,
            rep,
            scope_of,
            scope_start,
            norm,
            post_start,
            post_doc,
            post_w,
        };
        let s = self
            .scratch
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        *s = Scratch {
            acc: vec![0.0; n_docs],
            ..Scratch::default()
        };
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
        if k == 0 {
            return Ok(());
        }
        let want = self.config.top.map_or(k, |t| t.max(k));
        let mut guard = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut *guard;
        let d0 = self.index.doc_of[anchor];
        // The last ranking serves again when it was for this document and went as deep
        // (or found fewer than it asked for).
        let reuse =
            s.ranked_for == Some(d0) && (s.ranked_want >= want || s.ranked.len() < s.ranked_want);
        if !reuse {
            self.rank(d0, want, s);
        }
        let best = &s.ranked[..s.ranked.len().min(want)];
        let rep = |&(_, d): &(f64, u32)| self.index.rep[d as usize] as usize;
        if best.len() <= k {
            out.extend(best.iter().map(rep));
        } else {
            out.extend(
                rand::seq::index::sample(rng, best.len(), k)
                    .into_iter()
                    .map(|j| rep(&best[j])),
            );
        }
        Ok(())
    }
}

register_sampler!(
    name: "bm25",
    summary: "lexically closest anchors by BM25 (Korean-aware bigrams), same category by default",
    long: "Each distinct anchor text of the scope is a BM25 document; the negatives of an anchor\n\
           are the other documents that score highest with the anchor's text as the query\n\
           (never its own text; distinct texts; ties in pool order; documents sharing no term\n\
           score 0 and come last, so an anchor gets as many negatives as same-category gives).\n\
           Tokens: character bigrams over Hangul/Han/kana runs (one character alone: itself),\n\
           lowercased words elsewhere. idf = ln(1 + (N - df + 0.5) / (df + 0.5)) (Lucene).\
           \n  k1=1.2       term-frequency saturation\
           \n  b=0.75       length normalisation\
           \n  scope=group  candidates and statistics from the anchor's category (the original's\
           \n               hard negatives); scope=part: every anchor of the part (cost ~ rows^2)\
           \n  top=N        draw k at random (seeded) from the best N; unset: the best k",
    config: Bm25Config,
    build: |c| Ok(Box::new(Bm25::new(c)?)),
);

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_core::testing;
    use std::collections::{BTreeSet, HashMap, HashSet};

    fn terms(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        tokenize(text, &mut String::new(), |t| out.push(t.to_string()));
        out
    }

    fn sampler(k1: f64, b: f64, scope: Scope, top: Option<usize>) -> Bm25 {
        Bm25::new(Bm25Config { k1, b, scope, top }).unwrap()
    }

    /// Every other document of `anchor`'s scope with its score, best first (the sampler's
    /// whole ranking).
    fn ranking(s: &Bm25, anchor: usize) -> Vec<(f64, usize)> {
        let mut g = s.scratch.lock().unwrap();
        s.rank(s.index.doc_of[anchor], usize::MAX, &mut g);
        g.ranked
            .iter()
            .map(|&(sc, d)| (sc, s.index.rep[d as usize] as usize))
            .collect()
    }

    /// The obvious BM25: for the anchor, every distinct text of its scope (first entry
    /// carrying it) but its own, scored from scratch; best first, ties in pool order.
    fn naive(pool: &CandidatePool<'_>, anchor: usize, c: &Bm25Config) -> Vec<(f64, usize)> {
        let in_scope =
            |i: usize| c.scope == Scope::Part || pool.categories[i] == pool.categories[anchor];
        let mut seen = HashSet::new();
        let docs: Vec<(usize, Vec<String>)> = (0..pool.len())
            .filter(|&i| in_scope(i) && seen.insert(pool.anchors[i]))
            .map(|i| (i, terms(pool.anchors[i])))
            .collect();
        let n = docs.len() as f64;
        let avgdl = docs.iter().map(|d| d.1.len()).sum::<usize>() as f64 / n;
        let mut df: HashMap<&str, f64> = HashMap::new();
        for (_, d) in &docs {
            for t in d.iter().map(String::as_str).collect::<HashSet<_>>() {
                *df.entry(t).or_default() += 1.0;
            }
        }
        let query: BTreeSet<String> = terms(pool.anchors[anchor]).into_iter().collect();
        let mut out: Vec<(f64, usize)> = docs
            .iter()
            .filter(|(i, _)| pool.anchors[*i] != pool.anchors[anchor])
            .map(|(i, d)| {
                let mut score = 0.0;
                for t in &query {
                    let tf = d.iter().filter(|x| *x == t).count() as f64;
                    if tf > 0.0 {
                        let f = df[t.as_str()];
                        let idf = (1.0 + (n - f + 0.5) / (f + 0.5)).ln();
                        let ratio = if avgdl > 0.0 {
                            d.len() as f64 / avgdl
                        } else {
                            0.0
                        };
                        score += idf * tf * (c.k1 + 1.0) / (tf + c.k1 * (1.0 - c.b + c.b * ratio));
                    }
                }
                (score, *i)
            })
            .collect();
        out.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        out
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    /// `got` (pool indices, in order) is the head of `expected` up to ties within rounding.
    fn assert_head_of(got: &[usize], expected: &[(f64, usize)], what: &str) {
        let score: HashMap<usize, f64> = expected.iter().map(|&(s, i)| (i, s)).collect();
        for (j, &g) in got.iter().enumerate() {
            let (e, ei) = expected[j];
            let s = *score
                .get(&g)
                .unwrap_or_else(|| panic!("{what}: {g} is no candidate"));
            assert!(
                close(s, e),
                "{what}: rank {j}: got {g} ({s}), expected {ei} ({e})"
            );
            // Scores equal up to rounding may come in either order (the two sum in different
            // orders); otherwise the order is exact, and so is the pool order of the texts
            // that share no term (score 0 on both sides).
            let tied = expected.iter().any(|&(x, i)| i != ei && close(x, e));
            if !tied || e == 0.0 {
                assert_eq!(g, ei, "{what}: rank {j}");
            }
        }
    }

    const SYLLABLES: &[&str] = &["가", "나", "카", "드", "금", "리", "대", "출"];
    const WORDS: &[&str] = &["card", "Fee", "LOAN", "rate", "2024", "visa"];

    /// A random pool: Korean words of 1-3 syllables and Latin words, punctuation between,
    /// repeated texts, skewed categories; with `common`, every text carries the same phrase
    /// (low-idf terms on every document: the bound then skips them).
    fn random_table(seed: u64, n: usize, common: bool) -> embtune_core::Table {
        use rand::Rng as _;
        let mut rng = testing::rng(seed);
        let mut texts: Vec<String> = Vec::new();
        let rows: Vec<Vec<String>> = (0..n)
            .map(|_| {
                let text = if !texts.is_empty() && rng.gen_range(0..6) == 0 {
                    texts[rng.gen_range(0..texts.len())].clone()
                } else {
                    let mut t = String::new();
                    for w in 0..rng.gen_range(1..6) {
                        if w > 0 {
                            t.push_str([" ", ", ", "/", " - "][rng.gen_range(0..4)]);
                        }
                        if rng.gen_range(0..4) == 0 {
                            t.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
                        } else {
                            for _ in 0..rng.gen_range(1..4) {
                                t.push_str(SYLLABLES[rng.gen_range(0..SYLLABLES.len())]);
                            }
                        }
                    }
                    if common {
                        t.push_str(" 상품입니다");
                    }
                    t
                };
                texts.push(text.clone());
                let cat = (rng.gen_range(0.0f64..1.0).powi(2) * 4.0) as usize;
                vec![text, format!("c{cat}")]
            })
            .collect();
        embtune_core::Table::from_rows(&["d", "c"], &rows)
    }

    #[test]
    fn tokens_are_bigrams_over_korean_and_words_elsewhere() {
        assert_eq!(
            terms("신용카드 연회비"),
            ["신용", "용카", "카드", "연회", "회비"]
        );
        assert_eq!(
            terms("123호 상품입니다."),
            ["123", "호", "상품", "품입", "입니", "니다"]
        );
        assert_eq!(terms("가 나다"), ["가", "나다"]);
        assert_eq!(terms("iPhone15프로"), ["iphone15", "프로"]);
        assert_eq!(
            terms("Visa/MASTER카드, ÄPFEL"),
            ["visa", "master", "카드", "äpfel"]
        );
        assert_eq!(terms("東京タワー"), ["東京", "京タ", "タワ", "ワー"]);
        assert_eq!(terms("ㄱㄴ"), ["ㄱㄴ"]);
        assert!(terms(" !!! --- ").is_empty());
        assert!(terms("").is_empty());
    }

    /// tests/fixtures/bm25/scores.json: tokens and BM25 scores from make_fixture.py (an
    /// independent Python implementation, cross-checked against rank_bm25 with Lucene's idf).
    #[test]
    fn scores_match_the_python_fixture() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/bm25/scores.json"
        );
        let f: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let texts: Vec<&str> = f["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        for (text, want) in texts.iter().zip(f["tokens"].as_array().unwrap()) {
            let want: Vec<&str> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            assert_eq!(terms(text), want, "tokens of {text:?}");
        }
        let rows: Vec<Vec<String>> = texts
            .iter()
            .map(|t| vec![t.to_string(), "c".into()])
            .collect();
        let table = embtune_core::Table::from_rows(&["d", "c"], &rows);
        let pool = testing::pool(&table, "d", "c");
        assert_eq!(pool.len(), texts.len());
        let sets = f["sets"].as_array().unwrap();
        assert_eq!(sets.len(), 3);
        for set in sets {
            let (k1, b) = (set["k1"].as_f64().unwrap(), set["b"].as_f64().unwrap());
            let mut s = sampler(k1, b, Scope::Part, None);
            s.prepare(&pool).unwrap();
            for (i, row) in set["scores"].as_array().unwrap().iter().enumerate() {
                let got: HashMap<usize, f64> =
                    ranking(&s, i).into_iter().map(|(sc, j)| (j, sc)).collect();
                assert_eq!(got.len(), texts.len() - 1);
                for (j, want) in row.as_array().unwrap().iter().enumerate() {
                    if j != i {
                        let want = want.as_f64().unwrap();
                        assert!(
                            (got[&j] - want).abs() <= 1e-12 * want.abs().max(1.0),
                            "k1 {k1} b {b}: score({i}, {j}) = {}, fixture {want}",
                            got[&j]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn property_best_k_equal_the_naive_all_pairs_ranking() {
        let mut early = 0;
        for seed in 0..12u64 {
            let common = seed % 2 == 0;
            let t = random_table(seed, 5 + (seed as usize * 13) % 50, common);
            let pool = testing::pool(&t, "d", "c");
            for (scope, k1, b) in [
                (Scope::Group, 1.2, 0.75),
                (Scope::Part, 1.2, 0.75),
                (Scope::Part, 2.0, 0.0),
                (Scope::Group, 0.5, 1.0),
            ] {
                let config = Bm25Config {
                    k1,
                    b,
                    scope,
                    top: None,
                };
                for k in [1usize, 3, 8] {
                    let mut s = Bm25::new(config.clone()).unwrap();
                    let got = testing::run_sampler(&mut s, &pool, k, seed).unwrap();
                    early += s.scratch.lock().unwrap().early_stops;
                    for (a, negs) in got.iter().enumerate() {
                        let want = naive(&pool, a, &config);
                        assert_eq!(negs.len(), k.min(want.len()), "seed {seed} anchor {a}");
                        let what = format!("seed {seed} {scope:?} k1 {k1} b {b} k {k} anchor {a}");
                        assert_head_of(negs, &want, &what);
                    }
                }
                // The whole ranking too, scores included.
                let mut s = Bm25::new(config.clone()).unwrap();
                s.prepare(&pool).unwrap();
                for a in 0..pool.len() {
                    let got = ranking(&s, a);
                    let want = naive(&pool, a, &config);
                    assert_eq!(got.len(), want.len());
                    for (g, w) in got.iter().zip(&want) {
                        assert!(close(g.0, w.0), "seed {seed} anchor {a}: {g:?} vs {w:?}");
                    }
                }
            }
        }
        assert!(
            early > 0,
            "the bound never skipped a term: the test misses that path"
        );
    }

    #[test]
    fn contract_holds_with_random_draws_from_the_top() {
        for seed in 0..10u64 {
            let t = random_table(seed + 100, 80, seed % 2 == 1);
            let pool = testing::pool(&t, "d", "c");
            for opts in [
                &["top=6"][..],
                &["scope=part", "top=4"][..],
                &["k1=0", "b=0"][..],
            ] {
                let mut s: Box<dyn NegativeSampler> = testing::build("bm25", opts).unwrap();
                for k in [1usize, 2, 5] {
                    let got = testing::run_sampler(s.as_mut(), &pool, k, seed).unwrap();
                    for (a, negs) in got.iter().enumerate() {
                        assert!(negs.len() <= k);
                        let texts: HashSet<&str> = negs.iter().map(|&i| pool.anchors[i]).collect();
                        assert_eq!(texts.len(), negs.len(), "{opts:?}: duplicate text");
                        assert!(
                            !texts.contains(pool.anchors[a]),
                            "{opts:?}: the anchor's text"
                        );
                        if opts[0] == "top=6" {
                            assert!(negs
                                .iter()
                                .all(|&i| pool.categories[i] == pool.categories[a]));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn reproducible_for_a_seed_and_top_k_ignores_it() {
        let t = random_table(7, 200, false);
        let pool = testing::pool(&t, "d", "c");
        let run = |opts: &[&str], seed| {
            let mut s: Box<dyn NegativeSampler> = testing::build("bm25", opts).unwrap();
            testing::run_sampler(s.as_mut(), &pool, 3, seed).unwrap()
        };
        assert_eq!(run(&["top=10"], 1), run(&["top=10"], 1));
        assert_ne!(run(&["top=10"], 1), run(&["top=10"], 2));
        assert_eq!(run(&[], 1), run(&[], 2));
        // top below k is the best k.
        assert_eq!(run(&["top=2"], 1), run(&[], 5));
    }

    #[test]
    fn ties_go_to_pool_order_and_duplicates_count_once() {
        // Rows 1 and 3 hold the same bag of terms as each other; row 2 repeats row 1.
        let t = testing::table(
            &["d", "c"],
            &[
                &["가나 다라", "x"],
                &["다라 마바", "x"],
                &["다라 마바", "x"],
                &["마바 다라", "x"],
                &["사아", "x"],
                &["가나 다라", "x"],
            ],
        );
        let pool = testing::pool(&t, "d", "c");
        let mut s: Box<dyn NegativeSampler> = testing::build("bm25", &[]).unwrap();
        let got = testing::run_sampler(s.as_mut(), &pool, 5, 0).unwrap();
        // For row 0: 1 and 3 tie (pool order), 4 shares nothing (score 0, last); 2 and 5
        // are texts already taken.
        assert_eq!(got[0], [1, 3, 4]);
        assert_eq!(got[5], [1, 3, 4]);
        assert_eq!(got[2], [3, 0, 4]);
    }

    #[test]
    fn bad_options_name_the_fix() {
        for (opt, says) in [
            ("b=2", "b must be between 0 and 1"),
            ("k1=-1", "k1 must be a number >= 0"),
            ("top=0", "top must be at least 1"),
        ] {
            let e = testing::build::<dyn NegativeSampler>("bm25", &[opt])
                .err()
                .unwrap();
            assert!(e.to_string().contains(says), "{opt}: {e}");
        }
        assert!(testing::build::<dyn NegativeSampler>("bm25", &["scope=table"]).is_err());
    }
}
