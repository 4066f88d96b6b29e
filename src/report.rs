//! Where the bits go: a self-contained HTML page of one traced run (`lmzip bench --report`).
//!
//! The page shows the coded text with each symbol coloured by its bits per byte, and a plot
//! of bits per byte along the file for every predictor run traced (the coded one and the
//! variants measured beside it). Plain HTML and inline SVG, no script and nothing fetched:
//! it opens offline, years later, in any browser.

use crate::Trace;
use std::fmt::Write as _;

/// Text beyond this many bytes is left out of the coloured view (the plot covers it all):
/// a page of millions of spans is more than a browser lays out comfortably.
pub const MAX_SHOWN_BYTES: usize = 200_000;

/// Points along the plot's x axis at most.
const MAX_BINS: usize = 400;

/// Colour classes of the text view: bits per byte in steps of `STEP`, the last open-ended.
const CLASSES: usize = 16;
const STEP: f64 = 0.5;

/// One file's section of the page.
pub struct Section {
    /// The file's name as the user gave it.
    pub name: String,
    /// Its size and its archive's, in bytes.
    pub original_bytes: u64,
    pub archive_bytes: u64,
    /// Bytes coded classically (binary regions), not in the trace.
    pub classic_bytes: u64,
    pub trace: Trace,
}

/// The page for `sections`, titled with `title` (the model and settings, say).
pub fn html(title: &str, sections: &[Section]) -> String {
    let mut s = String::new();
    s += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
    let _ = writeln!(s, "<title>lmzip report: {}</title>", esc(title));
    s += "<style>\n";
    s += "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}\n";
    s += "h1{font-size:1.3em}h2{font-size:1.1em;margin-top:2em}\n";
    s += ".text{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;\
          word-break:break-all;line-height:1.45;border:1px solid #ccc;padding:.6em}\n";
    s += "table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right}\
          td:first-child,th:first-child{text-align:left}\n";
    s += ".scale span{display:inline-block;width:2.6em;text-align:center;font-size:11px}\n";
    for c in 0..CLASSES {
        let _ = writeln!(s, ".c{c}{{background:{}}}", heat(c));
    }
    s += "</style></head><body>\n";
    let _ = writeln!(s, "<h1>Where the bits go: {}</h1>", esc(title));
    s += "<p>Each symbol of the text is coloured by its cost in bits per byte under the \
          coded predictors (hover for its bits); the plot gives bits per byte along the \
          file for each predictor run. Costs are the ideal code lengths the coder \
          approaches; the archive adds its framing.</p>\n";
    s += "<p class=\"scale\">bits/byte: ";
    for c in 0..CLASSES {
        let lo = c as f64 * STEP;
        let label = if c + 1 == CLASSES {
            format!("{lo}+")
        } else {
            format!("{lo}")
        };
        let _ = write!(s, "<span class=\"c{c}\">{label}</span>");
    }
    s += "</p>\n";
    for sec in sections {
        section(&mut s, sec);
    }
    s += "</body></html>\n";
    s
}

fn section(s: &mut String, sec: &Section) {
    let t = &sec.trace;
    let text_bytes = t.text.len() as f64;
    let _ = writeln!(s, "<h2>{}</h2>", esc(&sec.name));
    let _ = writeln!(
        s,
        "<p>{} bytes → {} bytes ({:.4} bits/byte), {} symbols{}.</p>",
        sec.original_bytes,
        sec.archive_bytes,
        sec.archive_bytes as f64 * 8.0 / sec.original_bytes.max(1) as f64,
        t.lens.len(),
        if sec.classic_bytes > 0 {
            format!(
                "; {} bytes of binary regions coded classically, not shown",
                sec.classic_bytes
            )
        } else {
            String::new()
        }
    );
    if t.lens.is_empty() {
        // Nothing went through the model (a wholly binary file, or an empty one): no
        // predictor figures to give, rather than a table of zeros.
        *s += "<p>No text regions: nothing went through the language model.</p>\n";
        return;
    }
    *s += "<table><tr><th>predictors</th><th>bits/byte (ideal)</th></tr>\n";
    for (i, (label, bits)) in t.labels.iter().zip(&t.bits).enumerate() {
        let total: f64 = bits.iter().map(|&b| b as f64).sum();
        let _ = writeln!(
            s,
            "<tr><td><span style=\"color:{}\">■</span> {}{}</td><td>{:.4}</td></tr>",
            line_colour(i),
            esc(label),
            if i == 0 { " (coded)" } else { "" },
            total / text_bytes.max(1.0)
        );
    }
    *s += "</table>\n";
    plot(s, t);
    text_view(s, t);
}

