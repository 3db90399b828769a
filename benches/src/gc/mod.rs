//! The `gc` workload group: GCBench and binary-trees (depths 16 to 21), each
//! run with zonal's `Gc<T>`, with bdwgc, with `Box` on glibc malloc and with
//! `Box` in zonal's manual zone, side by side in one run.
//!
//! ```text
//! zonal-benches gc [--quick] [--reps N] [--variants a,b,..] [FILTER..]
//!     driver: every (workload, variant) pair N times, each in a fresh
//!     process, variants interleaved; prints Markdown tables of medians
//!     (time, peak RSS, collections, median and max pause, ratios to bdwgc)
//! zonal-benches gc-run WORKLOAD VARIANT
//!     child mode: one run, prints one line of key=value figures
//! ```
//!
//! The child re-executes itself (like `run`) so that its global allocator
//! is zonal for the zonal variants and glibc for the others. The driver
//! reads the child's peak RSS from `wait4`; the child reports its wall time
//! (process start-up and collector initialisation excluded) and its pauses.
//!
//! Pauses: bdwgc's are recorded one by one through its collection-event
//! callback (see [`bdwgc`]). zonal's collector publishes the last, the
//! maximum and the total pause and the count (`zonal::stats().gc`): the
//! maximum and mean are exact, the median comes from `pause_last` sampled
//! every few thousand allocations (see [`pauses::ZonalPoll`]).

mod bdwgc;
mod binary_trees;
mod family;
mod gcbench;
mod pauses;

use std::time::Instant;

use crate::dispatch::Allocator;
use crate::driver::{cpu_model, cpu_ns, date_utc, loadavg, median, parse_reps, run_measured};
use family::Family;

/// The benchmark programs of the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Program {
    /// GCBench (fixed size).
    GcBench,
    /// binary-trees at this maximum depth.
    BinaryTrees(u32),
}

/// Workload names, in table order.
const WORKLOADS: &[(&str, Program)] = &[
    ("gcbench", Program::GcBench),
    ("binary-trees-16", Program::BinaryTrees(16)),
    ("binary-trees-17", Program::BinaryTrees(17)),
    ("binary-trees-18", Program::BinaryTrees(18)),
    ("binary-trees-19", Program::BinaryTrees(19)),
    ("binary-trees-20", Program::BinaryTrees(20)),
    ("binary-trees-21", Program::BinaryTrees(21)),
];

/// Allocations between two looks of the zonal pause sampler (for the report).
#[cfg(feature = "zonal-gc")]
const ZONAL_POLL_EVERY: u32 = pauses::ZonalPoll::EVERY;
#[cfg(not(feature = "zonal-gc"))]
const ZONAL_POLL_EVERY: u32 = 0;

/// What `--quick` runs when no filter is given.
const QUICK: &[&str] = &["gcbench", "binary-trees-16", "binary-trees-17"];

/// The memory managers compared, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// `zonal::Gc<T>`, zonal as the global allocator.
    ZonalGc,
    /// bdwgc (`GC_malloc`), glibc as the global allocator.
    Bdwgc,
    /// bdwgc with its parallel marker threads started
    /// (`GC_start_mark_threads`); not run unless asked for.
    BdwgcParallel,
    /// `Box` with glibc malloc (`System`), freed by `Drop`.
    BoxSystem,
    /// `allocator_api2::boxed::Box` in `zonal::ManualZone`, freed by `Drop`.
    ManualZone,
}

impl Variant {
    const ALL: [Variant; 5] = [
        Variant::ZonalGc,
        Variant::Bdwgc,
        Variant::BdwgcParallel,
        Variant::BoxSystem,
        Variant::ManualZone,
    ];

