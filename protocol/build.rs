//! Compiles `proto/fedrad.proto` with the vendored protoc, so a fresh machine needs no system protobuf.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = tonic_prost_build::Config::new();
    cfg.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(cfg, &["proto/fedrad.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/fedrad.proto");
    Ok(())
}
