//! LoRA (`embtune train --lora`) against PEFT + PyTorch, for every case in
//! tests/fixtures/lora/ (made by make_lora.py beside them), and the adapter folders'
//! behaviour in embtune.
//!
//! Parity: the fixture's fixed initial adapters are written as a PEFT adapter folder over a
//! copy of the tiny base model whose config.json turns every dropout off (the reference ran
//! in `model.eval()`, LoRA dropout 0), and embtune's trainer continues training them
//! (`--lora` on an adapter folder) with the reference's settings: the adapters saved in
//! `checkpoint-1/`, `checkpoint-2/` and `final/` must equal PEFT's after steps 1, 2 and 3
//! within `1e-5 * max|reference tensor|` elementwise. This runs the whole path: the
//! collator, fused q/k/v and gate/up weights with the branches in their rows, the
//! adapter-only flat AdamW with clipping and the linear schedule, adapter checkpoints.
//!
//! Then, in embtune: an adapter folder and the `--merge-lora` folder of the same run give
//! the same embeddings; a LoRA run with dropout resumed from a checkpoint ends with the
//! adapters of an uninterrupted run; dropout > 0 trains on every backbone; bad `--lora`
//! input fails with one line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use embtune_core::encoder::{safetensors, SentenceEncoder};
use embtune_core::lora::LoraConfig;
use embtune_core::train::{TrainConfig, TrainObserver};
use embtune_core::{registry, ContrastiveLoss, Error};
use embtune_tests::train_cases::lock;
use serde_json::{json, Map, Value};
use tch::{Device, Tensor};

/// PARITY.md's tolerance, relative to the largest entry of each reference tensor.
const REL_TOL: f64 = 1e-5;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lora")
}

fn tiny(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/encoder")
        .join(name)
}

/// Every `<name>.json` in tests/fixtures/lora with its settings.
fn fixtures() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        out.push((name, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 5, "fixtures missing: rerun make_lora.py");
    out
}