    /// The variants run when `--variants` is not given.
    const DEFAULT: [Variant; 4] = [
        Variant::ZonalGc,
        Variant::Bdwgc,
        Variant::BoxSystem,
        Variant::ManualZone,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::ZonalGc => "zonal-gc",
            Variant::Bdwgc => "bdwgc",
            Variant::BdwgcParallel => "bdwgc-par",
            Variant::BoxSystem => "box-system",
            Variant::ManualZone => "manual-zone",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::ZonalGc => "zonal `Gc<T>`",
            Variant::Bdwgc => "bdwgc",
            Variant::BdwgcParallel => "bdwgc, parallel marking",
            Variant::BoxSystem => "`Box` + glibc",
            Variant::ManualZone => "`Box` in `ManualZone`",
        }
    }

    fn parse(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// The global allocator of the variant's process.
    fn allocator(self) -> Allocator {
        match self {
            Variant::ZonalGc | Variant::ManualZone => Allocator::Zonal,
            Variant::Bdwgc | Variant::BdwgcParallel | Variant::BoxSystem => Allocator::System,
        }
    }

    /// Whether this build can run the variant.
    fn available(self) -> bool {
        self != Variant::ZonalGc || cfg!(feature = "zonal-gc")
    }
}

fn find_workload(name: &str) -> Result<Program, String> {
    WORKLOADS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, p)| p)
        .ok_or_else(|| format!("unknown gc workload {name:?}"))
}

fn run_program<F: Family>(p: Program) -> u64 {
    match p {
        Program::GcBench => gcbench::run::<F>(),
        Program::BinaryTrees(n) => binary_trees::run::<F>(n),
    }
}

/// Figures of one child run, as printed by `gc-run`.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    /// Wall time of the benchmark, nanoseconds.
    ns: u64,
    /// The benchmark's checksum.
    sum: u64,
    /// Collections during the benchmark.
    gcs: u64,
    /// Median pause (bdwgc), nanoseconds.
    p50: Option<u64>,
    /// Mean pause, nanoseconds.
    pmean: Option<u64>,
    /// Longest pause, nanoseconds.
    pmax: Option<u64>,
    /// bdwgc: median and longest world-stopped interval, nanoseconds.
    stw50: Option<u64>,
    stwmax: Option<u64>,
    /// bdwgc: `GC_get_parallel()`.
    par: Option<i64>,
    /// bdwgc: own total of full-collection time, milliseconds.
    gcms: Option<u64>,
    /// bdwgc: `GC_get_gc_no()`, its own collection count.
    gcno: Option<u64>,
    /// bdwgc: heap size at the end, bytes.
    heap: Option<u64>,
    /// zonal: collections whose pause the sampler missed (see
    /// `pauses::ZonalPoll`); the median is of the others.
    missed: Option<u64>,
}

impl Figures {
    fn to_line(self) -> String {
        let mut s = format!("ns={} sum={} gcs={}", self.ns, self.sum, self.gcs);
        let opt = [
            ("p50", self.p50),
            ("pmean", self.pmean),
            ("pmax", self.pmax),
            ("stw50", self.stw50),
            ("stwmax", self.stwmax),
            ("gcms", self.gcms),
            ("gcno", self.gcno),
            ("heap", self.heap),
            ("missed", self.missed),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                s += &format!(" {k}={v}");
            }
        }
        if let Some(p) = self.par {
            s += &format!(" par={p}");
        }
        s
    }

    fn parse(line: &str) -> Result<Figures, String> {
        let mut f = Figures::default();
        let (mut ns, mut sum) = (false, false);
        for kv in line.split_whitespace() {
            let bad = || format!("unexpected child output {line:?}");
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            if k == "par" {
                f.par = Some(v.parse().map_err(|_| bad())?);
                continue;
            }
            let v: u64 = v.parse().map_err(|_| bad())?;
            match k {
                "ns" => (f.ns, ns) = (v, true),
                "sum" => (f.sum, sum) = (v, true),
                "gcs" => f.gcs = v,
                "p50" => f.p50 = Some(v),
                "pmean" => f.pmean = Some(v),
                "pmax" => f.pmax = Some(v),
                "stw50" => f.stw50 = Some(v),
                "stwmax" => f.stwmax = Some(v),
                "gcms" => f.gcms = Some(v),
                "gcno" => f.gcno = Some(v),
                "heap" => f.heap = Some(v),
                "missed" => f.missed = Some(v),
                _ => return Err(bad()),
            }
        }
        if !(ns && sum) {
            return Err(format!("unexpected child output {line:?}"));
        }
        Ok(f)
    }
}

