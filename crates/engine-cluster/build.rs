//! Generates the node service's client and server from `proto/guild/v1/node.proto` with
//! `tonic`/`prost`, compiling the file with `protox` (no `protoc` needed).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("guild/v1/node.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .use_arc_self(true)
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
