//! Realistic harm reports: Korean names and descriptions, the services the public actually
//! reports about, every phone form the contract accepts, some e-mail-only reporters.
//!
//! A pool of bodies is rendered before the clock starts, so building JSON does not take CPU from
//! the phase being measured; each body is sent many times and each send gets its own receipt.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde::Serialize;

/// The contact a report was submitted with, kept to check the stored row against.
#[derive(Debug, Clone)]
pub enum Contact {
    Phone(String),
    Email(String),
}

/// One ready-to-send body, the contact inside it and the receipt confirmations it asks for.
#[derive(Debug, Clone)]
pub struct Sample {
    pub body: Bytes,
    pub contact: Contact,
    /// Channels (SMS, e-mail) the report asks to be told on: one confirmation each.
    pub confirmations: usize,
}

/// A report the service answered `201`, and what its store must then hold.
#[derive(Debug, Clone)]
pub struct Acknowledged {
    pub receipt: String,
    pub contact: Contact,
    pub confirmations: usize,
}

/// The JSON shape of `POST /api/v1/reports`, as a client writes it.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    incident_id: Option<&'a str>,
    provider: &'a str,
    service: &'a str,
    reporter_type: &'a str,
    harm_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurred_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_krw: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    description: String,
    reporter: Reporter<'a>,
    notify: Notify,
    consent: Consent,
}

#[derive(Serialize)]
struct Reporter<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

#[derive(Serialize)]
struct Notify {
    sms: bool,
    email: bool,
}

#[derive(Serialize)]
struct Consent {
    personal_info: bool,
}

const SERVICES: &[(&str, &str)] = &[
    ("Kakao", "KakaoTalk"),
    ("Kakao", "KakaoTalk"),
    ("Kakao", "KakaoTalk"),
    ("Kakao", "Kakao T"),
    ("Kakao", "Kakao Pay"),
    ("Kakao", "Kakao Bank"),
    ("Kakao", "Daum Mail"),
    ("Kakao", "Kakao Map"),
    ("Naver", "Naver Pay"),
    ("Naver", "Naver Mail"),
    ("Naver", "Naver Smart Store"),
    ("Toss", "Toss"),
    ("Coupang", "Coupang Eats"),
];

/// Weighted roughly as in the October 2022 reports: mostly individuals, a tenth merchants.
const REPORTER_TYPES: &[&str] = &[
    "individual",
    "individual",
    "individual",
    "individual",
    "individual",
    "individual",
    "paid_user",
    "paid_user",
    "merchant",
    "business",
];

const HARM_TYPES: &[&str] = &[
    "service_unavailable",
    "service_unavailable",
    "service_unavailable",
    "paid_service_loss",
    "business_loss",
    "data_loss",
    "payment_failure",
    "other",
];

const FAMILY: &[&str] = &[
    "김", "이", "박", "최", "정", "강", "조", "윤", "장", "임", "한", "오",
];
const GIVEN: &[&str] = &[
    "민준", "서연", "지훈", "하은", "도윤", "지우", "예준", "수아", "현우", "서윤", "길동", "영희",
];

const TITLES: &[&str] = &[
    "카카오톡 메시지 전송 불가",
    "택시 호출 후 결제 오류",
    "이모티콘 구매 후 사용 불가",
    "가게 주문 접수 중단으로 매출 손실",
    "송금이 완료되지 않았습니다",
    "사진과 파일이 사라졌어요",
];

const OPENINGS: &[&str] = &[
    "10월 15일 오후 3시 30분경부터",
    "토요일 오후부터 일요일 밤까지",
    "화재 소식이 나온 직후부터",
    "어제 저녁부터 지금까지",
];

const HARMS: &[&str] = &[
    "카카오톡으로 고객 주문을 받지 못해 하루 매출이 거의 없었습니다.",
    "택시를 호출했는데 결제가 두 번 청구되었습니다. 환불 방법을 알려주세요.",
    "유료 이모티콘 구독을 이용하지 못했습니다. 이용 기간 연장을 요청합니다.",
    "카카오페이로 보낸 송금이 확인되지 않아 거래처에 대금을 주지 못했습니다.",
    "업무용 단체 대화방이 열리지 않아 약속된 납품을 놓쳤습니다.",
    "다음 메일에 로그인할 수 없어 중요한 서류를 받지 못했습니다.",
    "가게 알림톡 발송이 멈춰 예약 손님들이 오지 않았습니다.",
];

const CLOSINGS: &[&str] = &[
    "빠른 확인 부탁드립니다.",
    "보상 기준을 알고 싶습니다.",
    "Please reply in English if possible.",
    "연락 주시면 영수증과 화면 캡처를 보내드리겠습니다.",
    "",
];

const MAIL_DOMAINS: &[&str] = &[
    "naver.com",
    "daum.net",
    "gmail.com",
    "kakao.com",
    "example.kr",
];

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

/// Full-width digits (U+FF10…): what some Korean input methods produce.
fn full_width(digits: &str) -> String {
    digits
        .chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_u32(0xFF10 + d).unwrap_or(c),
            None => c,
        })
        .collect()
}

