//! The pages' words in Korean and English, and which of the two a request gets: `?lang=` (the
//! visible switch, remembered in the `lang` cookie) → the `lang` cookie → `Accept-Language` →
//! Korean.

use axum::http::{HeaderMap, header};

use crate::domain::{HarmType, ReportStatus, ReporterType};
use crate::incident::model::{IncidentStatus, Localized, Severity};

/// The cookie the language switch sets.
pub const LANG_COOKIE: &str = "lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    Ko,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Self::Ko => "ko",
            Self::En => "en",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        let primary = code.trim().split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("ko") {
            Some(Self::Ko)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Self::En)
        } else {
            None
        }
    }

    /// The other language, for the switch.
    pub fn other(self) -> Self {
        match self {
            Self::Ko => Self::En,
            Self::En => Self::Ko,
        }
    }

    pub fn text(self) -> &'static Text {
        match self {
            Self::Ko => &KO,
            Self::En => &EN,
        }
    }

    /// Incident text in this language; Korean when there is no English.
    pub fn pick(self, text: &Localized) -> &str {
        match self {
            Self::En => text.en.as_deref().unwrap_or(&text.ko),
            Self::Ko => &text.ko,
        }
    }

    /// The language of a request, and whether it was chosen with `?lang=` just now (then the
    /// choice is remembered in the cookie).
    pub fn negotiate(query_lang: Option<&str>, headers: &HeaderMap) -> (Self, bool) {
        if let Some(lang) = query_lang.and_then(Self::parse) {
            return (lang, true);
        }
        if let Some(lang) = super::cookie_value(headers, LANG_COOKIE).and_then(|v| Self::parse(&v))
        {
            return (lang, false);
        }
        let accept = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        (from_accept_language(accept), false)
    }
}

/// The language a page was read in is the one its notices are written in.
impl From<Lang> for crate::notify::Lang {
    fn from(lang: Lang) -> Self {
        match lang {
            Lang::Ko => Self::Ko,
            Lang::En => Self::En,
        }
    }
}

/// The supported language the client ranks highest; Korean when it names neither.
fn from_accept_language(header: &str) -> Lang {
    let mut best: Option<(f32, Lang)> = None;
    for item in header.split(',').take(32) {
        let mut parts = item.split(';');
        let Some(lang) = parts.next().and_then(Lang::parse) else {
            continue;
        };
        let quality = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if quality > 0.0 && best.is_none_or(|(q, _)| quality > q) {
            best = Some((quality, lang));
        }
    }
    best.map_or(Lang::Ko, |(_, lang)| lang)
}

