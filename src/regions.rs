//! Regions: which bytes go through the language model and which through the classical coder.
//!
//! The encoder cuts its input into alternating text and binary regions from the bytes
//! alone (no model run): binary where control bytes, NULs or invalid UTF-8 are dense, and
//! long runs of one byte, which cost one forward pass per token and say nothing. Text
//! regions are joined into the stream the language model codes; binary regions into one
//! stream for the classical coder (`classic`). The archive records the region lengths
//! (docs/FORMAT.md, "Regions"), so the decoder only follows them: how regions are found
//! can improve without a format change.
//!
//! The thresholds were set on Canterbury and Calgary: every text file there is one text
//! region, every binary one is mostly binary, and a tar's headers and padding are binary
//! while its members are text.

use std::borrow::Cow;

/// Bytes per chunk for the density test.
const CHUNK: usize = 64;
/// A chunk with more than this many odd bytes (of `CHUNK`) is binary. Latin-1 text (a few
/// percent of bytes invalid as UTF-8) stays text; a spreadsheet's or an executable's
/// zeros do not.
const ODD_PER_CHUNK: usize = 8;
/// A run of one byte this long or longer is binary.
const LONG_RUN: usize = 256;
/// A text region with binary on a side, shorter than this, joins the binary: the model
/// would start it nearly cold, and the classical coder sees it in its context.
const MIN_TEXT: usize = 1024;
/// A binary region beside text, shorter than this, joins the text: the model spells a
/// few odd bytes as escapes for less than a region costs.
const MIN_BINARY: usize = 64;
/// A stretch of the binary stream this long or longer, between two places it may be cut
/// (region starts, a tar's member headers), is worth a classical part of its own: LZMA2's
/// best match-finder setting differs between data kinds (a spreadsheet against a fax
/// image: 2.7 and 2.2 KB either way), and one part starts cold only once per 64 KiB.
const PART_MIN: usize = 64 * 1024;
/// A tar's header block.
const TAR_BLOCK: usize = 512;

/// Alternating region lengths, text first (that one may be 0; no other is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regions {
    pub lens: Vec<u64>,
}

/// Whether `b` looks out of place in text: NUL and the C0 controls other than tab, LF,
/// form feed, CR and ESC (terminal transcripts), and DEL.
fn odd_byte(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | 0x1b)) || b == 0x7f
}

/// Per byte: whether it is odd (see `odd_byte`), not part of valid UTF-8, or in a long run.
fn odd_map(data: &[u8]) -> Vec<bool> {
    let mut odd: Vec<bool> = data.iter().map(|&b| odd_byte(b)).collect();
    let mut at = 0;
    for chunk in data.utf8_chunks() {
        at += chunk.valid().len();
        for o in &mut odd[at..at + chunk.invalid().len()] {
            *o = true;
        }
        at += chunk.invalid().len();
    }
    let mut i = 0;
    while i < data.len() {
        let mut j = i + 1;
        while j < data.len() && data[j] == data[i] {
            j += 1;
        }
        if j - i >= LONG_RUN {
            for o in &mut odd[i..j] {
                *o = true;
            }
        }
        i = j;
    }
    odd
}

impl Regions {
    /// The whole input as one text region.
    pub fn all_text(len: usize) -> Self {
        Regions {
            lens: vec![len as u64],
        }
    }

    /// The whole input as one binary region (after an empty text one).
    pub fn all_binary(len: usize) -> Self {
        if len == 0 {
            return Self::all_text(0);
        }
        Regions {
            lens: vec![0, len as u64],
        }
    }

    /// Whether any byte goes to the classical coder.
    pub fn has_binary(&self) -> bool {
        self.lens.len() > 1
    }

    /// Total bytes in binary regions.
    pub fn binary_len(&self) -> u64 {
        self.lens.iter().skip(1).step_by(2).sum()
    }

