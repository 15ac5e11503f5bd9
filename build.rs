//! Makes the `gptdash` binary (and its tests and benches) find libtorch without
//! `LD_LIBRARY_PATH`, and makes sure CUDA is actually linked when libtorch has it.
//!
//! `torch-sys` (links = "tch") exports the libtorch `lib` directory it built against
//! as `DEP_TCH_LIBTORCH_LIB`; we depend on it directly so that variable reaches us.
use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    tools();
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

/// The tools some tests need beside Rust, as cfgs: `has_tmux`, `has_python` (python3)
/// and `has_torch_python` (a Python with torch: the virtualenv scripts/libtorch.sh
/// makes, unless LIBTORCH is the user's own). A test that needs one is `#[ignore]`d,
/// with the reason, where the tool is missing — except in CI (`CI` set), where every
/// cfg is on, so a missing tool fails its test instead of skipping it.
fn tools() {
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let ci = env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let runs = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // scripts/libtorch.sh's libtorch is `<venv>/lib/pythonX/site-packages/torch`.
    let torch_python = || match env::var_os("LIBTORCH") {
        None => true,
        Some(lib) => {
            Path::new(&lib)
                .ancestors()
                .nth(4)
                .is_some_and(|venv| venv.join("bin/python").is_file())
                || runs("python3", &["-c", "import torch"])
        }
    };
    let found = [
        ("has_tmux", runs("tmux", &["-V"])),
        ("has_python", runs("python3", &["--version"])),
        ("has_torch_python", ci || torch_python()),
    ];
    for (cfg, present) in found {
        println!("cargo:rustc-check-cfg=cfg({cfg})");
        if present || ci {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
}
