//! Text cleaning applied before CLIP pre-tokenisation.
//!
//! open_clip's default (`clean="lower"`) pipeline is
//! `whitespace_clean(basic_clean(text)).lower()` where
//! `basic_clean(t) = html.unescape(html.unescape(ftfy.fix_text(t))).strip()`.
//! This module reproduces that pipeline: [`fix_text`] is the subset of
//! `ftfy.fix_text` described in the parent module's documentation,
//! [`html_unescape`] is a faithful port of Python's `html.unescape`, and
//! [`clean_lower`] chains everything.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// Segments longer than this many code points are split, as ftfy's `max_decode_length`.
const MAX_SEGMENT_CHARS: usize = 1_000_000;

/// Safety valve for the "repeat until nothing changes" loop of ftfy (it converges in
/// two or three passes on any real input).
const MAX_FIX_PASSES: usize = 64;

/// The full cleaning pipeline of open_clip's `_clean_lower`.
pub(super) fn clean_lower(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    whitespace_clean(&unescaped).to_lowercase()
}

/// Python's `str.isspace`: Unicode `White_Space` plus the ASCII information separators
/// U+001C..U+001F, which Python also treats as whitespace.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `" ".join(text.split())`: collapses whitespace runs to one space and strips both ends.
fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(is_py_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Python's `html.unescape`
// ---------------------------------------------------------------------------------------

/// The HTML5 named character references (`html.entities.html5`: names with and without
/// the trailing `;`), keyed without the leading `&`.
fn html5_entities() -> &'static HashMap<&'static str, &'static str> {
    static TABLE: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    TABLE.get_or_init(|| {
        entities::ENTITIES
            .iter()
            .map(|e| (e.entity.trim_start_matches('&'), e.characters))
            .collect()
    })
}

/// Windows-1252 reading of the C1 range 0x80..=0x9F, keeping the five bytes that
/// Windows-1252 leaves undefined as the C1 controls themselves. This is both ftfy's
/// "sloppy-windows-1252" for that range and Python's `html._invalid_charrefs` there.
const CP1252_C1: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
];

/// Maps a C1 control character to its Windows-1252 reading (identity outside 0x80..=0x9F).
fn cp1252_c1(c: char) -> char {
    match c as u32 {
        cp @ 0x80..=0x9F => CP1252_C1[(cp - 0x80) as usize],
        _ => c,
    }
}

/// Python's `html._replace_charref` for a numeric reference with value `num`
/// (saturated; anything above U+10FFFF behaves the same).
fn numeric_charref(num: u64, out: &mut String) {
    match num {
        0x00 => out.push('\u{fffd}'),
        0x0D => out.push('\r'),
        0x80..=0x9F => out.push(cp1252_c1(char::from_u32(num as u32).unwrap_or('\u{fffd}'))),
        0xD800..=0xDFFF => out.push('\u{fffd}'),
        n if n > 0x10_FFFF => out.push('\u{fffd}'),
        0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0xFDD0..=0xFDEF => {}
        n if n & 0xFFFE == 0xFFFE => {} // U+xFFFE and U+xFFFF of every plane
        n => out.push(char::from_u32(n as u32).unwrap_or('\u{fffd}')),
    }
}

/// Characters that may not appear in the name part of a named reference
/// (`[^\t\n\f <&#;]` in Python's `html._charref`).
fn is_charref_name_char(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';')
}

