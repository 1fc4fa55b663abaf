//! Runs the real `arena-inspect` binary against arenas built here, in every backing: valid ones,
//! corrupted ones, and orphans left by killed children.
//!
//! Tests run in parallel, and other test binaries may run at the same time: every segment name
//! carries a per-test random prefix, and every `gc` is limited to that prefix with `--prefix`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use shmarena::{Arena, ArenaOptions, ArenaWriter, Locator};

const BIN: &str = env!("CARGO_BIN_EXE_arena-inspect");

/// Set in a child process started by [`spawn_child`]: what the child should do.
const CHILD_ENV: &str = "ARENA_INSPECT_TEST_CHILD";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One test's unique segment prefix and temporary directory; checks on `finish` that nothing
/// with the prefix is left in /dev/shm and that the directory holds nothing unexpected.
struct Scope {
    prefix: String,
    dir: PathBuf,
}

impl Scope {
    fn new() -> Scope {
        let mut b = [0u8; 4];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .expect("read /dev/urandom");
        let tag: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Same shape as the library tests' prefixes (`sa*-`), which CI checks for leftovers.
        let prefix = format!("sa{tag}{n:x}-");
        let dir = std::env::temp_dir().join(format!("arena-inspect-test-{tag}{n:x}"));
        std::fs::create_dir_all(&dir).unwrap();
        Scope { prefix, dir }
    }

