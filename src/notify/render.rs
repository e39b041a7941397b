//! Message rendering: Korean and English templates (`templates/{ko,en}/*.txt`, each defining
//! the macros `subject`, `text` and `sms`) and one HTML layout for the e-mail's HTML part.
//!
//! Incident updates are the statutory outage notice, sent to every subscriber and linked
//! reporter: the incident is loaded once per (update, language) and the rendered parts are
//! cached, so a million messages cost one query and one rendering.

use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;
use minijinja::{Environment, context};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::Keys;
use crate::incident::model::IncidentStatus;
use crate::store::{DynStore, IncidentRecord, MessageChannel, OutboxMessage, Timestamp};

/// Rendered incident notices kept: one entry per (update, language).
const NOTICE_CACHE_ENTRIES: u64 = 1_000;
const NOTICE_CACHE_TTL: Duration = Duration::from_secs(600);

/// The languages messages are written in; anything else falls back to Korean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    Ko,
    En,
}

impl Lang {
    pub fn parse(text: &str) -> Self {
        if text.trim().eq_ignore_ascii_case("en") {
            Self::En
        } else {
            Self::Ko
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ko => "ko",
            Self::En => "en",
        }
    }
}

/// A message ready for either channel. The e-mail parts are shared: a fan-out sends one notice
/// to many recipients, and an SMS copy needs none of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: Arc<str>,
    pub text: Arc<str>,
    pub html: Arc<str>,
    /// The SMS text before the SMS/LMS decision and its truncation.
    pub sms: String,
    /// One-click unsubscribe target for subscription mail (RFC 8058).
    pub unsubscribe_url: Option<String>,
}

/// Why a message cannot be rendered: a permanent failure, retrying would not help.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unknown template {0:?}")]
    UnknownTemplate(String),
    #[error("payload of {template} is missing or has a bad {field}")]
    BadPayload {
        template: &'static str,
        field: &'static str,
    },
    #[error("incident {0} or its update no longer exists")]
    MissingIncident(Uuid),
    #[error("template error: {0}")]
    Template(#[from] minijinja::Error),
    /// The store could not be read: transient.
    #[error("store unavailable: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A failure shared by everyone waiting for the same cached notice.
    #[error(transparent)]
    Shared(Arc<RenderError>),
}

impl RenderError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(_) => true,
            Self::Shared(inner) => inner.is_transient(),
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct ReceiptPayload {
    receipt: String,
    provider: String,
    service: String,
    received_at: String,
}

#[derive(Deserialize)]
struct StatusPayload {
    receipt: String,
    status: String,
    note: Option<String>,
}

#[derive(Deserialize)]
struct IncidentPayload {
    incident_id: Uuid,
    update_id: Uuid,
    /// Sent to a subscriber: the subscription, for its unsubscribe link.
    subscription_id: Option<Uuid>,
    /// Sent to a reporter: the report, for its stop link.
    report_id: Option<Uuid>,
}

#[derive(Deserialize)]
struct SubscriptionPayload {
    subscription_id: Uuid,
    code: String,
    scope: String,
}

/// Everything templates link to or name besides the payload.
#[derive(Debug, Clone)]
pub struct RenderSettings {
    pub public_base_url: String,
    pub contact_phone: String,
    pub contact_url: String,
}

#[derive(Clone)]
pub struct Renderer {
    env: Arc<Environment<'static>>,
    store: DynStore,
    keys: Arc<Keys>,
    settings: Arc<RenderSettings>,
    notices: moka::future::Cache<(Uuid, Lang), Arc<Notice>>,
    /// Stands for a recipient's stop link in [`Notice::html_with_slot`]; random per process, so
    /// no incident text can contain it.
    link_slot: Arc<str>,
    /// [`Self::link_slot`] as the HTML shows it.
    link_slot_html: Arc<str>,
}

