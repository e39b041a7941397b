//! Properties of the parsers at the boundary, checked on generated input: whatever a person
//! types, parsing answers (never panics), and what it accepts is stable under the forms the
//! public uses for the same value.

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::{EmailAddress, PhoneNumber, Receipt};

fn config() -> Config {
    Config {
        cases: 2_000,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Text drawn mostly from the characters these parsers treat specially (digits in both
/// widths, separators, `+`, `@`, dots, Hangul, controls), so generated input reaches deep into
/// them instead of failing on the first character.
fn typed_text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '0',
        '1',
        '2',
        '8',
        '9',
        '+',
        '-',
        ' ',
        '.',
        '(',
        ')',
        '@',
        '"',
        '[',
        ']',
        '<',
        '>',
        'a',
        'Z',
        'o',
        'I',
        'l',
        '_',
        '\u{FF10}',
        '\u{FF18}',
        '\u{FF0B}',
        '\u{FF0D}',
        '\u{FF20}',
        '\u{2010}',
        '\u{2212}',
        '\u{3000}',
        '\t',
        '\n',
        '\0',
        '\u{7F}',
        '가',
        '한',
        '국',
        'ß',
        '\u{200B}',
        '\u{FEFF}',
        '\u{10FFFF}',
    ]);
    prop::collection::vec(prop_oneof![4 => special, 1 => any::<char>()], 0..40)
        .prop_map(|chars| chars.into_iter().collect())
}

/// Something like a phone number: a prefix as people write it (trunk, area or country code),
/// then digits in either width with separators between some of them. Many are valid.
fn phone_like() -> impl Strategy<Value = String> {
    let start = prop::sample::select(vec![
        "",
        "010",
        "011",
        "02",
        "031",
        "064",
        "070",
        "0505",
        "1588",
        "+82",
        "+82 10",
        "+8210",
        "+82 (0)10",
        "0082 2",
        "82 10",
        "＋８２",
        "+1 ",
    ]);
    let digit = (0u8..10, any::<bool>()).prop_map(|(d, wide)| typed_digit(d, wide));
    let gap = prop::option::weighted(
        0.25,
        prop::sample::select(vec![' ', '-', '.', '(', ')', '\u{FF0D}', '\u{2010}', 'x']),
    );
    (start, prop::collection::vec((digit, gap), 6..10)).prop_map(|(start, rest)| {
        let mut typed = start.to_owned();
        for (d, gap) in rest {
            typed.push(d);
            typed.extend(gap);
        }
        typed
    })
}

/// Something like an e-mail address: ASCII or Hangul labels, in either case and width.
fn email_like() -> impl Strategy<Value = String> {
    let local = "[a-zA-Z0-9._+-]{1,12}";
    let label = prop_oneof![
        "[a-z0-9-]{1,10}",
        "[A-Z]{1,6}",
        "[가-힣]{1,4}",
        "[ａ-ｚ]{1,4}"
    ];
    let at = prop::sample::select(vec!["@", "@", "@", "＠", "@@", ""]);
    (local, at, prop::collection::vec(label, 1..4))
        .prop_map(|(local, at, labels)| format!("{local}{at}{}", labels.join(".")))
}

