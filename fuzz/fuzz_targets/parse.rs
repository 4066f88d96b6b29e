//! Header, region section and frame parsing on arbitrary bytes: never a panic, never an allocation beyond
//! the documented limits (libFuzzer's -malloc_limit_mb catches the latter).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmzip::format::{self, Frame, Header};

fuzz_target!(|data: &[u8]| {
    // The frame reader alone, as the decoder drives it.
    let mut r = data;
    if let Ok(Some(h)) = Header::read_from(&mut r) {
        assert_eq!(h.encoded_len(), data.len() - r.len());
        // A valid header of the version this build writes must write back to the bytes it
        // was read from (every value has one encoding). Version 2 is only read.
        if h.version >= format::VERSION {
            let mut again = Vec::new();
            h.write_to(&mut again)
                .expect("a header that reads must write");
            assert_eq!(&again[..], &data[..h.encoded_len()]);
        }
        // Version 4's region section: it too writes back to its own bytes.
        if h.version >= format::VERSION_REGIONS {
            let before = r;
            let Ok(section) = format::RegionSection::read_from(&mut r, h.transform) else {
                return;
            };
            let mut again = Vec::new();
            section
                .write_to(&mut again)
                .expect("a section that reads must write");
            assert_eq!(&again[..], &before[..before.len() - r.len()]);
            let Ok(payload) = section.read_payload(&mut r) else {
                return;
            };
            assert_eq!(payload.len() as u64, section.coded_len());
        }
        let mut tally = format::ArchiveTally::new();
        let mut frames = format::Frames::new(&h);
        for _ in 0..64 {
            match frames.next_frame(&mut r) {
                Ok(Frame::Group { entries, payloads }) => {
                    assert_eq!(entries.len(), payloads.len());
                    for (e, p) in entries.iter().zip(&payloads) {
                        assert_eq!(e.coded_len as usize, p.len());
                    }
                    tally.add_group(&entries);
                }
                Ok(Frame::End(t)) => {
                    let _ = tally.check(&t);
                    break;
                }
                Err(_) => break,
            }
        }
    }
    // The whole-archive walk `lmzip info` does.
    let _ = lmzip::pipeline::describe(&mut &data[..]);
});
