//! Reversible text transforms the encoder applies before tokenizing, when the input qualifies.
//!
//! A transform is chosen from the input alone (no model run), recorded in the archive
//! header, and undone by the decoder after each block is decoded and checked, before the
//! content checksum, which always covers the original bytes. Two are defined: CRLF line
//! ends coded as LF over the whole text, and (version 4, where binary regions cut the input
//! into text regions) the same in the text regions that qualify, listed in the region
//! section (docs/FORMAT.md, "Transforms"). The language model predicts LF text better and
//! every line saves a token; on alice29.txt's first 24,000 bytes the archive is about 2.5%
//! smaller. The per-region form is for inputs like a tar of CRLF and LF files, where the
//! whole text does not qualify but most of it does.
//!
//! The inverse works byte by byte, so it can be applied to any split of the coded bytes
//! (block by block) with the same result as on the whole.

use std::borrow::Cow;

/// A reversible transform of the input, as recorded in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transform {
    /// The input is coded as it is.
    #[default]
    None,
    /// Every CR immediately before an LF was removed; the decoder puts a CR before every
    /// LF. Applied only when the input has no LF without a CR before it.
    CrlfToLf,
    /// CRLF → LF in the text regions the region section marks, each of which has no LF
    /// without a CR before it; the others are coded as they are. Version 4 only. The
    /// decoder undoes it region by region (it needs the marks and the region lengths), so
    /// [`Transform::undo_into`] passes bytes through for it.
    CrlfPerRegion,
}

impl Transform {
    /// The header's id for this transform.
    pub fn id(self) -> u8 {
        match self {
            Transform::None => 0,
            Transform::CrlfToLf => 1,
            Transform::CrlfPerRegion => 2,
        }
    }

    /// The transform with header id `id`, if this build knows it.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(Transform::None),
            1 => Some(Transform::CrlfToLf),
            2 => Some(Transform::CrlfPerRegion),
            _ => None,
        }
    }

    /// A short name for messages and `lmzip info`.
    pub fn name(self) -> &'static str {
        match self {
            Transform::None => "none",
            Transform::CrlfToLf => "CRLF line ends coded as LF",
            Transform::CrlfPerRegion => "CRLF line ends coded as LF in marked text regions",
        }
    }

    /// The transform the encoder applies to `data`: CRLF → LF when `data` has at least one
    /// LF and every LF has a CR right before it (else LF-only text would come back with
    /// CRLF); otherwise none. One pass over the bytes, no model.
    pub fn choose(data: &[u8]) -> Transform {
        if crlf_only(data) {
            Transform::CrlfToLf
        } else {
            Transform::None
        }
    }

    /// Whether `data` can take this transform and get back exactly.
    pub fn applies_to(self, data: &[u8]) -> bool {
        match self {
            Transform::None => true,
            Transform::CrlfToLf | Transform::CrlfPerRegion => crlf_only(data),
        }
    }

    /// The bytes the encoder codes. For CRLF → LF, every CR that comes right before an LF
    /// is dropped (a CR elsewhere stays); the per-region form does the same to the one
    /// region it is given. Only valid where [`Transform::applies_to`] holds.
    pub fn apply(self, data: &[u8]) -> Cow<'_, [u8]> {
        match self {
            Transform::None => Cow::Borrowed(data),
            Transform::CrlfToLf | Transform::CrlfPerRegion => {
                let mut out = Vec::with_capacity(data.len());
                let mut rest = data;
                while let Some(i) = find_crlf(rest) {
                    out.extend_from_slice(&rest[..i]);
                    out.push(b'\n');
                    rest = &rest[i + 2..];
                }
                out.extend_from_slice(rest);
                Cow::Owned(out)
            }
        }
    }

    /// Appends the original of `coded` (any piece of the coded bytes, cut anywhere) to
    /// `out`. For CRLF → LF, a CR goes before every LF. The per-region form passes bytes
    /// through: which of them to change depends on the regions, and the decoder's
    /// interleaving of regions undoes it.
    pub fn undo_into(self, coded: &[u8], out: &mut Vec<u8>) {
        match self {
            Transform::None | Transform::CrlfPerRegion => out.extend_from_slice(coded),
            Transform::CrlfToLf => {
                let lines = coded.iter().filter(|&&b| b == b'\n').count();
                out.reserve(coded.len() + lines);
                for line in coded.split_inclusive(|&b| b == b'\n') {
                    match line.split_last() {
                        Some((b'\n', body)) => {
                            out.extend_from_slice(body);
                            out.extend_from_slice(b"\r\n");
                        }
                        _ => out.extend_from_slice(line),
                    }
                }
            }
        }
    }
}