/// `gc-run WORKLOAD VARIANT`: one timed run in this process.
pub fn run(args: &[String]) -> Result<(), String> {
    let [workload, variant] = args else {
        return Err("gc-run needs WORKLOAD VARIANT".into());
    };
    let program = find_workload(workload)?;
    let variant = Variant::parse(variant).ok_or_else(|| format!("unknown variant {variant:?}"))?;
    if !variant.available() {
        return Err(format!(
            "variant {} needs the cargo feature zonal-gc",
            variant.name()
        ));
    }
    crate::ensure_allocator(variant.allocator())?;
    let figures = match variant {
        Variant::Bdwgc | Variant::BdwgcParallel => {
            bdwgc::init();
            if variant == Variant::BdwgcParallel {
                bdwgc::start_mark_threads();
            }
            let start = Instant::now();
            let sum = run_program::<family::Bdw>(program);
            let ns = start.elapsed().as_nanos() as u64;
            let r = bdwgc::report();
            Figures {
                ns,
                sum,
                gcs: r.collections.count,
                p50: Some(r.collections.median_ns),
                pmean: Some(r.collections.total_ns / r.collections.count.max(1)),
                pmax: Some(r.collections.max_ns),
                stw50: Some(r.stopped.median_ns),
                stwmax: Some(r.stopped.max_ns),
                par: Some(i64::from(r.parallel)),
                gcms: Some(r.full_gc_ms),
                gcno: Some(r.gc_no),
                heap: Some(r.heap_bytes),
                missed: None,
            }
        }
        Variant::ZonalGc => run_zonal_gc(program)?,
        Variant::BoxSystem => timed::<family::StdBox>(program),
        Variant::ManualZone => timed::<family::Manual>(program),
    };
    println!("{}", figures.to_line());
    Ok(())
}

/// A run without a collector: time and checksum only.
fn timed<F: Family>(program: Program) -> Figures {
    let start = Instant::now();
    let sum = run_program::<F>(program);
    Figures {
        ns: start.elapsed().as_nanos() as u64,
        sum,
        ..Figures::default()
    }
}

#[cfg(feature = "zonal-gc")]
fn run_zonal_gc(program: Program) -> Result<Figures, String> {
    let before = zonal::stats().gc;
    family::ZONAL_POLL.start();
    let start = Instant::now();
    let sum = run_program::<family::ZonalGc>(program);
    let ns = start.elapsed().as_nanos() as u64;
    let (sampled, missed) = family::ZONAL_POLL.finish();
    let after = zonal::stats().gc;
    let gcs = after.collections - before.collections;
    let total = after.pause_total.saturating_sub(before.pause_total);
    Ok(Figures {
        ns,
        sum,
        gcs,
        p50: (sampled.count > 0).then_some(sampled.median_ns),
        pmean: Some(total.as_nanos() as u64 / gcs.max(1)),
        pmax: Some(after.pause_max.as_nanos() as u64),
        missed: Some(missed),
        ..Figures::default()
    })
}

#[cfg(not(feature = "zonal-gc"))]
fn run_zonal_gc(_: Program) -> Result<Figures, String> {
    Err("the zonal-gc variant needs the cargo feature zonal-gc".into())
}

