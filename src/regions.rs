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
}