/// The plot: bits per byte over equal stretches of the text, one line per run.
fn plot(s: &mut String, t: &Trace) {
    let n = t.lens.len();
    if n == 0 {
        return;
    }
    let bins = MAX_BINS.min(n.div_ceil(8)).max(1);
    // Bin edges by symbol index; each bin's bits over its bytes.
    let edges: Vec<usize> = (0..=bins).map(|b| b * n / bins).collect();
    let mut at_byte = Vec::with_capacity(n + 1);
    at_byte.push(0u64);
    for &l in &t.lens {
        at_byte.push(at_byte.last().copied().unwrap_or(0) + l as u64);
    }
    let series: Vec<Vec<f64>> = t
        .bits
        .iter()
        .map(|bits| {
            edges
                .windows(2)
                .map(|e| {
                    let b: f64 = bits[e[0]..e[1]].iter().map(|&x| x as f64).sum();
                    b / (at_byte[e[1]] - at_byte[e[0]]).max(1) as f64
                })
                .collect()
        })
        .collect();
    let top = series
        .iter()
        .flatten()
        .fold(1.0f64, |m, &v| m.max(v))
        .min(12.0)
        .ceil();
    let (w, h, left, bottom) = (1000.0, 280.0, 48.0, 30.0);
    let (pw, ph) = (w - left - 40.0, h - bottom - 10.0);
    let total = at_byte[n].max(1) as f64;
    let _ = writeln!(
        s,
        "<svg width=\"{w}\" height=\"{h}\" \
         font-size=\"11\" role=\"img\" aria-label=\"bits per byte along the file\">"
    );
    for k in 0..=top as usize {
        let y = 10.0 + ph * (1.0 - k as f64 / top);
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{k}</text>",
            left + pw,
            left - 6.0,
            y + 4.0
        );
    }
    let step = nice_step(total / 4.0);
    let mut tick = 0.0;
    while tick <= total {
        let x = left + pw * tick / total;
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            h - 10.0,
            bytes_label(tick)
        );
        tick += step;
    }
    let _ = writeln!(
        s,
        "<text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" \
         text-anchor=\"middle\">bits/byte</text>",
        10.0 + ph / 2.0,
        10.0 + ph / 2.0
    );
    // The coded run last, on top.
    for (i, ys) in series.iter().enumerate().rev() {
        let mut pts = String::new();
        for (b, &v) in ys.iter().enumerate() {
            let mid = (at_byte[edges[b]] + at_byte[edges[b + 1]]) as f64 / 2.0;
            let x = left + pw * mid / total;
            let y = 10.0 + ph * (1.0 - v.min(top) / top);
            let _ = write!(pts, "{x:.1},{y:.1} ");
        }
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" points=\"{}\"/>",
            line_colour(i),
            if i == 0 { 2.0 } else { 1.2 },
            pts.trim_end()
        );
    }
    *s += "</svg>\n";
}