/// Every string the pages show.
#[derive(Debug, serde::Serialize)]
pub struct Text {
    pub lang_name: &'static str,
    pub switch_label: &'static str,
    pub site_name: &'static str,
    pub skip_nav: &'static str,
    pub nav_home: &'static str,
    pub nav_report: &'static str,
    pub nav_lookup: &'static str,
    pub nav_status: &'static str,
    pub home_title: &'static str,
    pub home_intro: &'static str,
    pub home_no_incident: &'static str,
    pub banner_heading: &'static str,
    pub banner_report: &'static str,
    pub action_report: &'static str,
    pub action_report_hint: &'static str,
    pub action_lookup: &'static str,
    pub action_lookup_hint: &'static str,
    pub action_status: &'static str,
    pub action_status_hint: &'static str,
    pub report_title: &'static str,
    pub report_incident_title: &'static str,
    pub report_intro: &'static str,
    pub outage_window: &'static str,
    pub outage_ongoing: &'static str,
    pub affected_services: &'static str,
    pub field_provider: &'static str,
    pub field_service: &'static str,
    pub field_reporter_type: &'static str,
    pub field_harm_type: &'static str,
    pub field_occurred_at: &'static str,
    pub field_occurred_at_hint: &'static str,
    pub field_amount: &'static str,
    pub field_amount_hint: &'static str,
    pub field_title: &'static str,
    pub field_description: &'static str,
    pub field_name: &'static str,
    pub field_phone: &'static str,
    pub field_email: &'static str,
    pub contact_hint: &'static str,
    pub field_notify: &'static str,
    pub notify_sms: &'static str,
    pub notify_email: &'static str,
    pub consent: &'static str,
    pub optional: &'static str,
    pub submit_report: &'static str,
    pub form_has_errors: &'static str,
    pub busy_before: &'static str,
    pub busy_after: &'static str,
    pub busy_kept: &'static str,
    pub already_used: &'static str,
    pub error_required: &'static str,
    pub error_invalid: &'static str,
    pub error_amount: &'static str,
    pub error_occurred_at: &'static str,
    pub error_phone: &'static str,
    pub error_email: &'static str,
    pub error_contact_needed: &'static str,
    pub error_consent: &'static str,
    pub error_notify_sms: &'static str,
    pub error_notify_email: &'static str,
    pub error_too_long: &'static str,
    pub error_incident: &'static str,
    pub error_receipt: &'static str,
    pub error_contact: &'static str,
    pub receipt_title: &'static str,
    pub receipt_intro: &'static str,
    pub receipt_keep: &'static str,
    pub receipt_how_lookup: &'static str,
    pub receipt_next_heading: &'static str,
    pub receipt_next: &'static str,
    pub receipt_received_at: &'static str,
    pub lookup_title: &'static str,
    pub lookup_intro: &'static str,
    pub field_receipt: &'static str,
    pub field_receipt_hint: &'static str,
    pub field_contact: &'static str,
    pub field_contact_hint: &'static str,
    pub submit_lookup: &'static str,
    pub lookup_not_found: &'static str,
    pub lookup_status: &'static str,
    pub lookup_history: &'static str,
    pub lookup_incident: &'static str,
    pub status_title: &'static str,
    pub status_intro: &'static str,
    pub status_none: &'static str,
    pub status_started: &'static str,
    pub status_severity: &'static str,
    pub status_timeline: &'static str,
    pub status_feed: &'static str,
    pub status_report_link: &'static str,
    pub forbidden_title: &'static str,
    pub forbidden_body: &'static str,
    pub forbidden_back: &'static str,
    pub error_title: &'static str,
    pub error_body: &'static str,
    pub not_found_title: &'static str,
    pub not_found_body: &'static str,
    pub feed_title: &'static str,
    pub seconds: &'static str,
}

