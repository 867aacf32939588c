//! Generates the prost/tonic code from `proto/` with protox, so building needs no `protoc`.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/tidings/v1/mailbox.proto",
        "proto/tidings/v1/relay.proto",
        "proto/tidings/v1/config.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // The encoded descriptor set feeds the gRPC reflection service.
    fs::write(out.join("tidings_descriptor.bin"), fds.encode_to_vec())?;
    // No transport code: the generated clients are generic over any `GrpcService`, so
    // the crates that connect (device-link, the tests) bring tonic's channel, and this
    // crate compiles without a network stack.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