/// An outage notice rendered once per update and language, with what makes each recipient's
/// copy cheap: the HTML with its stop line in place (the link a slot), and the SMS length.
struct Notice {
    rendered: Rendered,
    html_with_slot: String,
    sms_bytes: usize,
}

macro_rules! template_files {
    ($($name:literal),+ $(,)?) => {
        [$(($name, include_str!(concat!("templates/", $name)))),+]
    };
}

const TEMPLATES: [(&str, &str); 9] = template_files!(
    "ko/receipt_confirmation.txt",
    "en/receipt_confirmation.txt",
    "ko/report_status.txt",
    "en/report_status.txt",
    "ko/incident_update.txt",
    "en/incident_update.txt",
    "ko/subscription_confirm.txt",
    "en/subscription_confirm.txt",
    "layout.html",
);

impl Renderer {
    pub fn new(
        store: DynStore,
        keys: Arc<Keys>,
        settings: &RenderSettings,
    ) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|e| anyhow::anyhow!("notification template {name}: {e}"))?;
        }
        let base = settings.public_base_url.trim_end_matches('/').to_owned();
        let link_slot = format!("https://link-slot.invalid/{}", Uuid::new_v4().simple());
        let settings = RenderSettings {
            contact_url: if settings.contact_url.trim().is_empty() {
                format!("{base}/status")
            } else {
                settings.contact_url.trim().to_owned()
            },
            contact_phone: settings.contact_phone.trim().to_owned(),
            public_base_url: base,
        };
        Ok(Self {
            env: Arc::new(env),
            store,
            keys,
            settings: Arc::new(settings),
            notices: moka::future::Cache::builder()
                .max_capacity(NOTICE_CACHE_ENTRIES)
                .time_to_live(NOTICE_CACHE_TTL)
                .build(),
            link_slot_html: minijinja::HtmlEscape(&link_slot).to_string().into(),
            link_slot: link_slot.into(),
        })
    }

    /// Render `message` in its language.
    pub async fn render(&self, message: &OutboxMessage) -> Result<Rendered, RenderError> {
        let lang = Lang::parse(&message.lang);
        let base = &self.settings.public_base_url;
        match message.template.as_str() {
            "receipt_confirmation" => {
                let p: ReceiptPayload = payload(&message.payload, "receipt_confirmation")?;
                let received_at = chrono::DateTime::parse_from_rfc3339(&p.received_at)
                    .map(|t| local_time(t.to_utc()))
                    .unwrap_or(p.received_at);
                self.render_template(
                    lang,
                    "receipt_confirmation",
                    context! {
                        receipt => p.receipt, provider => p.provider, service => p.service,
                        received_at, base_url => base,
                    },
                    Some(message.channel),
                )
            }
            "report_status" => {
                let p: StatusPayload = payload(&message.payload, "report_status")?;
                self.render_template(
                    lang,
                    "report_status",
                    context! {
                        receipt => p.receipt, status => report_status_label(lang, &p.status),
                        note => p.note.filter(|n| !n.trim().is_empty()), base_url => base,
                    },
                    Some(message.channel),
                )
            }
            "subscription_confirm" => {
                let p: SubscriptionPayload = payload(&message.payload, "subscription_confirm")?;
                let confirm_url =
                    crate::subscribe::confirm_url(base, &self.keys, p.subscription_id);
                self.render_template(
                    lang,
                    "subscription_confirm",
                    context! { code => p.code, scope => p.scope, confirm_url },
                    Some(message.channel),
                )
            }
            "incident_update" => {
                let p: IncidentPayload = payload(&message.payload, "incident_update")?;
                let notice = self.notice(p.incident_id, p.update_id, lang).await?;
                let mut rendered = notice.rendered.clone();
                let stop_url = match (p.subscription_id, p.report_id) {
                    (Some(subscription), _) => Some(crate::subscribe::unsubscribe_url(
                        base,
                        &self.keys,
                        subscription,
                    )),
                    (None, Some(report)) => {
                        Some(crate::subscribe::stop_notices_url(base, &self.keys, report))
                    }
                    (None, None) => None,
                };
                // The link goes into the forms the message's channel sends, and only those:
                // this runs once per recipient of a fan-out, so nothing here renders a template
                // or measures the whole text again.
                if let Some(url) = stop_url {
                    match message.channel {
                        MessageChannel::Email => {
                            rendered.text =
                                format!("{}\n\n{}", rendered.text, stop_line(lang, &url)).into();
                            let escaped = minijinja::HtmlEscape(&url).to_string();
                            rendered.html = notice
                                .html_with_slot
                                .replace(&*self.link_slot_html, &escaped)
                                .into();
                        }
                        MessageChannel::Sms => {
                            let short = match lang {
                                Lang::Ko => format!("수신거부 {url}"),
                                Lang::En => format!("Stop: {url}"),
                            };
                            rendered.sms = super::euckr::append_if_fits(
                                &rendered.sms,
                                notice.sms_bytes,
                                &short,
                            );
                        }
                    }
                    rendered.unsubscribe_url = Some(url);
                }
                Ok(rendered)
            }
            other => Err(RenderError::UnknownTemplate(other.to_owned())),
        }
    }

    /// The outage notice for one update, rendered once per language.
    async fn notice(
        &self,
        incident_id: Uuid,
        update_id: Uuid,
        lang: Lang,
    ) -> Result<Arc<Notice>, RenderError> {
        let this = self.clone();
        self.notices
            .try_get_with((update_id, lang), async move {
                let record = this
                    .store
                    .find_incident(incident_id)
                    .await?
                    .ok_or(RenderError::MissingIncident(incident_id))?;
                let rendered = this.render_notice(&record, update_id, lang)?;
                let with_line =
                    format!("{}\n\n{}", rendered.text, stop_line(lang, &this.link_slot));
                Ok(Arc::new(Notice {
                    html_with_slot: this.html(lang, &rendered.subject, &with_line)?,
                    sms_bytes: super::euckr::byte_len(&rendered.sms),
                    rendered,
                }))
            })
            .await
            .map_err(RenderError::Shared)
    }

    fn render_notice(
        &self,
        record: &IncidentRecord,
        update_id: Uuid,
        lang: Lang,
    ) -> Result<Rendered, RenderError> {
        let incident = &record.incident;
        let Some(position) = record.updates.iter().position(|u| u.id == update_id) else {
            return Err(RenderError::MissingIncident(incident.id));
        };
        // The notice tells what was known when this update was posted.
        let updates = &record.updates[..=position];
        let latest = &updates[position];
        let pick = |ko: &str, en: Option<&str>| match lang {
            Lang::Ko => ko.to_owned(),
            Lang::En => en.unwrap_or(ko).to_owned(),
        };
        let lines: Vec<_> = updates
            .iter()
            .map(|u| {
                context! {
                    at => local_time(u.at),
                    status => incident_status_label(lang, u.status),
                    message => pick(&u.message.ko, u.message.en.as_deref()),
                }
            })
            .collect();
        let provider = incident.provider.clone().unwrap_or_else(|| match lang {
            Lang::Ko => "(확인 중)".to_owned(),
            Lang::En => "(being identified)".to_owned(),
        });
        self.render_template(
            lang,
            "incident_update",
            context! {
                provider,
                title => pick(&incident.title.ko, incident.title.en.as_deref()),
                services => incident.services.join(", "),
                started_at => local_time(incident.started_at),
                status => incident_status_label(lang, latest.status),
                latest => pick(&latest.message.ko, latest.message.en.as_deref()),
                updates => lines,
                contact_phone => &self.settings.contact_phone,
                contact_url => &self.settings.contact_url,
                status_url => format!("{}/status", self.settings.public_base_url),
            },
            None,
        )
    }

    /// Render a template's parts: all of them (`None`, a notice shared by both channels) or
    /// only what `channel` sends. An SMS needs neither the e-mail's text nor its HTML layout,
    /// which is most of the work, and an e-mail needs no SMS text.
    fn render_template(
        &self,
        lang: Lang,
        name: &str,
        ctx: minijinja::Value,
        channel: Option<MessageChannel>,
    ) -> Result<Rendered, RenderError> {
        let template = self
            .env
            .get_template(&format!("{}/{name}.txt", lang.as_str()))?;
        let captured = template.render_captured(ctx)?;
        let state = captured.state();
        let part = |name: &str| -> Result<String, RenderError> {
            Ok(state.call_macro(name, &[])?.trim().to_owned())
        };
        let (email, sms) = match channel {
            None => (true, true),
            Some(MessageChannel::Email) => (true, false),
            Some(MessageChannel::Sms) => (false, true),
        };
        let mut rendered = Rendered {
            subject: Arc::from(""),
            text: Arc::from(""),
            html: Arc::from(""),
            sms: String::new(),
            unsubscribe_url: None,
        };
        if email {
            let subject = part("subject")?;
            let text = part("text")?;
            rendered.html = self.html(lang, &subject, &text)?.into();
            rendered.subject = subject.into();
            rendered.text = text.into();
        }
        if sms {
            rendered.sms = part("sms")?;
        }
        Ok(rendered)
    }

    /// The HTML part: the text's paragraphs, escaped, with its links made clickable.
    fn html(&self, lang: Lang, subject: &str, text: &str) -> Result<String, RenderError> {
        let paragraphs: Vec<Vec<Line<'_>>> = text
            .split("\n\n")
            .map(|p| p.lines().map(Line::split).collect())
            .collect();
        Ok(self.env.get_template("layout.html")?.render(context! {
            lang => lang.as_str(), subject, paragraphs,
        })?)
    }
}

