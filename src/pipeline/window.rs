//! The window rules both directions share: block layout, model input, sliding.
//!
//! Blocks are laid out over the input, escapes are fed as the start token, and a stream's
//! full window slides by the archive's policy ([`Slide`]).

use crate::engine::Row;
use crate::format;
use crate::model::Model;

/// Block lengths: `n` symbols cut into the fewest blocks of at most `max` symbols, as
/// equal as possible (so the streams of a group finish together).
pub(crate) fn layout(n: usize, max: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let blocks = n.div_ceil(max.max(1));
    let (q, r) = (n / blocks, n % blocks);
    (0..blocks).map(|i| q + (i < r) as usize).collect()
}

/// The most symbols per block for `n` symbols: `block`, or up to `stretch` × `block`
/// (never past the format's limit) when the input needs more than two groups of `streams`
/// blocks of `block`: then the fewest whole groups of `streams` blocks that hold it, cut
/// equally. Fewer blocks mean fewer cold starts, and decoding still runs `streams` blocks
/// at a time. Below that, blocks keep their size: a later group learns from every block
/// of the earlier ones (measured: enwik6's first 300 KB, 20 blocks of 4,096 in two groups
/// code 0.15% smaller than 16 blocks of 5,000 in one).
pub(crate) fn block_len(n: usize, block: usize, stretch: usize, streams: usize) -> usize {
    let block = block.max(1);
    if stretch <= 1 || n.div_ceil(block) <= 2 * streams.max(1) {
        return block;
    }
    let cap = block
        .saturating_mul(stretch)
        .min(crate::format::MAX_BLOCK_TOKENS as usize);
    let per_group = streams.max(1).saturating_mul(cap);
    let blocks = n.div_ceil(per_group) * streams.max(1);
    n.div_ceil(blocks).clamp(block, cap)
}

/// Positions a group's caches need: the window, or less when every block is shorter.
pub(crate) fn cache_capacity(lens: &[usize], window: usize) -> usize {
    let longest = lens.iter().copied().max().unwrap_or(0);
    window.min(longest + 1).max(1)
}

pub(crate) use crate::engine::Slide;

/// The window rule of one archive, from the encoder's options or the header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Most positions in a stream's cache (start token included).
    pub window: usize,
    /// Positions kept when the window slides (start token included).
    pub keep: usize,
    /// [`format::WINDOW_REPREFILL`] or [`format::WINDOW_SHIFT`].
    pub policy: u8,
    /// Vocabulary size: symbols from here on are escapes.
    pub vocab: usize,
    /// The token fed before a block's first symbol, and in place of escapes.
    pub start: u32,
}

impl Window {
    /// The rule for `model`'s vocabulary and start token.
    pub(crate) fn new(model: &Model, window: u32, keep: u32, policy: u8) -> Self {
        Window {
            window: window as usize,
            keep: keep as usize,
            policy,
            vocab: model.tokenizer.vocab_size(),
            start: model.start_token,
        }
    }

    /// Symbols fed to the model are vocabulary ids; an escape is fed as the start token, a
    /// fixed choice both directions make (the model has no embedding for escapes).
    pub(crate) fn model_input(&self, sym: u32) -> u32 {
        if (sym as usize) < self.vocab {
            sym
        } else {
            self.start
        }
    }

    /// To predict a block's symbol `t`, the stream's cache must hold the start token and
    /// symbols `..t`, at most `window` entries; when one more would not fit, the window
    /// slides by the policy (see [`Slide`]). Pushes the rows that prepare the prediction of
    /// symbol `t` (`prev` = the block's symbols before `t`, `cache_len` = what the cache
    /// holds now) and says what must happen to the cache before they run.
    pub(crate) fn rows_for(
        &self,
        stream: usize,
        prev: &[u32],
        cache_len: usize,
        rows: &mut Vec<Row>,
    ) -> Slide {
        let t = prev.len();
        let Some(&last) = prev.last() else {
            rows.push(Row {
                stream,
                token: self.start,
                pos: 0,
            });
            return Slide::None;
        };
        let full = cache_len >= self.window;
        if self.policy == format::WINDOW_SHIFT {
            rows.push(Row {
                stream,
                token: self.model_input(last),
                pos: t,
            });
            return if full { Slide::Shift } else { Slide::None };
        }
        if !full {
            rows.push(Row {
                stream,
                token: self.model_input(last),
                pos: cache_len,
            });
            return Slide::None;
        }
        rows.push(Row {
            stream,
            token: self.start,
            pos: 0,
        });
        for (j, &sym) in prev[t - (self.keep - 1)..].iter().enumerate() {
            rows.push(Row {
                stream,
                token: self.model_input(sym),
                pos: j + 1,
            });
        }
        Slide::Reset
    }

