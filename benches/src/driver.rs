//! Driver mode: runs every (workload, allocator) pair `reps` times, each in
//! a fresh child process (this same binary, `run` mode, with
//! `ZONAL_BENCH_ALLOC` set), and prints Markdown tables of medians and of
//! zonal / peer ratios.
//!
//! For each workload the repetitions are rounds of all allocators, the
//! order rotated each round, so slow drifts of a shared machine hit every
//! allocator alike. The child measures the workload's wall time itself
//! (process start-up excluded); the driver takes the child's peak RSS
//! (`ru_maxrss`) from `wait4`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::dispatch::{Allocator, ENV_VAR};
use crate::workloads::{Workload, WORKLOADS};

/// Command-line options of the driver.
#[derive(Debug)]
pub struct Options {
    /// Runs per (workload, allocator).
    pub reps: usize,
    /// Work multiplier passed to the workloads.
    pub scale: f64,
    /// Allocators to compare.
    pub allocators: Vec<Allocator>,
    /// Substrings; a workload runs if its name contains any (all if empty).
    pub filters: Vec<String>,
}

impl Options {
    /// Parses the driver's arguments.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut reps = None;
        let mut scale = None;
        let mut quick = false;
        let mut allocators = Allocator::ALL.to_vec();
        let mut filters = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--quick" => quick = true,
                "--reps" => {
                    reps = Some(parse_reps(&value("--reps")?)?);
                }
                "--scale" => {
                    let v = value("--scale")?;
                    scale = Some(
                        v.parse::<f64>()
                            .ok()
                            .filter(|&s| s > 0.0)
                            .ok_or(format!("bad --scale {v}"))?,
                    );
                }
                "--alloc" => {
                    let v = value("--alloc")?;
                    allocators = v
                        .split(',')
                        .map(|n| {
                            Allocator::parse(n.as_bytes()).ok_or(format!("unknown allocator {n}"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                s if s.starts_with('-') => return Err(format!("unknown option {s}")),
                s => filters.push(s.to_string()),
            }
        }
        Ok(Options {
            reps: reps.unwrap_or(if quick { 3 } else { 5 }),
            scale: scale.unwrap_or(if quick { 0.2 } else { 1.0 }),
            allocators,
            filters,
        })
    }
}

/// One child run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Workload wall time, nanoseconds.
    ns: u64,
    /// User + system CPU time of the whole child, nanoseconds.
    cpu_ns: u64,
    /// Peak resident set size of the child, KiB.
    maxrss_kib: u64,
    /// The workload's checksum: the same under every allocator, or one of
    /// them returned corrupted memory.
    checksum: u64,
    /// Minor page faults of the child (pages first touched or re-touched
    /// after the allocator gave them back to the kernel).
    minflt: u64,
}

/// Runs the benchmark and prints the tables.
pub fn main(opts: &Options) -> Result<(), String> {
    let workloads: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| {
            opts.filters.is_empty() || opts.filters.iter().any(|f| w.name.contains(f.as_str()))
        })
        .collect();
    if workloads.is_empty() {
        return Err("no workload matches the filter (see `zonal-benches list`)".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let allocs = &opts.allocators;
    let total = workloads.len() * allocs.len() * opts.reps;
    let load_before = loadavg();
    let started = Instant::now();
    // samples[workload][allocator]
    let mut samples = vec![vec![Vec::<Sample>::new(); allocs.len()]; workloads.len()];
    let mut failures = vec![vec![None::<String>; allocs.len()]; workloads.len()];
    let mut done = 0;
    for (wi, w) in workloads.iter().enumerate() {
        for rep in 0..opts.reps {
            for k in 0..allocs.len() {
                let ai = (k + rep) % allocs.len();
                let a = allocs[ai];
                done += 1;
                if failures[wi][ai].is_some() {
                    continue;
                }
                match run_child(&exe, w.name, a, opts.scale) {
                    Ok(s) => {
                        eprintln!(
                            "[{done:>3}/{total}] {:<17} {:<9} {:>9.1} ms {:>8.1} MiB",
                            w.name,
                            a.name(),
                            s.ns as f64 / 1e6,
                            s.maxrss_kib as f64 / 1024.0
                        );
                        samples[wi][ai].push(s);
                    }
                    Err(e) => {
                        eprintln!("[{done:>3}/{total}] {} {}: FAILED: {e}", w.name, a.name());
                        failures[wi][ai] = Some(e);
                    }
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("all runs took {elapsed:.1} s");
    let run = RunInfo {
        elapsed,
        load_before,
        load_after: loadavg(),
    };
    print_report(opts, &run, &workloads, &samples, &failures);
    Ok(())
}

/// Runs `workload` once under `alloc` in a child process.
fn run_child(
    exe: &std::path::Path,
    workload: &str,
    alloc: Allocator,
    scale: f64,
) -> Result<Sample, String> {
    let scale = scale.to_string();
    let (out, usage) = run_measured(
        exe,
        &["run", workload, alloc.name(), "--scale", &scale],
        alloc.name(),
    )?;
    let mut fields = out.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(ns)), Some(Ok(checksum))) = (fields.next(), fields.next()) else {
        return Err(format!("unexpected child output {out:?}"));
    };
    Ok(Sample {
        ns,
        cpu_ns: cpu_ns(&usage),
        checksum,
        maxrss_kib: usage.ru_maxrss as u64,
        minflt: usage.ru_minflt as u64,
    })
}

/// Runs this executable with `args` and the dispatching allocator set to
/// `allocator`, and returns its standard output and resource usage; an
/// error if it did not exit with status 0.
pub(crate) fn run_measured(
    exe: &std::path::Path,
    args: &[&str],
    allocator: &str,
) -> Result<(String, libc::rusage), String> {
    let mut child = Command::new(exe)
        .args(args)
        .env(ENV_VAR, allocator)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out)
        .map_err(|e| format!("reading child output: {e}"))?;
    let (status, usage) = wait4(child.id() as libc::pid_t)?;
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exit status {}", libc::WEXITSTATUS(status))
        });
    }
    Ok((out, usage))
}

