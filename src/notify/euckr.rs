//! Korean SMS sizes are counted in EUC-KR bytes: a short SMS holds 90 bytes (45 Hangul
//! syllables), a long LMS 2,000. A text is cut at a character boundary, never in the middle of a
//! Korean character.

use encoding_rs::EUC_KR;

/// Largest short message, in EUC-KR bytes.
pub const SMS_MAX_BYTES: usize = 90;
/// Largest long message the gateways take, in EUC-KR bytes.
pub const LMS_MAX_BYTES: usize = 2_000;

/// Which product the gateway bills: short SMS or long LMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SmsKind {
    #[serde(rename = "SMS")]
    Sms,
    #[serde(rename = "LMS")]
    Lms,
}

impl SmsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "SMS",
            Self::Lms => "LMS",
        }
    }
}

const HANGUL_SYLLABLES: std::ops::RangeInclusive<char> = '\u{AC00}'..='\u{D7A3}';

/// Bytes `c` takes in EUC-KR. A character EUC-KR cannot express is sent as a numeric character
/// reference (`&#NNNN;`), as the encoder writes it, so it is counted at that length.
pub fn char_len(c: char) -> usize {
    if c.is_ascii() {
        return 1;
    }
    // Every precomposed Hangul syllable takes two bytes (the encoder is the WHATWG one, which
    // covers all 11,172 of them); they are most of a Korean message, so skip the encoder.
    if HANGUL_SYLLABLES.contains(&c) {
        return 2;
    }
    encoded_len(c).unwrap_or_else(|| format!("&#{};", u32::from(c)).len())
}

/// Bytes the encoder writes for `c`; `None` when EUC-KR cannot express it.
fn encoded_len(c: char) -> Option<usize> {
    let mut buf = [0u8; 4];
    let (bytes, _, unmappable) = EUC_KR.encode(c.encode_utf8(&mut buf));
    (!unmappable).then_some(bytes.len())
}

/// Length of `text` in EUC-KR bytes.
pub fn byte_len(text: &str) -> usize {
    text.chars().map(char_len).sum()
}

/// The longest prefix of `text` that fits in `max` EUC-KR bytes, ending on a whole character.
pub fn truncate(text: &str, max: usize) -> &str {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        used += char_len(c);
        if used > max {
            return &text[..at];
        }
    }
    text
}

/// The text to send and its kind: SMS when it fits in 90 bytes, else LMS, cut (with an
/// ellipsis) to the LMS limit.
pub fn fit(text: &str) -> (String, SmsKind) {
    let len = byte_len(text);
    if len <= SMS_MAX_BYTES {
        return (text.to_owned(), SmsKind::Sms);
    }
    if len <= LMS_MAX_BYTES {
        return (text.to_owned(), SmsKind::Lms);
    }
    const ELLIPSIS: &str = "…";
    let kept = truncate(text, LMS_MAX_BYTES - char_len('…'));
    (format!("{}{ELLIPSIS}", kept.trim_end()), SmsKind::Lms)
}

/// `text` (`text_bytes` long in EUC-KR) with `line` added when the result still fits in an
/// LMS; `text` alone otherwise. Only `line` is measured.
pub fn append_if_fits(text: &str, text_bytes: usize, line: &str) -> String {
    if text_bytes + 1 + byte_len(line) <= LMS_MAX_BYTES {
        format!("{text}\n{line}")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hangul_shortcut_agrees_with_the_encoder() {
        for c in HANGUL_SYLLABLES {
            assert_eq!(encoded_len(c), Some(char_len(c)), "{c}");
        }
    }

    #[test]
    fn hangul_takes_two_bytes_and_ascii_one() {
        assert_eq!(byte_len("가"), 2);
        assert_eq!(byte_len("abc"), 3);
        assert_eq!(byte_len("장애 안내"), 9);
        // Not in EUC-KR: counted as the character reference the encoder sends.
        assert_eq!(byte_len("😀"), "&#128512;".len());
    }

    #[test]
    fn ninety_bytes_is_an_sms_and_one_more_an_lms() {
        let forty_five = "가".repeat(45);
        assert_eq!(byte_len(&forty_five), 90);
        assert_eq!(fit(&forty_five).1, SmsKind::Sms);
        let over = format!("{forty_five}a");
        assert_eq!(byte_len(&over), 91);
        assert_eq!(fit(&over).1, SmsKind::Lms);
        // 89 bytes of ASCII plus one Hangul syllable is 91: LMS, though only 90 characters.
        let mixed = format!("{}가", "a".repeat(89));
        assert_eq!(mixed.chars().count(), 90);
        assert_eq!(fit(&mixed).1, SmsKind::Lms);
    }

    #[test]
    fn truncation_never_splits_a_korean_character() {
        let text = format!("a{}", "한".repeat(10));
        // 1 + 2k bytes: an even limit falls in the middle of a syllable and must drop it.
        let cut = truncate(&text, 10);
        assert_eq!(cut, format!("a{}", "한".repeat(4)));
        assert_eq!(byte_len(cut), 9);
        assert_eq!(truncate(&text, 11), format!("a{}", "한".repeat(5)));
        assert_eq!(truncate(&text, 1_000), text);
        assert_eq!(truncate("한", 1), "");
    }

    #[test]
    fn overlong_text_is_cut_to_the_lms_limit() {
        let text = "복구 작업이 진행 중입니다. ".repeat(200);
        let (sent, kind) = fit(&text);
        assert_eq!(kind, SmsKind::Lms);
        assert!(byte_len(&sent) <= LMS_MAX_BYTES);
        assert!(sent.ends_with('…'));
        assert!(
            byte_len(&sent) > LMS_MAX_BYTES - 20,
            "cut close to the limit"
        );
    }

    #[test]
    fn a_line_is_added_only_when_it_fits() {
        let url = "https://example.kr/unsubscribe/x";
        let short = "짧은 안내";
        assert_eq!(
            append_if_fits(short, byte_len(short), url),
            format!("{short}\n{url}")
        );
        // 1,990 bytes: with the line break and the 32-byte link, 2,023 > 2,000.
        let long = "가".repeat(995);
        assert_eq!(append_if_fits(&long, byte_len(&long), url), long);
        // Exactly at the limit still fits: 1,967 + 1 + 32 = 2,000.
        let edge = "a".repeat(LMS_MAX_BYTES - 1 - url.len());
        assert!(append_if_fits(&edge, edge.len(), url).ends_with(url));
        let over = "a".repeat(LMS_MAX_BYTES - url.len());
        assert_eq!(append_if_fits(&over, over.len(), url), over);
    }
}
