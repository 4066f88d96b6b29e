//! SentencePiece-style BPE as llama.cpp runs it for `tokenizer.ggml.model = llama` (Gemma).
//!
//! The text is first cut at user-defined tokens (newline, space and tab runs, HTML tags:
//! leftmost, longest first), then each piece has its spaces shown as `▁` and is merged
//! from single characters: repeatedly the adjacent pair whose concatenation is a token
//! with the highest score (ties: the leftmost), as llama.cpp's `llm_tokenizer_spm`. A
//! character that is no token becomes its bytes' byte-fallback tokens (`<0xXX>`), and so
//! does a literal `▁` in the input (a token's `▁` stands for a space). Control and unknown
//! tokens are never produced. Only the encoder segments; the caller checks the result.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// GGUF token types.
pub(crate) const TYPE_NORMAL: i32 = 1;
pub(crate) const TYPE_UNKNOWN: i32 = 2;
pub(crate) const TYPE_CONTROL: i32 = 3;
pub(crate) const TYPE_USER_DEFINED: i32 = 4;
pub(crate) const TYPE_BYTE: i32 = 6;

/// SentencePiece's word-boundary mark, U+2581, which stands for a space.
pub(crate) const SPACE_MARK: &str = "\u{2581}";

/// The segmenter's tables.
pub(crate) struct Spm {
    /// Token text (as the vocabulary spells it, `▁` for spaces) → id, for the tokens a
    /// merge may produce (normal and user-defined).
    ids: HashMap<Vec<u8>, u32>,
    scores: Vec<f32>,
    /// User-defined tokens as raw bytes, longest first.
    user: Vec<(Vec<u8>, u32)>,
    /// Whether a byte can start a user-defined token.
    user_first: [bool; 256],
    /// The byte-fallback token of each byte.
    byte_token: [u32; 256],
}

/// A symbol of the merge: a byte range of the escaped piece, linked to its neighbours.
#[derive(Clone, Copy)]
struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// The heap's top: the highest score, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

impl Spm {
    /// Tables from the vocabulary (texts as in the GGUF), scores and token types. Returns
    /// `None` if some byte lacks a byte-fallback token.
    pub(crate) fn new(tokens: &[String], scores: &[f32], types: &[i32]) -> Option<Self> {
        let mut ids = HashMap::with_capacity(tokens.len());
        let mut user = Vec::new();
        let mut byte_token = [u32::MAX; 256];
        for (i, t) in tokens.iter().enumerate() {
            let id = i as u32;
            match types.get(i).copied().unwrap_or(TYPE_NORMAL) {
                TYPE_BYTE => {
                    if let Some(b) = parse_byte_token(t) {
                        byte_token[b as usize] = id;
                    }
                }
                TYPE_USER_DEFINED => {
                    user.push((t.as_bytes().to_vec(), id));
                    ids.entry(t.as_bytes().to_vec()).or_insert(id);
                }
                TYPE_CONTROL | TYPE_UNKNOWN => {}
                _ => {
                    ids.entry(t.as_bytes().to_vec()).or_insert(id);
                }
            }
        }
        if byte_token.contains(&u32::MAX) {
            return None;
        }
        user.retain(|(t, _)| !t.is_empty());
        user.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut user_first = [false; 256];
        for (t, _) in &user {
            user_first[t[0] as usize] = true;
        }
        Some(Spm {
            ids,
            scores: scores.to_vec(),
            user,
            user_first,
            byte_token,
        })
    }

    /// The byte-fallback token of each byte.
    pub(crate) fn byte_tokens(&self) -> [u32; 256] {
        self.byte_token
    }

    /// Segments valid UTF-8 text, appending token ids to `out`.
    pub(crate) fn encode(&self, text: &str, out: &mut Vec<u32>) {
        let b = text.as_bytes();
        let mut piece = 0;
        let mut i = 0;
        while i < b.len() {
            if self.user_first[b[i] as usize] {
                if let Some((len, id)) = self.user_at(&b[i..]) {
                    self.encode_piece(&text[piece..i], out);
                    out.push(id);
                    i += len;
                    piece = i;
                    continue;
                }
            }
            i += 1;
        }
        self.encode_piece(&text[piece..], out);
    }

    /// The longest user-defined token at the start of `b`.
    fn user_at(&self, b: &[u8]) -> Option<(usize, u32)> {
        self.user
            .iter()
            .find(|(t, _)| b.starts_with(t))
            .map(|(t, id)| (t.len(), *id))
    }

