//! The bodies of the subscription routes, checked field by field so one answer names every
//! problem by its JSON path.

use std::collections::BTreeMap;

use serde::Deserialize;
use uuid::Uuid;

use crate::domain::{EmailAddress, PhoneNumber};
use crate::store::MessageChannel;

const PROVIDER_MAX: usize = 100;

/// `POST /api/v1/subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeBody {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub incident_id: Option<String>,
    pub provider: Option<String>,
    pub lang: Option<String>,
}

/// `POST /api/v1/subscriptions/confirm`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    pub id: Option<String>,
    pub code: Option<String>,
    pub token: Option<String>,
}

/// Where confirmation messages and notices go.
#[derive(Debug, Clone)]
pub enum Contact {
    Phone(PhoneNumber),
    Email(EmailAddress),
}

impl Contact {
    /// The form its keyed hash is taken of, identical to the one intake uses for reporters.
    pub fn normalised(&self) -> String {
        match self {
            Self::Phone(p) => p.e164(),
            Self::Email(e) => e.normalised(),
        }
    }

    pub fn masked(&self) -> String {
        match self {
            Self::Phone(p) => p.masked(),
            Self::Email(e) => e.masked(),
        }
    }

    pub fn channel(&self) -> MessageChannel {
        match self {
            Self::Phone(_) => MessageChannel::Sms,
            Self::Email(_) => MessageChannel::Email,
        }
    }
}

/// What the request asks to follow, before the incident is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Incident(Uuid),
    Provider(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::AsRefStr, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum Lang {
    Ko,
    En,
}

/// A subscription request with every field valid.
#[derive(Debug, Clone)]
pub struct ValidSubscribe {
    pub contact: Contact,
    pub target: Target,
    pub lang: Lang,
}

/// What the subscriber presents to confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmWith {
    Code(String),
    Token(String),
}

pub type Problems = BTreeMap<String, String>;

impl SubscribeBody {
    pub fn validate(self) -> Result<ValidSubscribe, Problems> {
        let mut problems = Problems::new();
        let mut problem = |path: &str, text: &str| {
            problems.insert(path.to_owned(), text.to_owned());
        };
        let contact = match (present(self.email), present(self.phone)) {
            (Some(_), Some(_)) => {
                problem("phone", "give either email or phone, not both");
                None
            }
            (None, None) => {
                problem("email", "give an e-mail address or a mobile phone number");
                problem("phone", "give an e-mail address or a mobile phone number");
                None
            }
            (Some(email), None) => match EmailAddress::parse(&email) {
                Ok(email) => Some(Contact::Email(email)),
                Err(e) => {
                    problem("email", &e.to_string());
                    None
                }
            },
            (None, Some(phone)) => match PhoneNumber::parse(&phone) {
                Ok(phone) if phone.is_mobile() => Some(Contact::Phone(phone)),
                Ok(_) => {
                    problem("phone", "must be a mobile number: notices are sent by SMS");
                    None
                }
                Err(e) => {
                    problem("phone", &e.to_string());
                    None
                }
            },
        };
        let target = match (present(self.incident_id), present(self.provider)) {
            (Some(_), Some(_)) => {
                problem("provider", "give either incident_id or provider, not both");
                None
            }
            (None, None) => {
                problem("incident_id", "give an incident id or a provider name");
                problem("provider", "give an incident id or a provider name");
                None
            }
            (Some(id), None) => match Uuid::try_parse(&id) {
                Ok(id) => Some(Target::Incident(id)),
                Err(_) => {
                    problem("incident_id", "is not an incident id");
                    None
                }
            },
            (None, Some(provider)) => match provider_name(&provider) {
                Ok(name) => Some(Target::Provider(name)),
                Err(why) => {
                    problem("provider", why);
                    None
                }
            },
        };
        let lang = match self.lang.as_deref().map(str::trim) {
            None | Some("") => Some(Lang::Ko),
            Some(text) => text.parse().ok().or_else(|| {
                problem("lang", "must be ko or en");
                None
            }),
        };
        match (contact, target, lang) {
            (Some(contact), Some(target), Some(lang)) if problems.is_empty() => {
                Ok(ValidSubscribe {
                    contact,
                    target,
                    lang,
                })
            }
            _ => Err(problems),
        }
    }
}