/// The line an e-mail notice ends with: how to stop these notices.
fn stop_line(lang: Lang, url: &str) -> String {
    match lang {
        Lang::Ko => format!("이 알림을 그만 받으려면: {url}"),
        Lang::En => format!("To stop these notices: {url}"),
    }
}

/// A line of text around its first link.
#[derive(Serialize)]
struct Line<'a> {
    before: &'a str,
    url: Option<&'a str>,
    after: &'a str,
}

impl<'a> Line<'a> {
    fn split(line: &'a str) -> Self {
        let start = line.find("https://").or_else(|| line.find("http://"));
        match start {
            Some(start) => {
                let rest = &line[start..];
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                Self {
                    before: &line[..start],
                    url: Some(&rest[..end]),
                    after: &rest[end..],
                }
            }
            None => Self {
                before: line,
                url: None,
                after: "",
            },
        }
    }
}

fn payload<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    template: &'static str,
) -> Result<T, RenderError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        // Name the field from a fixed list so nothing from the payload reaches logs.
        let field = match e.path().to_string().as_str() {
            "receipt" => "receipt",
            "provider" => "provider",
            "service" => "service",
            "received_at" => "received_at",
            "status" => "status",
            "note" => "note",
            "incident_id" => "incident_id",
            "update_id" => "update_id",
            "subscription_id" => "subscription_id",
            "code" => "code",
            "scope" => "scope",
            _ => "(field)",
        };
        RenderError::BadPayload { template, field }
    })
}

