//! Generates the greeter's messages, client and server from `proto/greeter.proto` with the
//! protoc shipped inside `protoc-bin-vendored`, so the build needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &["proto/greeter.proto"], &["proto"])?;
    Ok(())
}
