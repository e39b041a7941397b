//! Korean phone numbers as people type them, normalised to E.164 (`+821012345678`).
//!
//! Accepted: mobile numbers (`010`, and the legacy `011`/`016`/`017`/`018`/`019` that some
//! people still carry), landlines (`02` for Seoul and the sixteen three-digit area codes),
//! internet phones (`070`) and personal/safe numbers (`0502`..`0508`), written domestically
//! (`010-1234-5678`, `(02) 123-4567`) or internationally (`+82 10 1234 5678`, `82-10-…`,
//! `0082 …`, `+82 (0)10 …`), with spaces, hyphens, dots or parentheses between the digits,
//! full-width digits, plus and punctuation from Korean keyboards, and surrounding whitespace.
//!
//! Rejected on purpose: representative numbers (`1588-1234`, `15xx`/`16xx`/`18xx`). They are
//! company switchboards: they cannot receive an SMS, cannot be dialled from abroad, and do not
//! identify the person reporting, so they would serve neither notification nor a lookup by
//! contact. Also rejected: toll-free `080`, premium `060`, and every other prefix not listed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Korea's country calling code.
const COUNTRY_CODE: &str = "82";
/// More digits than any Korean number plus country code and international prefix has.
const MAX_DIGITS: usize = 20;

/// A valid Korean phone number. `Debug` and `Display` show only the masked form
/// (`010-****-5678`), so it can be logged safely.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    /// National significant number: the digits after `+82`, without the trunk `0`.
    nsn: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Mobile,
    Seoul,
    Area,
    Internet,
    Personal,
}

impl Kind {
    /// Digits of the prefix in the national form, trunk `0` included (`010`, `02`, `0505`).
    fn prefix_len(self) -> usize {
        match self {
            Self::Seoul => 2,
            Self::Mobile | Self::Area | Self::Internet => 3,
            Self::Personal => 4,
        }
    }
}

/// Why a typed phone number was refused; `Display` is short enough for a 422 field message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPhone {
    #[error("phone number is empty")]
    Empty,
    #[error("not a phone number: use digits, spaces and hyphens, e.g. 010-1234-5678")]
    InvalidCharacter,
    #[error("only Korean phone numbers (+82) are accepted")]
    NotKorean,
    #[error("not a Korean phone number: expected e.g. 010-1234-5678")]
    UnknownPrefix,
    #[error("wrong number of digits for a Korean phone number: expected e.g. 010-1234-5678")]
    WrongLength,
    #[error(
        "representative numbers like 1588-1234 cannot receive messages: give a mobile or landline number"
    )]
    RepresentativeNumber,
}

impl PhoneNumber {
    /// Parse what a person typed.
    pub fn parse(input: &str) -> Result<Self, InvalidPhone> {
        let typed = Typed::read(input)?;
        let nsn = typed.national_significant()?;
        let kind = classify(nsn)?;
        Ok(Self {
            nsn: nsn.to_owned(),
            kind,
        })
    }

    /// The E.164 form, `+821012345678`: what is stored, hashed and sent to an SMS gateway.
    pub fn e164(&self) -> String {
        format!("+{COUNTRY_CODE}{}", self.nsn)
    }

    /// The domestic display form, `010-1234-5678` or `02-123-4567`.
    pub fn national(&self) -> String {
        let (prefix, middle, last) = self.groups();
        format!("{prefix}-{middle}-{last}")
    }

    /// The form logs may show: `010-****-5678`.
    pub fn masked(&self) -> String {
        let (prefix, middle, last) = self.groups();
        format!("{prefix}-{}-{last}", "*".repeat(middle.len()))
    }

    /// Mobile (`01x`) numbers are the only ones that can be relied on to receive an SMS.
    pub fn is_mobile(&self) -> bool {
        self.kind == Kind::Mobile
    }

    /// Prefix, middle group and last four digits of the national form (trunk `0` restored).
    fn groups(&self) -> (String, &str, &str) {
        let after_prefix = self.kind.prefix_len() - 1;
        let last = self.nsn.len() - 4;
        (
            format!("0{}", &self.nsn[..after_prefix]),
            &self.nsn[after_prefix..last],
            &self.nsn[last..],
        )
    }
}

/// The digits of the input and whether it began with a plus sign.
struct Typed {
    plus: bool,
    digits: String,
}

impl Typed {
    fn read(input: &str) -> Result<Self, InvalidPhone> {
        let input = input.trim();
        if input.is_empty() {
            return Err(InvalidPhone::Empty);
        }
        let mut typed = Self {
            plus: false,
            digits: String::with_capacity(16),
        };
        for c in input.chars() {
            match c {
                '0'..='9' => typed.digits.push(c),
                // Full-width digits, U+FF10..U+FF19.
                '\u{FF10}'..='\u{FF19}' => typed
                    .digits
                    .push(char::from(b'0' + (u32::from(c) - 0xFF10) as u8)),
                '+' | '\u{FF0B}' if !typed.plus && typed.digits.is_empty() => typed.plus = true,
                c if is_separator(c) => {}
                _ => return Err(InvalidPhone::InvalidCharacter),
            }
            if typed.digits.len() > MAX_DIGITS {
                return Err(InvalidPhone::WrongLength);
            }
        }
        if typed.digits.is_empty() {
            return Err(InvalidPhone::InvalidCharacter);
        }
        Ok(typed)
    }

