//! E-mail addresses as the public types them.
//!
//! The syntax check is the `email_address` crate's (RFC 5321/5322 dot-atom local part, domain
//! labels, length limits), a small dependency-free crate that does one thing; lettre's
//! `Address` is tied to the mail transport and would pull it into every caller. On top of it
//! Reliefline is stricter where a looser answer would only produce undeliverable mail:
//!
//! - the address alone: no display name (`Hong <hong@example.kr>`), no `<>`, no spaces;
//! - no quoted local parts (`"hong gildong"@example.kr`) and no IP literals (`hong@[10.0.0.1]`);
//! - the part before `@` must be ASCII: non-ASCII local parts need SMTPUTF8 on every relay,
//!   and the big Korean mail providers do not issue them;
//! - the domain must be a full DNS name (`example.kr`, not `localhost`).
//!
//! Korean internationalised domains (`hong@예시.한국`) are accepted and converted to their ASCII
//! (punycode) form with UTS 46, so the stored address is deliverable by any SMTP client and the
//! Unicode and punycode spellings of one address match. Full-width characters typed on a Korean
//! keyboard (`ｈｏｎｇ＠example.kr`) are read as their ASCII counterparts.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use serde::{Deserialize, Deserializer};

/// RFC 5321: a path is at most 256 octets including the angle brackets.
const MAX_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;
/// Input longer than this is refused before any work is done on it.
const MAX_INPUT_CHARS: usize = 1024;

/// A syntactically valid e-mail address. `Debug` and `Display` show only the masked form
/// (`h***@example.kr`). Two addresses are equal when their [`normalised`](Self::normalised)
/// forms are.
#[derive(Clone)]
pub struct EmailAddress {
    /// `local@domain`: the local part as typed, the domain in lower-case ASCII.
    address: String,
    at: usize,
}

/// Why a typed e-mail address was refused; `Display` suits a 422 field message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEmail {
    #[error("e-mail address is empty")]
    Empty,
    #[error("give the e-mail address alone, e.g. hong@example.kr, without a name or <>")]
    NameOrBrackets,
    #[error("e-mail address must not contain spaces")]
    Space,
    #[error("not an e-mail address: the @ is missing")]
    MissingAt,
    #[error("e-mail address is too long: at most 254 characters, 64 of them before the @")]
    TooLong,
    #[error("the part before @ must use Latin letters, digits and symbols only")]
    NonAsciiLocalPart,
    #[error("addresses at an IP address are not accepted: use a domain name, e.g. example.kr")]
    IpLiteral,
    #[error("the part after @ is not a domain name like example.kr")]
    Domain,
    #[error("not an e-mail address: expected e.g. hong@example.kr")]
    Syntax,
}

impl EmailAddress {
    /// Parse what a person typed.
    pub fn parse(input: &str) -> Result<Self, InvalidEmail> {
        let input = input.trim();
        if input.is_empty() {
            return Err(InvalidEmail::Empty);
        }
        if input.chars().count() > MAX_INPUT_CHARS {
            return Err(InvalidEmail::TooLong);
        }
        let typed: String = input.chars().map(from_full_width).collect();
        if typed.contains(['<', '>']) {
            return Err(InvalidEmail::NameOrBrackets);
        }
        if typed.contains(char::is_whitespace) {
            return Err(InvalidEmail::Space);
        }
        let (local, domain) = typed.rsplit_once('@').ok_or(InvalidEmail::MissingAt)?;
        if local.len() > MAX_LOCAL_LEN {
            return Err(InvalidEmail::TooLong);
        }
        if !local.is_ascii() {
            return Err(InvalidEmail::NonAsciiLocalPart);
        }
        if local.starts_with('"') {
            return Err(InvalidEmail::Syntax);
        }
        if domain.starts_with('[') {
            return Err(InvalidEmail::IpLiteral);
        }
        let domain = ascii_domain(domain)?;
        let address = format!("{local}@{domain}");
        if address.len() > MAX_LEN {
            return Err(InvalidEmail::TooLong);
        }
        let options = email_address::Options::default()
            .without_display_text()
            .without_domain_literal()
            .with_required_tld();
        email_address::EmailAddress::parse_with_options(&address, options)
            .map_err(|_| InvalidEmail::Syntax)?;
        Ok(Self {
            at: local.len(),
            address,
        })
    }

    /// The address to send to: the local part as typed, the domain in lower-case ASCII.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// Lower-cased, for matching by keyed hash: `Hong@Example.KR` and `hong@example.kr` are
    /// the same person.
    pub fn normalised(&self) -> String {
        self.address.to_ascii_lowercase()
    }

    /// The form logs may show: `h***@example.kr`.
    pub fn masked(&self) -> String {
        let first = self.address.chars().next().unwrap_or('*');
        format!("{first}***{}", &self.address[self.at..])
    }

    /// The domain in ASCII form.
    pub fn domain(&self) -> &str {
        &self.address[self.at + 1..]
    }
}

/// Full-width ASCII forms (U+FF01..U+FF5E) as their ASCII characters.
fn from_full_width(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
        c => c,
    }
}

/// UTS 46 to-ASCII: lower-cases, converts Unicode labels to punycode, and checks labels are
/// letters, digits and inner hyphens within DNS length limits.
fn ascii_domain(domain: &str) -> Result<String, InvalidEmail> {
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Verify,
        )
        .map_err(|_| InvalidEmail::Domain)?;
    let tld = ascii.rsplit('.').next().unwrap_or_default();
    if !ascii.contains('.') || tld.bytes().all(|b| b.is_ascii_digit()) {
        // `localhost`, or a dotted IPv4 address written without brackets.
        return Err(InvalidEmail::Domain);
    }
    Ok(ascii.into_owned())
}