    /// Finds the regions of `data` (see the module docs).
    pub fn find(data: &[u8]) -> Self {
        if data.is_empty() {
            return Self::all_text(0);
        }
        let odd = odd_map(data);
        // Runs of (is_binary, len) over chunks, refined to the byte at their edges.
        let mut runs: Vec<(bool, usize)> = Vec::new();
        for c in odd.chunks(CHUNK) {
            let bin = c.iter().filter(|&&o| o).count() > ODD_PER_CHUNK.min(c.len() / 8);
            push_run(&mut runs, bin, c.len());
        }
        let mut runs = refine(&runs, &odd);
        // Short binary beside text first (a stray control byte in prose stays in the
        // text), then short text beside binary.
        absorb(&mut runs, true, MIN_BINARY);
        absorb(&mut runs, false, MIN_TEXT);
        let mut lens = Vec::with_capacity(runs.len() + 1);
        if runs.first().is_some_and(|r| r.0) {
            lens.push(0);
        }
        lens.extend(runs.iter().map(|r| r.1 as u64));
        Regions { lens }
    }

    /// The text regions of `data`, in order (`self` must describe `data`).
    pub fn text_regions<'a, 'd: 'a>(
        &'a self,
        data: &'d [u8],
    ) -> impl Iterator<Item = &'d [u8]> + 'a {
        let mut at = 0usize;
        self.lens.iter().enumerate().filter_map(move |(i, &l)| {
            let r = &data[at..at + l as usize];
            at += l as usize;
            (i % 2 == 0).then_some(r)
        })
    }

    /// The text stream and the binary stream of `data` (text regions joined, binary
    /// regions joined). `self` must describe `data`.
    pub fn split<'d>(&self, data: &'d [u8]) -> (Cow<'d, [u8]>, Vec<u8>) {
        if !self.has_binary() {
            return (Cow::Borrowed(data), Vec::new());
        }
        let mut text = Vec::with_capacity(data.len());
        let mut binary = Vec::with_capacity(self.binary_len() as usize);
        let mut at = 0usize;
        for (i, &l) in self.lens.iter().enumerate() {
            let part = &data[at..at + l as usize];
            if i % 2 == 0 {
                text.extend_from_slice(part);
            } else {
                binary.extend_from_slice(part);
            }
            at += l as usize;
        }
        (Cow::Owned(text), binary)
    }
}

impl Regions {
    /// Where the binary stream may be cut into independently coded classical parts
    /// (offsets into the binary stream, increasing, none at 0 or its end): at the start of
    /// each stretch of at least `PART_MIN` bytes between two places where the data may
    /// change kind (a binary region's start, a tar member's first data byte); a short
    /// stretch stays in the part before it. A part starts exactly where a member's data
    /// does: LZMA is sensitive to what comes first (kennedy.xls codes 2.4 KB larger with
    /// its 512-byte tar header in front). The encoder keeps the cut stream only where it
    /// codes smaller.
    pub fn binary_cuts(&self, data: &[u8]) -> Vec<usize> {
        let total = self.binary_len() as usize;
        let mut marks = Vec::new();
        // Region starts and tar headers, as offsets in the binary stream: a place inside a
        // text region moves to the next binary region's start.
        let headers: Vec<usize> = tar_headers(data).iter().map(|h| h + TAR_BLOCK).collect();
        let mut next_header = headers.iter().peekable();
        let (mut at, mut bin) = (0usize, 0usize);
        for (i, &l) in self.lens.iter().enumerate() {
            let (start, end) = (at, at + l as usize);
            if i % 2 == 1 {
                marks.push(bin);
            }
            while let Some(&&h) = next_header.peek() {
                if h >= end {
                    break;
                }
                next_header.next();
                if i % 2 == 1 && h >= start {
                    marks.push(bin + (h - start));
                } else if i % 2 == 0 {
                    marks.push(bin);
                }
            }
            if i % 2 == 1 {
                bin += l as usize;
            }
            at = end;
        }
        marks.retain(|&m| m > 0 && m < total);
        marks.sort_unstable();
        marks.dedup();
        // Stretches between marks; a cut goes at the start of every long one.
        let mut cuts = Vec::new();
        let mut from = 0;
        for &to in marks.iter().chain(std::iter::once(&total)) {
            if to - from >= PART_MIN && from > 0 {
                cuts.push(from);
            }
            from = to;
        }
        cuts
    }
}