pub static KO: Text = Text {
    lang_name: "한국어",
    switch_label: "English",
    site_name: "장애 피해 신고센터",
    skip_nav: "본문 바로가기",
    nav_home: "처음으로",
    nav_report: "피해 신고",
    nav_lookup: "접수 확인",
    nav_status: "장애 현황",
    home_title: "서비스 장애 피해 신고",
    home_intro: "온라인 서비스 장애로 입은 피해를 신고하고, 접수번호로 처리 상황을 확인할 수 있습니다.",
    home_no_incident: "현재 진행 중인 장애가 없습니다.",
    banner_heading: "진행 중인 장애",
    banner_report: "이 장애로 인한 피해 신고하기",
    action_report: "피해 신고하기",
    action_report_hint: "장애로 입은 피해를 알려 주세요. 접수번호를 드립니다.",
    action_lookup: "내 신고 확인",
    action_lookup_hint: "접수번호와 연락처로 처리 상황을 봅니다.",
    action_status: "장애 현황",
    action_status_hint: "진행 중인 장애와 조치 상황을 봅니다.",
    report_title: "피해 신고",
    report_incident_title: "장애 피해 신고",
    report_intro: "* 표시는 필수 항목입니다. 입력하신 연락처는 암호화하여 보관합니다.",
    outage_window: "장애 기간",
    outage_ongoing: "복구 전",
    affected_services: "영향받은 서비스",
    field_provider: "사업자",
    field_service: "서비스",
    field_reporter_type: "신고인 유형",
    field_harm_type: "피해 유형",
    field_occurred_at: "피해 발생 시각",
    field_occurred_at_hint: "한국 시간(KST) 기준",
    field_amount: "금전 피해액(원)",
    field_amount_hint: "숫자만 입력하세요. 예: 250000",
    field_title: "제목",
    field_description: "피해 내용",
    field_name: "이름",
    field_phone: "휴대전화",
    field_email: "이메일",
    contact_hint: "휴대전화와 이메일 중 하나 이상을 입력하세요. 접수 확인에 필요합니다.",
    field_notify: "처리 결과 알림 받기",
    notify_sms: "문자(SMS)",
    notify_email: "이메일",
    consent: "피해 신고 처리를 위한 개인정보 수집·이용에 동의합니다.",
    optional: "선택",
    submit_report: "신고 접수하기",
    form_has_errors: "입력 내용을 확인해 주세요. 문제가 있는 항목 옆에 표시했습니다.",
    busy_before: "지금 요청이 몰려 아직 처리하지 못했습니다.",
    busy_after: "초 후에 아래 버튼을 다시 눌러 주세요.",
    busy_kept: "입력하신 내용은 그대로 남아 있습니다.",
    already_used: "이 신청서는 이미 다른 내용으로 접수되었습니다. 다시 보내면 새 신고로 접수됩니다.",
    error_required: "필수 항목입니다.",
    error_invalid: "입력 값을 확인해 주세요.",
    error_amount: "0 이상의 정수(원)로 입력해 주세요.",
    error_occurred_at: "올바른 날짜와 시각을 입력해 주세요. 미래 시각은 입력할 수 없습니다.",
    error_phone: "전화번호 형식을 확인해 주세요. 예: 010-1234-5678",
    error_email: "이메일 주소 형식을 확인해 주세요. 예: hong@example.kr",
    error_contact_needed: "휴대전화나 이메일 중 하나 이상을 입력해 주세요.",
    error_consent: "개인정보 수집·이용에 동의해야 접수할 수 있습니다.",
    error_notify_sms: "문자 알림을 받으려면 휴대전화 번호(010…)를 입력해 주세요.",
    error_notify_email: "이메일 알림을 받으려면 이메일 주소를 입력해 주세요.",
    error_too_long: "너무 깁니다. 줄여서 입력해 주세요.",
    error_incident: "해당 장애를 찾을 수 없습니다.",
    error_receipt: "접수번호 형식을 확인해 주세요. 예: HR-7K3M-Q9XD-2PZA-8WNE",
    error_contact: "휴대전화 번호나 이메일 주소를 확인해 주세요.",
    receipt_title: "신고가 접수되었습니다",
    receipt_intro: "접수번호",
    receipt_keep: "이 번호를 꼭 적어 두거나 화면을 저장해 두세요.",
    receipt_how_lookup: "[내 신고 확인]에서 접수번호와 신고 때 입력한 휴대전화 또는 이메일로 처리 상황을 확인할 수 있습니다.",
    receipt_next_heading: "앞으로의 절차",
    receipt_next: "상담원이 신고 내용을 검토하고, 필요하면 연락드립니다. 보상 기준이 확정되면 알림을 신청한 방법으로 안내해 드립니다.",
    receipt_received_at: "접수 시각",
    lookup_title: "내 신고 확인",
    lookup_intro: "접수번호와 신고 때 입력한 휴대전화 또는 이메일을 입력하세요.",
    field_receipt: "접수번호",
    field_receipt_hint: "예: HR-7K3M-Q9XD-2PZA-8WNE",
    field_contact: "휴대전화 또는 이메일",
    field_contact_hint: "신고 때 입력한 것과 같아야 합니다.",
    submit_lookup: "확인하기",
    lookup_not_found: "일치하는 신고가 없습니다. 접수번호와 연락처를 다시 확인해 주세요.",
    lookup_status: "처리 상태",
    lookup_history: "처리 이력",
    lookup_incident: "관련 장애",
    status_title: "장애 현황",
    status_intro: "진행 중인 장애와 조치 상황입니다.",
    status_none: "현재 진행 중인 장애가 없습니다.",
    status_started: "발생",
    status_severity: "심각도",
    status_timeline: "경과",
    status_feed: "Atom 피드로 구독",
    status_report_link: "이 장애로 인한 피해 신고",
    forbidden_title: "요청을 처리할 수 없습니다",
    forbidden_body: "보안 확인에 실패했습니다. 다른 사이트에서 보낸 요청이거나 신청서가 오래되었습니다. 쿠키를 허용한 뒤 신청서를 다시 열어 제출해 주세요.",
    forbidden_back: "신청서 다시 열기",
    error_title: "일시적인 문제가 생겼습니다",
    error_body: "잠시 후 다시 시도해 주세요.",
    not_found_title: "페이지를 찾을 수 없습니다",
    not_found_body: "주소를 확인하거나 처음 화면으로 돌아가세요.",
    feed_title: "장애 현황 업데이트",
    seconds: "초",
};