/// The text, each symbol in the colour class of its bits per byte.
fn text_view(s: &mut String, t: &Trace) {
    let Some(bits) = t.bits.first() else {
        return;
    };
    *s += "<div class=\"text\">";
    let mut at = 0usize;
    for (&len, &b) in t.lens.iter().zip(bits) {
        if at >= MAX_SHOWN_BYTES {
            break;
        }
        let len = len as usize;
        let Some(bytes) = t.text.get(at..at + len) else {
            break;
        };
        at += len;
        let per_byte = b as f64 / len.max(1) as f64;
        let class = ((per_byte / STEP) as usize).min(CLASSES - 1);
        let _ = write!(
            s,
            "<span class=\"c{class}\" title=\"{b:.2} bits\">{}</span>",
            esc(&shown(bytes))
        );
    }
    *s += "</div>\n";
    if at < t.text.len() {
        let _ = writeln!(
            s,
            "<p>The first {at} of {} bytes are shown; the plot covers them all.</p>",
            t.text.len()
        );
    }
}

/// A symbol's bytes as text: UTF-8 where they are, other bytes as `\xNN`, control
/// characters but line ends and tabs as `␀`-style pictures.
fn shown(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' | '\t' => out.push(c),
                '\r' => out.push('␍'),
                c if (c as u32) < 0x20 => {
                    out.push(char::from_u32(0x2400 + c as u32).unwrap_or('?'));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step (1, 2 or 5 times a power of ten) of at least `x`.
fn nice_step(x: f64) -> f64 {
    let p = 10f64.powf(x.max(1.0).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&v| v >= x)
        .unwrap_or(10.0 * p)
}

fn bytes_label(b: f64) -> String {
    if b >= 1e6 {
        format!("{} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{} KB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

/// Green (cheap) through yellow to red (dear), for colour class `c`.
fn heat(c: usize) -> String {
    let x = c as f64 / (CLASSES - 1) as f64;
    let hue = 120.0 * (1.0 - x);
    format!("hsl({hue:.0},85%,{:.0}%)", 88.0 - 18.0 * x)
}

/// The line colour of run `i` (the coded run first, in black).
fn line_colour(i: usize) -> &'static str {
    const PALETTE: [&str; 10] = [
        "#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
        "#7f7f7f", "#17becf",
    ];
    PALETTE[i % PALETTE.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page of one file's section.
    fn page_of(name: &str, original: u64, archive: u64, classic: u64, trace: Trace) -> String {
        let sec = Section {
            name: name.into(),
            original_bytes: original,
            archive_bytes: archive,
            classic_bytes: classic,
            trace,
        };
        html("test", &[sec])
    }

    #[test]
    fn page_shows_every_symbol_escaped_and_a_line_per_run() {
        let text = b"a<b\xff\x00\n".to_vec();
        let trace = Trace {
            lens: vec![1, 1, 1, 1, 1, 1],
            text,
            bits: vec![vec![1.0, 2.0, 9.0, 16.0, 3.0, 0.1], vec![2.0; 6]],
            labels: vec!["llm+ngram".into(), "llm".into()],
        };
        let page = page_of("x<y.txt", 6, 10, 0, trace);
        assert!(page.contains("x&lt;y.txt"));
        assert!(page.contains(">&lt;</span>"));
        assert!(page.contains(">\\xff</span>"));
        assert!(page.contains(">␀</span>"));
        assert_eq!(page.matches("<polyline").count(), 2);
        assert!(page.contains("class=\"c15\" title=\"16.00 bits\""));
        assert!(!page.contains("<script"));
    }

    #[test]
    fn a_file_with_no_text_says_so_instead_of_a_table_of_zeros() {
        let trace = Trace {
            lens: Vec::new(),
            text: Vec::new(),
            bits: vec![Vec::new(), Vec::new()],
            labels: vec!["llm+ngram".into(), "llm".into()],
        };
        let page = page_of("kennedy.xls", 1000, 100, 1000, trace);
        assert!(page.contains("1000 bytes of binary regions coded classically"));
        assert!(page.contains("No text regions"));
        assert!(!page.contains("<table>"));
        assert!(!page.contains("<polyline"));
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(nice_step(1000.0), 1000.0);
        assert_eq!(nice_step(38_022.0), 50_000.0);
        assert_eq!(nice_step(1_600.0), 2_000.0);
        assert_eq!(nice_step(0.3), 1.0);
        assert_eq!(bytes_label(150_000.0), "150 KB");
    }
}