/// Options of the `gc` driver.
struct Options {
    reps: usize,
    variants: Vec<Variant>,
    workloads: Vec<(&'static str, Program)>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut reps = None;
        let mut quick = false;
        let mut variants: Vec<Variant> = Variant::DEFAULT
            .into_iter()
            .filter(|v| v.available())
            .collect();
        let mut filters = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--reps" => {
                    reps = Some(parse_reps(it.next().ok_or("--reps needs a value")?)?);
                }
                "--variants" => {
                    let v = it.next().ok_or("--variants needs a value")?;
                    variants = v
                        .split(',')
                        .map(|n| Variant::parse(n).ok_or(format!("unknown variant {n}")))
                        .collect::<Result<_, _>>()?;
                    if let Some(v) = variants.iter().find(|v| !v.available()) {
                        return Err(format!("variant {} needs the feature zonal-gc", v.name()));
                    }
                }
                s if s.starts_with('-') => return Err(format!("unknown option {s}")),
                s => filters.push(s.to_string()),
            }
        }
        let workloads: Vec<_> = WORKLOADS
            .iter()
            .copied()
            .filter(|(name, _)| {
                if filters.is_empty() {
                    !quick || QUICK.contains(name)
                } else {
                    filters.iter().any(|f| name.contains(f.as_str()))
                }
            })
            .collect();
        if workloads.is_empty() {
            return Err("no gc workload matches the filter".into());
        }
        Ok(Options {
            reps: reps.unwrap_or(if quick { 1 } else { 3 }),
            variants,
            workloads,
        })
    }
}

/// One child run as the driver saw it.
#[derive(Clone, Copy, Debug)]
struct Sample {
    figures: Figures,
    maxrss_kib: u64,
    /// User + system CPU time of the whole child, nanoseconds.
    cpu_ns: u64,
}