/// A digit written as typed on a Korean keyboard: ASCII or full-width.
fn typed_digit(d: u8, full_width: bool) -> char {
    if full_width {
        char::from_u32(0xFF10 + u32::from(d)).unwrap_or('?')
    } else {
        char::from(b'0' + d)
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_phone_parses_or_is_refused_and_what_is_accepted_is_stable(
        input in prop_oneof![typed_text(), phone_like()],
    ) {
        if let Ok(phone) = PhoneNumber::parse(&input) {
            let e164 = phone.e164();
            prop_assert!(e164.starts_with("+82"), "{e164}");
            prop_assert_eq!(PhoneNumber::parse(&e164).map(|p| p.e164()), Ok(e164.clone()));
            prop_assert_eq!(PhoneNumber::parse(&phone.national()).map(|p| p.e164()), Ok(e164));
            // The middle group is starred out; the prefix and the last four digits stay.
            let national = phone.national();
            let masked = phone.masked();
            let groups: Vec<&str> = national.split('-').collect();
            prop_assert_eq!(groups.len(), 3);
            let stars = "*".repeat(groups[1].len());
            prop_assert_eq!(masked, format!("{}-{stars}-{}", groups[0], groups[2]));
        }
    }

    #[test]
    fn every_written_form_of_a_mobile_number_is_the_same_number(
        middle in prop::collection::vec(0u8..10, 4),
        last in prop::collection::vec(0u8..10, 4),
        form in 0usize..6,
        widths in prop::collection::vec(any::<bool>(), 13),
        padded in any::<bool>(),
    ) {
        let mut width = widths.iter().copied().cycle();
        let mut digits = |ds: &[u8]| -> String {
            ds.iter().map(|d| typed_digit(*d, width.next().unwrap_or(false))).collect()
        };
        let (m, l) = (digits(&middle), digits(&last));
        let typed = match form {
            0 => format!("010-{m}-{l}"),
            1 => format!("010{m}{l}"),
            2 => format!("+82 10 {m} {l}"),
            3 => format!("+82-10-{m}-{l}"),
            4 => format!("0082 10 {m} {l}"),
            _ => format!("＋８２ (0)10\u{FF0D}{m}\u{FF0D}{l}"),
        };
        let typed = if padded { format!("  {typed}\n") } else { typed };
        let expected = format!(
            "+8210{}{}",
            middle.iter().map(|d| char::from(b'0' + d)).collect::<String>(),
            last.iter().map(|d| char::from(b'0' + d)).collect::<String>(),
        );
        let phone = PhoneNumber::parse(&typed);
        prop_assert_eq!(phone.as_ref().map(PhoneNumber::e164), Ok(expected), "{}", typed);
        prop_assert!(phone.is_ok_and(|p| p.is_mobile()));
    }

    #[test]
    fn an_email_parses_or_is_refused_and_what_is_accepted_is_stable(
        input in prop_oneof![typed_text(), email_like()],
    ) {
        if let Ok(email) = EmailAddress::parse(&input) {
            let stored = email.as_str().to_owned();
            prop_assert!(stored.is_ascii(), "{stored}");
            let again = EmailAddress::parse(&stored);
            prop_assert_eq!(again.as_ref().map(EmailAddress::as_str), Ok(stored.as_str()));
            let shouted = EmailAddress::parse(&stored.to_ascii_uppercase());
            prop_assert_eq!(shouted.map(|e| e.normalised()), Ok(email.normalised()));
            let first = stored.chars().next().unwrap_or('*');
            prop_assert_eq!(email.masked(), format!("{first}***@{}", email.domain()));
        }
    }

    #[test]
    fn a_receipt_parses_or_is_refused(input in typed_text()) {
        if let Ok(receipt) = input.parse::<Receipt>() {
            prop_assert_eq!(receipt.as_str().parse::<Receipt>(), Ok(receipt));
        }
    }

    #[test]
    fn a_receipt_is_found_however_it_is_read_back(
        lower in any::<bool>(),
        dashes in 0usize..3,
        look_alikes in any::<bool>(),
        full_width in any::<bool>(),
        prefix in any::<bool>(),
    ) {
        let receipt = Receipt::generate();
        let mut typed: String = receipt.as_str().chars().skip(if prefix { 0 } else { 3 }).collect();
        typed = match dashes {
            0 => typed.replace('-', ""),
            1 => typed.replace('-', " "),
            _ => typed,
        };
        if look_alikes {
            typed = typed.replace('0', "O").replace('1', "l");
        }
        if lower {
            typed = typed.to_lowercase();
        }
        if full_width {
            typed = typed
                .chars()
                .map(|c| match c {
                    '!'..='~' => char::from_u32(u32::from(c) + 0xFEE0).unwrap_or(c),
                    c => c,
                })
                .collect();
        }
        prop_assert_eq!(typed.parse::<Receipt>(), Ok(receipt), "{}", typed);
    }
}

/// The generators reach the accepting side of the parsers often enough that the properties
/// above check accepted values, not only refusals.
#[test]
fn the_generated_input_is_often_valid() {
    use proptest::strategy::ValueTree as _;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut draw = |strategy: BoxedStrategy<String>| -> Vec<String> {
        (0..1_000)
            .map(|_| {
                strategy
                    .new_tree(&mut runner)
                    .map(|t| t.current())
                    .unwrap_or_default()
            })
            .collect()
    };
    let phones = draw(phone_like().boxed());
    let emails = draw(email_like().boxed());
    let valid_phones = phones
        .iter()
        .filter(|p| PhoneNumber::parse(p).is_ok())
        .count();
    let valid_emails = emails
        .iter()
        .filter(|e| EmailAddress::parse(e).is_ok())
        .count();
    assert!(valid_phones >= 50, "{valid_phones} of 1000 phones valid");
    assert!(
        valid_emails >= 200,
        "{valid_emails} of 1000 e-mail addresses valid"
    );
}
