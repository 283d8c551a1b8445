//! Generates the KServe V2 gRPC code from `proto/inference.proto` (the gateway's copy) with the
//! vendored protoc, so no system protoc is needed. The client drives the load; the server half
//! is generated too so that the integration tests can run a fake gRPC server.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
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
