//! In a `torch` build: link libtorch (see build-support/link_torch.rs), record the torch
//! version the binary was built against for `embtune doctor`, and pass the libtorch folder
//! on to dependents' build scripts as DEP_EMBTUNE_TORCH_LIB (so a binary built on this
//! crate can rpath it). A build without `torch` links nothing.
include!("../build-support/link_torch.rs");

fn main() {
    let Some(lib) = link_torch() else {
        return;
    };
    // <site-packages>/torch/lib -> <site-packages>/torch/version.py
    let version_py = std::path::Path::new(&lib).join("..").join("version.py");
    let version = std::fs::read_to_string(&version_py)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("__version__"))
                .and_then(|l| l.split(['\'', '"']).nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=EMBTUNE_TORCH_VERSION={version}");
    println!("cargo:rustc-env=EMBTUNE_TORCH_LIB={lib}");
    println!("cargo:torch_lib={lib}");
    println!("cargo:rerun-if-changed={}", version_py.display());
}