impl ConfirmBody {
    pub fn validate(self) -> Result<(Uuid, ConfirmWith), Problems> {
        let mut problems = Problems::new();
        let id = match present(self.id) {
            None => {
                problems.insert("id".into(), "is required".into());
                None
            }
            Some(text) => Uuid::try_parse(&text).ok().or_else(|| {
                problems.insert("id".into(), "is not a subscription id".into());
                None
            }),
        };
        let proof = match (present(self.code), present(self.token)) {
            (Some(_), Some(_)) => {
                problems.insert("token".into(), "give either code or token, not both".into());
                None
            }
            (None, None) => {
                problems.insert("code".into(), "give the code from the message".into());
                None
            }
            (Some(code), None) => match confirmation_code(&code) {
                Some(code) => Some(ConfirmWith::Code(code)),
                None => {
                    problems.insert("code".into(), "must be the 6-digit code".into());
                    None
                }
            },
            (None, Some(token)) => Some(ConfirmWith::Token(token)),
        };
        match (id, proof) {
            (Some(id), Some(proof)) if problems.is_empty() => Ok((id, proof)),
            _ => Err(problems),
        }
    }
}

/// A non-blank value, trimmed.
fn present(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn provider_name(text: &str) -> Result<String, &'static str> {
    if text.chars().count() > PROVIDER_MAX {
        return Err("must be at most 100 characters");
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(text.to_owned())
}

/// Six digits, as typed from an SMS: spaces and hyphens between them are ignored, full-width
/// digits accepted.
pub fn confirmation_code(text: &str) -> Option<String> {
    let mut digits = String::with_capacity(6);
    for c in text.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '０'..='９' => {
                let offset = u32::from(c) - u32::from('０');
                digits.push(char::from_digit(offset, 10)?);
            }
            ' ' | '-' => {}
            _ => return None,
        }
    }
    (digits.len() == 6).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> SubscribeBody {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_phone_subscription_to_a_provider_parses() {
        let valid = body(serde_json::json!({"phone": "010-1234-5678", "provider": " Kakao "}))
            .validate()
            .unwrap();
        assert_eq!(valid.contact.normalised(), "+821012345678");
        assert_eq!(valid.contact.channel(), MessageChannel::Sms);
        assert_eq!(valid.target, Target::Provider("Kakao".into()));
        assert_eq!(valid.lang, Lang::Ko);
    }

    #[test]
    fn every_problem_is_named() {
        let problems = body(serde_json::json!({
            "email": "a@b.kr", "phone": "010-1234-5678",
            "incident_id": "nope", "lang": "jp"
        }))
        .validate()
        .unwrap_err();
        assert!(problems.contains_key("phone"), "{problems:?}");
        assert!(problems.contains_key("incident_id"), "{problems:?}");
        assert!(problems.contains_key("lang"), "{problems:?}");
        let problems = body(serde_json::json!({"phone": "02-123-4567", "provider": "Kakao"}))
            .validate()
            .unwrap_err();
        assert!(problems["phone"].contains("mobile"), "{problems:?}");
        let problems = body(serde_json::json!({})).validate().unwrap_err();
        for path in ["email", "phone", "incident_id", "provider"] {
            assert!(problems.contains_key(path), "{path}: {problems:?}");
        }
    }

    #[test]
    fn codes_are_six_digits_as_typed() {
        assert_eq!(confirmation_code("123 456").as_deref(), Some("123456"));
        assert_eq!(confirmation_code("１２３４５６").as_deref(), Some("123456"));
        assert_eq!(confirmation_code("12345"), None);
        assert_eq!(confirmation_code("12345a"), None);
        assert_eq!(confirmation_code("1234567"), None);
    }

    #[test]
    fn confirm_takes_exactly_one_proof() {
        let id = Uuid::now_v7().to_string();
        let ok: ConfirmBody =
            serde_json::from_value(serde_json::json!({"id": id, "code": "000123"})).unwrap();
        assert_eq!(ok.validate().unwrap().1, ConfirmWith::Code("000123".into()));
        let both: ConfirmBody =
            serde_json::from_value(serde_json::json!({"id": id, "code": "1", "token": "t"}))
                .unwrap();
        assert!(both.validate().unwrap_err().contains_key("token"));
        let none: ConfirmBody = serde_json::from_value(serde_json::json!({"id": "x"})).unwrap();
        let problems = none.validate().unwrap_err();
        assert!(problems.contains_key("id") && problems.contains_key("code"));
    }
}
