//! Vendors the web console's player: hls.js, pinned and installed from npm by
//! scripts/setup.sh into `.tools/npm`, is copied (with its licence) into the build so the
//! binary serves it itself — nothing is fetched from the internet at run time.

use std::path::PathBuf;

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../..");
    let package = match std::env::var_os("TCODER_HLS_JS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => root.join(".tools/npm/node_modules/hls.js"),
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    for (from, to) in [("dist/hls.min.js", "hls.min.js"), ("LICENSE", "hls.js-LICENSE.txt")] {
        let source = package.join(from);
        println!("cargo:rerun-if-changed={}", source.display());
        if let Err(e) = std::fs::copy(&source, out.join(to)) {
            panic!(
                "cannot vendor hls.js for the web console ({}: {e}); run scripts/setup.sh, which \
                 installs the pinned version into .tools/npm (or set TCODER_HLS_JS_DIR)",
                source.display()
            );
        }
    }
    println!("cargo:rerun-if-env-changed=TCODER_HLS_JS_DIR");
}
