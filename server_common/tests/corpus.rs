//! Replays the fuzz corpus (fuzz/corpus/<target>/*) and any crash reproductions kept in
//! fuzz/regressions/<target>/* through the same property checks the fuzz targets run, so
//! every `cargo test` re-checks what fuzzing found. Fuzzing itself:
//! `cargo fuzz run -s none http_session` (see fuzz/README.md).

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).expect("a corpus file is readable");
            check(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn http_corpus_keeps_its_properties() {
    let n = replay("http_session", server_common::fuzzing::http_properties);
    assert!(n >= 15, "the HTTP seed corpus is missing ({n} inputs)");
}

#[test]
fn echo_corpus_keeps_its_properties() {
    let n = replay("echo_session", server_common::fuzzing::echo_properties);
    assert!(n >= 2, "the echo seed corpus is missing ({n} inputs)");
}
