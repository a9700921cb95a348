//! Building the tests' Go programs against Debian's golang.org/x/mod
//! (golang-golang-x-mod-dev, which `.ci/run` installs with `go`).

use std::path::{Path, PathBuf};
use std::process::Command;

const GOPATH: &str = "/usr/share/gocode";

/// Builds `source` (relative to the log-server crate) into a binary named
/// `name`, or says why it cannot: without `go` or the golang.org/x/mod
/// package `package` the test fails under CI=true and skips its Go part
/// elsewhere.
pub fn go_build(source: &str, name: &str, package: &str) -> Option<PathBuf> {
    let have_go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let have_package = Path::new(GOPATH)
        .join("src/golang.org/x/mod")
        .join(package)
        .is_dir();
    if !have_go || !have_package {
        let why = format!(
            "go available: {have_go}; golang.org/x/mod/{package} in {GOPATH}: {have_package}"
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "Go program {name} cannot be built under CI: {why}"
        );
        eprintln!("SKIPPED the Go program {name}: {why}");
        return None;
    }
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("go-{name}"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let binary = out_dir.join(name);
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(source))
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", out_dir.join("cache"))
        .env("GOFLAGS", "")
        .status()
        .unwrap();
    assert!(status.success(), "go build of {source} failed");
    Some(binary)
}
