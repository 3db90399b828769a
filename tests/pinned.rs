//! The pinned zone: `PinnedZone`, page-locked and zero-on-free blocks, pin
//! guards, and the FFI handle table (export, resolve, revoke; concurrent
//! use with zonal as the global allocator, since crossbeam-epoch allocates).

mod common;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;
use core::alloc::Layout;
use std::time::Duration;
use zonal::pinned::{handles, PinnedError, PinnedOptions};
use zonal::{PinnedZone, Zone};

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

#[test]
fn pinned_blocks_stay_put_and_are_counted_in_the_pinned_zone() {
    let before = zonal::stats().zone(Zone::Pinned).allocations;
    let mut bufs: Vec<AVec<u64, PinnedZone>> = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..1000u64 {
        let mut v = AVec::with_capacity_in(16, PinnedZone);
        v.extend((0..16).map(|j| i * 100 + j));
        addrs.push(v.as_ptr() as usize);
        bufs.push(v);
    }
    // Unrelated churn does not move anything.
    for _ in 0..10_000 {
        drop(Box::new([0u8; 64]));
    }
    for (i, v) in bufs.iter().enumerate() {
        assert_eq!(v.as_ptr() as usize, addrs[i]);
        assert_eq!(v[15], i as u64 * 100 + 15);
        let a = zonal::inspect(v.as_ptr().cast()).unwrap();
        assert_eq!((a.zone, a.base, a.live), (Zone::Pinned, addrs[i], true));
    }
    assert!(zonal::stats().zone(Zone::Pinned).allocations >= before + 1000);
    let first = bufs[0].as_ptr() as usize;
    drop(bufs);
    assert!(!zonal::inspect(first as *const u8).unwrap().live);
}

#[test]
fn pinned_blocks_grow_and_shrink_in_their_zone() {
    let mut v: AVec<u32, _> = AVec::new_in(PinnedZone);
    for i in 0..100_000 {
        v.push(i);
    }
    assert_eq!(
        zonal::inspect(v.as_ptr().cast()).unwrap().zone,
        Zone::Pinned
    );
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v.iter().sum::<u32>(), 45);
    assert_eq!(
        zonal::inspect(v.as_ptr().cast()).unwrap().zone,
        Zone::Pinned
    );
}

fn vm_locked_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn page_locked_blocks_are_locked_until_freed() {
    let locked = PinnedOptions::new().page_locked(true);
    let layout = Layout::from_size_align(256 * 1024, 16).unwrap();
    let before = vm_locked_kib();
    let block = match locked.try_allocate(layout) {
        Ok(block) => block,
        // An unprivileged run with a small limit: the error must say so.
        Err(e @ PinnedError::MemlockLimit { .. }) => {
            assert!(e.to_string().contains("RLIMIT_MEMLOCK"));
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(vm_locked_kib() >= before + 256, "VmLck did not grow");
    let found = zonal::inspect(block.cast::<u8>().as_ptr()).unwrap();
    assert_eq!((found.zone, found.live), (Zone::Pinned, true));
    // SAFETY: the block holds 256 KiB and is ours.
    unsafe { block.cast::<u8>().as_ptr().write_bytes(0x5a, layout.size()) };
    // SAFETY: allocated above with this layout.
    unsafe { locked.deallocate(block.cast(), layout) };
    assert!(vm_locked_kib() < before + 256, "VmLck did not fall back");
}

/// Drops CAP_IPC_LOCK (which lets root lock past the limit) and lowers
/// RLIMIT_MEMLOCK, in a child process of its own.
fn limit_memlock_to(bytes: u64) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAP_IPC_LOCK: u32 = 14;
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset read and write the structs we pass (version 3
    // takes two data records).
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << CAP_IPC_LOCK);
        data[0].permitted &= !(1 << CAP_IPC_LOCK);
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit), 0);
    }
}