pub static EN: Text = Text {
    lang_name: "English",
    switch_label: "한국어",
    site_name: "Outage Harm Report Center",
    skip_nav: "Skip to content",
    nav_home: "Home",
    nav_report: "Report harm",
    nav_lookup: "Check my report",
    nav_status: "Status",
    home_title: "Report harm from a service outage",
    home_intro: "Report harm an online service outage caused you, and check on your report with its receipt.",
    home_no_incident: "No outage is in progress.",
    banner_heading: "Outage in progress",
    banner_report: "Report harm from this outage",
    action_report: "Report harm",
    action_report_hint: "Tell us what the outage cost you. You get a receipt.",
    action_lookup: "Check my report",
    action_lookup_hint: "See where your report is, with its receipt and your contact.",
    action_status: "Status",
    action_status_hint: "Outages in progress and what is being done.",
    report_title: "Report harm",
    report_incident_title: "Report harm from an outage",
    report_intro: "Fields marked * are required. Your contact details are stored encrypted.",
    outage_window: "Outage window",
    outage_ongoing: "not yet restored",
    affected_services: "Affected services",
    field_provider: "Provider",
    field_service: "Service",
    field_reporter_type: "You are",
    field_harm_type: "Kind of harm",
    field_occurred_at: "When the harm happened",
    field_occurred_at_hint: "Korea Standard Time (KST)",
    field_amount: "Money lost (KRW)",
    field_amount_hint: "Digits only, e.g. 250000",
    field_title: "Title",
    field_description: "What happened",
    field_name: "Name",
    field_phone: "Mobile phone",
    field_email: "E-mail",
    contact_hint: "Give a mobile phone or an e-mail address, or both. You need it to check your report.",
    field_notify: "Tell me about the outcome by",
    notify_sms: "Text message (SMS)",
    notify_email: "E-mail",
    consent: "I agree to the collection and use of my personal information to handle this report.",
    optional: "optional",
    submit_report: "Submit report",
    form_has_errors: "Please check your entries. Problems are marked next to each field.",
    busy_before: "The service is busy and could not take your request yet. Try again in",
    busy_after: "seconds: press the button below again.",
    busy_kept: "Everything you entered is still here.",
    already_used: "This form was already submitted with different content. Submitting again files a new report.",
    error_required: "Required.",
    error_invalid: "Please check this value.",
    error_amount: "Enter a whole number of won, 0 or more.",
    error_occurred_at: "Enter a valid date and time, not in the future.",
    error_phone: "Check the phone number, e.g. 010-1234-5678.",
    error_email: "Check the e-mail address, e.g. hong@example.kr.",
    error_contact_needed: "Give a mobile phone or an e-mail address.",
    error_consent: "We can only accept the report with your consent.",
    error_notify_sms: "Text messages need a mobile number (010…).",
    error_notify_email: "E-mail updates need an e-mail address.",
    error_too_long: "Too long; please shorten it.",
    error_incident: "No such outage.",
    error_receipt: "Check the receipt, e.g. HR-7K3M-Q9XD-2PZA-8WNE.",
    error_contact: "Check the phone number or e-mail address.",
    receipt_title: "Your report has been received",
    receipt_intro: "Receipt",
    receipt_keep: "Write this receipt down or save this page.",
    receipt_how_lookup: "Under [Check my report], the receipt and the phone or e-mail you gave show where your report is.",
    receipt_next_heading: "What happens next",
    receipt_next: "A consultant reviews your report and contacts you if needed. Once the compensation criteria are set, you are told by the means you chose.",
    receipt_received_at: "Received at",
    lookup_title: "Check my report",
    lookup_intro: "Enter your receipt and the phone or e-mail you gave with the report.",
    field_receipt: "Receipt",
    field_receipt_hint: "e.g. HR-7K3M-Q9XD-2PZA-8WNE",
    field_contact: "Phone or e-mail",
    field_contact_hint: "The same one you gave with the report.",
    submit_lookup: "Check",
    lookup_not_found: "No report matches. Please check the receipt and the contact.",
    lookup_status: "Status",
    lookup_history: "History",
    lookup_incident: "Outage",
    status_title: "Service status",
    status_intro: "Outages in progress and what is being done.",
    status_none: "No outage is in progress.",
    status_started: "Started",
    status_severity: "Severity",
    status_timeline: "Timeline",
    status_feed: "Subscribe with the Atom feed",
    status_report_link: "Report harm from this outage",
    forbidden_title: "This request cannot be processed",
    forbidden_body: "The security check failed: the request came from another site, or the form is too old. Allow cookies, open the form again and submit it.",
    forbidden_back: "Open the form again",
    error_title: "Something went wrong on our side",
    error_body: "Please try again in a moment.",
    not_found_title: "Page not found",
    not_found_body: "Check the address or go back to the home page.",
    feed_title: "Service status updates",
    seconds: "seconds",
};