/// Offsets of the valid POSIX/GNU tar headers in `data`, a tar from its first byte: the
/// 512-byte blocks with the `ustar` magic whose checksum field holds.
fn tar_headers(data: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, b) in data.chunks_exact(TAR_BLOCK).enumerate() {
        if &b[257..262] != b"ustar" {
            continue;
        }
        let field = &b[148..156];
        let digits = field
            .iter()
            .skip_while(|&&c| c == b' ')
            .take_while(|&&c| (b'0'..=b'7').contains(&c));
        let stated = digits.fold(0u32, |v, &c| v.saturating_mul(8) + (c - b'0') as u32);
        let sum: u32 = b
            .iter()
            .enumerate()
            .map(|(j, &c)| {
                if (148..156).contains(&j) {
                    b' ' as u32
                } else {
                    c as u32
                }
            })
            .sum();
        if sum == stated {
            out.push(i * TAR_BLOCK);
        }
    }
    out
}

fn push_run(runs: &mut Vec<(bool, usize)>, bin: bool, len: usize) {
    match runs.last_mut() {
        Some(last) if last.0 == bin => last.1 += len,
        _ => runs.push((bin, len)),
    }
}

/// Moves each text/binary edge to the byte: a binary run gives up its leading and
/// trailing bytes that are not odd to the text beside it.
fn refine(runs: &[(bool, usize)], odd: &[bool]) -> Vec<(bool, usize)> {
    let mut out: Vec<(bool, usize)> = Vec::with_capacity(runs.len());
    let mut at = 0;
    for (i, &(bin, len)) in runs.iter().enumerate() {
        if !bin {
            push_run(&mut out, false, len);
            at += len;
            continue;
        }
        let span = &odd[at..at + len];
        let lead = if i > 0 {
            span.iter().take_while(|&&o| !o).count()
        } else {
            0
        };
        let trail = if i + 1 < runs.len() && lead < len {
            span.iter().rev().take_while(|&&o| !o).count()
        } else {
            0
        };
        if lead > 0 {
            push_run(&mut out, false, lead);
        }
        if len - lead - trail > 0 {
            push_run(&mut out, true, len - lead - trail);
        }
        if trail > 0 {
            push_run(&mut out, false, trail);
        }
        at += len;
    }
    out
}