/// Tries to decode one character reference at `rest` (which starts right after a `&`).
/// Returns the number of bytes of `rest` consumed, or `None` when `_charref` would not
/// match here (the `&` is then kept literally).
fn decode_charref(rest: &str, out: &mut String) -> Option<usize> {
    let bytes = rest.as_bytes();
    if bytes.first() == Some(&b'#') {
        let (radix, start) = match bytes.get(1) {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        let digits = bytes[start..]
            .iter()
            .take_while(|b| {
                if radix == 16 {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .count();
        if digits == 0 {
            // `&#x` without hex digits, or `&#` followed by something else: no match
            // (the name alternative excludes `#`).
            return None;
        }
        let num = bytes[start..start + digits].iter().fold(0u64, |acc, &b| {
            let d = (b as char).to_digit(radix).unwrap_or(0) as u64;
            acc.saturating_mul(radix as u64)
                .saturating_add(d)
                .min(0x1_0000_0000)
        });
        numeric_charref(num, out);
        let mut used = start + digits;
        if bytes.get(used) == Some(&b';') {
            used += 1;
        }
        return Some(used);
    }

    // Named reference: up to 32 name characters, then an optional `;`.
    let mut name_end = 0;
    for (count, (i, c)) in rest.char_indices().enumerate() {
        if count == 32 || !is_charref_name_char(c) {
            break;
        }
        name_end = i + c.len_utf8();
    }
    if name_end == 0 {
        return None;
    }
    let used = if rest[name_end..].starts_with(';') {
        name_end + 1
    } else {
        name_end
    };
    let name = &rest[..used];
    let table = html5_entities();
    if let Some(value) = table.get(name) {
        out.push_str(value);
        return Some(used);
    }
    // Longest prefix (of at least two characters, never the whole name) that is a
    // known entity, as the HTML5 standard asks for legacy names without `;`.
    let boundaries: Vec<usize> = name.char_indices().map(|(i, _)| i).collect();
    for &end in boundaries.iter().skip(2).rev() {
        if let Some(value) = table.get(&name[..end]) {
            out.push_str(value);
            out.push_str(&name[end..]);
            return Some(used);
        }
    }
    out.push('&');
    out.push_str(name);
    Some(used)
}

/// Port of Python's `html.unescape`: named references from the full HTML5 table
/// (including the legacy forms without `;` and longest-prefix matching), decimal and
/// hexadecimal numeric references with the HTML5 replacement rules.
pub(super) fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match decode_charref(after, &mut out) {
            Some(used) => rest = &after[used..],
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// ftfy.fix_text (subset)
// ---------------------------------------------------------------------------------------

/// ftfy's `HTML_ENTITIES`: every HTML5 name that ends in `;` (with its `&`), plus the
/// all-caps spelling of the all-lower-case names whose caps form is not itself
/// decodable by `html.unescape` (value upper-cased too, e.g. `&SZLIG;` → `SS`).
fn ftfy_entities() -> &'static HashMap<String, String> {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = HashMap::new();
        for e in entities::ENTITIES.iter() {
            let name = e.entity.trim_start_matches('&');
            if !name.ends_with(';') {
                continue;
            }
            table.insert(e.entity.to_owned(), e.characters.to_owned());
            if name == name.to_lowercase() {
                let upper = format!("&{}", name.to_uppercase());
                if html_unescape(&upper) == upper {
                    table.insert(upper, e.characters.to_uppercase());
                }
            }
        }
        table
    })
}

/// ftfy's `unescape_html`: only unambiguous references ending in `;`
/// (`&#?[0-9A-Za-z]{1,24};`).
fn ftfy_unescape_html(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new("&#?[0-9A-Za-z]{1,24};").expect("static regex is valid"));
    re.replace_all(text, |caps: &regex::Captures<'_>| {
        let entity = &caps[0];
        if let Some(value) = ftfy_entities().get(entity) {
            value.clone()
        } else if entity.starts_with("&#") {
            let decoded = html_unescape(entity);
            // A reference that was only partly decoded is left alone.
            if decoded.contains(';') {
                entity.to_owned()
            } else {
                decoded
            }
        } else {
            entity.to_owned()
        }
    })
    .into_owned()
}

/// ftfy's `fix_latin_ligatures` table.
fn latin_ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "\u{2bc}n",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "\u{17f}t", // ſt: ftfy keeps the long s
        'ﬆ' => "st",
        _ => return None,
    })
}

/// One pass of the per-character fixers, in ftfy's order: `fix_c1_controls`,
/// `fix_latin_ligatures`, `fix_character_width`, `uncurl_quotes`. Each is a pure
/// character-to-string map, so chaining them per character equals running them one
/// after another over the whole string.
fn fix_chars(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().map(cp1252_c1) {
        match latin_ligature(c) {
            Some(parts) => parts
                .chars()
                .for_each(|c| push_width_and_quotes(c, &mut out)),
            None => push_width_and_quotes(c, &mut out),
        }
    }
    out
}

/// `fix_character_width` followed by `uncurl_quotes` for one character.
fn push_width_and_quotes(c: char, out: &mut String) {
    let cp = c as u32;
    if cp == 0x3000 {
        out.push(' ');
    } else if (0xFF01..0xFFF0).contains(&cp) {
        // Halfwidth and fullwidth forms → their NFKC form (when it differs).
        for c in std::iter::once(c).nfkc() {
            push_uncurled(c, out);
        }
    } else {
        push_uncurled(c, out);
    }
}

/// `uncurl_quotes` for one character.
fn push_uncurled(c: char, out: &mut String) {
    out.push(match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
        '\u{201c}'..='\u{201f}' => '"',
        c => c,
    });
}

/// `fix_line_breaks`: CRLF, CR, U+2028, U+2029 and NEL become `\n`.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// `remove_terminal_escapes`: ANSI CSI sequences such as `ESC[31m`.
fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_owned();
    }
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"\x1b\[[\d;]*[a-zA-Z]").expect("static regex is valid"));
    re.replace_all(text, "").into_owned()
}

/// `remove_control_chars`: the control characters ftfy deletes.
fn is_removed_control(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}