impl Text {
    pub fn reporter_type(&self, t: ReporterType) -> &'static str {
        let ko = std::ptr::eq(self, &KO);
        match (t, ko) {
            (ReporterType::Individual, true) => "개인 이용자",
            (ReporterType::Individual, false) => "Individual user",
            (ReporterType::PaidUser, true) => "유료 서비스 이용자",
            (ReporterType::PaidUser, false) => "Paid-service user",
            (ReporterType::Merchant, true) => "소상공인",
            (ReporterType::Merchant, false) => "Small merchant",
            (ReporterType::Business, true) => "기업",
            (ReporterType::Business, false) => "Business",
        }
    }

    pub fn harm_type(&self, t: HarmType) -> &'static str {
        let ko = std::ptr::eq(self, &KO);
        match (t, ko) {
            (HarmType::ServiceUnavailable, true) => "서비스 이용 불가",
            (HarmType::ServiceUnavailable, false) => "Could not use the service",
            (HarmType::PaidServiceLoss, true) => "유료 서비스 손해",
            (HarmType::PaidServiceLoss, false) => "Loss on a paid service",
            (HarmType::BusinessLoss, true) => "영업 손실",
            (HarmType::BusinessLoss, false) => "Business loss",
            (HarmType::DataLoss, true) => "데이터 손실",
            (HarmType::DataLoss, false) => "Data loss",
            (HarmType::PaymentFailure, true) => "결제 오류",
            (HarmType::PaymentFailure, false) => "Payment failure",
            (HarmType::Other, true) => "기타",
            (HarmType::Other, false) => "Other",
        }
    }

    pub fn report_status(&self, s: ReportStatus) -> &'static str {
        let ko = std::ptr::eq(self, &KO);
        match (s, ko) {
            (ReportStatus::Received, true) => "접수됨",
            (ReportStatus::Received, false) => "Received",
            (ReportStatus::InReview, true) => "검토 중",
            (ReportStatus::InReview, false) => "In review",
            (ReportStatus::AwaitingReporter, true) => "신고인 답변 대기",
            (ReportStatus::AwaitingReporter, false) => "Waiting for your answer",
            (ReportStatus::Referred, true) => "분쟁조정위원회 이관",
            (ReportStatus::Referred, false) => "Referred to dispute mediation",
            (ReportStatus::Resolved, true) => "처리 완료",
            (ReportStatus::Resolved, false) => "Resolved",
            (ReportStatus::Closed, true) => "종결",
            (ReportStatus::Closed, false) => "Closed",
        }
    }

    pub fn incident_status(&self, s: IncidentStatus) -> &'static str {
        let ko = std::ptr::eq(self, &KO);
        match (s, ko) {
            (IncidentStatus::Unconfirmed, true) => "확인 중(미확정)",
            (IncidentStatus::Unconfirmed, false) => "Unconfirmed",
            (IncidentStatus::Investigating, true) => "원인 조사 중",
            (IncidentStatus::Investigating, false) => "Investigating",
            (IncidentStatus::Identified, true) => "원인 파악",
            (IncidentStatus::Identified, false) => "Cause identified",
            (IncidentStatus::Monitoring, true) => "복구 후 모니터링",
            (IncidentStatus::Monitoring, false) => "Monitoring",
            (IncidentStatus::Resolved, true) => "복구 완료",
            (IncidentStatus::Resolved, false) => "Resolved",
            (IncidentStatus::Dismissed, true) => "장애 아님",
            (IncidentStatus::Dismissed, false) => "Not an incident",
        }
    }

    pub fn severity(&self, s: Severity) -> &'static str {
        let ko = std::ptr::eq(self, &KO);
        match (s, ko) {
            (Severity::Minor, true) => "경미",
            (Severity::Minor, false) => "Minor",
            (Severity::Major, true) => "주요",
            (Severity::Major, false) => "Major",
            (Severity::Critical, true) => "심각",
            (Severity::Critical, false) => "Critical",
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(accept: &str, cookie: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_str(accept).unwrap(),
        );
        if let Some(c) = cookie {
            h.insert(header::COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn korean_unless_english_is_preferred() {
        assert_eq!(from_accept_language(""), Lang::Ko);
        assert_eq!(from_accept_language("fr-FR, de"), Lang::Ko);
        assert_eq!(from_accept_language("en-US,en;q=0.9"), Lang::En);
        assert_eq!(from_accept_language("ko-KR,ko;q=0.9,en;q=0.8"), Lang::Ko);
        assert_eq!(from_accept_language("ko;q=0.3, en;q=0.7"), Lang::En);
        assert_eq!(from_accept_language("en;q=0"), Lang::Ko);
    }

    #[test]
    fn the_switch_beats_the_cookie_which_beats_the_header() {
        let h = headers("en", Some("a=b; lang=ko"));
        assert_eq!(Lang::negotiate(None, &h), (Lang::Ko, false));
        assert_eq!(Lang::negotiate(Some("en"), &h), (Lang::En, true));
        assert_eq!(Lang::negotiate(Some("xx"), &h), (Lang::Ko, false));
        assert_eq!(
            Lang::negotiate(None, &headers("en", None)),
            (Lang::En, false)
        );
    }

    #[test]
    fn every_label_differs_between_the_languages() {
        let ko = serde_json::to_value(&KO).unwrap();
        let en = serde_json::to_value(&EN).unwrap();
        let (ko, en) = (ko.as_object().unwrap(), en.as_object().unwrap());
        assert_eq!(ko.len(), en.len());
        for (key, text) in ko {
            assert_ne!(
                Some(text),
                en.get(key),
                "{key} is the same in both languages"
            );
        }
    }
}
