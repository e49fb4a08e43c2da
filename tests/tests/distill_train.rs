//! Distillation from teacher scores in the data: `margin-mse` and `distill-kl` train the
//! default model from CSV and JSON Lines files with a `scores` column, and the file that
//! `embtune mine --output-scores` writes feeds `embtune train --loss margin-mse` end to end.
//! A file without teacher scores, or with lists of the wrong length, fails before training
//! with one line naming the column, the row and what was expected.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use embtune_core::registry::{self, parse_options};
use embtune_core::train::checkpoint::MetricsLog;
use embtune_core::train::{train, TrainConfig};
use embtune_core::ContrastiveLoss;
use embtune_tests::train_cases::lock;
use tch::Tensor;

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// Eight (query, positive, negative_1, negative_2) rows with teacher scores
/// `[positive, negative_1, negative_2]`, as JSON Lines (scores an array) or CSV (its JSON text).
fn scored_rows(dir: &Path, csv: bool) -> PathBuf {
    let mut jsonl = String::new();
    let mut table = String::from("query,positive,negative_1,negative_2,scores\n");
    for i in 0..8 {
        let (q, p) = (
            format!("what is plan {i}"),
            format!("plan {i} explained in short"),
        );
        let (n1, n2) = (
            format!("the weather on day {i}"),
            format!("a recipe for soup {i}"),
        );
        let s = [8.0 + 0.1 * i as f64, 1.5 - 0.2 * i as f64, -2.0];
        jsonl.push_str(
            &serde_json::json!({"query": q, "positive": p, "negative_1": n1, "negative_2": n2,
                "scores": s})
            .to_string(),
        );
        jsonl.push('\n');
        table.push_str(&format!(
            "{q},{p},{n1},{n2},\"[{}, {}, {}]\"\n",
            s[0], s[1], s[2]
        ));
    }
    if csv {
        write(dir, "scored.csv", &table)
    } else {
        write(dir, "scored.jsonl", &jsonl)
    }
}

fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// Trains `steps` steps of the registered `loss` with `options` on `data`.
fn run(
    loss: &str,
    options: &[&str],
    data: &Path,
    out: &Path,
    steps: usize,
) -> embtune_core::Result<()> {
    let _rng = lock();
    embtune_plugins::link();
    let opts = parse_options(options.iter().copied())?;
    let instance = registry::build::<dyn ContrastiveLoss>(loss, &opts)?;
    let model = embtune_tests::default_model();
    let mut cfg = TrainConfig::new(model, data.to_path_buf(), loss, out.to_path_buf());
    cfg.batch_size = 4;
    cfg.max_steps = Some(steps);
    cfg.log_every = 1;
    cfg.optimizer.lr = 1e-4;
    cfg.device = tch::Device::Cpu;
    let summary = train(
        &cfg,
        instance,
        None,
        None,
        Arc::new(AtomicBool::new(false)),
        &mut (),
    )?;
    assert_eq!(summary.steps, steps);
    Ok(())
}

/// Logged losses are finite and the weights moved.
fn check_trained(out: &Path, steps: usize) {
    let logs = MetricsLog::read(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(logs.len(), steps, "{logs:?}");
    assert!(
        logs.iter().all(|l| l.loss.is_some_and(f64::is_finite)),
        "{logs:?}"
    );
    let moved = weights(&out.join("final"))
        .iter()
        .zip(&weights(&embtune_tests::default_model()))
        .any(|((_, a), (_, b))| f64::try_from((a - b).abs().max()).unwrap() > 0.0);
    assert!(moved, "training changed no weight");
}

#[test]
fn margin_mse_trains_from_a_jsonl_scores_column() {
    let tmp = tempfile::tempdir().unwrap();
    let data = scored_rows(tmp.path(), false);
    let out = tmp.path().join("out");
    run("margin-mse", &[], &data, &out, 3).unwrap();
    check_trained(&out, 3);
}

#[test]
fn distill_kl_trains_from_a_csv_scores_column_with_a_temperature() {
    let tmp = tempfile::tempdir().unwrap();
    let data = scored_rows(tmp.path(), true);
    let out = tmp.path().join("out");
    run(
        "distill-kl",
        &["temperature=2", "similarity_fct=cosine"],
        &data,
        &out,
        3,
    )
    .unwrap();
    check_trained(&out, 3);
}

#[test]
fn margin_mse_trains_on_triplets_with_a_float_margin_column() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = String::from("anchor,positive,negative,label\n");
    for i in 0..4 {
        s.push_str(&format!(
            "what is plan {i},plan {i} explained,a recipe for soup {i},{}\n",
            4.0 + i as f64
        ));
    }
    let data = write(tmp.path(), "triplets.csv", &s);
    let out = tmp.path().join("out");
    run("margin-mse", &[], &data, &out, 2).unwrap();
    check_trained(&out, 2);
}