/// User plus system CPU time of a finished child, in nanoseconds.
pub(crate) fn cpu_ns(usage: &libc::rusage) -> u64 {
    let tv_ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    tv_ns(usage.ru_utime) + tv_ns(usage.ru_stime)
}

/// The value of `--reps`: a positive count of runs.
pub(crate) fn parse_reps(value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|&r| r > 0)
        .ok_or(format!("bad --reps {value}"))
}

/// Reaps `pid`, returning its wait status and resource usage.
pub(crate) fn wait4(pid: libc::pid_t) -> Result<(i32, libc::rusage), String> {
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is valid; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our unreaped child; both pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {err}"));
        }
    }
}

/// `f` of the samples of every (workload, allocator) cell.
fn per_cell(
    samples: &[Vec<Vec<Sample>>],
    f: impl Fn(&[Sample]) -> Option<f64>,
) -> Vec<Vec<Option<f64>>> {
    samples
        .iter()
        .map(|row| row.iter().map(|cell| f(cell)).collect())
        .collect()
}

pub(crate) fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// The first "model name" of /proc/cpuinfo.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The 1-minute load average, from /proc/loadavg.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Facts about the whole run, for the report header.
struct RunInfo {
    elapsed: f64,
    load_before: String,
    load_after: String,
}

pub(crate) fn date_utc() -> String {
    Command::new("date")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown date".into())
}

