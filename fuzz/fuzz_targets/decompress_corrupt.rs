//! Decompression of corrupted archives that start with a valid header made with the
//! synthetic model: the fuzz input is everything after the header (seed it with the valid
//! tail, see fuzz/README.md). Decoding must fail or reproduce the original exactly.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lmzip::pipeline;
use std::sync::OnceLock;

use lmzip::testing::FUZZ_ORIGINAL as ORIGINAL;

/// The valid archive's header bytes.
fn header() -> &'static [u8] {
    static H: OnceLock<Vec<u8>> = OnceLock::new();
    H.get_or_init(|| {
        let opts = lmzip::testing::fuzz_options();
        let mut a = Vec::new();
        pipeline::compress(common::model(), ORIGINAL, &opts, &mut a, &mut |_| {})
            .expect("compresses");
        let mut r = &a[..];
        let h = lmzip::format::Header::read_from(&mut r)
            .expect("reads")
            .expect("present");
        a.truncate(h.encoded_len());
        a
    })
}

fuzz_target!(|tail: &[u8]| {
    let mut archive = header().to_vec();
    archive.extend_from_slice(tail);
    let mut out = Vec::new();
    if pipeline::decompress(common::model(), &mut &archive[..], &mut out, &mut |_| {}).is_ok() {
        // Every archive's content is checked against its SHA-256, so a successful decode can
        // only produce contents the fuzzer copied: the original, repeated (concatenated
        // archives), or nothing. Anything else is undetected corruption.
        assert!(
            out.chunks(ORIGINAL.len()).all(|c| c == ORIGINAL),
            "decoded {} bytes that are not copies of the original",
            out.len()
        );
    }
});
