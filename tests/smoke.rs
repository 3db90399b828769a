#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

#[test]
fn vec_and_strings() {
    let mut v: Vec<String> = Vec::new();
    for i in 0..100_000 {
        v.push(format!("item {i}"));
    }
    for (i, s) in v.iter().enumerate() {
        assert_eq!(*s, format!("item {i}"));
    }
    let big = vec![7u8; 10 << 20];
    assert!(big.iter().all(|&b| b == 7));
    let mut grow = Vec::new();
    for i in 0..3_000_000u32 {
        grow.push(i);
    }
    assert_eq!(grow[2_999_999], 2_999_999);
    println!("{}", zonal::stats());
}

#[test]
fn threads() {
    let hs: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                for i in 0..50_000 {
                    v.push(Box::new([t as u64, i as u64]));
                }
                v
            })
        })
        .collect();
    let all: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    for (t, v) in all.iter().enumerate() {
        for (i, b) in v.iter().enumerate() {
            assert_eq!(**b, [t as u64, i as u64]);
        }
    }
    drop(all);
}