/// A copy of `src` at `dst` whose config.json sets every dropout probability to 0.
fn no_dropout_copy(src: &Path, dst: &Path) {
    embtune_tests::copy_dir_except(src, dst, &[]);
    let path = dst.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, v) in cfg.as_object_mut().unwrap() {
        if k.contains("dropout") && v.is_number() {
            *v = json!(0.0);
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

/// The fixture's tensors with prefix `prefix` (`init/`, `step1/`, ...), keyed without it.
fn stored(name: &str, prefix: &str) -> Vec<(String, Tensor)> {
    let file = fixtures_dir().join(format!("{name}.safetensors"));
    let mut out: Vec<(String, Tensor)> = safetensors::read(&file)
        .unwrap()
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "{name}: no {prefix} tensors");
    out
}

/// A PEFT adapter folder at `dst` over `base` (the sentence-transformers files of `base`,
/// adapter_config.json and the given adapters).
fn adapter_folder(base: &Path, v: &Value, adapters: &[(String, Tensor)], dst: &Path) {
    embtune_tests::copy_dir_except(base, dst, &["config.json", "model.safetensors"]);
    let cfg = json!({
        "peft_type": "LORA",
        "task_type": null,
        "base_model_name_or_path": base.to_str().unwrap(),
        "r": v["r"],
        "lora_alpha": v["lora_alpha"],
        "lora_dropout": v["lora_dropout"],
        "target_modules": v["target_modules"],
        "bias": "none",
        "use_rslora": false,
        "use_dora": false,
        "fan_in_fan_out": false,
    });
    std::fs::write(
        dst.join("adapter_config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
    safetensors::write(&dst.join("adapter_model.safetensors"), adapters).unwrap();
}

/// The fixture's rows as a JSON Lines data file.
fn data_file(dir: &Path, v: &Value) -> PathBuf {
    let columns: Vec<&str> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let mut s = String::new();
    for row in v["texts"].as_array().unwrap() {
        let cells: Vec<String> = columns
            .iter()
            .zip(row.as_array().unwrap())
            .map(|(c, t)| format!("{}:{}", Value::from(*c), t))
            .collect();
        s.push_str(&format!("{{{}}}\n", cells.join(",")));
    }
    let p = dir.join("train.jsonl");
    std::fs::write(&p, s).unwrap();
    p
}

fn lora_of(v: &Value, dropout: f64) -> LoraConfig {
    LoraConfig {
        r: v["r"].as_i64().unwrap(),
        alpha: v["lora_alpha"].as_f64().unwrap(),
        dropout,
        targets: Some(
            v["target_modules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect(),
        ),
    }
}

/// The reference's training settings for fixture `v`, from `model` into `out`.
fn config(v: &Value, model: &Path, data: PathBuf, out: PathBuf) -> TrainConfig {
    let mut cfg = TrainConfig::new(model.to_path_buf(), data, "mnrl", out);
    cfg.batch_size = v["texts"].as_array().unwrap().len();
    cfg.optimizer.lr = v["lr"].as_f64().unwrap();
    cfg.optimizer.weight_decay = v["weight_decay"].as_f64().unwrap();
    cfg.warmup_ratio = 0.0;
    cfg.max_grad_norm = v["max_grad_norm"].as_f64().unwrap();
    cfg.max_steps = Some(v["steps"].as_u64().unwrap() as usize);
    cfg.eval_every = Some(1);
    cfg.log_every = 1;
    cfg.max_seq_length = Some(v["max_seq_length"].as_u64().unwrap() as usize);
    cfg.query_prompt = v["query_prompt"].as_str().map(str::to_string);
    cfg.document_prompt = v["document_prompt"].as_str().map(str::to_string);
    cfg.lora = Some(lora_of(v, 0.0));
    cfg
}

fn train(
    cfg: &TrainConfig,
    resume: Option<&Path>,
    stop: Arc<AtomicBool>,
    observer: &mut dyn TrainObserver,
) -> embtune_core::Result<embtune_core::train::TrainSummary> {
    embtune_plugins::link();
    let mut options = Map::new();
    options.insert("scale".into(), 20.0.into());
    let loss = registry::build::<dyn ContrastiveLoss>("mnrl", &options)?;
    embtune_core::train::train(cfg, loss, resume, None, stop, observer)
}

fn run_to_end(cfg: &TrainConfig) {
    train(cfg, None, Arc::new(AtomicBool::new(false)), &mut ()).unwrap();
}

/// The adapters of an adapter folder, sorted by key.
fn adapters_of(dir: &Path) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = safetensors::read(&dir.join("adapter_model.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// `max |got - want| / max |want|` over the tensors, with the worst key.
fn worst(got: &[(String, Tensor)], want: &[(String, Tensor)]) -> (f64, String) {
    let gk: Vec<&String> = got.iter().map(|x| &x.0).collect();
    let wk: Vec<&String> = want.iter().map(|x| &x.0).collect();
    assert_eq!(gk, wk, "adapter keys differ");
    let mut out = (0.0, String::new());
    for ((k, g), (_, w)) in got.iter().zip(want) {
        let scale = w.abs().max().double_value(&[]).max(1e-12);
        let err = (g - w).abs().max().double_value(&[]) / scale;
        if err > out.0 {
            out = (err, k.clone());
        }
    }
    out
}

#[test]
fn lora_training_matches_peft() {
    let _rng = lock();
    let mut failures = Vec::new();
    for (name, v) in fixtures() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        no_dropout_copy(&root().join(v["model"].as_str().unwrap()), &base);
        let start = tmp.path().join("start");
        adapter_folder(&base, &v, &stored(&name, "init/"), &start);
        let out = tmp.path().join("out");
        let cfg = config(&v, &start, data_file(tmp.path(), &v), out.clone());
        run_to_end(&cfg);
        let steps = v["steps"].as_u64().unwrap() as usize;
        for k in 1..=steps {
            let dir = if k == steps {
                out.join("final")
            } else {
                out.join(format!("checkpoint-{k}"))
            };
            assert!(
                !dir.join("model.safetensors").exists() && !dir.join("config.json").exists(),
                "{name}: {} is not an adapter folder",
                dir.display()
            );
            let (err, key) = worst(&adapters_of(&dir), &stored(&name, &format!("step{k}/")));
            println!("{name} step {k}: max rel error {err:.2e} ({key})");
            if err > REL_TOL {
                failures.push(format!(
                    "{name} step {k}: {key} off by {err:.2e} (relative)"
                ));
            }
        }
        // Only the adapters trained: the state counts them alone.
        let state: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("checkpoint-1/trainer_state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(state["parameters"], v["trainable_parameters"], "{name}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Embeddings of the fixture texts by the folder `dir` in embtune.
fn embed(dir: &Path, v: &Value) -> Tensor {
    let enc = SentenceEncoder::load(dir, Device::Cpu).unwrap();
    let texts: Vec<&str> = v["texts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|t| t.as_str().unwrap()))
        .collect();
    enc.encode(&texts, 4).unwrap()
}

#[test]
fn adapter_and_merged_folders_give_the_same_embeddings() {
    let _rng = lock();
    for (name, v) in fixtures() {
        let tmp = tempfile::tempdir().unwrap();
        let start = tmp.path().join("start");
        let base = root().join(v["model"].as_str().unwrap());
        adapter_folder(&base, &v, &stored(&name, "init/"), &start);
        let data = data_file(tmp.path(), &v);
        let mut cfg = config(&v, &start, data.clone(), tmp.path().join("adapter"));
        cfg.lora = Some(lora_of(&v, 0.1));
        run_to_end(&cfg);
        cfg.output = tmp.path().join("merged");
        cfg.merge_lora = true;
        run_to_end(&cfg);
        let (a, m) = (
            tmp.path().join("adapter/final"),
            tmp.path().join("merged/final"),
        );
        assert!(a.join("adapter_config.json").is_file() && !a.join("model.safetensors").exists());
        assert!(m.join("model.safetensors").is_file() && !m.join("adapter_config.json").exists());
        // Checkpoints stay adapter folders with --merge-lora (resume needs the adapters).
        assert!(tmp
            .path()
            .join("merged/checkpoint-1/adapter_model.safetensors")
            .is_file());
        let (ea, em) = (embed(&a, &v), embed(&m, &v));
        let diff = (&ea - &em).abs().max().double_value(&[]);
        println!("{name}: adapter vs merged folder max |diff| {diff:.2e}");
        assert!(
            diff <= 1e-5,
            "{name}: adapter and merged folders differ by {diff}"
        );
        // Training moved the model away from the start.
        let e0 = embed(&start, &v);
        assert!(
            (&ea - &e0).abs().max().double_value(&[]) > 1e-4,
            "{name}: nothing trained"
        );
    }
}

/// Several backward passes per prepared weights (GradCache's mini-batches, gradient
/// accumulation) and gradient checkpointing's recomputed layers reach the adapters as the
/// plain step does: the same adapters after three steps.
#[test]
fn lora_under_gradcache_accumulation_and_checkpointing_matches_plain() {
    let _rng = lock();
    embtune_plugins::link();
    let (name, v) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "qwen3-tiny")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    no_dropout_copy(&root().join(v["model"].as_str().unwrap()), &base);
    let start = tmp.path().join("start");
    adapter_folder(&base, &v, &stored(&name, "init/"), &start);
    let data = data_file(tmp.path(), &v);
    let run = |tag: &str, loss: &str, accum: usize, checkpointing: bool| {
        let mut cfg = config(&v, &start, data.clone(), tmp.path().join(tag));
        cfg.eval_every = None;
        cfg.grad_accum = accum;
        cfg.batch_size /= accum;
        cfg.gradient_checkpointing = checkpointing;
        let mut options = Map::new();
        options.insert("scale".into(), 20.0.into());
        if loss == "cached-mnrl" {
            options.insert("mini_batch_size".into(), 2.into());
        }
        let l = registry::build::<dyn ContrastiveLoss>(loss, &options).unwrap();
        let s = embtune_core::train::train(
            &cfg,
            l,
            None,
            None,
            Arc::new(AtomicBool::new(false)),
            &mut (),
        )
        .unwrap();
        adapters_of(&s.final_dir)
    };
    let plain = run("plain", "mnrl", 1, false);
    for (tag, got) in [
        ("cached-mnrl", run("cached", "cached-mnrl", 1, false)),
        ("gradient checkpointing", run("ckpt", "mnrl", 1, true)),
        (
            "cached-mnrl + checkpointing",
            run("both", "cached-mnrl", 1, true),
        ),
    ] {
        let (err, key) = worst(&got, &plain);
        println!("{tag}: max rel difference to the plain run {err:.2e}");
        assert!(err <= REL_TOL, "{tag}: {key} differs by {err:e}");
    }
    // Two micro-batches per step: a different (but valid) objective; it must train.
    let accum = run("accum", "mnrl", 2, false);
    let (err, _) = worst(&accum, &plain);
    assert!(err.is_finite() && err > 0.0);
}

/// Stops the run once `at` steps are done.
struct StopAt {
    at: usize,
    flag: Arc<AtomicBool>,
}
impl TrainObserver for StopAt {
    fn step(&mut self, step: usize) {
        if step == self.at {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn resumed_lora_run_with_dropout_matches_uninterrupted_run() {
    let _rng = lock();
    let (_, v) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "roberta-tiny")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = data_file(tmp.path(), &v);
    let base = tiny("roberta-tiny");
    let mut cfg = config(&v, &base, data, tmp.path().join("full"));
    cfg.max_steps = Some(5);
    cfg.eval_every = None;
    cfg.batch_size = 3;
    cfg.lora = Some(LoraConfig::parse("r=4,alpha=8,dropout=0.1").unwrap());
    run_to_end(&cfg);

    cfg.output = tmp.path().join("part");
    let flag = Arc::new(AtomicBool::new(false));
    let err = train(
        &cfg,
        None,
        flag.clone(),
        &mut StopAt {
            at: 2,
            flag: flag.clone(),
        },
    )
    .unwrap_err();
    let Error::Interrupted { checkpoint, .. } = err else {
        panic!("expected an interruption, got {err}")
    };
    assert!(checkpoint.join("adapter_model.safetensors").is_file());
    train(
        &cfg,
        Some(&checkpoint),
        Arc::new(AtomicBool::new(false)),
        &mut (),
    )
    .unwrap();
    let (a, b) = (
        adapters_of(&tmp.path().join("full/final")),
        adapters_of(&tmp.path().join("part/final")),
    );
    let (err, key) = worst(&b, &a);
    assert!(err <= 1e-6, "resumed adapters differ: {key} by {err:e}");

    // Resuming without --lora, or with another rank, is refused with one line.
    let mut plain = cfg.clone();
    plain.lora = None;
    let e = train(
        &plain,
        Some(&checkpoint),
        Arc::new(AtomicBool::new(false)),
        &mut (),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("the checkpoint holds LoRA adapters; resume with the --lora"),
        "{e}"
    );
    let mut other = cfg.clone();
    other.lora = Some(LoraConfig::parse("r=8,alpha=8").unwrap());
    let e = train(
        &other,
        Some(&checkpoint),
        Arc::new(AtomicBool::new(false)),
        &mut (),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("--lora: r=8 alpha=8"), "{e}");
}

/// Counts the start line.
#[derive(Default)]
struct Messages(Vec<String>);
impl TrainObserver for Messages {
    fn message(&mut self, msg: &str) {
        self.0.push(msg.to_string());
    }
}

#[test]
fn dropout_lora_trains_every_backbone_and_leaves_the_base_alone() {
    let _rng = lock();
    let (_, v) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "roberta-tiny")
        .unwrap();
    for model in [
        "roberta-tiny",
        "xlm-roberta-tiny",
        "modernbert-tiny",
        "qwen3-tiny",
        "gemma3-tiny",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(
            &v,
            &tiny(model),
            data_file(tmp.path(), &v),
            tmp.path().join("o"),
        );
        cfg.max_steps = Some(2);
        cfg.eval_every = None;
        cfg.query_prompt = None;
        cfg.document_prompt = None;
        cfg.lora = Some(LoraConfig::parse("dropout=0.05").unwrap());
        let mut seen = Messages::default();
        let summary = train(&cfg, None, Arc::new(AtomicBool::new(false)), &mut seen).unwrap();
        let line = seen.0.first().cloned().unwrap_or_default();
        println!("{model}: {line}");
        assert!(
            line.starts_with("training ") && line.contains("LoRA r=16 alpha=32 dropout=0.05"),
            "{model}: {line}"
        );
        let cfg_json: Value = serde_json::from_str(
            &std::fs::read_to_string(summary.final_dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg_json["peft_type"], "LORA");
        assert_eq!(cfg_json["r"], 16);
        assert_eq!(cfg_json["lora_dropout"], 0.05);
        let moved = adapters_of(&summary.final_dir)
            .iter()
            .filter(|(k, _)| k.contains("lora_B"))
            .any(|(_, t)| t.abs().max().double_value(&[]) > 0.0);
        assert!(moved, "{model}: lora_B did not move");
        // The adapter folder loads back in embtune on its base.
        let texts = ["a short text", "another one"];
        let enc = SentenceEncoder::load(&summary.final_dir, Device::Cpu).unwrap();
        let e = enc.encode(&texts, 2).unwrap();
        assert!(bool::try_from(e.isfinite().all()).unwrap(), "{model}");
        let e0 = SentenceEncoder::load(&tiny(model), Device::Cpu)
            .unwrap()
            .encode(&texts, 2)
            .unwrap();
        assert!((&e - &e0).abs().max().double_value(&[]) > 0.0, "{model}");
    }
}

#[test]
fn bad_lora_input_is_one_line() {
    let _rng = lock();
    let (_, v) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "roberta-tiny")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(
        &v,
        &tiny("roberta-tiny"),
        data_file(tmp.path(), &v),
        tmp.path().join("o"),
    );
    cfg.lora = Some(LoraConfig::parse("targets=q_proj").unwrap());
    let e = train(&cfg, None, Arc::new(AtomicBool::new(false)), &mut ())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "--lora: targets=q_proj matches no linear layer of this roberta model; valid module names: attention.self.query, attention.self.key, attention.self.value, attention.output.dense, intermediate.dense, output.dense"
    );
    cfg.lora = None;
    cfg.merge_lora = true;
    let e = train(&cfg, None, Arc::new(AtomicBool::new(false)), &mut ())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--merge-lora needs --lora"), "{e}");

    // Through the command line: one line, non-zero exit, no panic.
    let model = tiny("roberta-tiny");
    let data = data_file(tmp.path(), &v);
    for spec in ["rank=4", "r=0", "alpha=0", "dropout=1", "targets=nope"] {
        let out = tmp.path().join("cli");
        let code = embtune::run_from([
            "embtune",
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--lora",
            spec,
        ]);
        assert_eq!(code, ExitCode::FAILURE, "{spec}");
        assert!(!out.join("final").exists(), "{spec}");
    }
}

/// Writes, under `$EMBTUNE_LORA_DIR`, an adapter folder per tiny backbone trained through
/// `embtune train --lora` and embtune's embeddings of the fixture texts by it, for
/// tests/fixtures/lora/check_adapter_folder.py (sentence-transformers loads each folder
/// and compares):
///
///     EMBTUNE_LORA_DIR=/tmp/lora cargo test -p embtune-tests --test lora_parity -- --ignored
///     .venv-ref/bin/python tests/fixtures/lora/check_adapter_folder.py /tmp/lora
#[test]
#[ignore]
fn write_adapter_folders_for_the_reference() {
    let _rng = lock();
    let dir = PathBuf::from(std::env::var("EMBTUNE_LORA_DIR").expect("set EMBTUNE_LORA_DIR"));
    let (_, v) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "roberta-tiny")
        .unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let data = data_file(&dir, &v);
    let texts: Vec<String> = v["texts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
        })
        .collect();
    std::fs::write(
        dir.join("texts.json"),
        serde_json::to_string(&texts).unwrap(),
    )
    .unwrap();
    for (model, spec) in [
        ("roberta-tiny", "r=4,alpha=8,dropout=0.05"),
        ("xlm-roberta-tiny", "r=4,alpha=16,targets=key,dense"),
        ("modernbert-tiny", "r=4,alpha=8,targets=Wqkv,Wi"),
        (
            "qwen3-tiny",
            "r=4,alpha=8,targets=q_proj,v_proj,up_proj,down_proj",
        ),
        ("gemma3-tiny", "r=8,alpha=16,dropout=0.05"),
    ] {
        let out = dir.join(model);
        let _ = std::fs::remove_dir_all(&out);
        let code = embtune::run_from([
            "embtune",
            "train",
            "--model",
            tiny(model).to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--max-steps",
            "3",
            "--batch-size",
            "4",
            "--lr",
            "5e-3",
            "--lora",
            spec,
        ]);
        assert_eq!(code, ExitCode::SUCCESS, "{model}");
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let enc = SentenceEncoder::load(&out.join("final"), Device::Cpu).unwrap();
        let e = enc.encode(&refs, 4).unwrap();
        let rows: Vec<Vec<f32>> = (0..e.size()[0])
            .map(|i| Vec::<f32>::try_from(e.get(i)).unwrap())
            .collect();
        std::fs::write(
            out.join("embtune_embeddings.json"),
            serde_json::to_string(&rows).unwrap(),
        )
        .unwrap();
        println!("{model}: {}", out.join("final").display());
    }
}

/// The bf16 path (CUDA training casts the adapters with the weights; forced here on the
/// CPU): forward and backward run on every backbone, and the gradients reach the fp32
/// adapters only.
#[test]
fn bf16_forward_and_backward_reach_the_adapters() {
    let _rng = lock();
    for model in [
        "roberta-tiny",
        "modernbert-tiny",
        "qwen3-tiny",
        "gemma3-tiny",
    ] {
        let mut enc = SentenceEncoder::load(&tiny(model), Device::Cpu).unwrap();
        tch::manual_seed(0);
        enc.add_lora(&LoraConfig::parse("r=4,dropout=0.1").unwrap())
            .unwrap();
        enc.force_precision(embtune_core::encoder::Precision::Bf16);
        let batch = enc
            .tokenize(&["first text", "a second, longer text"])
            .unwrap();
        let e = enc.forward(&batch, true).unwrap();
        e.sum(tch::Kind::Float).backward();
        for (n, t) in enc.trainable_parameters() {
            assert_eq!(t.kind(), tch::Kind::Float, "{model} {n}");
            let g = t.grad();
            assert!(g.defined(), "{model}: {n} got no gradient");
            assert!(bool::try_from(g.isfinite().all()).unwrap(), "{model}: {n}");
        }
        for (n, t) in enc.named_parameters() {
            assert!(
                !t.requires_grad() && !t.grad().defined(),
                "{model}: base {n} trains"
            );
        }
    }
}
