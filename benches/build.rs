//! Build script of the benchmark crate: checks that bdwgc (`libgc.so`, from
//! Debian's `libgc-dev`) is installed for the `gc` workload group, which
//! links it with `#[link(name = "gc")]` (`src/gc/bdwgc.rs`). Without it the
//! link would fail with a bare "cannot find -lgc"; this says what to do.

use std::path::Path;

/// Where Debian and most distributions put the unversioned `libgc.so`.
const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ZONAL_BENCH_LIBGC_DIR");
    if let Ok(dir) = std::env::var("ZONAL_BENCH_LIBGC_DIR") {
        println!("cargo:rustc-link-search=native={dir}");
        return;
    }
    match LIB_DIRS
        .iter()
        .find(|d| Path::new(d).join("libgc.so").exists())
    {
        Some(dir) => println!("cargo:rustc-link-search=native={dir}"),
        None => println!(
            "cargo:warning=libgc.so (bdwgc) not found: run benches/setup.sh \
             (apt-get install -y libgc-dev), or set ZONAL_BENCH_LIBGC_DIR"
        ),
    }
}
