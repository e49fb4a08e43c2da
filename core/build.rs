//! Link libtorch (see build-support/link_torch.rs) and, in builds with libtorch, compile
//! csrc/device_mem.cpp (the caching allocator's memory statistics) and csrc/fused_adamw.cpp
//! (ATen's fused AdamW over the flat parameter buffer): neither is exposed by tch.
include!("../build-support/link_torch.rs");

fn main() {
    println!("cargo:rerun-if-changed=csrc/device_mem.cpp");
    println!("cargo:rerun-if-changed=csrc/fused_adamw.cpp");
    let Some(lib) = link_torch() else {
        return;
    };
    let include = std::path::Path::new(&lib).join("..").join("include");
    // The C++ ABI of the libtorch wheels since 2.7 (torch._C._GLIBCXX_USE_CXX11_ABI), the
    // same default as torch-sys's own C++ wrapper.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    cc::Build::new()
        .cpp(true)
        .file("csrc/device_mem.cpp")
        .file("csrc/fused_adamw.cpp")
        .include(&include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .warnings(false)
        .compile("embtune_csrc");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-search=native={lib}");
}