#[test]
fn reaching_rlimit_memlock_is_an_error_that_names_it() {
    if std::env::var_os("ZONAL_TEST_MEMLOCK_CHILD").is_some() {
        limit_memlock_to(64 * 1024);
        let locked = PinnedOptions::new().page_locked(true);
        let small = Layout::from_size_align(16 * 1024, 16).unwrap();
        let ok = locked
            .try_allocate(small)
            .expect("16 KiB fits under 64 KiB");
        let err = locked
            .try_allocate(Layout::from_size_align(1 << 20, 16).unwrap())
            .unwrap_err();
        assert!(
            matches!(err, PinnedError::MemlockLimit { limit: 65536, .. }),
            "{err:?}"
        );
        println!("CHILD-ERROR: {err}");
        // SAFETY: allocated above with this layout.
        unsafe { locked.deallocate(ok.cast(), small) };
        // The failed attempt left nothing locked behind: 48 KiB more fits.
        let again = locked
            .try_allocate(Layout::from_size_align(48 * 1024, 16).unwrap())
            .expect("the limit is free again");
        // SAFETY: as above.
        unsafe {
            locked.deallocate(
                again.cast(),
                Layout::from_size_align(48 * 1024, 16).unwrap(),
            )
        };
        return;
    }
    let out = common::run_child(
        "reaching_rlimit_memlock_is_an_error_that_names_it",
        &[("ZONAL_TEST_MEMLOCK_CHILD", "1")],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "CHILD-ERROR: page-locking 1048576 bytes failed: RLIMIT_MEMLOCK (65536 bytes) reached"
        ),
        "{stdout}"
    );
}

/// The bytes of a block just freed (its page keeps it mapped: the page
/// still holds the other block allocated alongside), past the free-list link.
fn bytes_after_free(options: PinnedOptions) -> Vec<u8> {
    let layout = Layout::from_size_align(256, 16).unwrap();
    // A neighbour keeps the page in use while the block is freed.
    let neighbour = PinnedZone.allocate(layout).unwrap().cast::<u8>();
    let block = options.allocate(layout).unwrap().cast::<u8>();
    // SAFETY: the block is ours (256 bytes).
    unsafe { block.as_ptr().write_bytes(0xee, 256) };
    // SAFETY: allocated above with this layout.
    unsafe { options.deallocate(block, layout) };
    assert!(!zonal::inspect(block.as_ptr()).unwrap().live);
    // SAFETY: the page is still in use, so the freed block is mapped; a
    // volatile read of plain bytes (the allocator trait's deallocate is an
    // ordinary call: nothing assumes the memory is gone).
    let bytes = (16..256)
        .map(|i| unsafe { core::ptr::read_volatile(block.as_ptr().add(i)) })
        .collect();
    // SAFETY: as above.
    unsafe { PinnedZone.deallocate(neighbour, layout) };
    bytes
}

#[test]
fn zero_on_free_clears_the_block_before_it_is_freed() {
    let cleared = bytes_after_free(PinnedOptions::new().zero_on_free(true));
    assert!(
        cleared.iter().all(|&b| b == 0),
        "secret bytes survived the free"
    );
    // Without the option the bytes stay (so the check above can fail).
    let kept = bytes_after_free(PinnedOptions::new());
    assert!(kept.iter().all(|&b| b == 0xee));
}

#[test]
fn pinning_needs_a_live_zonal_allocation() {
    let b = Box::new([0u64; 8]);
    let interior = b.as_ptr().wrapping_add(5).cast::<u8>();
    let guard = zonal::pin(interior).unwrap();
    assert_eq!(guard.allocation().base, b.as_ptr() as usize);
    assert_eq!(guard.allocation().zone, Zone::Manual);
    // Other tests pin and unpin in parallel, so only a lower bound holds.
    assert!(zonal::pinned::pinned_count() >= 1);
    drop(guard);

    let local = 0u64;
    let err = zonal::pin((&local as *const u64).cast()).unwrap_err();
    assert_eq!(
        err,
        zonal::pinned::PinError::NotZonal {
            addr: &local as *const u64 as usize
        }
    );
    assert!(zonal::pin(core::ptr::null())
        .unwrap_err()
        .to_string()
        .contains("null"));

    let freed = Box::into_raw(Box::new([1u64; 8]));
    // SAFETY: made just above, freed once.
    drop(unsafe { Box::from_raw(freed) });
    let err = zonal::pin(freed.cast()).unwrap_err();
    assert!(err.to_string().contains("freed"), "{err}");
}