    /// The cache length once the rows of [`Window::rows_for`] ran, given its `slide` and
    /// the length before.
    pub(crate) fn len_after(&self, slide: Slide, cache_len: usize) -> usize {
        match slide {
            Slide::None => cache_len + 1,
            Slide::Reset => self.keep,
            Slide::Shift => self.keep + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretched_blocks_fill_whole_groups() {
        // Up to two groups of 16 blocks of 4,096: unchanged.
        assert_eq!(block_len(32 * 4096, 4096, 4, 16), 4096);
        assert_eq!(block_len(20 * 4096, 4096, 4, 16), 4096);
        assert_eq!(block_len(1000, 4096, 4, 16), 4096);
        // 250,000 symbols: 16 blocks of 15,625 in one group, not 62 in four.
        assert_eq!(block_len(250_000, 4096, 4, 16), 15_625);
        assert_eq!(layout(250_000, 15_625).len(), 16);
        // Just past two groups: one group of 16 blocks twice as long.
        assert_eq!(block_len(32 * 4096 + 16, 4096, 4, 16), 8193);
        // Past 16 × 4 × 4,096: two whole groups.
        let n = 16 * 4 * 4096 + 1;
        assert_eq!(layout(n, block_len(n, 4096, 4, 16)).len(), 32);
        // Off, and the format's limit.
        assert_eq!(block_len(250_000, 4096, 1, 16), 4096);
        let max = crate::format::MAX_BLOCK_TOKENS as usize;
        assert_eq!(block_len(usize::MAX / 2, max, 4, 1), max);
    }

    #[test]
    fn layout_cuts_equal_blocks() {
        assert!(layout(0, 4).is_empty());
        assert_eq!(layout(10, 4), [4, 3, 3]);
        assert_eq!(layout(8, 4), [4, 4]);
        assert_eq!(layout(3, 0), [1, 1, 1], "a zero maximum counts as one");
    }

    #[test]
    fn full_windows_slide_by_policy() {
        let w = |policy| Window {
            window: 4,
            keep: 3,
            policy,
            vocab: 10,
            start: 0,
        };
        let mut rows = Vec::new();
        let shift = w(format::WINDOW_SHIFT);
        assert_eq!(shift.rows_for(1, &[], 0, &mut rows), Slide::None);
        assert_eq!((rows[0].token, rows[0].pos), (0, 0));
        rows.clear();
        // An escape (12) goes in as the start token; shift keeps positions contiguous.
        assert_eq!(
            shift.rows_for(1, &[5, 6, 7, 12], 4, &mut rows),
            Slide::Shift
        );
        assert_eq!((rows[0].token, rows[0].pos), (0, 4));
        assert_eq!(shift.len_after(Slide::Shift, 4), 4);
        rows.clear();
        let reprefill = w(format::WINDOW_REPREFILL);
        assert_eq!(reprefill.rows_for(1, &[5, 6, 7], 3, &mut rows), Slide::None);
        assert_eq!((rows[0].token, rows[0].pos), (7, 3));
        rows.clear();
        assert_eq!(
            reprefill.rows_for(1, &[5, 6, 7, 8], 4, &mut rows),
            Slide::Reset
        );
        let fed: Vec<(u32, usize)> = rows.iter().map(|r| (r.token, r.pos)).collect();
        assert_eq!(fed, [(0, 0), (7, 1), (8, 2)]);
        assert_eq!(reprefill.len_after(Slide::Reset, 4), 3);
        assert_eq!(cache_capacity(&[3, 9], 8), 8);
        assert_eq!(cache_capacity(&[3, 5], 8), 6);
    }
}