/// True when `data` has an LF and every LF has a CR right before it.
fn crlf_only(data: &[u8]) -> bool {
    let mut any = false;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            if i == 0 || data[i - 1] != b'\r' {
                return false;
            }
            any = true;
        }
    }
    any
}

/// Index of the first CR LF pair in `data`.
fn find_crlf(data: &[u8]) -> Option<usize> {
    data.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn undo(t: Transform, coded: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        t.undo_into(coded, &mut out);
        out
    }

    #[test]
    fn crlf_examples() {
        let t = Transform::CrlfToLf;
        for (input, coded) in [
            (&b"a\r\nb\r\n"[..], &b"a\nb\n"[..]),
            (b"\r\n", b"\n"),
            // A CR not followed by LF stays, also right before a CR LF.
            (b"\r\r\n", b"\r\n"),
            (b"a\rb\r\n\r", b"a\rb\n\r"),
            (b"\r\n\r\n\r\n", b"\n\n\n"),
            (b"x\r\n\xff\0\r\n", b"x\n\xff\0\n"),
        ] {
            assert_eq!(Transform::choose(input), t, "{input:?}");
            assert_eq!(&*t.apply(input), coded, "{input:?}");
            assert_eq!(undo(t, coded), input, "{input:?}");
        }
        // Not chosen: no LF at all, a bare LF anywhere (first byte included).
        for input in [
            &b""[..],
            b"plain",
            b"\r",
            b"\n",
            b"a\nb\r\n",
            b"a\r\nb\n",
            b"\n\r\n",
            b"\r\n\n",
        ] {
            assert_eq!(Transform::choose(input), Transform::None, "{input:?}");
        }
    }

    #[test]
    fn none_is_the_identity() {
        let data = b"a\nb\r\n\r";
        assert_eq!(&*Transform::None.apply(data), data);
        assert_eq!(undo(Transform::None, data), data);
        assert!(Transform::None.applies_to(data));
    }

    #[test]
    fn ids_round_trip() {
        for t in [
            Transform::None,
            Transform::CrlfToLf,
            Transform::CrlfPerRegion,
        ] {
            assert_eq!(Transform::from_id(t.id()), Some(t));
        }
        assert_eq!(Transform::from_id(3), None);
    }

    use crate::test_rng::Lcg;

    /// Random byte strings over an alphabet dense in CR and LF: the rule is exactly the
    /// condition for a round trip (the inverse of the forward transform gives the input
    /// back if and only if `applies_to` holds), and the inverse can be applied piece by
    /// piece at any cut.
    #[test]
    fn random_strings_round_trip_exactly_when_the_rule_allows() {
        let alphabet = [b'\r', b'\n', b'a', b' ', 0xff, 0];
        let mut r = Lcg(0x7a11);
        let t = Transform::CrlfToLf;
        let (mut chosen, mut refused) = (0, 0);
        for n in 0..4000 {
            let len = (r.next() % 24) as usize;
            let mut data: Vec<u8> = (0..len)
                .map(|_| alphabet[(r.next() % alphabet.len() as u64) as usize])
                .collect();
            // Half the strings get a CR before every LF, so both outcomes are common.
            if n % 2 == 0 {
                data = data
                    .iter()
                    .flat_map(|&b| if b == b'\n' { vec![b'\r', b] } else { vec![b] })
                    .collect();
            }
            let coded = t.apply(&data).into_owned();
            let back = undo(t, &coded);
            assert_eq!(back == data, t.applies_to(&data) || !data.contains(&b'\n'));
            assert_eq!(
                Transform::choose(&data) == t,
                data.contains(&b'\n') && back == data,
                "{data:?}"
            );
            if Transform::choose(&data) == t {
                chosen += 1;
                assert!(coded.len() < data.len());
                let cut = (r.next() as usize) % (coded.len() + 1);
                let mut pieces = undo(t, &coded[..cut]);
                t.undo_into(&coded[cut..], &mut pieces);
                assert_eq!(pieces, data);
            } else {
                refused += 1;
            }
        }
        assert!(
            chosen > 500 && refused > 500,
            "{chosen} chosen, {refused} refused"
        );
    }
}