    /// The digits after the country code without the trunk `0`, however the number was written.
    fn national_significant(&self) -> Result<&str, InvalidPhone> {
        let digits = self.digits.as_str();
        let after_country = if self.plus {
            Some(
                digits
                    .strip_prefix(COUNTRY_CODE)
                    .ok_or(InvalidPhone::NotKorean)?,
            )
        } else if let Some(rest) = digits.strip_prefix("00") {
            // `00` is the international access prefix: `0082 10 …`.
            Some(
                rest.strip_prefix(COUNTRY_CODE)
                    .ok_or(InvalidPhone::NotKorean)?,
            )
        } else {
            // No national number starts with 8, so a leading `82` can only be the country code.
            digits.strip_prefix(COUNTRY_CODE)
        };
        match after_country {
            // `+82 (0)10 …` and `+82 010 …`: the trunk 0 written after the country code.
            Some(rest) => Ok(rest.strip_prefix('0').unwrap_or(rest)),
            None => match digits.strip_prefix('0') {
                Some(rest) => Ok(rest),
                None if is_representative(digits) => Err(InvalidPhone::RepresentativeNumber),
                None => Err(InvalidPhone::UnknownPrefix),
            },
        }
    }
}

/// Characters people put between digit groups, in ASCII and full-width forms.
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '-' | '.' | '(' | ')' | '\u{2010}'
                ..='\u{2015}' // hyphens and dashes
                | '\u{2212}' // minus sign
                | '\u{FE63}' // small hyphen-minus
                | '\u{FF0D}' // full-width hyphen-minus
                | '\u{FF0E}' // full-width full stop
                | '\u{FF08}' // full-width parentheses
                | '\u{FF09}'
        )
}

/// `1588-1234` and friends: 15xx, 16xx and 18xx followed by four digits.
fn is_representative(digits: &str) -> bool {
    digits.len() == 8 && matches!(&digits[..2], "15" | "16" | "18")
}

/// Which kind of number a national significant number is, checking its length.
fn classify(nsn: &str) -> Result<Kind, InvalidPhone> {
    if is_representative(nsn) {
        return Err(InvalidPhone::RepresentativeNumber);
    }
    let bytes = nsn.as_bytes();
    // (kind, digits in the prefix after the trunk 0, allowed subscriber lengths)
    let (kind, prefix, subscriber): (Kind, usize, &[usize]) = match bytes {
        [b'1', b'0', ..] => (Kind::Mobile, 2, &[8]),
        [b'1', b'1' | b'6' | b'7' | b'8' | b'9', ..] => (Kind::Mobile, 2, &[7, 8]),
        [b'2', ..] => (Kind::Seoul, 1, &[7, 8]),
        [b'3', b'1'..=b'3', ..]
        | [b'4', b'1'..=b'4', ..]
        | [b'5', b'1'..=b'5', ..]
        | [b'6', b'1'..=b'4', ..] => (Kind::Area, 2, &[7, 8]),
        [b'7', b'0', ..] => (Kind::Internet, 2, &[8]),
        [b'5', b'0', b'2'..=b'8', ..] => (Kind::Personal, 3, &[7, 8]),
        _ => return Err(InvalidPhone::UnknownPrefix),
    };
    if subscriber.contains(&(nsn.len() - prefix)) {
        Ok(kind)
    } else {
        Err(InvalidPhone::WrongLength)
    }
}

impl FromStr for PhoneNumber {
    type Err = InvalidPhone;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

/// Deserialising parses, so a request struct can hold a `PhoneNumber` directly.
impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(input: &str) -> String {
        PhoneNumber::parse(input)
            .unwrap_or_else(|e| panic!("{input:?}: {e}"))
            .e164()
    }

    #[test]
    fn mobile_numbers_in_every_typed_form() {
        for typed in [
            "010-1234-5678",
            "01012345678",
            "010 1234 5678",
            "010.1234.5678",
            "+82 10 1234 5678",
            "+82-10-1234-5678",
            "+821012345678",
            "82-10-1234-5678",
            "821012345678",
            "0082 10 1234 5678",
            "+82 (0)10 1234 5678",
            "+82 010-1234-5678",
            "(010) 1234-5678",
            "  010-1234-5678\t",
            "\u{3000}010-1234-5678\u{3000}",
            "０１０－１２３４－５６７８",
            "＋８２ １０ １２３４ ５６７８",
            "010\u{2010}1234\u{2013}5678",
            "010\u{2212}1234\u{2212}5678",
            "010\u{00A0}1234\u{00A0}5678",
        ] {
            assert_eq!(e164(typed), "+821012345678", "{typed:?}");
        }
    }

