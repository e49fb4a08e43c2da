//! The data-parallel process group (embtune_core::dist) with two ranks in this one process,
//! one thread each, talking Gloo over loopback: every collective, the gradient identity of
//! gather_with_own_grad (summed per-rank gradients = one process over the whole batch),
//! the configuration check, and a rank that never answers (the other fails after the
//! timeout, saying so).

use std::os::unix::io::IntoRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use embtune_core::dist::{gather_with_own_grad, Backend, DistEnv, ProcessGroup};
use tch::{Device, Kind, Tensor};

/// The environment of `rank` of a world of 2 on 127.0.0.1:`port`.
fn env(rank: usize, port: u16, listen_fd: Option<i32>) -> DistEnv {
    DistEnv {
        rank,
        local_rank: rank,
        world_size: 2,
        local_world_size: 2,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
        restart_count: 0,
        listen_fd,
    }
}

/// Runs `f(pg)` on two ranks (two threads of this process) that joined one Gloo group
/// with `timeout`; returns rank 0's and rank 1's results. Rank 0 hosts the store on a
/// socket bound here (port 0: a free one), as `embtune train --nproc-per-node` hands it.
fn two_ranks<R, F>(timeout: Duration, f: F) -> (R, R)
where
    R: Send + 'static,
    F: Fn(ProcessGroup) -> R + Send + Clone + 'static,
{
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.into_raw_fd();
    let spawn = |rank: usize, listen_fd: Option<i32>| {
        let f = f.clone();
        std::thread::spawn(move || {
            let pg = ProcessGroup::init(&env(rank, port, listen_fd), Backend::Gloo, timeout)
                .unwrap_or_else(|e| panic!("rank {rank}: {e}"));
            assert_eq!((pg.rank(), pg.world_size()), (rank, 2));
            f(pg)
        })
    };
    let r0 = spawn(0, Some(fd));
    let r1 = spawn(1, None);
    (r0.join().unwrap(), r1.join().unwrap())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn collectives_across_two_ranks() {
    let (r0, r1) = two_ranks(Duration::from_secs(60), |pg| {
        let rank = pg.rank() as f64;
        // all_reduce_sum, in place.
        let t = Tensor::arange(1000, (Kind::Float, Device::Cpu)) * (rank + 1.0);
        pg.all_reduce_sum(&t).unwrap();
        let want = Tensor::arange(1000, (Kind::Float, Device::Cpu)) * 3.0;
        assert!(t.equal(&want), "all_reduce_sum on rank {rank}");
        // all_gather of (2, 3) rows: (4, 3) in rank order, no graph.
        let e = Tensor::full([2, 3], rank, (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let g = pg.all_gather(&e).unwrap();
        assert_eq!(g.size(), [4, 3]);
        assert!(!g.requires_grad());
        let firsts = Vec::<f32>::try_from(g.select(1, 0).contiguous()).unwrap();
        assert_eq!(firsts, [0.0, 0.0, 1.0, 1.0]);
        // A 0-d tensor gathers into (world).
        let s = Tensor::from_slice(&[10 + pg.rank() as i64]).squeeze();
        assert_eq!(s.dim(), 0);
        assert_eq!(
            Vec::<i64>::try_from(pg.all_gather(&s).unwrap()).unwrap(),
            [10, 11]
        );
        // broadcast from rank 1.
        let p = Tensor::full([5], 10.0 + rank, (Kind::Float, Device::Cpu));
        pg.broadcast(&p, 1).unwrap();
        assert_eq!(Vec::<f32>::try_from(&p).unwrap(), [11.0; 5]);
        let e = pg.broadcast(&p, 2).unwrap_err().to_string();
        assert!(e.contains("root 2 is not a rank"), "{e}");
        // bytes of different lengths.
        let mine = vec![pg.rank() as u8 + 1; 3 + 2 * pg.rank()];
        let all = pg.all_gather_bytes(&mine).unwrap();
        assert_eq!(all, vec![vec![1u8; 3], vec![2u8; 5]]);
        assert_eq!(pg.all_gather_bytes(&[]).unwrap(), vec![Vec::<u8>::new(); 2]);
        // the same configuration passes.
        pg.check_same_config(0xfeed, "flags or data").unwrap();
        pg.barrier().unwrap();
        pg.destroy().unwrap();
        rank
    });
    assert_eq!((r0, r1), (0.0, 1.0));
}

/// MNRL-style loss over anchors and positives `(n, d)`: cross-entropy of the scaled
/// cosine similarities with the diagonal as targets, mean over the n rows.
fn in_batch_loss(a: &Tensor, p: &Tensor) -> Tensor {
    let norm = |x: &Tensor| x / x.norm_scalaropt_dim(2, [-1], true);
    let scores = norm(a).matmul(&norm(p).transpose(0, 1)) * 20.0;
    let n = a.size()[0];
    scores.cross_entropy_for_logits(&Tensor::arange(n, (Kind::Int64, Device::Cpu)))
}

#[test]
fn gathered_gradients_sum_to_the_single_process_gradient() {
    // A linear "encoder" w (6 -> 5) over a global batch of 8 anchors and 8 positives; each
    // rank embeds its 4 rows of each.
    tch::manual_seed(7);
    let w = Tensor::randn([6, 5], (Kind::Float, Device::Cpu));
    let xa = Tensor::randn([8, 6], (Kind::Float, Device::Cpu));
    let xp = Tensor::randn([8, 6], (Kind::Float, Device::Cpu));

    let single_w = w.copy().set_requires_grad(true);
    let single_loss = in_batch_loss(&xa.matmul(&single_w), &xp.matmul(&single_w));
    single_loss.backward();
    let single_grad = single_w.grad();
    let single_loss = single_loss.double_value(&[]);

    let inputs = (w.copy(), xa.copy(), xp.copy());
    let shared = std::sync::Arc::new(std::sync::Mutex::new(inputs));
    let (r0, r1) = two_ranks(Duration::from_secs(60), move |pg| {
        let (w, xa, xp) = {
            let g = shared.lock().unwrap();
            (g.0.copy(), g.1.copy(), g.2.copy())
        };
        let (r, b) = (pg.rank() as i64, 4);
        let w = w.set_requires_grad(true);
        let a_local = xa.narrow(0, r * b, b).matmul(&w);
        let p_local = xp.narrow(0, r * b, b).matmul(&w);
        let a = gather_with_own_grad(&pg, &a_local).unwrap();
        let p = gather_with_own_grad(&pg, &p_local).unwrap();
        assert_eq!(a.size(), [8, 5]);
        let loss = in_batch_loss(&a, &p);
        loss.backward();
        let partial = w.grad().copy();
        let grad = w.grad().contiguous();
        pg.all_reduce_sum(&grad).unwrap();
        (loss.double_value(&[]), partial, grad)
    });
    for (rank, (loss, partial, grad)) in [r0, r1].into_iter().enumerate() {
        assert!(
            (loss - single_loss).abs() < 1e-6,
            "rank {rank}: global loss {loss} vs single process {single_loss}"
        );
        let d = max_abs_diff(&grad, &single_grad);
        assert!(d <= 1e-6, "rank {rank}: summed gradient differs by {d}");
        // Alone, a rank's gradient is only its rows' share.
        assert!(max_abs_diff(&partial, &single_grad) > 1e-3, "rank {rank}");
    }
}

#[test]
fn a_group_of_one_gathers_its_own_rows() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut e = env(0, port, Some(listener.into_raw_fd()));
    e.world_size = 1;
    e.local_world_size = 1;
    let pg = ProcessGroup::init(&e, Backend::Gloo, Duration::from_secs(30)).unwrap();
    let x = Tensor::randn([3, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let g = gather_with_own_grad(&pg, &x).unwrap();
    assert!(g.requires_grad() && g.equal(&x));
    let t = Tensor::ones([4], (Kind::Float, Device::Cpu));
    pg.all_reduce_sum(&t).unwrap();
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [1.0; 4]);
}

#[test]
fn a_configuration_mismatch_fails_on_every_rank() {
    let (e0, e1) = two_ranks(Duration::from_secs(60), |pg| {
        pg.check_same_config(100 + pg.rank() as u64, "flags or data")
            .unwrap_err()
            .to_string()
    });
    for e in [&e0, &e1] {
        assert!(
            e.starts_with("rank 1 was started with different flags or data than rank 0: ")
                && e.ends_with("start every rank with the same command and files")
                && !e.contains('\n'),
            "{e}"
        );
    }
}

#[test]
fn a_rank_that_skips_a_collective_makes_the_other_fail_after_the_timeout() {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let timeout = Duration::from_secs(3);
    let (r0, r1) = two_ranks(timeout, move |pg| {
        let t = Tensor::ones([16], (Kind::Float, Device::Cpu));
        pg.all_reduce_sum(&t).unwrap();
        if pg.rank() == 1 {
            // Stays in the group without joining the next collective until rank 0 gave up.
            let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(60));
            pg.abandon();
            return None;
        }
        let start = Instant::now();
        let e = pg.all_reduce_sum(&t).unwrap_err().to_string();
        let took = start.elapsed();
        // Later calls fail at once: the group is unusable after a failure.
        let again = pg.barrier().unwrap_err().to_string();
        tx.send(()).unwrap();
        Some((e, took, again))
    });
    assert!(r1.is_none());
    let (e, took, again) = r0.unwrap();
    assert!(
        e.contains("all_reduce") && e.contains("timeout") && !e.contains('\n'),
        "{e}"
    );
    assert!(
        took >= Duration::from_millis(2500) && took < timeout + Duration::from_secs(12),
        "failed after {took:?}: {e}"
    );
    assert!(again.contains("failed earlier"), "{again}");
}

#[test]
fn a_rank_alone_fails_to_join_after_the_timeout() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let start = Instant::now();
    let e = ProcessGroup::init(
        &env(0, port, Some(listener.into_raw_fd())),
        Backend::Gloo,
        Duration::from_secs(2),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("distributed init") && !e.contains('\n'), "{e}");
    assert!(start.elapsed() < Duration::from_secs(30), "{e}");
}

#[test]
fn tensors_on_the_wrong_device_or_backend_are_refused() {
    if !Backend::Nccl.is_available() {
        let e = Backend::for_device(Device::Cuda(0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("built without the nccl backend") && !e.contains('\n'),
            "{e}"
        );
    }
    let e = Backend::resolve("nccl", Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nccl") && !e.contains('\n'), "{e}");
}
