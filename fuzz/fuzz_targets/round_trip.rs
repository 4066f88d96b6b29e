//! Round trip of arbitrary input through the synthetic model: the first byte picks the
//! block size and stream count, the rest is the data.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lmzip::pipeline::{self, CompressOptions};

fuzz_target!(|input: &[u8]| {
    let (opt, data) = match input.split_first() {
        Some((o, d)) => (*o, d),
        None => (0, input),
    };
    let opts = CompressOptions {
        block_tokens: 1 + (opt & 0x1F) as u32,
        streams: 1 + (opt >> 5) as u16,
        rows_per_call: 1 + (opt as usize * 7) % 64,
        ..CompressOptions::default()
    };
    let m = common::model();
    let mut archive = Vec::new();
    pipeline::compress(m, data, &opts, &mut archive, &mut |_| {}).expect("compress never fails");
    let mut back = Vec::new();
    pipeline::decompress(m, &mut &archive[..], &mut back, &mut |_| {}).expect("decompresses");
    assert_eq!(back, data);
});
