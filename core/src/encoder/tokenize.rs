//! Text to token ids, the way sentence-transformers' `Transformer.preprocess` does it:
//! the folder's `tokenizer.json` through the `tokenizers` crate, special tokens added,
//! truncation (longest-first, right) at `max_seq_length` counting the special tokens, and
//! padding to the longest text of each batch. The padding and truncation settings stored in
//! `tokenizer.json` itself (all-MiniLM's pads to 128 and truncates at 128) are overridden,
//! as the reference's `tokenizer(texts, padding=True, truncation=..., max_length=...)`
//! overrides them. The padding side is the tokenizer's: `padding_side` in
//! `tokenizer_config.json`, else the direction stored in `tokenizer.json`, else right, as
//! transformers' fast tokenizers resolve it (Qwen3-Embedding pads on the left).

use std::path::Path;

use tokenizers::{
    PaddingDirection, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};

/// The side of a row that padding fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingSide {
    /// Real tokens first, then padding (the default).
    #[default]
    Right,
    /// Padding first, then the real tokens, so every row ends in the last column.
    Left,
}

/// A loaded tokenizer with the reference's batch settings.
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: i64,
    lowercase: bool,
    padding_side: PaddingSide,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`; `max_len` is the truncation length (special tokens
    /// included), `lowercase` the `do_lower_case` flag of `sentence_bert_config.json`.
    /// Padded positions get the tokenizer's own pad token, as the reference pads with
    /// `tokenizer.pad_token_id` (`pad_token` of `tokenizer_config.json`, else the padding
    /// settings stored in `tokenizer.json`); `pad_id` (config.json's `pad_token_id`) only
    /// when the tokenizer names none; when neither does, loading fails with the fix.
    pub fn load(dir: &Path, max_len: usize, pad_id: Option<i64>, lowercase: bool) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::model(
                dir,
                "tokenizer.json is missing (only fast tokenizers are supported; save the tokenizer with transformers' PreTrainedTokenizerFast)",
            ));
        }
        let mut inner = Tokenizer::from_file(&path).map_err(|e| {
            Error::model(
                dir,
                format!(
                    "tokenizer.json cannot be read: {}",
                    crate::error::one_line(&e.to_string())
                ),
            )
        })?;
        let pad_id = tokenizer_pad_id(dir, &inner).or(pad_id).ok_or_else(|| {
            Error::model(
                dir,
                "the tokenizer (tokenizer_config.json, tokenizer.json) names no pad token and config.json has no pad_token_id; set pad_token in tokenizer_config.json (e.g. the eos token) or pad_token_id in config.json",
            )
        })?;
        let stored_side = inner.get_padding().map(|p| match p.direction {
            PaddingDirection::Left => PaddingSide::Left,
            PaddingDirection::Right => PaddingSide::Right,
        });
        let padding_side = match read_padding_side(dir)? {
            Some(side) => side,
            None => stored_side.unwrap_or_default(),
        };
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::model(dir, format!("tokenizer truncation: {e}")))?;
        Ok(TextTokenizer {
            inner,
            pad_id,
            lowercase,
            padding_side,
        })
    }

    /// The side padding fills (see the module docs).
    pub fn padding_side(&self) -> PaddingSide {
        self.padding_side
    }

    /// Whether texts are lowercased first (`do_lower_case`).
    pub fn lowercase(&self) -> bool {
        self.lowercase
    }

    /// The id written into padded positions.
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// Whether an id is one of the tokenizer's special (added, special) tokens.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .get_added_tokens_decoder()
            .get(&id)
            .map(|t| t.special)
            .unwrap_or(false)
    }

    /// Token ids of each text (special tokens added, truncated), in input order.
    pub fn encode_ids(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        self.encode_ids_with_prompt(texts, None)
    }

    /// Token ids of `prompt + text` for each text, as the reference prepends prompts
    /// (None or an empty prompt: the texts as they are).
    pub fn encode_ids_with_prompt(
        &self,
        texts: &[&str],
        prompt: Option<&str>,
    ) -> Result<Vec<Vec<u32>>> {
        let prompt = prompt.unwrap_or("");
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| {
                let joined = format!("{prompt}{t}");
                if self.lowercase {
                    joined.to_lowercase()
                } else {
                    joined
                }
            })
            .collect();
        let encs = self.inner.encode_batch_fast(inputs, true).map_err(|e| {
            Error::Invalid(format!(
                "tokenizer: {}",
                crate::error::one_line(&e.to_string())
            ))
        })?;
        Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// The number of prompt tokens that `include_prompt: false` pooling skips: the length
    /// of the tokenized prompt, less a trailing special token (EOS/SEP), as the reference's
    /// `Transformer._get_prompt_length` counts it.
    pub fn prompt_length(&self, prompt: &str) -> Result<usize> {
        let ids = self.encode_ids(&[prompt])?.pop().unwrap_or_default();
        let mut n = ids.len();
        if let Some(&last) = ids.last() {
            if self.is_special(last) {
                n -= 1;
            }
        }
        Ok(n)
    }
}

/// The id of the tokenizer's pad token: `pad_token` in `dir/tokenizer_config.json` (a string
/// or an added-token object with `content`) looked up in the vocabulary, else the pad id of
/// the padding settings in `tokenizer.json`; None when neither names one.
fn tokenizer_pad_id(dir: &Path, tok: &Tokenizer) -> Option<i64> {
    let from_config = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|c| {
            let p = c.get("pad_token")?;
            let name = p.as_str().or_else(|| p.get("content")?.as_str())?;
            tok.token_to_id(name)
        });
    from_config
        .or_else(|| tok.get_padding().map(|p| p.pad_id))
        .map(i64::from)
}

/// `padding_side` of `dir/tokenizer_config.json` (None when the file or key is absent); a
/// value other than "left" or "right" is an error naming the file.
fn read_padding_side(dir: &Path) -> Result<Option<PaddingSide>> {
    let path = dir.join("tokenizer_config.json");
    let Some(cfg) = super::folder::read_json_opt(&path)? else {
        return Ok(None);
    };
    padding_side_of(&cfg, &path)
}

/// `padding_side` of a parsed `tokenizer_config.json` at `path` (see [`read_padding_side`]).
#[doc(hidden)]
pub fn padding_side_of(cfg: &serde_json::Value, path: &Path) -> Result<Option<PaddingSide>> {
    match cfg.get("padding_side") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_str() {
            Some("left") => Ok(Some(PaddingSide::Left)),
            Some("right") => Ok(Some(PaddingSide::Right)),
            _ => Err(Error::model(
                &path,
                format!(
                    "padding_side {v} is neither \"left\" nor \"right\"; fix tokenizer_config.json"
                ),
            )),
        },
    }
}