#[test]
fn a_revoked_handle_never_resolves_even_after_its_slot_is_reused() {
    let buf = allocator_api2::boxed::Box::new_in([3u8; 100], PinnedZone);
    let addr = buf.as_ptr().wrapping_add(10);
    let old = handles::export(addr).unwrap();
    assert_ne!(old, 0);
    assert_eq!(handles::resolve(old).unwrap().as_ptr() as *const u8, addr);
    handles::revoke(old).unwrap();
    assert!(matches!(
        handles::resolve(old),
        Err(handles::HandleError::Revoked { .. })
    ));
    assert!(handles::revoke(old).is_err(), "revoked twice");
    // Reuse slots many times: the old handle stays dead.
    for _ in 0..1000 {
        let h = handles::export(buf.as_ptr()).unwrap();
        assert_ne!(h, old);
        assert!(handles::resolve(old).is_err());
        assert_eq!(
            handles::resolve(h).unwrap().as_ptr() as *const u8,
            buf.as_ptr()
        );
        handles::revoke(h).unwrap();
    }
    assert!(matches!(
        handles::resolve(0),
        Err(handles::HandleError::Invalid { .. })
    ));
    assert!(matches!(
        handles::resolve(u64::MAX),
        Err(handles::HandleError::Invalid { .. })
    ));
}

#[test]
fn a_handle_to_a_freed_allocation_resolves_to_an_error() {
    let b = Box::new([9u64; 4]);
    let addr = b.as_ptr().cast::<u8>();
    let h = handles::export(addr).unwrap();
    drop(b);
    let err = handles::resolve(h).unwrap_err();
    assert!(err.to_string().contains("freed"), "{err}");
    handles::revoke(h).unwrap();
}

#[test]
fn concurrent_export_resolve_and_revoke() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let buf = Arc::new(allocator_api2::boxed::Box::new_in([0u8; 4096], PinnedZone));
    let base = buf.as_ptr() as usize;
    // Handles revoked so far: none of them may ever resolve again.
    let revoked: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    // The handle currently shared with the resolvers (0: none).
    let shared = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let resolvers: Vec<_> = (0..2)
        .map(|_| {
            let (shared, stop, revoked) = (shared.clone(), stop.clone(), revoked.clone());
            std::thread::spawn(move || {
                let mut resolved = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let h = shared.load(Ordering::Acquire);
                    if h == 0 {
                        continue;
                    }
                    if let Ok(p) = handles::resolve(h) {
                        let offset = p.as_ptr() as usize - base;
                        // Each handle names base + (its index % 4096).
                        assert!(offset < 4096);
                        resolved += 1;
                    }
                    let dead = revoked.lock().unwrap().last().copied();
                    if let Some(dead) = dead {
                        assert!(handles::resolve(dead).is_err(), "revoked handle resolved");
                    }
                }
                resolved
            })
        })
        .collect();
    let writers: Vec<_> = (0..2u64)
        .map(|t| {
            let (shared, revoked) = (shared.clone(), revoked.clone());
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    let offset = ((t * 7919 + i) % 4096) as usize;
                    let h = handles::export((base + offset) as *const u8).unwrap();
                    assert_eq!(
                        handles::resolve(h).unwrap().as_ptr() as usize,
                        base + offset
                    );
                    let previous = shared.swap(h, Ordering::AcqRel);
                    if previous != 0 && handles::revoke(previous).is_ok() {
                        assert!(handles::resolve(previous).is_err());
                        let mut list = revoked.lock().unwrap();
                        if list.len() > 64 {
                            list.clear();
                        }
                        list.push(previous);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let resolved: u64 = resolvers.into_iter().map(|r| r.join().unwrap()).sum();
    let last = shared.swap(0, Ordering::AcqRel);
    handles::revoke(last).unwrap();
    for &h in revoked.lock().unwrap().iter() {
        assert!(handles::resolve(h).is_err());
    }
    assert!(resolved > 0, "the resolvers never saw a live handle");
    drop(buf);
}
