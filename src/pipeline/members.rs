//! Independent members: a large input cut at deterministic points, one archive per piece.
//!
//! Archives back to back decode to their inputs back to back (docs/FORMAT.md), so an input
//! cut into members and compressed member by member is one valid archive, and any run of
//! consecutive members is one too. The cut points depend on the input and the member size
//! only, so machines that each compress a share of the members write pieces whose
//! concatenation is byte for byte what one machine writes (`lmzip --member-size N
//! --share I/K`). No index is stored: every header and frame table gives the length of
//! what follows, so [`member_spans`] finds the members by hopping from header to header,
//! reading frame tables and skipping payloads, with no model and no decoding.

use super::describe::describe;
use crate::Result;
use std::ops::Range;

/// How far past a member's nominal end the cut may move to reach a line end: 1/8 of the
/// member size.
const LINE_SLACK_DIV: usize = 8;

/// The members of `data` for members of `size` bytes: each ends just after the first line
/// feed at or past its nominal end (`start + size`), looking at most `size / 8` bytes
/// further, else exactly at its nominal end; the last ends with the input. Cutting after a
/// line feed keeps a CRLF pair, a UTF-8 character and (mostly) a token whole. An empty
/// input is one empty member.
pub fn member_cuts(data: &[u8], size: usize) -> Vec<Range<usize>> {
    let size = size.max(1);
    let mut cuts = Vec::new();
    let mut start = 0usize;
    loop {
        let nominal = start.saturating_add(size);
        if nominal >= data.len() {
            cuts.push(start..data.len());
            return cuts;
        }
        let reach = nominal
            .saturating_add(size / LINE_SLACK_DIV)
            .min(data.len());
        let end = data[nominal - 1..reach]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(nominal, |i| nominal + i);
        cuts.push(start..end);
        if end == data.len() {
            return cuts;
        }
        start = end;
    }
}

/// One share of a job cut into `count` shares: share `index` (1-based, as GNU split's
/// `-n l/K/N`) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: usize,
    pub count: usize,
}

impl Share {
    /// Share `index` of `count`, or `None` unless 1 ≤ index ≤ count.
    pub fn new(index: usize, count: usize) -> Option<Share> {
        (index >= 1 && index <= count).then_some(Share { index, count })
    }

    /// The members of this share among `members`: consecutive, as even as integers allow,
    /// every member in exactly one share and in order. A share may be empty.
    pub fn of(&self, members: usize) -> Range<usize> {
        let at = |i: usize| (members as u128 * i as u128 / self.count as u128) as usize;
        at(self.index - 1)..at(self.index)
    }
}

/// Where each archive of `archive` (archives back to back) lies: byte ranges in order.
/// Checks every header and frame table (as `lmzip info` does) but decodes nothing.
pub fn member_spans(archive: &[u8]) -> Result<Vec<Range<usize>>> {
    let mut spans = Vec::new();
    let mut at = 0usize;
    for info in describe(&mut &archive[..])? {
        let end = at + info.archive_bytes as usize;
        spans.push(at..end);
        at = end;
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_cover_the_input_in_order_and_prefer_line_ends() {
        let text = b"one line\nanother, longer line\nshort\n\nlast without end".repeat(37);
        for size in [1, 5, 16, 40, 100, 1000, 5000] {
            let cuts = member_cuts(&text, size);
            assert_eq!(cuts.first().map(|c| c.start), Some(0));
            assert_eq!(cuts.last().map(|c| c.end), Some(text.len()));
            for w in cuts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            for c in &cuts[..cuts.len() - 1] {
                let len = c.len();
                assert!(len >= size && len <= size + size / 8, "{size}: {len}");
                // Past its nominal end, a member stops at the first line feed.
                let tail = &text[c.start + size - 1..c.end];
                let lf = tail.iter().position(|&b| b == b'\n');
                assert!(lf.is_none() || lf == Some(tail.len() - 1), "{size}");
            }
        }
        assert_eq!(member_cuts(b"", 10), vec![0..0]);
        assert_eq!(member_cuts(b"abc", 3), vec![0..3]);
        // A cut that reaches the end is the last (no empty member after it).
        assert_eq!(member_cuts(b"abcdefgh\n", 8), vec![0..9]);
        assert_eq!(member_cuts(b"abcdefgh\nxy", 8), vec![0..9, 9..11]);
        assert_eq!(member_cuts(b"ab\ncd\n", 3), vec![0..3, 3..6]);
        // No line end within reach: the nominal cut.
        assert_eq!(member_cuts(&[b'x'; 25], 10), vec![0..10, 10..20, 20..25]);
    }

    #[test]
    fn shares_partition_the_members() {
        for members in 0..20 {
            for count in 1..8 {
                let mut next = 0;
                for index in 1..=count {
                    let r = Share::new(index, count).unwrap().of(members);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, members);
            }
        }
        assert!(Share::new(0, 3).is_none());
        assert!(Share::new(4, 3).is_none());
    }
}
