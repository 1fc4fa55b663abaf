//! Build an arena in a sealed memfd, then read it in place from this process and from a
//! process that opens it through `/proc/<pid>/fd/<n>`, the way an unrelated worker would.
//!
//! Run: `cargo run --release --example quickstart`

use std::collections::HashMap;
use std::time::Instant;

use shmarena::{Arena, ArenaOptions, Locator};

fn main() -> shmarena::Result<()> {
    // A worker role: `quickstart <pid> <fd>` opens the parent's arena and prints a lookup.
    let args: Vec<String> = std::env::args().collect();
    if let [_, pid, fd] = args.as_slice() {
        let (pid, fd) = (pid.parse().expect("pid"), fd.parse().expect("fd"));
        let t = Instant::now();
        let arena = Arena::open_memfd(pid, fd)?;
        let lex = arena.get::<HashMap<String, u32>>("lexicon")?;
        let hit = lex.get("word-4242").map(|v| v.to_native());
        println!(
            "worker {}: attached in {:?}, kernel-sealed: {}, word-4242 -> {hit:?}",
            std::process::id(),
            t.elapsed(),
            arena.is_kernel_sealed()
        );
        return Ok(());
    }

    let lexicon: HashMap<String, u32> = (0..100_000u32)
        .map(|i| (format!("word-{i}"), i % 97))
        .collect();
    let weights: Vec<f32> = (0..1_000_000).map(|i| (i as f32).sin()).collect();

    let t = Instant::now();
    let mut b = ArenaOptions::new().create()?;
    b.put("lexicon", &lexicon)?;
    b.put_slice("weights", &weights)?;
    let arena = b.seal()?;
    println!(
        "built a {} byte arena with {} entries in {:?} ({})",
        arena.byte_len(),
        arena.layout().entries.len(),
        t.elapsed(),
        arena.locator()
    );

    let lex = arena.get::<HashMap<String, u32>>("lexicon")?;
    let w = arena.slice::<f32>("weights")?;
    println!(
        "here: word-4242 -> {:?}, weights[7] = {}",
        lex.get("word-4242").map(|v| v.to_native()),
        w[7]
    );

    // A separate process reads the same pages; nothing is copied or deserialized.
    let Locator::Memfd { pid, fd } = arena.locator().clone() else {
        unreachable!("the default backing is a memfd")
    };
    let status = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args([pid.to_string(), fd.to_string()])
        .status()
        .expect("spawn worker");
    assert!(status.success(), "worker failed: {status}");
    Ok(())
}
