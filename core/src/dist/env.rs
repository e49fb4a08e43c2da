//! Where a process stands in a data-parallel run: torchrun's environment variables (the
//! same ones `embtune train --nproc-per-node` sets for its ranks), read and checked before
//! anything connects.

use crate::error::{Error, Result};

/// The environment variable through which `embtune train --nproc-per-node` hands rank 0 a
/// socket that is already bound to `MASTER_PORT` and listening (its file descriptor, kept
/// open across `exec`), so that the port the launcher picked cannot be taken by another
/// process before rank 0 hosts the rendezvous store on it.
pub const STORE_FD_VAR: &str = "EMBTUNE_STORE_FD";

/// One process's place in a run of `world_size` processes, as torchrun (or `embtune train
/// --nproc-per-node`) describes it in the environment: `RANK`, `LOCAL_RANK`,
/// `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, plus torchrun's
/// `TORCHELASTIC_USE_AGENT_STORE` and `TORCHELASTIC_RESTART_COUNT` and embtune's
/// [`STORE_FD_VAR`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// This process's rank, `0..world_size` (`RANK`).
    pub rank: usize,
    /// Its rank on this host, `0..local_world_size` (`LOCAL_RANK`): the CUDA device it uses.
    pub local_rank: usize,
    /// Processes in the run (`WORLD_SIZE`).
    pub world_size: usize,
    /// Processes on this host (`LOCAL_WORLD_SIZE`; `world_size` when unset).
    pub local_world_size: usize,
    /// Host of the rendezvous store (`MASTER_ADDR`).
    pub master_addr: String,
    /// Port of the rendezvous store (`MASTER_PORT`, 1..=65535).
    pub master_port: u16,
    /// True when torchrun's agent already hosts the store at `MASTER_ADDR:MASTER_PORT`
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`, torchrun's default): every rank connects as a
    /// client. Otherwise rank 0 hosts it.
    pub agent_store: bool,
    /// Worker restarts so far (`TORCHELASTIC_RESTART_COUNT`, 0 when unset): the agent's
    /// store outlives restarts, so each attempt keeps its keys under its own prefix.
    pub restart_count: u64,
    /// A listening socket bound to `master_port` for rank 0's store ([`STORE_FD_VAR`]).
    pub listen_fd: Option<i32>,
}

impl DistEnv {
    /// Reads the process environment: None when `WORLD_SIZE` is unset (a single process,
    /// not launched by torchrun), otherwise the checked [`DistEnv`]. See [`Self::from_vars`].
    pub fn from_env() -> Result<Option<DistEnv>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The [`DistEnv`] described by `lookup` (a variable's value, None when unset): None
    /// when `WORLD_SIZE` is unset or empty. Errors, one line naming the variable and the
    /// fix: a value that is not a number, `WORLD_SIZE` 0, `RANK` missing (when
    /// `WORLD_SIZE` > 1) or not below `WORLD_SIZE`, `LOCAL_RANK` not below
    /// `LOCAL_WORLD_SIZE`, `MASTER_ADDR` or `MASTER_PORT` missing (when `WORLD_SIZE` > 1),
    /// a port of 0 or above 65535. With `WORLD_SIZE=1` the missing ones default to rank 0
    /// on 127.0.0.1:29500 (nothing connects anywhere for one process).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<DistEnv>> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let world_size = number("WORLD_SIZE", &world)?;
        if world_size == 0 {
            return Err(invalid("WORLD_SIZE=0: a run needs at least one process; set WORLD_SIZE to the number of processes, or unset it for a single process"));
        }
        let several = world_size > 1;
        let required = |name: &str, default: &str| -> Result<String> {
            match get(name) {
                Some(v) => Ok(v),
                None if !several => Ok(default.to_string()),
                None => Err(invalid(format!(
                    "{name} is not set but WORLD_SIZE={world_size}; set {name} in every process (torchrun and `embtune train --nproc-per-node` do), or unset WORLD_SIZE for a single process"
                ))),
            }
        };
        let rank = number("RANK", &required("RANK", "0")?)?;
        if rank >= world_size {
            return Err(invalid(format!(
                "RANK={rank} is not below WORLD_SIZE={world_size}; set RANK to 0..{} (one per process)",
                world_size - 1
            )));
        }
        let local_world_size = match get("LOCAL_WORLD_SIZE") {
            Some(v) => number("LOCAL_WORLD_SIZE", &v)?,
            None => world_size,
        };
        if local_world_size == 0 || local_world_size > world_size {
            return Err(invalid(format!(
                "LOCAL_WORLD_SIZE={local_world_size} is not in 1..={world_size} (WORLD_SIZE); set it to the number of processes on this host"
            )));
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => number("LOCAL_RANK", &v)?,
            // One host: the local rank is the rank.
            None if local_world_size == world_size => rank,
            None => {
                return Err(invalid(format!(
                    "LOCAL_RANK is not set but LOCAL_WORLD_SIZE={local_world_size} < WORLD_SIZE={world_size}; set LOCAL_RANK to this process's rank on its host"
                )))
            }
        };
        if local_rank >= local_world_size {
            return Err(invalid(format!(
                "LOCAL_RANK={local_rank} is not below LOCAL_WORLD_SIZE={local_world_size}; set LOCAL_RANK to 0..{}",
                local_world_size - 1
            )));
        }
        let master_addr = required("MASTER_ADDR", "127.0.0.1")?;
        let port_text = required("MASTER_PORT", "29500")?;
        let port = number("MASTER_PORT", &port_text)?;
        if port == 0 || port > 65535 {
            return Err(invalid(format!(
                "MASTER_PORT={port} is not a port (1..65535); set MASTER_PORT to a free port on MASTER_ADDR, the same in every process"
            )));
        }
        let agent_store = get("TORCHELASTIC_USE_AGENT_STORE")
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let restart_count = match get("TORCHELASTIC_RESTART_COUNT") {
            Some(v) => number("TORCHELASTIC_RESTART_COUNT", &v)? as u64,
            None => 0,
        };
        let listen_fd = match get(STORE_FD_VAR) {
            Some(v) => Some(v.parse::<i32>().ok().filter(|fd| *fd >= 0).ok_or_else(|| {
                invalid(format!(
                    "{STORE_FD_VAR}='{v}' is not a file descriptor; unset it (only `embtune train --nproc-per-node` sets it, for rank 0)"
                ))
            })?),
            None => None,
        };
        if listen_fd.is_some() && (rank != 0 || agent_store) {
            return Err(invalid(format!(
                "{STORE_FD_VAR} is set for RANK={rank}{}; only rank 0, hosting the store, takes it: unset it",
                if agent_store { " with torchrun's agent store" } else { "" }
            )));
        }
        Ok(Some(DistEnv {
            rank,
            local_rank,
            world_size,
            local_world_size,
            master_addr,
            master_port: port as u16,
            agent_store,
            restart_count,
            listen_fd,
        }))
    }

    /// True when this process hosts the rendezvous store: rank 0, unless torchrun's agent
    /// hosts it.
    pub fn hosts_store(&self) -> bool {
        self.rank == 0 && !self.agent_store
    }

    /// The prefix of this run's keys in the store: `embtune/<restart count>/`.
    pub fn store_prefix(&self) -> String {
        format!("embtune/{}/", self.restart_count)
    }

    /// The environment of rank `rank` of `world_size` processes on this host with the store
    /// at `127.0.0.1:port`: what `embtune train --nproc-per-node` sets for each child
    /// (without [`STORE_FD_VAR`], which it adds for rank 0).
    pub fn vars_for_local_rank(rank: usize, world_size: usize, port: u16) -> Vec<(String, String)> {
        [
            ("RANK", rank.to_string()),
            ("LOCAL_RANK", rank.to_string()),
            ("WORLD_SIZE", world_size.to_string()),
            ("LOCAL_WORLD_SIZE", world_size.to_string()),
            ("MASTER_ADDR", "127.0.0.1".to_string()),
            ("MASTER_PORT", port.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// `value` of variable `name` as a non-negative integer, or the error naming both.
fn number(name: &str, value: &str) -> Result<usize> {
    value.parse::<usize>().map_err(|_| {
        invalid(format!(
            "{name}='{value}' is not a non-negative integer; set {name} to a number (as torchrun does) or unset WORLD_SIZE for a single process"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<DistEnv>> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(|k| m.get(k).cloned())
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        let e = env(pairs).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        e
    }

    const TWO: &[(&str, &str)] = &[
        ("WORLD_SIZE", "2"),
        ("RANK", "1"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
    ];

    fn with(over: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = TWO
            .iter()
            .filter(|(k, _)| !over.iter().any(|(o, _)| o == k))
            .copied()
            .collect();
        v.extend(over.iter().filter(|(_, v)| !v.is_empty()));
        v
    }

    #[test]
    fn no_world_size_is_a_single_process() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("RANK", "3"), ("WORLD_SIZE", "")]).unwrap(), None);
    }

    #[test]
    fn torchrun_variables_are_read() {
        let e = env(TWO).unwrap().unwrap();
        assert_eq!(
            e,
            DistEnv {
                rank: 1,
                local_rank: 1,
                world_size: 2,
                local_world_size: 2,
                master_addr: "127.0.0.1".into(),
                master_port: 29500,
                agent_store: false,
                restart_count: 0,
                listen_fd: None,
            }
        );
        assert!(!e.hosts_store());
        assert_eq!(e.store_prefix(), "embtune/0/");
        let e = env(&with(&[
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
        ]))
        .unwrap()
        .unwrap();
        assert!(e.agent_store && !e.hosts_store());
        assert_eq!(e.store_prefix(), "embtune/2/");
    }

    #[test]
    fn the_launcher_variables_round_trip() {
        let vars = DistEnv::vars_for_local_rank(1, 3, 4242);
        let m: HashMap<String, String> = vars.into_iter().collect();
        let e = DistEnv::from_vars(|k| m.get(k).cloned()).unwrap().unwrap();
        assert_eq!(
            (e.rank, e.local_rank, e.world_size, e.local_world_size),
            (1, 1, 3, 3)
        );
        assert_eq!((e.master_addr.as_str(), e.master_port), ("127.0.0.1", 4242));
    }

    #[test]
    fn one_process_needs_no_master() {
        let e = env(&[("WORLD_SIZE", "1")]).unwrap().unwrap();
        assert_eq!((e.rank, e.local_rank, e.world_size), (0, 0, 1));
        assert!(e.hosts_store());
    }

    #[test]
    fn local_rank_defaults_to_rank_on_one_host() {
        let e = env(&with(&[("LOCAL_RANK", ""), ("LOCAL_WORLD_SIZE", "")]))
            .unwrap()
            .unwrap();
        assert_eq!((e.local_rank, e.local_world_size), (1, 2));
    }

    #[test]
    fn bad_variables_are_one_line_naming_the_variable_and_the_fix() {
        let e = err(&with(&[("RANK", "2")]));
        assert!(
            e.contains("RANK=2 is not below WORLD_SIZE=2") && e.contains("set RANK to 0..1"),
            "{e}"
        );
        let e = err(&with(&[("RANK", "")]));
        assert!(e.contains("RANK is not set but WORLD_SIZE=2"), "{e}");
        let e = err(&with(&[("MASTER_ADDR", "")]));
        assert!(e.contains("MASTER_ADDR is not set"), "{e}");
        let e = err(&with(&[("MASTER_PORT", "")]));
        assert!(e.contains("MASTER_PORT is not set"), "{e}");
        let e = err(&with(&[("MASTER_PORT", "0")]));
        assert!(e.contains("MASTER_PORT=0 is not a port"), "{e}");
        let e = err(&with(&[("MASTER_PORT", "65536")]));
        assert!(e.contains("MASTER_PORT=65536 is not a port"), "{e}");
        let e = err(&with(&[("MASTER_PORT", "http")]));
        assert!(
            e.contains("MASTER_PORT='http' is not a non-negative integer"),
            "{e}"
        );
        let e = err(&with(&[("WORLD_SIZE", "two")]));
        assert!(e.contains("WORLD_SIZE='two'"), "{e}");
        let e = err(&with(&[("RANK", "-1")]));
        assert!(e.contains("RANK='-1'"), "{e}");
        let e = err(&with(&[("WORLD_SIZE", "0")]));
        assert!(e.contains("WORLD_SIZE=0"), "{e}");
        let e = err(&with(&[("LOCAL_RANK", "2")]));
        assert!(
            e.contains("LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"),
            "{e}"
        );
        let e = err(&with(&[("LOCAL_WORLD_SIZE", "3")]));
        assert!(e.contains("LOCAL_WORLD_SIZE=3 is not in 1..=2"), "{e}");
        let e = err(&with(&[(STORE_FD_VAR, "7")]));
        assert!(e.contains("only rank 0"), "{e}");
        let e = err(&with(&[
            (STORE_FD_VAR, "x"),
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
        ]));
        assert!(e.contains("is not a file descriptor"), "{e}");
    }

    #[test]
    fn rank_zero_takes_the_launchers_socket() {
        let e = env(&with(&[
            (STORE_FD_VAR, "5"),
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(e.listen_fd, Some(5));
        assert!(e.hosts_store());
    }
}
