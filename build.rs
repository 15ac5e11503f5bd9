//! Makes the `gptdash` binary (and its tests and benches) find libtorch without
//! `LD_LIBRARY_PATH`, and makes sure CUDA is actually linked when libtorch has it.
//!
//! `torch-sys` (links = "tch") exports the libtorch `lib` directory it built against
//! as `DEP_TCH_LIBTORCH_LIB`; we depend on it directly so that variable reaches us.
use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report its libtorch lib directory; no rpath set");
        return;
    };
    // An rpath so the binary runs without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // Nothing in our code references a symbol of libtorch_cuda, so a linker running
    // with --as-needed drops it and libtorch never registers its CUDA backend.
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
