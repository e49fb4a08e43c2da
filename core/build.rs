//! Link libtorch so binaries and test binaries run without LD_LIBRARY_PATH and see CUDA
//! where libtorch_cuda.so exists (see shared DESIGN.md, "libtorch").
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
}