    fn name(&self, tag: &str) -> String {
        let name = format!("{}{tag}", self.prefix);
        assert!(name.len() <= 30, "name too long: {name}");
        name
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&self.prefix))
            .collect()
    }

    fn cleanup(&self) -> Vec<String> {
        let left = self.leftovers();
        for n in &left {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(n));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        left
    }

    fn finish(self) {
        let left = self.cleanup();
        std::mem::forget(self);
        assert!(left.is_empty(), "segments left in /dev/shm: {left:?}");
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // A failed test still cleans up.
        self.cleanup();
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

fn run(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .args(args)
        .output()
        .expect("run arena-inspect");
    Run {
        code: status.code().expect("arena-inspect was killed by a signal"),
        stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
    }
}

fn weights() -> Vec<f32> {
    (0..1000).map(|i| i as f32 * 0.25).collect()
}

fn fill(b: &mut ArenaWriter) {
    let map: HashMap<String, u32> = (0..50).map(|i| (format!("k{i}"), i)).collect();
    b.put("map", &map).unwrap();
    b.put_slice("weights", &weights()).unwrap();
    b.put_slice("ids", &[-1i64, 7, 1 << 40]).unwrap();
    b.put_bytes("blob", b"\x00\x01binary\xff").unwrap();
}

/// A shorthand spelling of a locator that arena-inspect accepts (`list` prints the explicit
/// one, `Locator`'s `Display`).
fn spell(loc: &Locator) -> String {
    match loc {
        Locator::Shm { name } => format!("/{name}"),
        Locator::Memfd { pid, fd } => format!("{pid}:{fd}"),
        Locator::File { path } => path.display().to_string(),
        other => panic!("unexpected locator {other:?}"),
    }
}

/// The `list --json` row of the arena `arena` names (in any spelling).
fn list_row(arena: &str) -> Option<Value> {
    let wanted: Locator = arena.parse().expect("a locator");
    let list = run(&["list", "--json"]).ok().json();
    list.as_array()
        .expect("list --json is an array")
        .iter()
        .find(|r| {
            let listed: Locator = r["arena"].as_str().unwrap().parse().unwrap();
            // `list` prints the one grammar.
            assert_eq!(listed.to_string(), r["arena"].as_str().unwrap());
            listed == wanted
        })
        .cloned()
}

/// Everything a valid arena must show, whatever its backing.
/// The named segment or file `arena` was built at, mapped in place and read through, so this
/// process shows up among its users (`who`, `list`): the arena the builder's `seal` returns
/// reads a sealed memfd copy, not the segment or file.
fn map_in_place(arena: &Arena) -> Arena {
    let mapped = match arena.locator() {
        // SAFETY: the segment belongs to this test; nothing writes to or truncates it while it
        // is mapped here.
        Locator::Shm { name } => unsafe { Arena::open_named(name) },
        // SAFETY: as above, for the file.
        Locator::File { path } => unsafe { Arena::open_file(path) },
        _ => return arena.clone(),
    };
    let mapped = mapped.unwrap();
    mapped.verify().unwrap();
    mapped
}

fn check_valid(arena: &Arena, arg: &str) {
    let me = std::process::id();

    let info = run(&["info", arg, "--json"]).ok().json();
    assert_eq!(info["header"]["state"], "sealed");
    assert_eq!(info["header"]["entry_count"], 4);
    assert_eq!(info["header"]["id"], arena.id().to_string());
    assert_eq!(info["header"]["creator_pid"], me);
    assert_eq!(info["header"]["creator_alive"], true);
    let entries = info["entries"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["map", "weights", "ids", "blob"]);
    let w = &entries[1];
    assert_eq!(w["kind"], "pod");
    assert_eq!(w["type_name"], "f32");
    assert_eq!(w["count"], 1000);
    assert_eq!(w["len"], 4000);
    assert_eq!(w["align"], 4);
    assert_eq!(entries[0]["kind"], "archived");
    assert!(entries[0]["type_name"]
        .as_str()
        .unwrap()
        .contains("HashMap"));
    // The fingerprint is (kind, type_hash, elem_size, align), as docs/FORMAT.md defines it.
    let fp = entries[1]["fingerprint"].as_str().unwrap();
    assert!(fp.starts_with("pod:") && fp.ends_with(":4:4"), "{fp}");
    assert_eq!(fp.split(':').nth(1).unwrap().len(), 16);
    assert_eq!(w["dtype"], "f32");
    assert_eq!(w["shape"], serde_json::json!([1000]));

    let table = run(&["info", arg]).ok().stdout;
    assert!(table.contains("FINGERPRINT"), "{table}");
    assert!(
        table.contains("weights") && table.contains("f32"),
        "{table}"
    );

    let verify = run(&["verify", arg]).ok().stdout;
    assert!(verify.contains("ok"), "{verify}");
    let v = run(&["verify", arg, "--json"]).ok().json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["entries"].as_array().unwrap().len(), 4);

    // Elements of a primitive POD entry, in every format.
    let d = run(&["dump", arg, "weights", "--range", "10..13", "--json"])
        .ok()
        .json();
    assert_eq!(d["values"], serde_json::json!([2.5, 2.75, 3.0]));
    assert_eq!(
        (d["start"].clone(), d["end"].clone()),
        (10.into(), 13.into())
    );
    let csv = run(&["dump", arg, "ids", "--format", "csv"]).ok().stdout;
    assert_eq!(csv, "index,value\n0,-1\n1,7\n2,1099511627776\n");
    let t = run(&["dump", arg, "weights", "--range", "999"]).ok().stdout;
    assert!(t.lines().last().unwrap().ends_with("999  249.75"), "{t}");
    // Default window: the first 100 elements, with a note on stderr.
    let d = run(&["dump", arg, "weights", "--format", "json"]);
    assert_eq!(d.json()["values"].as_array().unwrap().len(), 100);
    assert!(d.stderr.contains("use --range"), "{}", d.stderr);

    // Hex dump of an archived entry with the root marked; raw bytes.
    let hex = run(&["dump", arg, "map"]).ok().stdout;
    assert!(hex.contains("rkyv root"), "{hex}");
    assert!(hex.contains("<- root"), "{hex}");
    let blob = run(&["dump", arg, "blob", "--json"]).ok().json();
    assert_eq!(blob["hex"], "000162696e617279ff");
    let raw = Command::new(BIN)
        .args(["dump", arg, "blob", "--raw"])
        .output()
        .unwrap();
    assert!(raw.status.success());
    assert_eq!(raw.stdout, b"\x00\x01binary\xff");
    let raw = Command::new(BIN)
        .args(["dump", arg, "ids", "--raw", "--range", "1..2"])
        .output()
        .unwrap();
    assert_eq!(raw.stdout, 7i64.to_ne_bytes());

    // This test process maps the arena and holds its descriptor.
    let who = run(&["who", arg, "--json"]).ok().json();
    let me_row = who
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["pid"] == me)
        .unwrap_or_else(|| panic!("this process is not in `who`: {who}"));
    assert_eq!(me_row["mapped"], true);
    assert!(!me_row["fds"].as_array().unwrap().is_empty());
    // What it costs: the pages touched (this process wrote them all), its share of them, and
    // its own anonymous memory.
    let touched = me_row["touched_bytes"].as_u64().unwrap();
    let pss = me_row["pss_bytes"].as_u64().unwrap();
    assert!(touched >= 4096, "{me_row}");
    assert!(pss > 0 && pss <= touched, "{me_row}");
    assert!(
        me_row["mapped_bytes"].as_u64().unwrap() >= touched,
        "{me_row}"
    );
    assert!(me_row["anonymous_bytes"].as_u64().unwrap() > 0, "{me_row}");
    let who = run(&["who", arg]).ok().stdout;
    assert!(who.contains(&me.to_string()), "{who}");
    assert!(who.contains("PSS") && who.contains("TOUCHED"), "{who}");
    assert!(who.contains("not its own memory"), "{who}");

    // Errors that name the thing.
    let e = run(&["dump", arg, "nope"]);
    assert_eq!(e.code, 2);
    assert!(
        e.stderr.contains("no entry \"nope\"") && e.stderr.contains("weights"),
        "{}",
        e.stderr
    );
    let e = run(&["dump", arg, "map", "--format", "csv"]);
    assert_eq!(e.code, 2);
    assert!(e.stderr.contains("csv needs a POD entry"), "{}", e.stderr);
    let e = run(&["dump", arg, "weights", "--range", "2000.."]);
    assert_eq!(e.code, 2);
    assert!(e.stderr.contains("past the end"), "{}", e.stderr);
}

#[test]
fn named_arena() {
    let scope = Scope::new();
    let name = scope.name("named");
    let mut b = ArenaOptions::new().named(&name).create().unwrap();
    fill(&mut b);
    let arena = b.seal().unwrap();
    let mapped = map_in_place(&arena);
    let arg = format!("/{name}");
    check_valid(&arena, &arg);
    // The bare name works too.
    run(&["verify", &name]).ok();

    let row = list_row(&arg).expect("the arena is listed");
    assert_eq!(row["backing"], "shm");
    assert_eq!(row["state"], "sealed");
    assert_eq!(row["entries"], 4);
    assert_eq!(row["owner_pid"], std::process::id());
    assert_eq!(row["owner_alive"], true);
    assert_eq!(row["users"], 1);
    assert_eq!(row["size"], arena.byte_len());
    assert!(row["age_secs"].as_f64().unwrap() >= 0.0);
    assert!(row["error"].is_null());
    let table = run(&["list"]).ok().stdout;
    let listed = format!("shm:{name}");
    let line = table
        .lines()
        .find(|l| l.starts_with(&listed))
        .expect("listed");
    assert!(line.contains("sealed") && line.contains("alive"), "{line}");

    // Alive owner: gc keeps it and says why.
    let gc = run(&["gc", "--prefix", &scope.prefix, "--json"])
        .ok()
        .json();
    assert_eq!(gc["removed"], serde_json::json!([]));
    assert_eq!(gc["skipped"][0]["reason"], "owner-alive");
    drop((arena, mapped));
    assert!(list_row(&arg).is_none(), "dropped arenas are unlinked");
    scope.finish();
}

