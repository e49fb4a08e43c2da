//! Link libtorch (rpath, and libtorch_cuda where present; see shared DESIGN.md) and record
//! the torch version the binary was built against for `embtune doctor`.
fn main() {
    // Set only when the `torch` feature pulls in torch-sys; a torch-free build links nothing.
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
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
    println!("cargo:rerun-if-changed={}", version_py.display());
}
