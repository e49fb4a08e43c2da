// Shared by the workspace crates' build scripts through `include!` (a build script cannot
// depend on a workspace crate without a separate build-dependency crate for six lines).

/// Links libtorch so binaries and test binaries run without LD_LIBRARY_PATH and see CUDA
/// where libtorch_cuda.so exists (see shared DESIGN.md, "libtorch"): an rpath to torch-sys's
/// library folder, and libtorch_cuda linked even though no symbol of it is referenced.
/// Returns that folder, or None in a build without the `torch` feature (torch-sys absent),
/// which links nothing.
#[allow(dead_code)]
fn link_torch() -> Option<String> {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").ok()?;
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    Some(lib)
}
