//! Feature `tch` only: an rpath to the libtorch directory that torch-sys linked against
//! (`DEP_TCH_LIBTORCH_LIB`, set by torch-sys's build script for the packages that name it), so
//! that this package's binaries, tests, examples and benches find libtorch at run time without
//! `LD_LIBRARY_PATH`. Link arguments do not travel from a library to its dependents, so every
//! package that links binaries runs this script (`build = "../build.rs"` in gpt, pipelines and
//! apps). Without the feature it prints nothing but its rerun condition (cargo reruns it anyway
//! when the script itself changes).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let windows = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "windows");
    if let Some(dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").filter(|_| !windows) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.to_string_lossy());
    }
}
