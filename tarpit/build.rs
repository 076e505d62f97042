//! Embeds the eBPF object when `cargo xtask build-ebpf` has built it, so one binary carries its
//! hook. Without it the server still builds and runs, and says at start that eBPF attribution is
//! unavailable and why.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tarpit_ebpf_object)");
    println!("cargo::rerun-if-env-changed=TARPIT_EBPF_OBJECT");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let default = manifest.join("../tarpit-ebpf/build/tarpit-ebpf.o");
    let object = std::env::var_os("TARPIT_EBPF_OBJECT").map_or(default.clone(), PathBuf::from);
    // The directory always exists (it holds a .gitkeep), so this does not force a rebuild.
    println!(
        "cargo::rerun-if-changed={}",
        default.parent().expect("has a parent").display()
    );
    if object.is_file() {
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
        std::fs::copy(&object, out.join("tarpit-ebpf.o")).expect("copy the eBPF object");
        println!("cargo::rustc-cfg=tarpit_ebpf_object");
    }
}