/// Turns every run of kind `kind` shorter than `min` into the other kind, when it has a
/// run beside it, and joins equal neighbours. One pass is enough, in any order: a flipped
/// run joins runs of the other kind, so the remaining runs of `kind` keep their lengths.
fn absorb(runs: &mut Vec<(bool, usize)>, kind: bool, min: usize) {
    if runs.len() < 2 {
        return;
    }
    let mut joined = Vec::with_capacity(runs.len());
    for &(k, len) in runs.iter() {
        let flip = k == kind && len < min;
        push_run(&mut joined, k != flip, len);
    }
    *runs = joined;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(data: &[u8]) -> Regions {
        let r = Regions::find(data);
        assert_eq!(r.lens.iter().sum::<u64>(), data.len() as u64);
        assert!(r.lens.iter().skip(1).all(|&l| l > 0), "{:?}", r.lens);
        let (text, binary) = r.split(data);
        assert_eq!(text.len() + binary.len(), data.len());
        r
    }

    #[test]
    fn text_stays_whole() {
        let prose = "The quick brown fox, naïve café. Line\r\nends\tand\x0cfeeds.\n".repeat(100);
        assert_eq!(check(prose.as_bytes()).lens.len(), 1);
        // Latin-1 text and a stray control byte stay text.
        let mut latin1 = b"caf\xe9 cr\xe8me br\xfbl\xe9e and more words here. ".repeat(80);
        latin1[500] = 0x07;
        assert_eq!(check(&latin1).lens.len(), 1);
        assert_eq!(check(b"").lens, vec![0]);
        // A short file of any kind is one region: there is nothing beside it.
        assert_eq!(check(b"hi").lens.len(), 1);
    }

    #[test]
    fn binary_and_runs_are_found() {
        let zeros = vec![0u8; 10_000];
        assert_eq!(check(&zeros).lens, vec![0, 10_000]);
        // A tar-like layout: header, member text, padding, header, member.
        let text = "All work and no play makes Jack a dull boy.\n".repeat(60);
        let mut hdr = b"member.txt".to_vec();
        hdr.resize(512, 0);
        let mut tar = hdr.clone();
        tar.extend_from_slice(text.as_bytes());
        let pad = 512 - tar.len() % 512;
        tar.resize(tar.len() + pad, 0);
        tar.extend_from_slice(&hdr);
        tar.extend_from_slice(text.as_bytes());
        tar.resize(tar.len() + 2048, 0);
        let r = check(&tar);
        // Text members exactly, the headers and padding binary.
        assert_eq!(r.lens[0], 0);
        assert_eq!(r.lens[2], text.len() as u64);
        assert_eq!(r.lens[4], text.len() as u64);
        // A long run inside prose is binary; short text islands in binary join it.
        let mut mixed = text.as_bytes().to_vec();
        mixed.extend(std::iter::repeat_n(b' ', 2000));
        mixed.extend_from_slice(text.as_bytes());
        assert_eq!(check(&mixed).lens, vec![2640, 2000, 2640]);
        let mut island = vec![0u8; 3000];
        island.extend_from_slice(b"a short string");
        island.extend(vec![1u8; 3000]);
        assert_eq!(check(&island).lens, vec![0, 6014]);
    }

    /// A ustar header block with a valid checksum.
    fn tar_header(name: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; TAR_BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[257..265].copy_from_slice(b"ustar\x0000");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&c| c as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    /// Tar members' data starts are found from their headers (a header whose checksum does
    /// not hold is not one), and the binary stream is cut where each member of 64 KiB or
    /// more begins; shorter stretches stay with the part before them.
    #[test]
    fn classical_parts_start_where_long_members_do() {
        let table = |n: usize, k: u32| -> Vec<u8> {
            (0..n as u32)
                .map(|i| [0, 1, (i % k) as u8, 0][(i % 4) as usize])
                .collect()
        };
        let mut tar = tar_header(b"a.xls");
        tar.extend(table(70_144, 13));
        let b = tar.len();
        tar.extend(tar_header(b"b.bin"));
        tar.extend(table(1024, 7));
        let c = tar.len();
        tar.extend(tar_header(b"c.bin"));
        tar.extend(table(80_384, 5));
        let mut broken = tar_header(b"d.bin");
        broken[0] ^= 1;
        tar.extend(broken);
        tar.extend(table(512, 3));
        assert_eq!(tar_headers(&tar), vec![0, b, c]);
        let r = check(&tar);
        assert_eq!(r.lens, vec![0, tar.len() as u64]);
        // a.xls's data is long (cut at its start); b.bin's is short (it stays in a.xls's
        // part); c.bin's is long, with the broken header and what follows in its part.
        assert_eq!(r.binary_cuts(&tar), vec![512, c + 512]);
        // No tar, one binary region: nothing to cut.
        let plain = table(200_000, 11);
        assert!(check(&plain).binary_cuts(&plain).is_empty());
        // Binary regions between text: each long one starts a part.
        let text = "All work and no play makes Jack a dull boy.\n".repeat(60);
        let mut mixed = table(70_000, 13);
        mixed.extend_from_slice(text.as_bytes());
        mixed.extend(table(70_000, 5));
        let r = check(&mixed);
        assert_eq!(r.lens.len(), 4, "{:?}", r.lens);
        assert_eq!(r.binary_cuts(&mixed), vec![r.lens[1] as usize]);
    }
}
