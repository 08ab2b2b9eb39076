fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/chain.proto");
    tonic_prost_build::configure().compile_protos(&["proto/chain.proto"], &["proto"])?;
    Ok(())
}