#[test]
fn missing_or_mis_sized_teacher_scores_fail_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let no_scores = write(
        tmp.path(),
        "plain.csv",
        "anchor,positive,negative\na,b,c\nd,e,f\ng,h,i\nj,k,l\n",
    );
    let short = write(
        tmp.path(),
        "short.jsonl",
        "{\"q\":\"a\",\"p\":\"b\",\"n1\":\"c\",\"n2\":\"d\",\"scores\":[0.9,0.1,0.2]}\n\
         {\"q\":\"e\",\"p\":\"f\",\"n1\":\"g\",\"n2\":\"h\",\"scores\":[0.9,0.1]}\n",
    );
    let cases: [(&str, &Path, &[&str]); 3] = [
        (
            "margin-mse",
            &no_scores,
            &[
                "plain.csv: loss 'margin-mse' needs teacher scores",
                "no `scores` column (columns: anchor, positive, negative)",
                "2 numbers [positive, negative_1, ...] or 1 margin(s)",
                "embtune mine",
            ],
        ),
        (
            "distill-kl",
            &no_scores,
            &["loss 'distill-kl' needs teacher scores", "2 numbers [positive, negative_1, ...]"],
        ),
        (
            "distill-kl",
            &short,
            &[
                "short.jsonl, data row 2: column 'scores' has 2 number(s)",
                "loss 'distill-kl' on 4 text columns (anchor, positive, 2 negative(s)) needs 3 numbers",
                "embtune mine",
            ],
        ),
    ];
    for (loss, data, want) in cases {
        let e = run(loss, &[], data, &out, 1).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{loss}: not one line: {e}");
        for w in want {
            assert!(e.contains(w), "{loss}: {e:?} lacks {w:?}");
        }
    }
    assert!(!out.join("final").exists());
    // A bad option value is one line naming the option and its valid values.
    let e = run("distill-kl", &["temperature=0"], &short, &out, 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("temperature must be a positive finite number") && !e.contains('\n'),
        "{e}"
    );
}

const PAIRS: &str = "question,answer\n\
    해외 결제 수수료가 없는 카드는?,해외 결제 수수료 면제 체크카드입니다.\n\
    What covers roadside assistance?,Car insurance with emergency roadside service.\n\
    How do I save monthly?,A monthly installment savings account.\n\
    Is my dog covered?,Pet insurance for dogs and cats.\n";

const CORPUS: &str = "text\n\
    자동차보험 긴급출동 서비스\n\
    A fixed deposit that renews at maturity.\n\
    청년 우대형 적금\n\
    Travel insurance for trips abroad.\n\
    A credit card with airline miles.\n";

/// `embtune mine --output-format n-tuple --output-scores` then `embtune train --loss
/// margin-mse` (and `distill-kl`) on its output, through `embtune::run_from` as the binary runs.
#[test]
fn mined_scores_feed_training_through_the_cli() {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let pairs = write(tmp.path(), "pairs.csv", PAIRS);
    let corpus = write(tmp.path(), "corpus.csv", CORPUS);
    let mined = tmp.path().join("mined.jsonl");
    let model = embtune_tests::default_model();
    let m = model.to_str().unwrap();
    let code = embtune::run_from([
        "embtune",
        "mine",
        "--model",
        m,
        "--data",
        pairs.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--output",
        mined.to_str().unwrap(),
        "--num-negatives",
        "2",
        "--output-format",
        "n-tuple",
        "--output-scores",
        "--device",
        "cpu",
        "--quiet",
    ]);
    assert_eq!(code, ExitCode::SUCCESS);
    let rows = embtune_core::table::Dataset::read(&mined).unwrap();
    assert_eq!(rows.columns.len(), 4, "{:?}", rows.columns);
    assert!(rows
        .score_lists
        .as_ref()
        .unwrap()
        .iter()
        .all(|l| l.len() == 3));
    for (loss, opts) in [
        ("margin-mse", vec![]),
        ("distill-kl", vec!["--loss-opt", "temperature=0.05"]),
    ] {
        let out = tmp.path().join(loss);
        let mut args = vec![
            "embtune",
            "train",
            "--model",
            m,
            "--data",
            mined.to_str().unwrap(),
            "--loss",
            loss,
            "--output",
            out.to_str().unwrap(),
            "--batch-size",
            "2",
            "--max-steps",
            "2",
            "--log-every",
            "1",
            "--device",
            "cpu",
        ];
        args.extend(opts);
        assert_eq!(embtune::run_from(args), ExitCode::SUCCESS, "{loss}");
        check_trained(&out, 2);
    }
}
