//! Writes the seed arenas for the fuzz targets: `seed_corpus <dir>` (default `fuzz/seeds/arena`).

fn main() -> std::process::ExitCode {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds/arena".into());
    let dir = std::path::PathBuf::from(dir);
    let scratch = std::env::temp_dir().join(format!("shmarena-seeds-{}", std::process::id()));
    let made = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::create_dir_all(&scratch))
        .map_err(|e| e.to_string())
        .and_then(|()| shmarena_fuzz::seed_arenas(&scratch).map_err(|e| format!("{e:#}")));
    let _ = std::fs::remove_dir_all(&scratch);
    let seeds = match made {
        Ok(seeds) => seeds,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for (name, bytes) in seeds {
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, &bytes) {
            eprintln!("error: writing {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
        // Each seed must go through the target without a panic.
        shmarena_fuzz::check_all(&bytes);
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    std::process::ExitCode::SUCCESS
}
