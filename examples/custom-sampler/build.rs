//! Nothing to do in this crate's own build, which has no libtorch. Only when another crate
//! of the same cargo invocation turns on embtune's `torch` feature (`cargo test
//! --workspace` unifies features) does the binary link libtorch; then embtune's build
//! script hands over the folder (DEP_EMBTUNE_TORCH_LIB) and it is rpath'd here, as the
//! workspace's own binaries do (build-support/link_torch.rs).
fn main() {
    let Ok(lib) = std::env::var("DEP_EMBTUNE_TORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
}
