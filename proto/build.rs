//! Generates the V2 / Open Inference Protocol gRPC code from `inference.proto` with the protoc
//! binary vendored in `protoc-bin-vendored`, so no system protoc is needed. Both halves are
//! generated: the gateway serves, the load tester drives the client, and the load tester's tests
//! run a fake server (so every service method gets a default "unimplemented" body).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let proto = proto_dir.join("inference.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_with_config(config, &[proto], &[proto_dir])?;
    Ok(())
}
