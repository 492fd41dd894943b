//! Compiles `proto/` without a system `protoc`: protox parses the files into a descriptor set,
//! which tonic-build turns into Rust (both the real and the madsim-simulated gRPC code).

use std::path::{Path, PathBuf};

fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            proto_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let root = root.canonicalize()?;
    let mut files = Vec::new();
    proto_files(&root, &mut files)?;
    println!("cargo:rerun-if-changed={}", root.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds_path = out.join("halter_descriptor.bin");
    std::fs::write(&fds_path, prost::Message::encode_to_vec(&fds))?;

    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .generate_default_stubs(true)
        // Maps are BTreeMaps: encoding must be byte-identical on every replica and iteration
        // must not depend on a hasher's seed.
        .btree_map(["."])
        .file_descriptor_set_path(&fds_path)
        .skip_protoc_run()
        .compile_protos(&files, &[root])?;
    Ok(())
}