    /// One piece between user-defined tokens: literal `▁`s go out as bytes, the text
    /// between them through the merge.
    fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) {
        let mut first = true;
        for part in piece.split(SPACE_MARK) {
            if !first {
                out.extend(SPACE_MARK.bytes().map(|b| self.byte_token[b as usize]));
            }
            first = false;
            if !part.is_empty() {
                self.merge(&part.replace(' ', SPACE_MARK), out);
            }
        }
    }

    /// llama.cpp's SPM merge over one escaped piece.
    fn merge(&self, s: &str, out: &mut Vec<u32>) {
        let b = s.as_bytes();
        let mut syms: Vec<Sym> = Vec::with_capacity(s.len());
        for (at, ch) in s.char_indices() {
            let n = syms.len();
            syms.push(Sym {
                start: at,
                len: ch.len_utf8(),
                prev: n.checked_sub(1),
                next: None,
            });
            if n > 0 {
                syms[n - 1].next = Some(n);
            }
        }
        let mut heap = BinaryHeap::new();
        let try_add =
            |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: Option<usize>, r: Option<usize>| {
                let (Some(l), Some(r)) = (l, r) else {
                    return;
                };
                let (a, len) = (syms[l].start, syms[l].len + syms[r].len);
                if let Some(&id) = self.ids.get(&b[a..a + len]) {
                    heap.push(Bigram {
                        left: l,
                        right: r,
                        score: self.scores.get(id as usize).copied().unwrap_or(f32::MIN),
                        len,
                    });
                }
            };
        for i in 1..syms.len() {
            try_add(&mut heap, &syms, Some(i - 1), Some(i));
        }
        while let Some(bg) = heap.pop() {
            let (l, r) = (bg.left, bg.right);
            // Skip pairs whose symbols have changed since they were queued.
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != bg.len {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if let Some(n) = syms[r].next {
                syms[n].prev = Some(l);
            }
            try_add(&mut heap, &syms, syms[l].prev, Some(l));
            try_add(&mut heap, &syms, Some(l), syms[l].next);
        }
        let mut i = if syms.is_empty() { None } else { Some(0) };
        while let Some(k) = i {
            let sym = syms[k];
            let text = &b[sym.start..sym.start + sym.len];
            match self.ids.get(text) {
                Some(&id) => out.push(id),
                None => out.extend(text.iter().map(|&c| self.byte_token[c as usize])),
            }
            i = sym.next;
        }
    }
}

/// The byte of a `<0xXX>` token.
pub(crate) fn parse_byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Spm {
        let mut toks: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        let mut types = vec![TYPE_BYTE; 256];
        let mut scores = vec![0f32; 256];
        for (t, ty, s) in [
            ("a", TYPE_NORMAL, -10.0),
            ("b", TYPE_NORMAL, -10.0),
            ("c", TYPE_NORMAL, -10.0),
            ("▁", TYPE_NORMAL, -10.0),
            ("ab", TYPE_NORMAL, -1.0),
            ("bc", TYPE_NORMAL, -2.0),
            ("▁ab", TYPE_NORMAL, -3.0),
            ("\n", TYPE_USER_DEFINED, -1000.0),
            ("\n\n", TYPE_USER_DEFINED, -1000.0),
            ("<eos>", TYPE_CONTROL, -1000.0),
            ("<e", TYPE_NORMAL, -5.0),
            ("os>", TYPE_NORMAL, -5.0),
            ("os", TYPE_NORMAL, -4.0),
        ] {
            toks.push(t.to_string());
            types.push(ty);
            scores.push(s);
        }
        Spm::new(&toks, &scores, &types).unwrap()
    }

    fn enc(s: &Spm, t: &str) -> Vec<u32> {
        let mut out = Vec::new();
        s.encode(t, &mut out);
        out
    }

    #[test]
    fn merges_by_score_and_cuts_at_user_tokens() {
        let s = vocab();
        // "abc": "ab" (score −1) beats "bc" (−2).
        assert_eq!(enc(&s, "abc"), vec![260, 258]);
        // " ab": "ab" first, then "▁" + "ab" = "▁ab".
        assert_eq!(enc(&s, " ab"), vec![262]);
        // Newline runs are user-defined tokens, longest first.
        assert_eq!(enc(&s, "a\n\n\nb"), vec![256, 264, 263, 257]);
        // A character with no token goes out as its bytes; so does a literal ▁.
        assert_eq!(enc(&s, "é"), vec![0xC3, 0xA9]);
        assert_eq!(enc(&s, "a▁"), vec![256, 0xE2, 0x96, 0x81]);
        // Control tokens are never produced, even where a merge would spell one: "<e" and
        // "os>" stay apart instead of becoming "<eos>" (265).
        assert_eq!(enc(&s, "<eos>"), vec![266, 267]);
    }
}
