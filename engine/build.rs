//! Compiles our own Milvus protocol subset in `proto/` without a system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/common.proto",
        "proto/schema.proto",
        "proto/msg.proto",
        "proto/milvus.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    // protox is a pure-Rust compiler, so builds need no `protoc` on the machine.
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        // Our client has its own `connect(cfg)`; the generated one would clash with the RPC.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
