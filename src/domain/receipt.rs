//! Receipts: what a reporter writes down or reads over the phone to find their report again.
//!
//! Sixteen Crockford base32 symbols in four groups of four behind an `HR` prefix:
//! `HR-7K3M-Q9XD-2PZA-8WNE`. The last thirteen are 65 random bits from the operating system's
//! CSPRNG, which is what makes a receipt unguessable. The first three are a clock that turns
//! every 64 ms and wraps every 35 minutes: receipts issued together sort together, so a batch
//! of reports adds its receipts to a few neighbouring pages of the store's receipt index
//! instead of one random page each (on SQLite that was most of what a commit wrote to its log).
//! Input is forgiving: any case, with or without dashes, spaces or the prefix, and the
//! look-alikes `O`, `I`, `L` read as `0`, `1`, `1`.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const PREFIX: &str = "HR";
const SYMBOLS: usize = 16;
const GROUP: usize = 4;
/// Leading symbols taken from the clock; the rest are random.
const CLOCK_SYMBOLS: usize = 3;
/// The clock's tick, in milliseconds (a power of two).
const CLOCK_TICK_MS: u64 = 64;

/// A well-formed receipt in its canonical form. Whether it exists is the store's business.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Receipt(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a receipt: expected 16 letters and digits like HR-7K3M-Q9XD-2PZA-8WNE")]
pub struct InvalidReceipt;

impl Receipt {
    /// A fresh receipt: the clock now, then 65 bits from the CSPRNG.
    pub fn generate() -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut random = [0u8; 9];
        rand::fill(&mut random);
        Self::from_parts(unix_ms, random)
    }

    /// The receipt of `random` (its first 65 bits are used) issued at `unix_ms`.
    fn from_parts(unix_ms: u64, random: [u8; 9]) -> Self {
        let random_bits = (SYMBOLS - CLOCK_SYMBOLS) * 5;
        let clock = u128::from(unix_ms / CLOCK_TICK_MS) & ((1 << (CLOCK_SYMBOLS * 5)) - 1);
        let random = random
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
            & ((1 << random_bits) - 1);
        let value = (clock << random_bits) | random;
        let symbols: Vec<u8> = (0..SYMBOLS)
            .rev()
            .map(|i| ALPHABET[((value >> (i * 5)) & 0x1f) as usize])
            .collect();
        Self::from_symbols(&symbols)
    }

    /// Parse what a person typed.
    pub fn parse(input: &str) -> Result<Self, InvalidReceipt> {
        let mut symbols = Vec::with_capacity(SYMBOLS + PREFIX.len());
        for c in input.chars() {
            if !is_separator(c) {
                symbols.push(decode_symbol(c).ok_or(InvalidReceipt)?);
            }
        }
        if symbols.len() == SYMBOLS + PREFIX.len() {
            if !symbols.starts_with(PREFIX.as_bytes()) {
                return Err(InvalidReceipt);
            }
            symbols.drain(..PREFIX.len());
        }
        if symbols.len() != SYMBOLS {
            return Err(InvalidReceipt);
        }
        Ok(Self::from_symbols(&symbols))
    }

    fn from_symbols(symbols: &[u8]) -> Self {
        let mut text = String::with_capacity(PREFIX.len() + SYMBOLS + SYMBOLS / GROUP);
        text.push_str(PREFIX);
        for group in symbols.chunks(GROUP) {
            text.push('-');
            text.extend(group.iter().map(|b| char::from(*b)));
        }
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Spaces and dashes between groups, as typed in ASCII or full width (a receipt typed on a
/// Korean keyboard in full-width mode arrives as `ＨＲ－０８ＪＸ－…`).
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE63}' | '\u{FF0D}'
        )
}

/// Map one typed character to its canonical Crockford symbol.
fn decode_symbol(c: char) -> Option<u8> {
    // Full-width forms typed on Korean keyboards: U+FF10.. digits, U+FF21.. letters.
    let c = match c {
        '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
            char::from_u32(c as u32 - 0xFEE0)?
        }
        c => c,
    };
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    let byte = u8::try_from(c).ok()?;
    ALPHABET.contains(&byte).then_some(byte)
}