impl PartialEq for EmailAddress {
    fn eq(&self, other: &Self) -> bool {
        self.address.eq_ignore_ascii_case(&other.address)
    }
}

impl Eq for EmailAddress {}

impl Hash for EmailAddress {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.normalised().hash(state);
    }
}

impl FromStr for EmailAddress {
    type Err = InvalidEmail;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.masked())
    }
}

/// Deserialising parses, so a request struct can hold an `EmailAddress` directly.
impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> EmailAddress {
        EmailAddress::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    #[test]
    fn accepts_ordinary_addresses() {
        for (typed, stored) in [
            ("hong@example.kr", "hong@example.kr"),
            ("  hong@example.kr \n", "hong@example.kr"),
            ("Hong.GilDong@Example.CO.KR", "Hong.GilDong@example.co.kr"),
            ("hong+kakao@naver.com", "hong+kakao@naver.com"),
            (
                "o'brien_1-2@mail.example-site.com",
                "o'brien_1-2@mail.example-site.com",
            ),
            ("ｈｏｎｇ＠ｅｘａｍｐｌｅ．ｋｒ", "hong@example.kr"),
        ] {
            assert_eq!(parse(typed).as_str(), stored, "{typed:?}");
        }
    }

    #[test]
    fn normalised_form_matches_whatever_the_case() {
        let a = parse("Hong@Example.KR");
        let b = parse("hong@example.kr");
        assert_eq!(a.normalised(), "hong@example.kr");
        assert_eq!(a.normalised(), b.normalised());
        assert_eq!(a, b);
        assert_ne!(a, parse("hong2@example.kr"));
    }

    #[test]
    fn korean_domains_become_punycode() {
        let unicode = parse("hong@한국인터넷정보센터.한국");
        let domain = unicode.domain();
        assert!(domain.starts_with("xn--"), "{domain}");
        assert!(domain.ends_with(".xn--3e0b707e"), "{domain}");
        assert!(unicode.as_str().is_ascii());
        let typed_as_punycode = parse(&format!("HONG@{}", domain.to_uppercase()));
        assert_eq!(unicode, typed_as_punycode);
        assert_eq!(unicode.normalised(), typed_as_punycode.normalised());
    }

    #[test]
    fn masks_all_but_the_first_letter_and_the_domain() {
        let email = parse("hong.gildong@example.kr");
        assert_eq!(email.masked(), "h***@example.kr");
        assert_eq!(email.to_string(), "h***@example.kr");
        assert_eq!(format!("{email:?}"), "EmailAddress(h***@example.kr)");
        assert_eq!(parse("h@example.kr").masked(), "h***@example.kr");
    }

    #[test]
    fn rejects_with_a_reason() {
        use InvalidEmail::*;
        let long_local = format!("{}@example.kr", "a".repeat(65));
        let long_total = format!(
            "{}@{}.kr",
            "a".repeat(60),
            vec!["b".repeat(60); 4].join(".")
        );
        for (typed, why) in [
            ("", Empty),
            ("  ", Empty),
            ("Hong <hong@example.kr>", NameOrBrackets),
            ("<hong@example.kr>", NameOrBrackets),
            ("hong @example.kr", Space),
            ("hong@exam ple.kr", Space),
            ("hong.example.kr", MissingAt),
            (long_local.as_str(), TooLong),
            (long_total.as_str(), TooLong),
            ("홍길동@example.kr", NonAsciiLocalPart),
            ("hong@[10.0.0.1]", IpLiteral),
            ("hong@10.0.0.1", Domain),
            ("hong@localhost", Domain),
            ("hong@example..kr", Domain),
            ("hong@-example.kr", Domain),
            ("hong@exa_mple.kr", Domain),
            ("hong@exa$mple.kr", Domain),
            ("hong@", Domain),
            ("\"hong gildong\"@example.kr", Space),
            ("\"hong\"@example.kr", Syntax),
            ("@example.kr", Syntax),
            ("hong..gildong@example.kr", Syntax),
            (".hong@example.kr", Syntax),
            ("hong.@example.kr", Syntax),
            ("hong@gil@example.kr", Syntax),
            ("hong(comment)@example.kr", Syntax),
        ] {
            assert_eq!(EmailAddress::parse(typed), Err(why), "{typed:?}");
        }
    }

    #[test]
    fn length_limits_are_inclusive() {
        let local = "a".repeat(64);
        assert!(EmailAddress::parse(&format!("{local}@example.kr")).is_ok());
        // 64 + 1 + 189 = 254 characters.
        let domain = format!(
            "{}.{}.{}.kr",
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(58)
        );
        let longest = format!("{local}@{domain}");
        assert_eq!(longest.len(), 254);
        assert!(EmailAddress::parse(&longest).is_ok());
        assert_eq!(
            EmailAddress::parse(&format!("{local}@e.{domain}")),
            Err(InvalidEmail::TooLong)
        );
    }

    #[test]
    fn deserialises_by_parsing() {
        let email: EmailAddress = serde_json::from_str("\"Hong@Example.kr\"").unwrap();
        assert_eq!(email.normalised(), "hong@example.kr");
        assert!(serde_json::from_str::<EmailAddress>("\"hong\"").is_err());
    }
}