#[test]
fn handle_strings() {
    let scope = Scope::new();
    let name = scope.name("handles");
    let build = || {
        let mut b = ArenaOptions::new().named(&name).create().unwrap();
        fill(&mut b);
        b.seal().unwrap()
    };
    let arena = build();
    let mapped = map_in_place(&arena);
    let weights = arena.slice_handle::<f32>("weights").unwrap().to_string();
    let map = arena
        .handle::<HashMap<String, u32>>("map")
        .unwrap()
        .to_string();
    assert!(weights.starts_with("shmarena1:"), "{weights}");

    // A handle names the arena and, for dump, the entry.
    let d = run(&["dump", &weights, "--range", "4..6", "--json"])
        .ok()
        .json();
    assert_eq!(
        (d["entry"].clone(), d["values"].clone()),
        ("weights".into(), serde_json::json!([1.0, 1.25]))
    );
    let hex = run(&["dump", &map]).ok().stdout;
    assert!(hex.starts_with("entry \"map\""), "{hex}");
    run(&["dump", &weights, "ids"]).ok();
    let info = run(&["info", &weights, "--json"]).ok().json();
    assert_eq!(info["header"]["id"], arena.id().to_string());
    run(&["verify", &weights]).ok();
    assert_eq!(
        run(&["who", &weights, "--json"]).ok().json()[0]["pid"],
        std::process::id()
    );

    // A newer arena at the same name is not the one the handle names.
    drop((arena, mapped));
    let newer = build();
    for cmd in ["info", "verify", "dump"] {
        let r = run(&[cmd, &weights]);
        assert_eq!(r.code, 2, "{cmd}: {}", r.stdout);
        assert!(r.stderr.contains("stale handle"), "{cmd}: {}", r.stderr);
    }
    let r = run(&["info", "shmarena1:nonsense"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("bad handle"), "{}", r.stderr);
    drop(newer);
    scope.finish();
}

#[test]
fn memfd_arena_by_pid_fd() {
    let scope = Scope::new();
    let mut b = ArenaOptions::new().create().unwrap();
    fill(&mut b);
    let arena = b.seal().unwrap();
    let arg = spell(arena.locator());
    assert!(
        arg.starts_with(&format!("{}:", std::process::id())),
        "{arg}"
    );
    check_valid(&arena, &arg);
    run(&["info", &format!("memfd:{arg}")]).ok();

    // `list` finds it through /proc/*/fd and names it by the creator's descriptor.
    let row = list_row(&arg).unwrap_or_else(|| panic!("{arg} not listed"));
    assert_eq!(row["backing"], "memfd");
    assert_eq!(row["state"], "sealed");
    assert_eq!(row["entries"], 4);
    assert_eq!(row["owner_alive"], true);
    assert_eq!(row["id"], arena.id().to_string());

    let info = run(&["info", &arg, "--json"]).ok().json();
    assert_eq!(info["kernel_sealed"], true);

    // A descriptor that is not a memfd arena.
    let e = run(&["verify", &format!("{}:999999", std::process::id())]);
    assert_eq!(e.code, 2, "{}", e.stderr);
    assert!(e.stderr.contains("not found"), "{}", e.stderr);
    drop(arena);
    scope.finish();
}

fn published_row(name: &str) -> Option<Value> {
    run(&["published", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

#[test]
fn published_names() {
    let scope = Scope::new();
    let me = std::process::id();
    let name = scope.name("pub");
    let mut b = ArenaOptions::new().create().unwrap();
    fill(&mut b);
    let first = b.seal().unwrap();
    let publisher = first.publish(&name).unwrap();

    let mut child = KillOnDrop(spawn_child("connect", &name));
    let lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    lines
        .map(|l| l.unwrap())
        .find(|l| l.contains("READY"))
        .expect("child never got ready");
    let reader = child.0.id();

    let row = published_row(&name).unwrap_or_else(|| panic!("{name} not published"));
    assert_eq!(row["publisher_pid"], me, "{row}");
    assert_eq!(row["generation"], 1, "{row}");
    assert_eq!(row["size"], first.byte_len(), "{row}");
    assert_eq!(row["id"], first.id().to_string(), "{row}");
    assert_eq!(row["error"], Value::Null, "{row}");
    // The reader child; a child that another test forks at that moment may briefly share this
    // process's mappings before it execs, and is listed too.
    let readers: Vec<&Value> = row["readers"].as_array().unwrap().iter().collect();
    let child_row = readers
        .iter()
        .find(|r| r["pid"] == reader)
        .unwrap_or_else(|| panic!("reader {reader} not listed: {row}"));
    assert_eq!(child_row["mapped"], true, "{row}");
    // The argument that names it, and where its publisher holds this generation.
    assert_eq!(row["arena"], format!("pub:{name}"), "{row}");
    let serving: Locator = row["serving"].as_str().unwrap().parse().unwrap();
    assert!(
        matches!(serving, Locator::Memfd { pid, .. } if pid == me),
        "{row}"
    );
    let info = run(&["info", &serving.to_string(), "--json"]).ok().json();
    assert_eq!(info["header"]["id"], first.id().to_string(), "{info}");
    let table = run(&["published"]).ok().stdout;
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("pub:{name} ")))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains(&serving.to_string()), "{table}");
    assert!(
        line.contains(&me.to_string()) && line.contains(&reader.to_string()),
        "{table}"
    );

    // A new generation: the reader still holds the first one, so nobody reads the second yet.
    let mut b = ArenaOptions::new().create().unwrap();
    fill(&mut b);
    let second = b.seal().unwrap();
    assert_eq!(publisher.publish(second.clone()).unwrap(), 2);
    let row = published_row(&name).unwrap();
    assert_eq!(row["generation"], 2, "{row}");
    assert_eq!(row["id"], second.id().to_string(), "{row}");
    assert!(
        !row["readers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["pid"] == reader),
        "{row}"
    );

    drop(publisher);
    assert!(published_row(&name).is_none());
    drop(child);
    scope.finish();
}

#[test]
fn memfd_arena_of_another_process() {
    let scope = Scope::new();
    let mut child = KillOnDrop(spawn_child("memfd", ""));
    let lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let ready = lines
        .map(|l| l.unwrap())
        .find(|l| l.contains("READY"))
        .expect("child never got ready");
    let arg = ready.rsplit(' ').next().unwrap().to_owned();
    let pid = child.0.id();
    assert!(arg.starts_with(&format!("{pid}:")), "{arg}");

    let row = list_row(&arg).unwrap_or_else(|| panic!("{arg} not listed"));
    assert_eq!(row["owner_pid"], pid);
    assert_eq!(row["copy"], false, "built in this memfd: {row}");
    assert_eq!(row["owner_alive"], true);
    assert_eq!(row["users"], 1);
    run(&["verify", &arg]).ok();
    let d = run(&["dump", &arg, "ids", "--json"]).ok().json();
    assert_eq!(d["values"], serde_json::json!([-1, 7, 1u64 << 40]));
    let who = run(&["who", &arg, "--json"]).ok().json();
    assert_eq!(who.as_array().unwrap().len(), 1);
    assert_eq!(who[0]["pid"], pid);
    assert_eq!(who[0]["mapped"], true);

    // The kernel frees it with its last holder.
    drop(child);
    assert!(list_row(&arg).is_none());
    assert_eq!(run(&["info", &arg]).code, 2);
    scope.finish();
}

#[test]
fn file_arena_and_corrupted_copies() {
    let scope = Scope::new();
    let path = scope.path("good.arena");
    let mut b = ArenaOptions::new().file(&path).create().unwrap();
    fill(&mut b);
    let arena = b.seal().unwrap();
    let mapped = map_in_place(&arena);
    let arg = path.display().to_string();
    check_valid(&arena, &arg);
    let layout = arena.layout().clone();
    drop((arena, mapped));

    let copy = |tag: &str, mutate: &dyn Fn(&mut Vec<u8>)| -> String {
        let mut bytes = std::fs::read(&path).unwrap();
        mutate(&mut bytes);
        let p = scope.path(tag);
        std::fs::write(&p, &bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p.display().to_string()
    };

    // A flipped byte inside the "weights" payload: the checksum names the entry.
    let w = layout.entries.iter().find(|e| e.name == "weights").unwrap();
    let at = (w.offset + 123) as usize;
    let flipped = copy("flipped", &|b| b[at] ^= 0x40);
    let r = run(&["verify", &flipped]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("CORRUPT"), "{}", r.stdout);
    let line = r.stdout.lines().find(|l| l.starts_with("weights")).unwrap();
    assert!(line.contains("checksum mismatch"), "{line}");
    assert!(line.contains(&w.offset.to_string()), "names where: {line}");
    let v = run(&["verify", &flipped, "--json"]).json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problem"], "checksum");
    let bad: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ok"] == false)
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(bad, ["weights"]);
    // info and dump still work on it: only verify reads payloads.
    run(&["info", &flipped]).ok();
    run(&["dump", &flipped, "ids"]).ok();

    // A flipped byte in the table of contents.
    let toc = layout.header.toc_offset as usize + 20;
    let bad_toc = copy("bad-toc", &|b| b[toc] ^= 1);
    let r = run(&["verify", &bad_toc]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("table of contents checksum"),
        "{}",
        r.stdout
    );
    // info shows the header and the error, exit 1.
    let r = run(&["info", &bad_toc]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("state:          sealed"), "{}", r.stdout);
    assert!(r.stdout.contains("error:"), "{}", r.stdout);
    let j = run(&["info", &bad_toc, "--json"]).json();
    assert_eq!(j["header"]["state"], "sealed");
    assert!(j["error"].as_str().unwrap().contains("corrupted"));

    // A flipped byte in the header.
    let bad_header = copy("bad-header", &|b| b[40] ^= 1);
    let r = run(&["verify", &bad_header]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("header checksum"), "{}", r.stdout);

    // Truncated: verify names the lengths.
    let cut = copy("truncated", &|b| b.truncate(b.len() - 100));
    let r = run(&["verify", &cut, "--json"]);
    assert_eq!(r.code, 1);
    let j = r.json();
    assert_eq!(j["problem"], "truncated");
    let msg = j["error"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("truncated") && msg.contains(&layout.header.total_len.to_string()),
        "{msg}"
    );

    // Not an arena, empty, missing, a directory.
    let junk = copy("junk", &|b| *b = b"GIF89a not an arena".to_vec());
    let r = run(&["verify", &junk]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("not a shmarena arena"), "{}", r.stdout);
    let empty = copy("empty", &|b| b.clear());
    assert_eq!(run(&["verify", &empty]).code, 1);
    let r = run(&["verify", &scope.path("missing").display().to_string()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
    assert_eq!(run(&["verify"]).code, 2, "usage error");
    assert_eq!(run(&["verify", "bad name!"]).code, 2);

    // Corrupt files are never mistaken for named segments in `list`.
    assert!(list_row(&flipped).is_none());
    for f in [
        "good.arena",
        "flipped",
        "bad-toc",
        "bad-header",
        "truncated",
        "junk",
        "empty",
    ] {
        std::fs::remove_file(scope.path(f)).unwrap();
    }
    scope.finish();
}

/// What a child started by [`spawn_child`] does, by the value of [`CHILD_ENV`]:
/// `persist:NAME` builds, seals and persists a named arena, then exits;
/// `hang:NAME` starts building one, prints `READY` and sleeps until killed;
/// `memfd:` builds a memfd arena, prints `READY PID:FD` and sleeps until killed;
/// `connect:NAME` connects to the arena published as NAME, reads it, prints `READY` and sleeps.
#[test]
fn child_builder() {
    let Ok(what) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, name) = what.split_once(':').unwrap();
    if mode == "connect" {
        let arena = Arena::connect(name).unwrap();
        assert_eq!(&arena.slice::<f32>("weights").unwrap()[..], &weights()[..]);
        println!("READY");
        std::thread::sleep(std::time::Duration::from_secs(600));
        unreachable!("the parent kills this child");
    }
    if mode == "memfd" {
        let mut b = ArenaOptions::new().create().unwrap();
        fill(&mut b);
        let arena = b.seal().unwrap();
        println!("READY {}", spell(arena.locator()));
        std::thread::sleep(std::time::Duration::from_secs(600));
        unreachable!("the parent kills this child");
    }
    let mut b = ArenaOptions::new().named(name).create().unwrap();
    fill(&mut b);
    match mode {
        "persist" => b.seal().unwrap().persist(),
        "hang" => {
            println!("READY");
            std::thread::sleep(std::time::Duration::from_secs(600));
            unreachable!("the parent kills this child");
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Runs [`child_builder`] in a new process of this test binary.
fn spawn_child(mode: &str, name: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_builder",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{mode}:{name}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills and reaps a child when dropped, so a failing test leaves no sleeper behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn shm_exists(name: &str) -> bool {
    Path::new("/dev/shm").join(name).exists()
}

#[test]
fn orphans_of_killed_children_are_collected() {
    let scope = Scope::new();
    let me = std::process::id();

    // A child that persisted a sealed arena and exited.
    let sealed = scope.name("sealed");
    let status = spawn_child("persist", &sealed).wait().unwrap();
    assert!(status.success());
    // A child SIGKILLed mid-build.
    let half = scope.name("half");
    let mut child = KillOnDrop(spawn_child("hang", &half));
    let half_pid = child.0.id();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().contains("READY")),
        "child never got ready"
    );
    drop(child); // SIGKILL, then reap
                 // An orphan that this process still maps: gc must keep it.
    let used = scope.name("used");
    assert!(spawn_child("persist", &used).wait().unwrap().success());
    // Mapped in place, so that /proc/self/maps shows this process using it.
    // SAFETY: the segment was persisted by a child that has exited; nothing writes to it while
    // this test maps it.
    let reader = unsafe { Arena::open_named(&used) }.unwrap();
    // A segment whose creator (this process) is alive: gc must keep it.
    let mine = scope.name("mine");
    let mut b = ArenaOptions::new().named(&mine).create().unwrap();
    fill(&mut b);
    let own = b.seal().unwrap();
    own.persist();
    drop(own);
    // Not an arena at all, and an arena whose header is corrupt.
    let junk = scope.name("junk");
    std::fs::write(Path::new("/dev/shm").join(&junk), b"hello").unwrap();
    let broken = scope.name("broken");
    // Magic and version 1, then garbage: the header checksum fails.
    let mut bad = b"SHMARENA".to_vec();
    bad.extend_from_slice(&1u32.to_le_bytes());
    bad.resize(4096, 0xee);
    std::fs::write(Path::new("/dev/shm").join(&broken), &bad).unwrap();

    // list shows the orphans with dead owners, the building one as such, and the broken one
    // with its error, without failing.
    let row = list_row(&format!("/{half}")).expect("half-built segment listed");
    assert_eq!(row["state"], "building");
    assert_eq!(row["owner_pid"], half_pid);
    assert_eq!(row["owner_alive"], false);
    assert_eq!(row["users"], 0);
    assert!(row["entries"].is_null());
    let row = list_row(&format!("/{sealed}")).unwrap();
    assert_eq!(
        (row["state"].clone(), row["owner_alive"].clone()),
        ("sealed".into(), false.into())
    );
    let row = list_row(&format!("/{used}")).unwrap();
    // At least this process; a child another test is forking at that moment may briefly share
    // the mapping before it execs.
    assert!(row["users"].as_u64().unwrap() >= 1, "{row}");
    let row = list_row(&format!("/{broken}")).unwrap();
    assert_eq!(row["state"], "unreadable");
    assert!(
        row["error"].as_str().unwrap().contains("corrupted"),
        "{row}"
    );
    assert!(
        list_row(&format!("/{junk}")).is_none(),
        "non-arenas are not listed"
    );

    // info and verify on the half-built segment.
    let r = run(&["info", &half]).ok();
    assert!(
        r.stdout.contains("state:          building"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("pid {half_pid} (dead)")),
        "{}",
        r.stdout
    );
    let r = run(&["verify", &half]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("still being built") && r.stdout.contains("is dead"),
        "{}",
        r.stdout
    );
    let r = run(&["who", &used, "--json"]).ok().json();
    assert_eq!(r[0]["pid"], me);

    // By default gc keeps what its builder persisted.
    let gc = run(&["gc", "--dry-run", "--prefix", &scope.prefix, "--json"])
        .ok()
        .json();
    assert_eq!(gc["removed"][0]["name"], half.as_str());
    assert_eq!(gc["removed"].as_array().unwrap().len(), 1, "{gc}");
    let kept: Vec<(&str, &str)> = gc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["reason"].as_str().unwrap()))
        .filter(|(_, reason)| *reason == "persisted")
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().any(|(n, _)| *n == sealed) && kept.iter().any(|(n, _)| *n == used));

    // The rest runs with --include-persisted.
    // A dry run removes nothing and says what it would.
    let gc = run(&[
        "gc",
        "--dry-run",
        "--include-persisted",
        "--prefix",
        &scope.prefix,
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(gc["dry_run"], true);
    let mut would: Vec<&str> = gc["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    would.sort_unstable();
    let mut expect = vec![half.as_str(), sealed.as_str()];
    expect.sort_unstable();
    assert_eq!(would, expect);
    assert!(gc["bytes_freed"].as_u64().unwrap() > 0);
    for n in [&half, &sealed, &used, &mine, &junk, &broken] {
        assert!(shm_exists(n), "dry run removed {n}");
    }
    let reasons: HashMap<String, String> = gc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(reasons[&used], "in-use");
    assert_eq!(reasons[&mine], "owner-alive");
    assert_eq!(reasons[&junk], "not-an-arena");
    assert_eq!(reasons[&broken], "unreadable");
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    let table = run(&[
        "gc",
        "--dry-run",
        "--include-persisted",
        "--prefix",
        &scope.prefix,
    ])
    .ok()
    .stdout;
    assert!(
        table.contains("would remove") && table.contains("dry run"),
        "{table}"
    );
    assert!(table.contains(&format!("pid {me}")), "{table}");

    // The real thing removes exactly the two orphans.
    let gc = run(&["gc", "--include-persisted", "--prefix", &scope.prefix])
        .ok()
        .stdout;
    assert!(gc.contains("removed 2 segments"), "{gc}");
    assert!(!shm_exists(&half) && !shm_exists(&sealed));
    for n in [&used, &mine, &junk, &broken] {
        assert!(shm_exists(n), "gc removed {n}");
    }
    // Once nobody maps it, the third orphan goes too.
    drop(reader);
    let gc = run(&[
        "gc",
        "--include-persisted",
        "--prefix",
        &scope.prefix,
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(gc["removed"][0]["name"], used.as_str());
    assert_eq!(gc["removed"].as_array().unwrap().len(), 1);

    for n in [&mine, &junk, &broken] {
        std::fs::remove_file(Path::new("/dev/shm").join(n)).unwrap();
    }
    scope.finish();
}

#[test]
fn other_users_segments_are_never_touched() {
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("skipped: needs root to give a segment to another user");
        return;
    }
    let scope = Scope::new();
    let name = scope.name("foreign");
    assert!(spawn_child("persist", &name).wait().unwrap().success());
    let path = Path::new("/dev/shm").join(&name);
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let gc = run(&["gc", "--prefix", &scope.prefix, "--json"])
        .ok()
        .json();
    assert_eq!(gc["removed"], serde_json::json!([]));
    assert_eq!(gc["skipped"][0]["reason"], "other-user");
    assert!(gc["skipped"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("uid 65534"));
    assert!(path.exists());
    // The read-only commands still look at it.
    run(&["info", &name]).ok();
    std::fs::remove_file(&path).unwrap();
    scope.finish();
}

#[test]
fn help_has_examples() {
    let help = run(&["--help"]).ok().stdout;
    for want in [
        "Examples:",
        "arena-inspect gc --dry-run",
        "Naming an arena",
        "Exit status",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
    for cmd in ["list", "info", "verify", "dump", "who", "published", "gc"] {
        run(&[cmd, "--help"]).ok();
    }
    assert_eq!(run(&["frobnicate"]).code, 2);
}

#[test]
fn broken_pipe_is_success() {
    let scope = Scope::new();
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_slice_with::<u64>("big", 200_000, |d| {
        for (i, x) in d.iter_mut().enumerate() {
            *x = i as u64;
        }
    })
    .unwrap();
    let arena = b.seal().unwrap();
    let arg = spell(arena.locator());
    let mut child = Command::new(BIN)
        .args(["dump", &arg, "big", "--range", ".."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is gone now, like `| head -1`.
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(first.starts_with("entry \"big\""), "{first}");
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert!(err.is_empty(), "{err}");
    drop(arena);
    scope.finish();
}

/// Format version 2: `info` shows dtype and shape, `dump` decodes the element types that have
/// no Rust primitive.
#[test]
fn shaped_entries_and_version_2_element_types() {
    use shmarena::format::Prim;
    let scope = Scope::new();
    let path = scope.path("v2.arena");
    let mut b = ArenaOptions::new().file(&path).create().unwrap();
    b.put_array("grid", &[0.5f64; 6], &[2, 3]).unwrap();
    b.put_raw_array("flags", Prim::Bool, 0, 1, &[1, 0], &[2], None)
        .unwrap();
    let when: Vec<u8> = [5i64, i64::MIN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    b.put_raw_array("when", Prim::DateTime64, 10, 8, &when, &[2], None)
        .unwrap();
    let names: Vec<u8> = "hé\0"
        .chars()
        .flat_map(|c| u32::from(c).to_le_bytes())
        .collect();
    b.put_raw_array("names", Prim::FixedUnicode, 0, 12, &names, &[1], None)
        .unwrap();
    let c: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    b.put_raw_array("c", Prim::C64, 0, 8, &c, &[1], None)
        .unwrap();
    drop(b.seal().unwrap());
    let arg = path.to_str().unwrap();

    let info = run(&["info", arg, "--json"]).ok().json();
    assert_eq!(info["header"]["format_version"], 2);
    let grid = &info["entries"][0];
    assert_eq!(grid["shape"], serde_json::json!([2, 3]));
    assert_eq!(grid["dtype"], "f64");
    assert_eq!(info["entries"][2]["dtype"], "datetime64[ns]");
    let table = run(&["info", arg]).ok().stdout;
    assert!(
        table.contains("SHAPE") && table.contains("[2, 3]"),
        "{table}"
    );

    let dump = |e: &str| run(&["dump", arg, e, "--json"]).ok().json();
    assert_eq!(dump("grid")["shape"], serde_json::json!([2, 3]));
    assert_eq!(dump("flags")["values"], serde_json::json!([true, false]));
    assert_eq!(dump("when")["values"], serde_json::json!([5, "NaT"]));
    assert_eq!(dump("names")["values"], serde_json::json!(["hé"]));
    assert_eq!(dump("c")["values"], serde_json::json!(["1.5-2j"]));
}

/// Runs arena-inspect, killing it (and failing) if it has not exited within ten seconds.
fn run_promptly(args: &[&str]) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run arena-inspect");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("arena-inspect {args:?} blocked for 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("collect output");
    Run {
        code: status.code().expect("arena-inspect was killed by a signal"),
        stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
    }
}

/// Issue 11, case 8: a FIFO where an arena should be (a file, or a name in /dev/shm) is
/// reported at once; `verify` and `info` never wait for a writer.
#[test]
fn a_fifo_is_reported_not_waited_on() {
    let scope = Scope::new();
    let file = scope.path("fifo.arena");
    let name = scope.name("fifo");
    let shm = Path::new("/dev/shm").join(&name);
    for p in [&file, &shm] {
        let status = Command::new("mkfifo").arg(p).status().expect("run mkfifo");
        assert!(status.success(), "mkfifo {}", p.display());
    }
    let file_arg = file.to_string_lossy().into_owned();
    let shm_arg = format!("shm:{name}");
    for arg in [file_arg.as_str(), shm_arg.as_str()] {
        let r = run_promptly(&["verify", arg]);
        assert_ne!(r.code, 0, "verify {arg}: {}", r.stdout);
        let r = run_promptly(&["info", arg]);
        assert!(
            r.code != 0 || r.stdout.contains("not") || !r.stderr.is_empty(),
            "info {arg}: {}",
            r.stdout
        );
    }
    std::fs::remove_file(&file).unwrap();
    std::fs::remove_file(&shm).unwrap();
    scope.finish();
}

/// The memfds this process holds that `list --json` shows with this arena id.
fn my_memfd_rows(id: &str) -> Vec<Value> {
    let me = std::process::id();
    run(&["list", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["id"] == id
                && matches!(
                    r["arena"].as_str().unwrap().parse::<Locator>(),
                    Ok(Locator::Memfd { pid, .. }) if pid == me
                )
        })
        .cloned()
        .collect()
}

/// Every memfd that holds an arena is listed, whatever made it: the sealed copy a named
/// writer's `seal` returns, `load_named`'s and `load_file`'s copies (and so `arena-serve`'s
/// images), not only arenas built in a memfd.
#[test]
fn sealed_copies_are_listed() {
    let scope = Scope::new();
    let name = scope.name("copies");
    let mut b = ArenaOptions::new().named(&name).create().unwrap();
    fill(&mut b);
    let sealed = b.seal().unwrap();
    let id = sealed.id().to_string();
    assert!(
        my_memfd_rows(&id).len() == 1,
        "the seal's copy: {:?}",
        my_memfd_rows(&id)
    );
    let loaded = Arena::load_named(&name).unwrap();
    let path = scope.path("copies.arena");
    sealed.save(&path).unwrap();
    let from_file = Arena::load_file(&path).unwrap();
    // Three copies of the same bytes, so three rows with one id.
    let rows = my_memfd_rows(&id);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert_eq!(row["backing"], "memfd", "{row}");
        assert_eq!(row["state"], "sealed", "{row}");
        assert_eq!(row["copy"], true, "{row}");
        let arena = row["arena"].as_str().unwrap();
        let info = run(&["info", arena, "--json"]).ok().json();
        assert_eq!(info["kernel_sealed"], true, "{info}");
        run(&["verify", arena]).ok();
    }
    drop((sealed, loaded, from_file));
    assert!(my_memfd_rows(&id).is_empty());
    scope.finish();
}

/// `pub:NAME` names whatever generation is served when the command runs, across swaps (a
/// `memfd:PID:FD` copied from `published` names nothing, or another arena, after one), and
/// what `info` says of it is about the published memfd: sealed, with its publisher.
#[test]
fn published_name_across_swaps() {
    let scope = Scope::new();
    let me = std::process::id();
    let name = scope.name("swaps");
    let arg = format!("pub:{name}");
    let publish = |version: u64| {
        let mut b = ArenaOptions::new().create().unwrap();
        b.put_slice("version", &[version]).unwrap();
        b.seal().unwrap()
    };
    let first = publish(1);
    let publisher = first.publish(&name).unwrap();
    drop(first);
    let mut copied: Option<(String, String)> = None;
    for version in 1..=11u64 {
        if version > 1 {
            let next = publish(version);
            assert_eq!(publisher.publish(next).unwrap(), version);
        }
        let info = run(&["info", &arg, "--json"]).ok().json();
        assert_eq!(info["published"]["generation"], version, "{info}");
        assert_eq!(info["published"]["publisher_pid"], me, "{info}");
        assert_eq!(info["kernel_sealed"], true, "{info}");
        assert_eq!(info["header"]["id"], info["published"]["id"], "{info}");
        // The inspector's own descriptor is not among the users, nor its locator shown.
        let locator: Locator = info["locator"].as_str().unwrap().parse().unwrap();
        assert!(
            matches!(locator, Locator::Memfd { pid, .. } if pid == me),
            "{info}"
        );
        assert_eq!(
            info["locator"], info["published"]["serving"],
            "the publisher's descriptor: {info}"
        );
        let d = run(&["dump", &arg, "version", "--json"]).ok().json();
        assert_eq!(d["values"], serde_json::json!([version]), "{d}");
        let v = run(&["verify", &arg]).ok();
        assert!(v.stdout.contains(&format!("\n{arg}: ok:")), "{}", v.stdout);
        if version == 1 {
            let id = info["header"]["id"].as_str().unwrap().to_owned();
            copied = Some((info["locator"].as_str().unwrap().to_owned(), id));
        }
    }
    // The descriptor copied at generation 1 no longer names generation 1.
    let (old, old_id) = copied.unwrap();
    let r = run(&["info", &old, "--json"]);
    assert!(
        r.code != 0 || r.json()["header"]["id"] != old_id.as_str(),
        "{}",
        r.stdout
    );
    let text = run(&["info", &arg]).ok().stdout;
    assert!(
        text.contains(&format!(
            "published:      as {name} by pid {me}, generation 11"
        )),
        "{text}"
    );
    assert!(text.contains("kernel-sealed:  yes"), "{text}");
    drop(publisher);
    let gone = run(&["info", &arg]);
    assert_eq!(gone.code, 2, "{}", gone.stderr);
    assert!(
        gone.stderr.contains(&format!("cannot reach {arg}")),
        "{}",
        gone.stderr
    );
    scope.finish();
}

/// `info` states facts about the thing inspected: a named segment or a file is not kernel
/// sealed (only the private copy the inspector reads is); `who` reports what the arena costs
/// the machine beside each process's share, and does not claim the shares add up to it.
#[test]
fn facts_about_the_thing_inspected() {
    let scope = Scope::new();
    let name = scope.name("facts");
    let mut b = ArenaOptions::new().named(&name).create().unwrap();
    // 4 MiB of payload, of which this process touches one page through its mapping.
    b.put_slice("big", &vec![7u8; 4 << 20]).unwrap();
    let sealed = b.seal().unwrap();
    let path = scope.path("facts.arena");
    sealed.save(&path).unwrap();
    for arg in [name.clone(), path.display().to_string()] {
        let info = run(&["info", &arg, "--json"]).ok().json();
        assert_eq!(info["kernel_sealed"], false, "{info}");
        let text = run(&["info", &arg]).ok().stdout;
        assert!(text.contains("kernel-sealed:  no (a "), "{text}");
        assert!(text.contains("sealed private copy"), "{text}");
    }
    // A memfd arena built here: the builder wrote every page through a mapping it has since
    // dropped, and this process's read-only mapping has touched only the header and one page.
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_slice("big", &vec![7u8; 4 << 20]).unwrap();
    let copy = b.seal().unwrap();
    assert_eq!(copy.slice::<u8>("big").unwrap()[0], 7);
    let memfd = spell(copy.locator());
    let who = run(&["who", &memfd, "--json"]).ok().json();
    let me = who
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == std::process::id())
        .unwrap_or_else(|| panic!("{who}"))
        .clone();
    let allocated = me["arena_allocated_bytes"].as_u64().unwrap();
    let pss = me["pss_bytes"].as_u64().unwrap();
    assert!(allocated >= 4 << 20, "{me}");
    assert!(
        pss < allocated / 4,
        "the share of a few touched pages: {me}"
    );
    let text = run(&["who", &memfd]).ok().stdout;
    assert!(text.contains("of memory allocated"), "{text}");
    assert!(
        !text.contains("adds up to the arena's resident size"),
        "{text}"
    );
    drop((sealed, copy));
    scope.finish();
}
