//! `zonal-benches`: zonal's manual zone side by side with glibc (`System`),
//! mimalloc and jemalloc, reported as ratios zonal / peer.
//!
//! One binary plays every role. Its `#[global_allocator]` is
//! [`dispatch::Dispatch`], which serves the whole process from the allocator
//! named by `ZONAL_BENCH_ALLOC`, so the four allocators run the very same
//! machine code around them and pay the same dispatch cost.
//!
//! ```text
//! zonal-benches [--quick] [--reps N] [--scale F] [--alloc a,b,..] [FILTER..]
//!     driver: runs each workload under each allocator in child processes
//!     and prints Markdown tables (time, peak RSS, ratios, spread)
//! zonal-benches list
//!     lists the workloads
//! zonal-benches run WORKLOAD ALLOCATOR [--scale F]
//!     child mode: runs one workload once, prints "<nanoseconds> <checksum>"
//! zonal-benches pairs ALLOCATOR|none N
//!     N malloc+free pairs of 32 bytes after a warm-up, for callgrind
//!     (`none`: the same loop without the allocator calls)
//! zonal-benches gc [--quick] [--reps N] [--variants a,b,..] [FILTER..]
//! zonal-benches gc-run WORKLOAD VARIANT
//!     the GC group (GCBench, binary-trees): zonal Gc<T>, bdwgc, Box, ManualZone
//!     (see the `gc` module)
//! ```
//!
//! `run` and `pairs` re-execute themselves with `ZONAL_BENCH_ALLOC` set when
//! it does not already name the requested allocator (under valgrind, set it
//! yourself: see `callgrind.sh`).

mod dispatch;
mod driver;
mod gc;
mod rng;
mod workloads;
mod zones;

use std::hint::black_box;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::Instant;

use dispatch::{Allocator, ENV_VAR};
use workloads::WORKLOADS;

#[global_allocator]
static ALLOC: dispatch::Dispatch = dispatch::Dispatch;

const USAGE: &str = "\
usage:
  zonal-benches [--quick] [--reps N] [--scale F] [--alloc a,b,..] [FILTER..]
  zonal-benches list
  zonal-benches run WORKLOAD ALLOCATOR [--scale F]
  zonal-benches pairs ALLOCATOR|none N
  zonal-benches gc [--quick] [--reps N] [--variants a,b,..] [FILTER..]
  zonal-benches gc-run WORKLOAD VARIANT
  zonal-benches zones [--reps N] [--scale F]
  zonal-benches zones-ir pinned|manual|stack|bump|inspect|none N
gc variants: zonal-gc, bdwgc, box-system, manual-zone (the default set), bdwgc-par
allocators: zonal, system, mimalloc, jemalloc
--quick: 3 runs at scale 0.2 (default: 5 runs at scale 1)
gc --quick: 1 run of gcbench, binary-trees-16 and -17 (default: 3 runs of all, depths 16-21)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("pairs") => pairs(&args[1..]),
        Some("gc") => gc::main(&args[1..]),
        Some("gc-run") => gc::run(&args[1..]),
        Some("zones") => zones::main(&args[1..]),
        Some("zones-ir") => zones::instructions(&args[1..]),
        Some("list") => {
            for w in WORKLOADS {
                println!("{:<17} {}", w.name, w.about);
            }
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => driver::Options::parse(&args).and_then(|o| driver::main(&o)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zonal-benches: {e}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn parse_allocator(name: &str) -> Result<Allocator, String> {
    Allocator::parse(name.as_bytes()).ok_or_else(|| format!("unknown allocator {name:?}"))
}

/// Makes sure this process is served by `wanted`, re-executing itself with
/// `ZONAL_BENCH_ALLOC` set if not. Returns only when it is.
fn ensure_allocator(wanted: Allocator) -> Result<(), String> {
    if dispatch::current() == wanted {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let err = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(ENV_VAR, wanted.name())
        .exec();
    Err(format!("re-exec with {ENV_VAR}={}: {err}", wanted.name()))
}

/// `run WORKLOAD ALLOCATOR [--scale F]`: one timed run.
fn run(args: &[String]) -> Result<(), String> {
    let [workload, allocator, rest @ ..] = args else {
        return Err("run needs WORKLOAD ALLOCATOR".into());
    };
    let scale = match rest {
        [] => 1.0,
        [flag, v] if flag == "--scale" => v.parse().map_err(|_| format!("bad scale {v}"))?,
        _ => return Err(format!("unexpected arguments {rest:?}")),
    };
    let w = WORKLOADS
        .iter()
        .find(|w| w.name == workload)
        .ok_or_else(|| format!("unknown workload {workload:?}"))?;
    ensure_allocator(parse_allocator(allocator)?)?;
    let start = Instant::now();
    let sum = black_box((w.run)(black_box(scale)));
    let ns = start.elapsed().as_nanos();
    println!("{ns} {sum}");
    Ok(())
}

/// `pairs ALLOCATOR|none N`: malloc+free pairs for instruction counting.
fn pairs(args: &[String]) -> Result<(), String> {
    let [allocator, n] = args else {
        return Err("pairs needs ALLOCATOR|none N".into());
    };
    let n: usize = n.parse().map_err(|_| format!("bad count {n}"))?;
    if allocator == "none" {
        workloads::empty_pairs(n);
    } else {
        ensure_allocator(parse_allocator(allocator)?)?;
        workloads::pairs(n);
    }
    Ok(())
}