/// `gc [--quick] [--reps N] [--variants a,b] [FILTER..]`: the driver.
pub fn main(args: &[String]) -> Result<(), String> {
    let opts = Options::parse(args)?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let vs = &opts.variants;
    let total = opts.workloads.len() * vs.len() * opts.reps;
    let load_before = loadavg();
    let started = Instant::now();
    let mut samples = vec![vec![Vec::<Sample>::new(); vs.len()]; opts.workloads.len()];
    let mut failures = vec![vec![None::<String>; vs.len()]; opts.workloads.len()];
    let mut done = 0;
    for (wi, &(wname, _)) in opts.workloads.iter().enumerate() {
        for rep in 0..opts.reps {
            for k in 0..vs.len() {
                let vi = (k + rep) % vs.len();
                done += 1;
                if failures[wi][vi].is_some() {
                    continue;
                }
                match run_child(&exe, wname, vs[vi]) {
                    Ok(s) => {
                        eprintln!(
                            "[{done:>3}/{total}] {wname:<16} {:<12} {:>9.1} ms {:>8.1} MiB {:>5} GCs",
                            vs[vi].name(),
                            s.figures.ns as f64 / 1e6,
                            s.maxrss_kib as f64 / 1024.0,
                            s.figures.gcs,
                        );
                        samples[wi][vi].push(s);
                    }
                    Err(e) => {
                        eprintln!("[{done:>3}/{total}] {wname} {}: FAILED: {e}", vs[vi].name());
                        failures[wi][vi] = Some(e);
                    }
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("all runs took {elapsed:.1} s");
    print_report(
        &opts,
        elapsed,
        &load_before,
        &loadavg(),
        &samples,
        &failures,
    );
    Ok(())
}

/// Runs `workload` once with `variant` in a child process.
fn run_child(exe: &std::path::Path, workload: &str, variant: Variant) -> Result<Sample, String> {
    let (out, usage) = run_measured(
        exe,
        &["gc-run", workload, variant.name()],
        variant.allocator().name(),
    )?;
    Ok(Sample {
        figures: Figures::parse(out.trim())?,
        maxrss_kib: usage.ru_maxrss as u64,
        cpu_ns: cpu_ns(&usage),
    })
}

/// Medians over the runs of one (workload, variant).
#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    ms: Option<f64>,
    cpu_ms: Option<f64>,
    mib: Option<f64>,
    gcs: Option<f64>,
    pause_median_ms: Option<f64>,
    pause_mean_ms: Option<f64>,
    pause_max_ms: Option<f64>,
    /// The longest pause of any run.
    pause_worst_ms: Option<f64>,
    stw50_ms: Option<f64>,
    stwmax_ms: Option<f64>,
    par: Option<i64>,
    gcms: Option<f64>,
    gcno: Option<f64>,
    heap_mib: Option<f64>,
    /// Pauses the zonal sampler missed, summed over the runs.
    missed: u64,
}

fn summarize(s: &[Sample]) -> Cell {
    let med = |f: &dyn Fn(&Sample) -> Option<f64>| median(s.iter().filter_map(f).collect());
    let ms = |ns: Option<u64>| ns.map(|n| n as f64 / 1e6);
    Cell {
        ms: med(&|x| Some(x.figures.ns as f64 / 1e6)),
        cpu_ms: med(&|x| Some(x.cpu_ns as f64 / 1e6)),
        mib: med(&|x| Some(x.maxrss_kib as f64 / 1024.0)),
        gcs: med(&|x| Some(x.figures.gcs as f64)),
        pause_median_ms: med(&|x| ms(x.figures.p50)),
        pause_mean_ms: med(&|x| ms(x.figures.pmean)),
        pause_max_ms: med(&|x| ms(x.figures.pmax)),
        pause_worst_ms: s.iter().filter_map(|x| ms(x.figures.pmax)).reduce(f64::max),
        stw50_ms: med(&|x| ms(x.figures.stw50)),
        stwmax_ms: med(&|x| ms(x.figures.stwmax)),
        par: s.iter().filter_map(|x| x.figures.par).max(),
        gcms: med(&|x| x.figures.gcms.map(|v| v as f64)),
        gcno: med(&|x| x.figures.gcno.map(|v| v as f64)),
        heap_mib: med(&|x| x.figures.heap.map(|v| v as f64 / (1 << 20) as f64)),
        missed: s.iter().filter_map(|x| x.figures.missed).sum(),
    }
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn print_report(
    opts: &Options,
    elapsed: f64,
    load_before: &str,
    load_after: &str,
    samples: &[Vec<Vec<Sample>>],
    failures: &[Vec<Option<String>>],
) {
    let vs = &opts.variants;
    let cells: Vec<Vec<Cell>> = samples
        .iter()
        .map(|row| row.iter().map(|s| summarize(s)).collect())
        .collect();
    let bdw = vs.iter().position(|&v| v == Variant::Bdwgc);
    let zgc = vs.iter().position(|&v| v == Variant::ZonalGc);

    println!("## zonal GC benchmarks\n");
    println!("- date: {}", date_utc());
    println!(
        "- machine: {} CPUs, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!(
        "- {} run(s) per (workload, variant), each in a fresh process, variants interleaved; \
         figures are medians of the runs",
        opts.reps
    );
    println!(
        "- whole run {elapsed:.0} s; 1-minute load average {load_before} before, \
         {load_after} after (a load above the CPU count means other processes competed: \
         wall times and pauses stretch, CPU times much less)"
    );
    println!(
        "- every benchmark is single-threaded; global allocator: zonal for zonal `Gc<T>` and \
         `ManualZone`, glibc for bdwgc and `Box` + glibc"
    );
    println!(
        "- pause: the time the program's only thread waits for one collection. bdwgc: \
         `GC_EVENT_START`..`GC_EVENT_END`, every collection logged by its event callback. \
         zonal: its own stop-to-resume time (`stats().gc`: max and total exact; the median from \
         `pause_last`, sampled every {} allocations). Pause figures are medians over the runs \
         of each run's median, mean and max; \"worst\" is the longest pause of all runs. \
         The `Box` variants have no collector.\n",
        ZONAL_POLL_EVERY
    );

    println!("### All variants\n");
    println!(
        "| workload | variant | time (ms) | CPU time (ms) | peak RSS (MiB) | collections \
         | median pause (ms) | mean pause (ms) | max pause (ms) | worst pause (ms) \
         | time / bdwgc | CPU / bdwgc | RSS / bdwgc | max pause / bdwgc |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (wi, &(wname, _)) in opts.workloads.iter().enumerate() {
        for (vi, v) in vs.iter().enumerate() {
            let c = cells[wi][vi];
            let has_gc = !matches!(v, Variant::BoxSystem | Variant::ManualZone);
            let b = bdw.map(|b| cells[wi][b]).unwrap_or_default();
            println!(
                "| {wname} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                v.label(),
                fmt(c.ms, 1),
                fmt(c.cpu_ms, 1),
                fmt(c.mib, 1),
                if has_gc { fmt(c.gcs, 0) } else { "-".into() },
                fmt(c.pause_median_ms, 2),
                fmt(c.pause_mean_ms, 2),
                fmt(c.pause_max_ms, 2),
                fmt(c.pause_worst_ms, 2),
                ratio(c.ms, b.ms),
                ratio(c.cpu_ms, b.cpu_ms),
                ratio(c.mib, b.mib),
                ratio(c.pause_max_ms, b.pause_max_ms),
            );
        }
    }
    println!();

    if let (Some(z), Some(b)) = (zgc, bdw) {
        println!(
            "### zonal `Gc<T>` / bdwgc (targets: time, peak RSS and max pause at most 1.00)\n"
        );
        println!(
            "| workload | time | CPU time | peak RSS | max pause | median pause | mean pause \
             | collections |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        let mut missed = 0;
        for (wi, &(wname, _)) in opts.workloads.iter().enumerate() {
            let (zc, bc) = (cells[wi][z], cells[wi][b]);
            missed += zc.missed;
            println!(
                "| {wname} | {} | {} | {} | {} | {} | {} | {} |",
                ratio(zc.ms, bc.ms),
                ratio(zc.cpu_ms, bc.cpu_ms),
                ratio(zc.mib, bc.mib),
                ratio(zc.pause_max_ms, bc.pause_max_ms),
                ratio(zc.pause_median_ms, bc.pause_median_ms),
                ratio(zc.pause_mean_ms, bc.pause_mean_ms),
                ratio(zc.gcs, bc.gcs),
            );
        }
        println!(
            "\nzonal pauses missed by the sampler (two collections between looks), all runs: \
             {missed}\n"
        );
    }

    if let Some(b) = bdw {
        println!("### bdwgc details\n");
        println!(
            "| workload | world stopped, median (ms) | world stopped, max (ms) \
             | collections (events) | `GC_get_gc_no()` | full-GC time (ms, bdwgc's own) \
             | heap at end (MiB) | `GC_get_parallel()` |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (wi, &(wname, _)) in opts.workloads.iter().enumerate() {
            let c = cells[wi][b];
            println!(
                "| {wname} | {} | {} | {} | {} | {} | {} | {} |",
                fmt(c.stw50_ms, 2),
                fmt(c.stwmax_ms, 2),
                fmt(c.gcs, 0),
                fmt(c.gcno, 0),
                fmt(c.gcms, 0),
                fmt(c.heap_mib, 1),
                c.par.map_or_else(|| "-".into(), |p| p.to_string()),
            );
        }
        println!(
            "\n`GC_get_parallel()` is the number of parallel marker threads besides the \
             collecting one: 0 means bdwgc marked on one thread.\n"
        );
    }

    for (wi, &(wname, _)) in opts.workloads.iter().enumerate() {
        let mut sums: Vec<(u64, &str)> = samples[wi]
            .iter()
            .zip(vs)
            .flat_map(|(cell, v)| cell.iter().map(move |s| (s.figures.sum, v.name())))
            .collect();
        sums.sort_unstable();
        sums.dedup();
        if sums.windows(2).any(|p| p[0].0 != p[1].0) {
            println!("- CHECKSUM MISMATCH in {wname}: {sums:?}");
        }
        for (vi, f) in failures[wi].iter().enumerate() {
            if let Some(e) = f {
                println!("- FAILED: {wname} with {}: {e}", vs[vi].name());
            }
        }
    }
}