/// Times in messages are Korean Standard Time, which every reader here lives by.
fn local_time(at: Timestamp) -> String {
    match FixedOffset::east_opt(9 * 3600) {
        Some(kst) => at
            .with_timezone(&kst)
            .format("%Y-%m-%d %H:%M KST")
            .to_string(),
        None => at.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

fn incident_status_label(lang: Lang, status: IncidentStatus) -> String {
    let ko = match status.as_ref() {
        "investigating" => "원인 조사 중",
        "identified" => "원인 확인, 복구 중",
        "monitoring" => "복구 후 지켜보는 중",
        "resolved" => "복구 완료",
        "dismissed" => "장애 아님으로 종료",
        other => other,
    };
    match lang {
        Lang::Ko => ko.to_owned(),
        Lang::En => status.as_ref().replace('_', " "),
    }
}

fn report_status_label(lang: Lang, status: &str) -> String {
    let (ko, en) = match status {
        "received" => ("접수됨", "received"),
        "in_review" => ("상담 진행 중", "in review"),
        "awaiting_reporter" => ("신고인 답변 대기", "waiting for your answer"),
        "referred" => ("분쟁조정위원회 이관", "referred to dispute mediation"),
        "resolved" => ("처리 완료", "resolved"),
        "closed" => ("종결", "closed"),
        other => (other, other),
    };
    match lang {
        Lang::Ko => ko.to_owned(),
        Lang::En => en.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;
    use crate::config::Config;
    use crate::store::{MessageChannel, MessageState};

    async fn renderer(dir: &std::path::Path) -> Renderer {
        let mut config = Config::defaults().unwrap();
        config.database.url =
            secrecy::SecretString::from(format!("sqlite://{}", dir.join("db").display()));
        let store = crate::store::connect(&config.database).await.unwrap();
        store.migrate().await.unwrap();
        Renderer::new(
            store,
            Arc::new(Keys::from_master(&[7; 32])),
            &RenderSettings {
                public_base_url: "https://relief.example.kr/".into(),
                contact_phone: "1335".into(),
                contact_url: String::new(),
            },
        )
        .unwrap()
    }

    fn message(template: &str, lang: &str, payload: serde_json::Value) -> OutboxMessage {
        let at = Utc.with_ymd_and_hms(2022, 10, 15, 6, 30, 0).unwrap();
        OutboxMessage {
            id: Uuid::now_v7(),
            channel: MessageChannel::Email,
            template: template.into(),
            lang: lang.into(),
            recipient: Vec::new(),
            payload,
            source_kind: "report".into(),
            source_id: None,
            state: MessageState::Sending,
            attempts: 1,
            next_attempt_at: at,
            last_error: None,
            gateway_ref: None,
            delivery_status: None,
            created_at: at,
            updated_at: at,
            sent_at: None,
        }
    }

    #[tokio::test]
    async fn receipt_confirmations_render_in_both_languages() {
        let dir = tempfile::tempdir().unwrap();
        let r = renderer(dir.path()).await;
        let payload = serde_json::json!({
            "receipt": "HR-7K3M-Q9XD-2PZA-8WNE", "provider": "Kakao", "service": "KakaoTalk",
            "received_at": "2022-10-15T06:30:00.000Z"
        });
        let ko = r
            .render(&message("receipt_confirmation", "ko", payload.clone()))
            .await
            .unwrap();
        assert!(ko.subject.contains("접수"), "{}", ko.subject);
        assert!(ko.text.contains("HR-7K3M-Q9XD-2PZA-8WNE"));
        // 06:30 UTC is 15:30 in Korea.
        assert!(ko.text.contains("2022-10-15 15:30 KST"), "{}", ko.text);
        // An e-mail renders no SMS text, and an SMS no e-mail parts.
        assert_eq!(ko.sms, "");
        let mut by_sms = message("receipt_confirmation", "ko", payload.clone());
        by_sms.channel = MessageChannel::Sms;
        let by_sms = r.render(&by_sms).await.unwrap();
        assert!(
            by_sms.sms.contains("HR-7K3M-Q9XD-2PZA-8WNE"),
            "{}",
            by_sms.sms
        );
        assert!(by_sms.sms.contains("Kakao"), "{}", by_sms.sms);
        assert_eq!(
            (&*by_sms.subject, &*by_sms.text, &*by_sms.html),
            ("", "", "")
        );
        // The link is clickable; minijinja escapes its slashes, which browsers read back.
        assert!(
            ko.html
                .contains(r#"<a href="https:&#x2f;&#x2f;relief.example.kr">"#),
            "{}",
            ko.html
        );
        let en = r
            .render(&message("receipt_confirmation", "fr", payload.clone()))
            .await
            .unwrap();
        assert_eq!(
            en.subject, ko.subject,
            "an unknown language falls back to Korean"
        );
        let en = r
            .render(&message("receipt_confirmation", "en", payload))
            .await
            .unwrap();
        assert!(en.subject.contains("received"), "{}", en.subject);
    }

    #[tokio::test]
    async fn html_is_escaped_and_bad_payloads_are_permanent() {
        let dir = tempfile::tempdir().unwrap();
        let r = renderer(dir.path()).await;
        let rendered = r
            .render(&message(
                "report_status",
                "en",
                serde_json::json!({"receipt": "R", "status": "in_review", "note": "<b>soon</b>"}),
            ))
            .await
            .unwrap();
        assert!(rendered.text.contains("<b>soon</b>"));
        assert!(
            rendered.html.contains("&lt;b&gt;soon&lt;&#x2f;b&gt;"),
            "{}",
            rendered.html
        );
        assert!(
            rendered
                .text
                .contains("Status: in review\nNote: <b>soon</b>\n"),
            "{}",
            rendered.text
        );
        let err = r
            .render(&message(
                "report_status",
                "en",
                serde_json::json!({"receipt": 1}),
            ))
            .await
            .unwrap_err();
        assert!(!err.is_transient());
        assert!(
            r.render(&message("no_such_template", "ko", serde_json::json!({})))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn subscription_confirmation_links_with_the_keyed_token() {
        let dir = tempfile::tempdir().unwrap();
        let r = renderer(dir.path()).await;
        let id = Uuid::now_v7();
        let rendered = r
            .render(&message(
                "subscription_confirm",
                "ko",
                serde_json::json!({"subscription_id": id, "code": "123456", "scope": "Kakao"}),
            ))
            .await
            .unwrap();
        let token = Keys::from_master(&[7; 32]).token("confirm", id);
        let link = format!("https://relief.example.kr/subscriptions/confirm?id={id}&token={token}");
        assert!(rendered.text.contains(&link), "{}", rendered.text);
        let mut by_sms = message(
            "subscription_confirm",
            "ko",
            serde_json::json!({"subscription_id": id, "code": "123456", "scope": "Kakao"}),
        );
        by_sms.channel = MessageChannel::Sms;
        let by_sms = r.render(&by_sms).await.unwrap();
        assert!(by_sms.sms.contains("123456"), "{}", by_sms.sms);
    }
}

#[cfg(test)]
mod notice_tests {
    use chrono::Utc;

    use super::*;
    use crate::config::Config;
    use crate::incident::model::{Localized, Origin, Severity};
    use crate::store::{AuditEntry, MessageChannel, MessageState, NewIncident, NewIncidentUpdate};

    /// A million notices of one update cost one store read: the second rendering in the same
    /// language works even with the store closed; another language needs the store.
    #[tokio::test]
    async fn an_update_is_loaded_once_per_language() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults().unwrap();
        config.database.url =
            secrecy::SecretString::from(format!("sqlite://{}", dir.path().join("db").display()));
        let store = crate::store::connect(&config.database).await.unwrap();
        store.migrate().await.unwrap();
        let (incident_id, update_id) = (Uuid::now_v7(), Uuid::now_v7());
        let now = Utc::now();
        store
            .create_incident(
                &NewIncident {
                    id: incident_id,
                    title: Localized::new("카카오 장애", "Kakao outage"),
                    provider: Some("Kakao".into()),
                    services: vec!["KakaoTalk".into()],
                    severity: Severity::Critical,
                    origin: Origin::Declared,
                    confirmed: true,
                    started_at: now,
                    first_update: NewIncidentUpdate {
                        id: update_id,
                        incident_id,
                        status: IncidentStatus::Investigating,
                        message: Localized::new("화재로 전원 차단", "Power cut by a fire"),
                        actor: "token:test".into(),
                        at: now,
                    },
                },
                &AuditEntry {
                    id: Uuid::now_v7(),
                    at: now,
                    actor: "token:test".into(),
                    action: "incident.declare".into(),
                    target: None,
                    detail: None,
                    client_addr: None,
                },
            )
            .await
            .unwrap();
        let renderer = Renderer::new(
            Arc::clone(&store),
            Arc::new(Keys::from_master(&[7; 32])),
            &RenderSettings {
                public_base_url: "https://relief.example.kr".into(),
                contact_phone: String::new(),
                contact_url: String::new(),
            },
        )
        .unwrap();
        let message =
            |lang: &str, subscription: Option<Uuid>, report: Option<Uuid>| OutboxMessage {
                id: Uuid::now_v7(),
                channel: MessageChannel::Email,
                template: "incident_update".into(),
                lang: lang.into(),
                recipient: Vec::new(),
                payload: serde_json::json!({
                    "incident_id": incident_id, "update_id": update_id,
                    "subscription_id": subscription, "report_id": report,
                }),
                source_kind: "incident_update".into(),
                source_id: Some(update_id),
                state: MessageState::Sending,
                attempts: 1,
                next_attempt_at: now,
                last_error: None,
                gateway_ref: None,
                delivery_status: None,
                created_at: now,
                updated_at: now,
                sent_at: None,
            };
        let first = renderer.render(&message("ko", None, None)).await.unwrap();
        assert!(first.text.contains("화재로 전원 차단"), "{}", first.text);
        // Without a phone, the contact is the status page.
        assert!(first.text.contains("https://relief.example.kr/status"));
        assert!(first.unsubscribe_url.is_none());
        // A reporter's notice carries the link that stops them (rendered from the cache: the
        // store is closed).
        let reporter = Uuid::now_v7();
        let keys = Keys::from_master(&[7; 32]);
        store.close().await;
        let to_reporter = renderer
            .render(&message("ko", None, Some(reporter)))
            .await
            .unwrap();
        let stop = format!(
            "https://relief.example.kr/notices/stop/{reporter}/{}",
            keys.token("stop-notices", reporter)
        );
        assert_eq!(to_reporter.unsubscribe_url.as_deref(), Some(stop.as_str()));
        assert!(to_reporter.text.contains(&stop), "{}", to_reporter.text);
        let escaped = stop.replace('/', "&#x2f;");
        assert!(to_reporter.html.contains(&escaped), "{}", to_reporter.html);
        // The link filled into the cached HTML gives what rendering the whole text would.
        assert_eq!(
            *to_reporter.html,
            renderer
                .html(Lang::Ko, &to_reporter.subject, &to_reporter.text)
                .unwrap()
        );
        assert!(!to_reporter.html.contains("link-slot"));
        // Each channel gets the link in what it sends; the other forms are left as they were.
        assert!(!to_reporter.sms.contains(&stop));
        let mut by_sms = message("ko", None, Some(reporter));
        by_sms.channel = MessageChannel::Sms;
        let by_sms = renderer.render(&by_sms).await.unwrap();
        assert!(
            by_sms.sms.ends_with(&format!("\n수신거부 {stop}")),
            "{}",
            by_sms.sms
        );
        assert_eq!((&by_sms.text, &by_sms.html), (&first.text, &first.html));
        let subscriber = Uuid::now_v7();
        let again = renderer
            .render(&message("ko", Some(subscriber), None))
            .await
            .unwrap();
        assert!(again.text.starts_with(&*first.text));
        assert!(
            again
                .unsubscribe_url
                .unwrap()
                .contains(&subscriber.to_string())
        );
        let english = renderer
            .render(&message("en", None, None))
            .await
            .unwrap_err();
        assert!(english.is_transient(), "{english}");
    }
}
