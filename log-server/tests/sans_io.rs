//! The consensus core stays sans-IO: no async runtime, network, storage or
//! wall clock in `src/consensus/`.

use std::path::Path;

#[test]
fn consensus_module_imports_no_io() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/consensus");
    let banned = [
        "tokio::",
        "quinn::",
        "redb::",
        "use tokio",
        "use quinn",
        "use redb",
        "std::time::Instant",
        "Instant::now",
        "SystemTime",
        "std::net",
        "std::fs",
        "std::thread",
        "thread_rng",
        "OsRng",
    ];
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        for word in banned {
            assert!(
                !text.contains(word),
                "{} mentions {word}: the consensus core must stay sans-IO",
                path.display()
            );
        }
    }
    assert!(
        files >= 3,
        "expected the consensus sources in {}",
        dir.display()
    );
}
