//! Properties of report validation on generated bodies: any JSON gets an answer (never a
//! panic), a refusal names each bad field by a path that exists in the contract or in the body,
//! and changing some fields of a good report is blamed on those fields only.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value, json};

use super::request::tests::now;
use super::request::{
    CONSENT_FIELDS, FieldErrors, NOTIFY_FIELDS, REPORT_FIELDS, REPORTER_FIELDS, ValidReport,
    field_paths,
};

fn config() -> Config {
    Config {
        cases: 2_000,
        failure_persistence: None,
        ..Config::default()
    }
}

fn good_report() -> Value {
    json!({
        "incident_id": "0193a0c4-2f3e-7d7a-9b1e-5f2c8a4d6e10",
        "provider": "Kakao",
        "service": "카카오톡",
        "reporter_type": "merchant",
        "harm_type": "business_loss",
        "occurred_at": "2022-10-15T15:30:00+09:00",
        "amount_krw": 250_000,
        "title": "주문 접수 불가",
        "description": "카카오톡 채널 주문이 하루 종일 들어오지 않았습니다.",
        "reporter": {"name": "홍길동", "phone": "010-1234-5678", "email": "hong@example.kr"},
        "notify": {"sms": true, "email": true},
        "consent": {"personal_info": true}
    })
}

/// Strings a client might send: short text in any script, controls, blanks, valid values of
/// the report's fields, and lengths around the contract's limits.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,12}",
        ".{0,6}[\\x00-\\x1f\\x7f].{0,6}",
        Just("   ".to_owned()),
        prop::sample::select(vec![
            "individual",
            "paid_user",
            "merchant",
            "business",
            "data_loss",
            "other",
            "2022-10-15T15:30:00+09:00",
            "2999-01-01T00:00:00Z",
            "010-1234-5678",
            "+82 10 1234 5678",
            "02-123-4567",
            "1588-1234",
            "hong@example.kr",
            "hong@예시.한국",
            "0193a0c4-2f3e-7d7a-9b1e-5f2c8a4d6e10",
            "not-a-uuid",
        ])
        .prop_map(str::to_owned),
        (0usize..5_200).prop_map(|n| "가".repeat(n)),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![0_i64, -1, 1, 1_000_000_000_000, 1_000_000_000_001])
            .prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object key: most often one the contract uses somewhere, so generated bodies get past
/// the unknown-field check into the fields' own checks.
fn key() -> impl Strategy<Value = String> {
    let names: Vec<&str> = [
        REPORT_FIELDS,
        REPORTER_FIELDS,
        NOTIFY_FIELDS,
        CONSENT_FIELDS,
    ]
    .concat();
    prop_oneof![
        3 => prop::sample::select(names).prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
    ]
}

/// Every path the contract knows, plus a few it does not.
fn path() -> impl Strategy<Value = String> {
    let known: Vec<String> = field_paths()
        .chain(["colour", "reporter.age", "notify.push", "consent.marketing"].map(String::from))
        .collect();
    prop::sample::select(known)
}

/// `path` set to `value` (removed for `None`); `false` where its parent is not an object.
fn set(body: &mut Value, path: &str, value: Option<Value>) -> bool {
    let (parent, key) = match path.split_once('.') {
        Some((parent, key)) => match body.get_mut(parent) {
            Some(Value::Object(obj)) => (obj, key),
            _ => return false,
        },
        None => match body {
            Value::Object(obj) => (obj, path),
            _ => return false,
        },
    };
    match value {
        Some(value) => parent.insert(key.to_owned(), value),
        None => parent.remove(key),
    };
    true
}

/// A path a refusal may name for `body`: one the contract knows, or a key the body has.
fn is_nameable(path: &str, body: &Value) -> bool {
    let known = |fields: &[&str], name: &str| fields.contains(&name);
    let in_body = || match path.split_once('.') {
        Some((parent, key)) => body.get(parent).and_then(|p| p.get(key)).is_some(),
        None => body.get(path).is_some(),
    };
    let contract = match path.split_once('.') {
        Some(("reporter", f)) => known(REPORTER_FIELDS, f),
        Some(("notify", f)) => known(NOTIFY_FIELDS, f),
        Some(("consent", f)) => known(CONSENT_FIELDS, f),
        Some(_) => false,
        None => path == "$" || known(REPORT_FIELDS, path),
    };
    contract || in_body()
}

fn top(path: &str) -> &str {
    path.split_once('.').map_or(path, |(top, _)| top)
}

/// The kind of value the contract wants at `path`, if the path is the contract's.
fn wants(path: &str) -> Option<&'static str> {
    match path {
        "amount_krw" => Some("integer"),
        "reporter" | "notify" | "consent" => Some("object"),
        "notify.sms" | "notify.email" | "consent.personal_info" => Some("boolean"),
        p if is_nameable(p, &Value::Null) && p != "$" => Some("string"),
        _ => None,
    }
}

fn is_kind(value: &Value, kind: &str) -> bool {
    match kind {
        "integer" => value.is_i64() || value.is_u64(),
        "object" => value.is_object(),
        "boolean" => value.is_boolean(),
        _ => value.is_string(),
    }
}

fn validate(body: &Value) -> Result<ValidReport, FieldErrors> {
    ValidReport::from_json(body, now())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_json_is_answered_with_paths_that_exist(body in json_value()) {
        match validate(&body) {
            Ok(report) => prop_assert!(!report.description.is_empty()),
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for path in errors.keys() {
                    prop_assert!(is_nameable(path, &body), "{path} named for {body}");
                }
            }
        }
    }

    #[test]
    fn changing_a_good_report_is_blamed_on_the_changed_fields(
        changes in prop::collection::vec((path(), prop::option::weighted(0.8, json_value())), 1..4),
    ) {
        let mut body = good_report();
        prop_assert!(validate(&body).is_ok());
        let mut changed = Vec::new();
        for (path, value) in changes {
            if set(&mut body, &path, value.clone()) {
                changed.push((path, value));
            }
        }
        let errors = validate(&body).err().unwrap_or_default();
        // A contact and the channel that needs it are judged together.
        let linked = |t: &str| matches!(t, "reporter" | "notify");
        for path in errors.keys() {
            let blamed = changed.iter().any(|(p, _)| {
                top(p) == top(path) || (linked(top(p)) && linked(top(path)))
            });
            prop_assert!(blamed, "{path} blamed, but only {changed:?} changed: {errors:?}");
        }
        // A value of the wrong kind, or a field the contract does not have, is named exactly
        // (unless a later change replaced what holds it).
        for (path, value) in &changed {
            let still_there = match path.split_once('.') {
                Some((parent, key)) => body.get(parent).and_then(|p| p.get(key)) == value.as_ref(),
                None => body.get(path.as_str()) == value.as_ref(),
            };
            let Some(value) = value.as_ref().filter(|v| !v.is_null() && still_there) else {
                continue;
            };
            let wrong = wants(path).is_none_or(|kind| !is_kind(value, kind));
            if wrong {
                prop_assert!(errors.contains_key(path), "{path} = {value} not named: {errors:?}");
            }
        }
    }
}
