//! Compiles the gRPC API definition (`src/api/ftsd.proto`) with protoc; the descriptor set is
//! embedded for server reflection so `grpcurl` works without the .proto file.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=src/api/ftsd.proto");
    tonic_prost_build::configure()
        // `ftsctl --json` prints the messages as they are: field names as in the .proto.
        .type_attribute(".ftsd.v1", "#[derive(serde::Serialize)]")
        .file_descriptor_set_path(out.join("ftsd_descriptor.bin"))
        .compile_protos(&["src/api/ftsd.proto"], &["src/api"])?;
    Ok(())
}