impl FromStr for Receipt {
    type Err = InvalidReceipt;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Receipts grant access to a report (with the contact), so logs see only the first group.
impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Receipt({}-****-****-****)", &self.0[..7])
    }
}

impl Serialize for Receipt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_receipts_have_the_documented_shape() {
        let r = Receipt::generate();
        let s = r.as_str();
        assert_eq!(s.len(), 22);
        assert!(s.starts_with("HR-"));
        assert_eq!(s.split('-').count(), 5);
        assert!(s.split('-').skip(1).all(|g| g.len() == 4));
        assert_eq!(Receipt::parse(s).unwrap(), r);
    }

    #[test]
    fn receipts_issued_together_share_the_clock_and_differ_in_the_rest() {
        let at = 1_665_800_000_000;
        let a = Receipt::from_parts(at, [0; 9]);
        let b = Receipt::from_parts(at + CLOCK_TICK_MS - 1 - at % CLOCK_TICK_MS, [0xff; 9]);
        assert_eq!(a.as_str()[..6], b.as_str()[..6], "{a} {b}");
        // The random part fills the other thirteen symbols (65 bits): all zeros, then all ones.
        assert_eq!(&a.as_str()[6..], "0-0000-0000-0000");
        assert_eq!(&b.as_str()[6..], "Z-ZZZZ-ZZZZ-ZZZZ");
        // The next tick sorts after; the clock wraps after 2^15 ticks (about 35 minutes).
        let next = Receipt::from_parts(at + CLOCK_TICK_MS, [0; 9]);
        assert!(next.as_str() > b.as_str(), "{next} {b}");
        let wrapped = Receipt::from_parts(at + (CLOCK_TICK_MS << 15), [0; 9]);
        assert_eq!(wrapped, a);
    }

    #[test]
    fn generated_receipts_differ() {
        let set: std::collections::HashSet<_> = (0..10_000).map(|_| Receipt::generate()).collect();
        assert_eq!(set.len(), 10_000);
    }

    #[test]
    fn input_is_forgiving() {
        let canonical = Receipt::parse("HR-7K3M-Q9XD-2PZA-8WNE").unwrap();
        for typed in [
            "hr-7k3m-q9xd-2pza-8wne",
            "HR7K3MQ9XD2PZA8WNE",
            "7K3M-Q9XD-2PZA-8WNE",
            "7k3m q9xd 2pza 8wne",
            "ＨＲ－７Ｋ３Ｍ-Q9XD-2PZA-8WNE",
            "ＨＲ－７Ｋ３Ｍ－Ｑ９ＸＤ－２ＰＺＡ－８ＷＮＥ",
            "7K3M\u{2212}Q9XD\u{3000}2PZA 8WNE",
        ] {
            assert_eq!(Receipt::parse(typed).unwrap(), canonical, "{typed}");
        }
        assert_eq!(
            Receipt::parse("HR-0000-1111-1111-0000").unwrap(),
            Receipt::parse("hr-oooo-iiii-llll-OOOO").unwrap()
        );
    }

    #[test]
    fn rejects_what_is_not_a_receipt() {
        for bad in [
            "",
            "HR-",
            "HR-7K3M-Q9XD-2PZA",
            "HR-7K3M-Q9XD-2PZA-8WNEX",
            "XX-7K3M-Q9XD-2PZA-8WNE",
            "HR-7K3M-Q9XD-2PZA-8WNU",
            "HR-7K3M-Q9XD-2PZA-8WN!",
        ] {
            assert_eq!(Receipt::parse(bad), Err(InvalidReceipt), "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_secret_part() {
        let r = Receipt::parse("HR-7K3M-Q9XD-2PZA-8WNE").unwrap();
        let shown = format!("{r:?}");
        assert!(!shown.contains("Q9XD"), "{shown}");
    }
}
