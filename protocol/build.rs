//! Compiles `proto/fedrad.proto` with the vendored protoc, so a fresh machine needs no system protobuf.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = tonic_prost_build::Config::new();
    cfg.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // The descriptor set lets tests name every field a message carries (tests/pipeline_privacy.rs).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("fedrad_descriptor.bin"))
        .compile_with_config(cfg, &["proto/fedrad.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/fedrad.proto");
    Ok(())
}
