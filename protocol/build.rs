fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/chain.proto");
    println!("cargo:rerun-if-changed=proto/agent.proto");
    println!("cargo:rerun-if-changed=proto/scheduler.proto");
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/chain.proto",
            "proto/agent.proto",
            "proto/scheduler.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
