//! Link libtorch (see build-support/link_torch.rs) and, in builds with libtorch, compile
//! csrc/device_mem.cpp (the caching allocator's memory statistics), csrc/fused_adamw.cpp
//! (ATen's fused AdamW over the flat parameter buffer) and csrc/dist.cpp (c10d's process
//! groups for data-parallel training): tch exposes none of them.
//!
//! dist.cpp always has Gloo (CPU). Its NCCL part (`EMBTUNE_DIST_NCCL`) needs libtorch_cuda
//! and the CUDA and NCCL headers, which the CUDA wheels of torch only partly bring along:
//! `site-packages/nvidia/cu13/include` (the CUDA runtime's headers) and
//! `site-packages/nvidia/nccl/include` come with torch, but the runtime's headers include
//! `crt/host_config.h` (pip package `nvidia-cuda-crt`) and `nv/target` (`nvidia-cuda-cccl`),
//! which do not. So NCCL is compiled in when every header is found, in those folders, in
//! `$EMBTUNE_CUDA_INCLUDE` (folders separated by `:`), in `$CUDA_HOME/include` or in
//! `/usr/local/cuda/include`; `EMBTUNE_DIST_NCCL=1` makes a missing header a build error
//! and `EMBTUNE_DIST_NCCL=0` leaves NCCL out. The crate reads the outcome from the
//! `EMBTUNE_DIST_NCCL_BUILD` variable this script sets ("yes", or why not).
include!("../build-support/link_torch.rs");

use std::path::{Path, PathBuf};

fn main() {
    for f in ["device_mem.cpp", "fused_adamw.cpp", "dist.cpp"] {
        println!("cargo:rerun-if-changed=csrc/{f}");
    }
    for v in ["EMBTUNE_DIST_NCCL", "EMBTUNE_CUDA_INCLUDE", "CUDA_HOME"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let Some(lib) = link_torch() else {
        println!("cargo:rustc-env=EMBTUNE_DIST_NCCL_BUILD=no: built without libtorch");
        return;
    };
    let include = Path::new(&lib).join("..").join("include");
    // The C++ ABI of the libtorch wheels since 2.7 (torch._C._GLIBCXX_USE_CXX11_ABI), the
    // same default as torch-sys's own C++ wrapper.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/device_mem.cpp")
        .file("csrc/fused_adamw.cpp")
        .file("csrc/dist.cpp")
        .include(&include)
        .include(
            include
                .join("torch")
                .join("csrc")
                .join("api")
                .join("include"),
        )
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .warnings(false);
    let nccl = nccl_includes(Path::new(&lib));
    match &nccl {
        Ok(dirs) => {
            build.define("EMBTUNE_DIST_NCCL", None);
            for d in dirs {
                build.include(d);
            }
            // c10/cuda's headers use std::hardware_destructive_interference_size (GCC warns).
            build.flag_if_supported("-Wno-interference-size");
            println!("cargo:rustc-env=EMBTUNE_DIST_NCCL_BUILD=yes");
        }
        Err(why) => {
            println!("cargo:rustc-env=EMBTUNE_DIST_NCCL_BUILD=no: {why}");
        }
    }
    build.compile("embtune_csrc");
    if nccl.is_ok() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-search=native={lib}");
}

/// The include folders for the NCCL part of dist.cpp, or why it is left out (see the
/// header of this file). Panics with the missing headers when `EMBTUNE_DIST_NCCL=1`.
fn nccl_includes(lib: &Path) -> Result<Vec<PathBuf>, String> {
    let wanted = std::env::var("EMBTUNE_DIST_NCCL").unwrap_or_default();
    if wanted == "0" {
        return Err("EMBTUNE_DIST_NCCL=0".into());
    }
    let required = wanted == "1";
    let fail = |why: String| -> Result<Vec<PathBuf>, String> {
        if required {
            panic!("EMBTUNE_DIST_NCCL=1 but {why}; install them (pip install nvidia-cuda-crt nvidia-cuda-cccl of the torch wheel's CUDA version into the venv, or set CUDA_HOME / EMBTUNE_CUDA_INCLUDE) or unset EMBTUNE_DIST_NCCL");
        }
        Err(why)
    };
    if !lib.join("libtorch_cuda.so").exists() || !lib.join("libc10_cuda.so").exists() {
        return fail(format!(
            "{} has no libtorch_cuda.so (a CPU build of torch)",
            lib.display()
        ));
    }
    // lib = site-packages/torch/lib for the pip wheels.
    let site = lib.join("..").join("..");
    let mut dirs = vec![
        site.join("nvidia").join("cu13").join("include"),
        site.join("nvidia").join("nccl").join("include"),
    ];
    if let Ok(extra) = std::env::var("EMBTUNE_CUDA_INCLUDE") {
        dirs.extend(std::env::split_paths(&extra));
    }
    if let Ok(home) = std::env::var("CUDA_HOME") {
        dirs.push(Path::new(&home).join("include"));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    dirs.retain(|d| d.is_dir());
    let missing: Vec<&str> = [
        "nccl.h",
        "cuda_runtime_api.h",
        "crt/host_config.h",
        "nv/target",
    ]
    .into_iter()
    .filter(|h| !dirs.iter().any(|d| d.join(h).exists()))
    .collect();
    if !missing.is_empty() {
        return fail(format!(
            "the CUDA/NCCL headers {} were not found",
            missing.join(", ")
        ));
    }
    Ok(dirs)
}
