//! embtune's flat AdamW, clipping and schedule against torch.optim.AdamW,
//! clip_grad_norm_ and transformers' linear schedule (fixture: tests/fixtures/optim/,
//! made by make_adamw.py beside it).

use embtune_core::train::optim::{
    clip_grad_norm, linear_schedule, warmup_steps, AdamWConfig, FlatAdamW,
};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn adamw_clip_and_schedule_match_torch() {
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/optim/adamw.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let names: Vec<String> = fx["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let shapes: Vec<Vec<i64>> = fx["shapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect()
        })
        .collect();
    let params: Vec<(String, Tensor)> = names
        .iter()
        .zip(&shapes)
        .zip(fx["init"].as_array().unwrap())
        .map(|((n, s), init)| {
            (
                n.clone(),
                Tensor::from_slice(&floats(init))
                    .reshape(s.as_slice())
                    .set_requires_grad(true),
            )
        })
        .collect();
    let handles: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let cfg = AdamWConfig {
        lr: fx["lr"].as_f64().unwrap(),
        weight_decay: fx["weight_decay"].as_f64().unwrap(),
        ..Default::default()
    };
    let mut opt = FlatAdamW::new(params, cfg, Device::Cpu).unwrap();
    let total = fx["total"].as_i64().unwrap();
    let warmup = warmup_steps(fx["warmup_ratio"].as_f64().unwrap(), total);
    assert_eq!(warmup, fx["warmup"].as_i64().unwrap());
    for (t, step) in fx["trace"].as_array().unwrap().iter().enumerate() {
        // Gradients arrive through autograd, as in training: loss = sum(p * g).
        opt.zero_grad();
        let grads = &fx["grads"][t];
        let loss = handles
            .iter()
            .zip(grads.as_array().unwrap())
            .map(|(p, g)| {
                (p * Tensor::from_slice(&floats(g)).reshape(p.size().as_slice())).sum(Kind::Float)
            })
            .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
        loss.backward();
        let mut grad = opt.flat_grad();
        let norm = f64::try_from(clip_grad_norm(&mut grad, 1.0)).unwrap();
        let want_norm = step["norm"].as_f64().unwrap();
        assert!(
            (norm - want_norm).abs() <= 1e-5 * want_norm.max(1.0),
            "step {t}: norm {norm} vs {want_norm}"
        );
        let lr = linear_schedule(t as i64, warmup, total, cfg.lr);
        let want_lr = step["lr"].as_f64().unwrap();
        assert!(
            (lr - want_lr).abs() <= 1e-12,
            "step {t}: lr {lr} vs {want_lr}"
        );
        opt.step(&grad, lr, None).unwrap();
        for ((p, want), name) in handles
            .iter()
            .zip(step["params"].as_array().unwrap())
            .zip(&names)
        {
            let got: Vec<f32> = Vec::<f32>::try_from(p.reshape([-1])).unwrap();
            for (g, w) in got.iter().zip(floats(want)) {
                assert!(
                    (g - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                    "step {t} {name}: {g} vs {w}"
                );
            }
        }
    }
}

#[test]
fn a_false_ok_flag_skips_the_step() {
    let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
    let mut opt = FlatAdamW::new(
        vec![("w".into(), p.shallow_clone())],
        AdamWConfig::default(),
        Device::Cpu,
    )
    .unwrap();
    let grad = Tensor::from_slice(&[f32::NAN, 1.0]);
    opt.step(&grad, 1e-3, Some(&Tensor::from(false))).unwrap();
    assert!(opt.params_finite());
    assert_eq!(Vec::<f32>::try_from(p.detach()).unwrap(), vec![1.0, 2.0]);
    opt.step(
        &Tensor::from_slice(&[1.0f32, 1.0]),
        1e-3,
        Some(&Tensor::from(true)),
    )
    .unwrap();
    assert_ne!(Vec::<f32>::try_from(p.detach()).unwrap(), vec![1.0, 2.0]);
}