/// Prints one Markdown table: a column per allocator, then (with `ratios`
/// and zonal among the allocators) the ratios zonal / peer.
fn print_table(
    title: &str,
    unit: &str,
    workloads: &[&Workload],
    allocs: &[Allocator],
    values: &[Vec<Option<f64>>],
    digits: usize,
    ratios: bool,
) {
    let zonal = allocs
        .iter()
        .position(|&a| a == Allocator::Zonal)
        .filter(|_| ratios);
    let peers: Vec<usize> = (0..allocs.len()).filter(|&i| Some(i) != zonal).collect();
    println!("### {title}\n");
    let mut head = String::from("| workload |");
    let mut rule = String::from("|---|");
    for a in allocs {
        head += &format!(" {} ({unit}) |", a.label());
        rule += "---:|";
    }
    if zonal.is_some() {
        for &p in &peers {
            head += &format!(" zonal / {} |", allocs[p].label());
            rule += "---:|";
        }
    }
    println!("{head}\n{rule}");
    for (wi, w) in workloads.iter().enumerate() {
        let mut row = format!("| {} |", w.name);
        for v in &values[wi] {
            row += &match v {
                Some(x) => format!(" {x:.digits$} |"),
                None => " failed |".into(),
            };
        }
        if let Some(z) = zonal {
            for &p in &peers {
                row += &match (values[wi][z], values[wi][p]) {
                    (Some(zv), Some(pv)) if pv > 0.0 => format!(" {:.2} |", zv / pv),
                    _ => " - |".into(),
                };
            }
        }
        println!("{row}");
    }
    println!();
}

fn print_report(
    opts: &Options,
    run: &RunInfo,
    workloads: &[&Workload],
    samples: &[Vec<Vec<Sample>>],
    failures: &[Vec<Option<String>>],
) {
    let allocs = &opts.allocators;
    let ms = per_cell(samples, |s| {
        median(s.iter().map(|s| s.ns as f64 / 1e6).collect())
    });
    let cpu_ms = per_cell(samples, |s| {
        median(s.iter().map(|s| s.cpu_ns as f64 / 1e6).collect())
    });
    let mib = per_cell(samples, |s| {
        median(s.iter().map(|s| s.maxrss_kib as f64 / 1024.0).collect())
    });
    let faults = per_cell(samples, |s| {
        median(s.iter().map(|s| s.minflt as f64 / 1e3).collect())
    });
    // (max - min) / median of the times, in percent.
    let spread = per_cell(samples, |s| {
        let t: Vec<f64> = s.iter().map(|s| s.ns as f64).collect();
        let med = median(t.clone())?;
        let max = t.iter().copied().fold(f64::MIN, f64::max);
        let min = t.iter().copied().fold(f64::MAX, f64::min);
        Some(100.0 * (max - min) / med)
    });

    println!("## zonal benchmarks\n");
    println!("- date: {}", date_utc());
    println!(
        "- machine: {} CPUs, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!(
        "- {} runs per (workload, allocator), each in a fresh process, allocators interleaved; \
         scale {}; figures are medians",
        opts.reps, opts.scale
    );
    println!(
        "- whole run {:.0} s; 1-minute load average {} before, {} after \
         (a load above the CPU count means other processes competed: trust CPU time and ratios \
         over absolute times)",
        run.elapsed, run.load_before, run.load_after
    );
    println!(
        "- every allocator is reached through the same dispatching `#[global_allocator]` \
         (two loads and an indirect jump per call)\n"
    );
    print_table("Wall time (median)", "ms", workloads, allocs, &ms, 1, true);
    print_table(
        "CPU time, user + system, whole process (median)",
        "ms",
        workloads,
        allocs,
        &cpu_ms,
        1,
        true,
    );
    print_table(
        "Peak RSS (median of ru_maxrss)",
        "MiB",
        workloads,
        allocs,
        &mib,
        1,
        true,
    );
    print_table(
        "Minor page faults (median, whole process)",
        "thousands",
        workloads,
        allocs,
        &faults,
        1,
        true,
    );
    print_table(
        "Time spread: (max - min) / median of the runs, for judging noise",
        "%",
        workloads,
        allocs,
        &spread,
        0,
        false,
    );
    for (wi, w) in workloads.iter().enumerate() {
        let mut sums: Vec<(u64, &str)> = samples[wi]
            .iter()
            .zip(allocs)
            .flat_map(|(cell, a)| cell.iter().map(move |s| (s.checksum, a.name())))
            .collect();
        sums.sort_unstable();
        sums.dedup();
        if sums.windows(2).any(|p| p[0].0 != p[1].0) {
            println!("- CHECKSUM MISMATCH in {}: {sums:?}", w.name);
        }
        for (ai, f) in failures[wi].iter().enumerate() {
            if let Some(e) = f {
                println!("- FAILED: {} under {}: {e}", w.name, allocs[ai].name());
            }
        }
    }
}
