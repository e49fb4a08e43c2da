//! Model cards on the folders the trainer saves (`train::checkpoint::save_model_with_card`,
//! `save_checkpoint_with_card`): a card built by `ModelCard::from_train` from a config and
//! the default model, written inside the folder before it appears, for a plain folder, a
//! checkpoint, a LoRA adapter folder and a merged folder; the folders still load.

use std::path::{Path, PathBuf};

use embtune_core::encoder::SentenceEncoder;
use embtune_core::lora::LoraConfig;
use embtune_core::model_card::{CardMetrics, ModelCard, CARD_FILE};
use embtune_core::train::checkpoint::{
    save_checkpoint_with_card, save_model, save_model_with_card,
};
use embtune_core::train::optim::{AdamWConfig, FlatAdamW};
use embtune_core::train::{TrainConfig, TrainerState};
use tch::Device;

fn setup(tmp: &Path) -> (PathBuf, TrainConfig) {
    embtune_plugins::link();
    let model = embtune_tests::default_model();
    let mut cfg = TrainConfig::new(
        model.clone(),
        tmp.join("train.csv"),
        "mnrl",
        tmp.join("out"),
    );
    cfg.optimizer.lr = 2e-5;
    cfg.max_steps = Some(3);
    cfg.query_prompt = Some("query: ".into());
    (model, cfg)
}

fn opt(enc: &SentenceEncoder) -> FlatAdamW {
    FlatAdamW::new(
        enc.trainable_parameters(),
        AdamWConfig::default(),
        Device::Cpu,
    )
    .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn card_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(CARD_FILE)).unwrap()
}

#[test]
fn plain_folder_and_checkpoint_carry_their_cards() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, cfg) = setup(tmp.path());
    let enc = SentenceEncoder::load(&model, Device::Cpu).unwrap();
    let mut card = ModelCard::from_train(&cfg, &enc, 1234, &[("scale".into(), "20".into())]);
    card.metrics_before = Some(CardMetrics::from([("cosine_ndcg@10".to_string(), 0.5)]));
    let opt = opt(&enc);

    // The old signature writes no card; the folder is otherwise the same.
    let plain = tmp.path().join("out/plain");
    save_model(&enc, &plain, &opt, false).unwrap();
    assert!(!plain.join(CARD_FILE).exists());

    let fin = tmp.path().join("out/final");
    let after = CardMetrics::from([("cosine_ndcg@10".to_string(), 0.75)]);
    save_model_with_card(&enc, &fin, &opt, false, Some(&card.finished(Some(&after)))).unwrap();
    let mut want = names(&plain);
    want.push(CARD_FILE.to_string());
    want.sort();
    assert_eq!(names(&fin), want);
    // No temporary folder left beside it.
    assert_eq!(names(&tmp.path().join("out")), ["final", "plain"]);

    let md = card_of(&fin);
    for needle in [
        "library_name: sentence-transformers\n",
        "- \"dataset_size:1234\"\n",
        "- \"loss:mnrl\"\n",
        &format!("base_model: \"{}\"\n", model.display()),
        "- **Architecture (model_type):** `bert`",
        "- **Maximum sequence length:** 256 tokens",
        "- **Output dimensionality:** 384 dimensions",
        "- **Pooling:** `mean`, then L2-normalized",
        "0. Transformer (bert, max 256 tokens)\n1. Pooling (mean, 384 -> 384)\n2. Normalize\n",
        "`mnrl` (MultipleNegativesRankingLoss: ",
        "- `scale`: `20`",
        "- `learning_rate`: 2e-5",
        "- `max_steps`: 3",
        &format!("model = SentenceTransformer(\"{}\")", fin.display()),
        "query_embeddings = model.encode(queries, prompt=\"query: \")",
        "| cosine_ndcg@10 | 0.5000 | 0.7500 |",
        &format!("- embtune: {}", embtune_core::VERSION),
    ] {
        assert!(md.contains(needle), "missing {needle:?} in\n{md}");
    }
    SentenceEncoder::load(&fin, Device::Cpu).unwrap();

    // A checkpoint between evaluations: its step, no "after" column.
    // From JSON, as trainer_state.json holds it (fields added later take their defaults).
    let state: TrainerState = serde_json::from_value(serde_json::json!({
        "step": 3, "micro_batches": 3, "best": null, "seed": 42, "parameters": 0,
        "parameter_names_sha256": "", "data": cfg.data, "rows": 1234,
    }))
    .unwrap();
    let out = tmp.path().join("out");
    let ck =
        save_checkpoint_with_card(&enc, &opt, &state, &out, Some(&card.at_step(3, None))).unwrap();
    assert_eq!(ck, out.join("checkpoint-3"));
    let md = card_of(&ck);
    assert!(md.contains("Saved at optimizer step 3."), "{md}");
    assert!(
        md.contains("| Metric | Before training |\n| --- | ---: |\n| cosine_ndcg@10 | 0.5000 |\n"),
        "{md}"
    );
    assert!(!md.contains("At step"), "{md}");
    assert!(ck.join("trainer_state.json").is_file());
}

#[test]
fn lora_adapter_and_merged_folders_say_what_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, mut cfg) = setup(tmp.path());
    cfg.lora = Some(LoraConfig::default());
    let mut enc = SentenceEncoder::load(&model, Device::Cpu).unwrap();
    enc.add_lora(&LoraConfig::default()).unwrap();
    let card = ModelCard::from_train(&cfg, &enc, 10, &[]);
    let opt = opt(&enc);

    let adapter = tmp.path().join("out/best");
    save_model_with_card(&enc, &adapter, &opt, false, Some(&card)).unwrap();
    assert!(adapter.join("adapter_config.json").is_file());
    let md = card_of(&adapter);
    for needle in [
        "- \"peft\"\n",
        "- \"lora\"\n",
        "This folder is a PEFT adapter",
        "pip install -U sentence-transformers peft",
        &format!("# model.load_adapter(\"{}\")", adapter.display()),
        "- `lora`: r=16 alpha=32 dropout=0 targets=query,value",
        "`mnrl` (MultipleNegativesRankingLoss: ",
        "with its default options.",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in\n{md}");
    }

    let merged = tmp.path().join("out/final");
    save_model_with_card(&enc, &merged, &opt, true, Some(&card)).unwrap();
    assert!(merged.join("model.safetensors").is_file());
    let md = card_of(&merged);
    assert!(md.contains("LoRA adapters merged into the weights"), "{md}");
    assert!(
        !md.contains("PEFT adapter") && !md.contains("- \"peft\""),
        "{md}"
    );
    SentenceEncoder::load(&merged, Device::Cpu).unwrap();
}