/// `ftfy.fix_and_explain` for one segment, without the mojibake (`fix_encoding`) step.
fn fix_segment(segment: &str, unescape_html: bool) -> String {
    let mut text = segment.to_owned();
    for _ in 0..MAX_FIX_PASSES {
        let mut fixed = if unescape_html {
            ftfy_unescape_html(&text)
        } else {
            text.clone()
        };
        fixed = fix_chars(&fixed);
        fixed = fix_line_breaks(&fixed);
        fixed = remove_terminal_escapes(&fixed);
        fixed.retain(|c| !is_removed_control(c));
        fixed = fixed.nfc().collect();
        if fixed == text {
            break;
        }
        text = fixed;
    }
    text
}

/// The supported subset of `ftfy.fix_text` with its default configuration. The text is
/// fixed in segments that end after each `\n` (and at most [`MAX_SEGMENT_CHARS`]
/// characters long); HTML unescaping ("auto") is turned off from the first segment that
/// contains a `<` onwards, exactly as ftfy does.
pub(super) fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape_html = true;
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        if let Some((i, _)) = rest[..end].char_indices().nth(MAX_SEGMENT_CHARS) {
            end = i;
        }
        let segment = &rest[..end];
        if unescape_html && segment.contains('<') {
            unescape_html = false;
        }
        out.push_str(&fix_segment(segment, unescape_html));
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_unescape_matches_python_semantics() {
        assert_eq!(html_unescape("no entity"), "no entity");
        assert_eq!(html_unescape("&amp;&lt;&gt;&quot;&#39;"), "&<>\"'");
        assert_eq!(html_unescape("&amp"), "&");
        assert_eq!(html_unescape("&ampx"), "&x");
        assert_eq!(html_unescape("&notit;"), "¬it;");
        assert_eq!(html_unescape("&notin;"), "∉");
        assert_eq!(html_unescape("&hellip;&mdash;&eacute;"), "…—é");
        assert_eq!(html_unescape("&NotAnEntity;"), "&NotAnEntity;");
        assert_eq!(html_unescape("&#65;&#x42;&#X43;&#100"), "ABCd");
        assert_eq!(html_unescape("&#x;&#;&#abc;"), "&#x;&#;&#abc;");
        assert_eq!(html_unescape("&#128;&#150;"), "€–");
        assert_eq!(
            html_unescape("&#0;&#xD800;&#99999999999999999999;"),
            "\u{fffd}\u{fffd}\u{fffd}"
        );
        assert_eq!(html_unescape("a&#1;b&#xFFFF;c&#x10FFFE;d"), "abcd");
        assert_eq!(html_unescape("&#13;"), "\r");
        assert_eq!(html_unescape("& &; &&amp;"), "& &; &&");
        assert_eq!(html_unescape("&amp;amp;"), "&amp;");
    }

    #[test]
    fn ftfy_unescape_is_stricter_than_python() {
        assert_eq!(ftfy_unescape_html("&amp &amp;"), "&amp &");
        assert_eq!(
            ftfy_unescape_html("P&EACUTE;REZ &SZLIG; &nTILDE;"),
            "PÉREZ SS &nTILDE;"
        );
        assert_eq!(ftfy_unescape_html("&#59; &#x2019;"), "&#59; \u{2019}");
    }

    #[test]
    fn fix_text_covers_the_common_fixes() {
        assert_eq!(
            fix_text("\u{201c}here\u{2019}s a test\u{201d}"),
            "\"here's a test\""
        );
        assert_eq!(fix_text("ﬂuﬃeﬆ ﬅ"), "fluffiest \u{17f}t");
        assert_eq!(fix_text("ＬＯＵＤ\u{3000}ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(fix_text("a\r\nb\rc\u{2028}d"), "a\nb\nc\nd");
        assert_eq!(fix_text("\u{1b}[36;44mblue\u{1b}[0m\u{0}\u{feff}"), "blue");
        assert_eq!(fix_text("e\u{301}"), "é");
        assert_eq!(fix_text("it&#x2019;s &hellip;"), "it's …");
        assert_eq!(fix_text("\u{93}quoted\u{94}"), "\"quoted\"");
        // A `<` turns ftfy's own unescaping off for that segment and the following ones.
        assert_eq!(
            fix_text("&rsquo;\n<b>&rsquo;\n&rsquo;"),
            "'\n<b>&rsquo;\n&rsquo;"
        );
    }

    #[test]
    fn clean_lower_pipeline() {
        assert_eq!(clean_lower("  Hello,\t\n WORLD!  "), "hello, world!");
        assert_eq!(clean_lower("&lt;b&gt;Bold&lt;/b&gt;"), "<b>bold</b>");
        assert_eq!(clean_lower("&amp;amp;amp;"), "&");
        // ftfy deletes U+001C, but Python's `str.split` would also treat it as a space.
        assert_eq!(clean_lower("a\u{1c}b"), "ab");
        assert_eq!(whitespace_clean("a\u{1c}b\u{a0}c\u{3000}d"), "a b c d");
        assert_eq!(clean_lower(""), "");
    }
}
