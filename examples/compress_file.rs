//! Compresses a file with the default model, decompresses the archive and checks that the
//! round trip gives the file back, using only the public API:
//! `cargo run --release --example compress_file -- FILE`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = std::env::args().nth(1).ok_or("usage: compress_file FILE")?;
    let data = std::fs::read(&file)?;
    // `LMZIP_MODEL`, else the default model in a models folder (`bash models/fetch.sh`).
    let model = lmzip::Model::load(&lmzip::model::resolve(None)?)?;
    let archive = lmzip::compress_to_vec(&model, &data, &lmzip::CompressOptions::default())?;
    let restored = lmzip::decompress_to_vec(&model, &archive)?;
    if restored != data {
        return Err("the round trip differs from the file".into());
    }
    let bits = archive.len() as f64 * 8.0 / data.len().max(1) as f64;
    println!(
        "{file}: {} → {} bytes, {bits:.4} bits per byte, round trip verified",
        data.len(),
        archive.len()
    );
    Ok(())
}