/// A mobile number in one of the forms people type.
fn phone(rng: &mut StdRng) -> String {
    let mid = rng.random_range(1000..10000);
    let last = rng.random_range(1000..10000);
    match rng.random_range(0..5) {
        0 => format!("010-{mid}-{last}"),
        1 => format!("010{mid}{last}"),
        2 => format!("+82 10 {mid} {last}"),
        3 => full_width(&format!("010-{mid}-{last}")),
        _ => format!("010 {mid} {last}"),
    }
}

/// `count` bodies, deterministic for a seed. `incident_id`: the incident the banner form
/// pre-fills; about half the reports carry it.
pub fn pool(count: usize, seed: u64, incident_id: Option<&str>) -> Vec<Sample> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let (provider, service) = SERVICES[rng.random_range(0..SERVICES.len())];
            let harm_type = pick(&mut rng, HARM_TYPES);
            let name = format!("{}{}", pick(&mut rng, FAMILY), pick(&mut rng, GIVEN));
            // One reporter in five gives only an e-mail address, one in five gives both; the
            // phone is what a look-up would use when both are given.
            let (phone, email, contact) = match rng.random_range(0..5) {
                0 => {
                    let email = format!("user{i}.{seed}@{}", pick(&mut rng, MAIL_DOMAINS));
                    (None, Some(email.clone()), Contact::Email(email))
                }
                1 => {
                    let phone = phone(&mut rng);
                    let email = format!("r{i}@{}", pick(&mut rng, MAIL_DOMAINS));
                    (Some(phone.clone()), Some(email), Contact::Phone(phone))
                }
                _ => {
                    let phone = phone(&mut rng);
                    (Some(phone.clone()), None, Contact::Phone(phone))
                }
            };
            let money = matches!(
                harm_type,
                "paid_service_loss" | "business_loss" | "payment_failure"
            );
            let description = format!(
                "{} {} {}",
                pick(&mut rng, OPENINGS),
                pick(&mut rng, HARMS),
                pick(&mut rng, CLOSINGS)
            );
            let day = rng.random_range(15..20);
            let body = Body {
                incident_id: incident_id.filter(|_| rng.random_bool(0.5)),
                provider,
                service,
                reporter_type: pick(&mut rng, REPORTER_TYPES),
                harm_type,
                occurred_at: rng.random_bool(0.8).then(|| {
                    format!(
                        "2022-10-{day}T{:02}:{:02}:00+09:00",
                        rng.random_range(0..24),
                        rng.random_range(0..60)
                    )
                }),
                amount_krw: money.then(|| rng.random_range(1..500) * 1000),
                title: rng.random_bool(0.6).then(|| pick(&mut rng, TITLES)),
                description,
                reporter: Reporter {
                    name: &name,
                    phone: phone.clone(),
                    email: email.clone(),
                },
                notify: Notify {
                    sms: phone.is_some() && rng.random_bool(0.5),
                    email: email.is_some() && rng.random_bool(0.5),
                },
                consent: Consent {
                    personal_info: true,
                },
            };
            let confirmations = usize::from(body.notify.sms) + usize::from(body.notify.email);
            let body = serde_json::to_vec(&body)
                .map(Bytes::from)
                .unwrap_or_default();
            Sample {
                body,
                contact,
                confirmations,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use reliefline::domain::{EmailAddress, PhoneNumber};
    use reliefline::intake::ValidReport;

    use super::*;

    #[test]
    fn every_generated_report_passes_the_services_validation() {
        let incident = uuid::Uuid::now_v7().to_string();
        for sample in pool(1000, 7, Some(&incident)) {
            let body: serde_json::Value = serde_json::from_slice(&sample.body).expect("JSON");
            if let Err(fields) = ValidReport::from_json(&body, Utc::now()) {
                panic!("{body} is refused: {fields:?}");
            }
            let asked = ["sms", "email"]
                .iter()
                .filter(|c| body["notify"][**c] == true)
                .count();
            assert_eq!(sample.confirmations, asked, "{body}");
        }
    }

    #[test]
    fn contacts_come_in_every_accepted_form() {
        let samples = pool(1000, 11, None);
        let phones: Vec<&str> = samples
            .iter()
            .filter_map(|s| match &s.contact {
                Contact::Phone(p) => Some(p.as_str()),
                Contact::Email(_) => None,
            })
            .collect();
        let emails = samples
            .iter()
            .filter(|s| matches!(&s.contact, Contact::Email(e) if EmailAddress::parse(e).is_ok()))
            .count();
        assert!(emails > 100, "{emails} e-mail-only reporters");
        for (form, found) in [
            ("hyphens", phones.iter().any(|p| p.starts_with("010-"))),
            ("digits only", phones.iter().any(|p| p.len() == 11)),
            ("+82", phones.iter().any(|p| p.starts_with("+82 10 "))),
            ("full width", phones.iter().any(|p| p.starts_with('０'))),
        ] {
            assert!(found, "no phone written with {form}");
        }
        assert!(phones.iter().all(|p| PhoneNumber::parse(p).is_ok()));
        let keyed: std::collections::HashSet<_> = samples.iter().map(|s| &s.body).collect();
        assert!(
            keyed.len() > 990,
            "bodies should differ: {} distinct",
            keyed.len()
        );
    }
}