    #[test]
    fn landlines_internet_and_personal_numbers() {
        for (typed, expected) in [
            ("(02) 123-4567", "+8221234567"),
            ("02-1234-5678", "+82212345678"),
            ("+82 2 1234 5678", "+82212345678"),
            ("031-123-4567", "+82311234567"),
            ("031-1234-5678", "+823112345678"),
            ("064-712-3456", "+82647123456"),
            ("044-200-1234", "+82442001234"),
            ("070-1234-5678", "+827012345678"),
            ("0505-123-4567", "+825051234567"),
            ("0507-1234-5678", "+8250712345678"),
            ("011-123-4567", "+82111234567"),
            ("016-1234-5678", "+821612345678"),
        ] {
            assert_eq!(e164(typed), expected, "{typed:?}");
        }
    }

    #[test]
    fn display_forms_and_masks() {
        for (typed, national, masked) in [
            ("01012345678", "010-1234-5678", "010-****-5678"),
            ("0212345678", "02-1234-5678", "02-****-5678"),
            ("021234567", "02-123-4567", "02-***-4567"),
            ("0311234567", "031-123-4567", "031-***-4567"),
            ("05051234567", "0505-123-4567", "0505-***-4567"),
            ("07012345678", "070-1234-5678", "070-****-5678"),
        ] {
            let phone = PhoneNumber::parse(typed).unwrap();
            assert_eq!(phone.national(), national);
            assert_eq!(phone.masked(), masked);
            assert_eq!(phone.to_string(), masked);
            assert_eq!(format!("{phone:?}"), format!("PhoneNumber({masked})"));
        }
    }

    #[test]
    fn only_01x_numbers_are_mobile() {
        assert!(PhoneNumber::parse("010-1234-5678").unwrap().is_mobile());
        assert!(PhoneNumber::parse("019-123-4567").unwrap().is_mobile());
        for landline in [
            "02-123-4567",
            "031-123-4567",
            "070-1234-5678",
            "0505-123-4567",
        ] {
            assert!(
                !PhoneNumber::parse(landline).unwrap().is_mobile(),
                "{landline}"
            );
        }
    }

    #[test]
    fn the_same_number_typed_differently_is_equal() {
        assert_eq!(
            PhoneNumber::parse("+82 10 1234 5678").unwrap(),
            PhoneNumber::parse("010-1234-5678").unwrap()
        );
        assert_ne!(
            PhoneNumber::parse("010-1234-5678").unwrap(),
            PhoneNumber::parse("010-1234-5679").unwrap()
        );
    }

    #[test]
    fn rejects_with_a_reason() {
        use InvalidPhone::*;
        for (typed, why) in [
            ("", Empty),
            ("   ", Empty),
            ("---", InvalidCharacter),
            ("010-1234-567a", InvalidCharacter),
            ("phone: 010-1234-5678", InvalidCharacter),
            ("010+1234+5678", InvalidCharacter),
            ("++82 10 1234 5678", InvalidCharacter),
            ("010-1234-5678 ext 3", InvalidCharacter),
            ("+1 415 555 0100", NotKorean),
            ("+81 90 1234 5678", NotKorean),
            ("001 415 555 0100", NotKorean),
            ("0044 20 7946 0000", NotKorean),
            ("010-1234-567", WrongLength),
            ("010-1234-56789", WrongLength),
            ("010-123-4567", WrongLength),
            ("02-12-3456", WrongLength),
            ("02-12345-67890", WrongLength),
            ("070-123-4567", WrongLength),
            ("+82 10 1234 567", WrongLength),
            ("0101234567801012345678", WrongLength),
            ("080-123-4567", UnknownPrefix),
            ("060-123-4567", UnknownPrefix),
            ("012-1234-5678", UnknownPrefix),
            ("035-123-4567", UnknownPrefix),
            ("0509-123-4567", UnknownPrefix),
            ("1012345678", UnknownPrefix),
            ("12345", UnknownPrefix),
            ("1588-1234", RepresentativeNumber),
            ("1644 1234", RepresentativeNumber),
            ("1800-1234", RepresentativeNumber),
            ("+82 1588 1234", RepresentativeNumber),
        ] {
            assert_eq!(PhoneNumber::parse(typed), Err(why), "{typed:?}");
        }
    }

    #[test]
    fn error_messages_suit_a_form_field() {
        let message = PhoneNumber::parse("12").unwrap_err().to_string();
        assert!(message.contains("010-1234-5678"), "{message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn deserialises_by_parsing() {
        let phone: PhoneNumber = serde_json::from_str("\"+82 10 1234 5678\"").unwrap();
        assert_eq!(phone.e164(), "+821012345678");
        let err = serde_json::from_str::<PhoneNumber>("\"1588-1234\"").unwrap_err();
        assert!(err.to_string().contains("representative"), "{err}");
    }
}
