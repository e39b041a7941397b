//! The public pages over real HTTP with a cookie-keeping client: languages, the form round
//! trip (receipt, field errors, busy answers that keep every typed value), CSRF, security
//! headers, the Atom feed and the page caches.

use std::sync::Arc;
use std::time::Duration;

use reliefline::incident::CacheName;
use reliefline::web::PageCacheName;
use reliefline::web::i18n::{EN, KO};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestDb, sample_report};
use crate::intake::{WriteLock, count_reports};
use crate::on_both_backends;

pub(crate) const TOKEN: &str = "commander-token-for-page-tests-0123";

pub(crate) async fn spawn(
    backend: Backend,
    adjust: impl FnOnce(&mut reliefline::Config),
) -> Option<TestApp> {
    let db = TestDb::new(backend).await?;
    Some(
        TestApp::spawn_with(Arc::new(db), |c| {
            c.admin.token = SecretString::from(TOKEN);
            // Long lifetimes: expiry must never be what makes a test pass.
            c.incident.read_cache_ttl_ms = 3_600_000;
            c.incident.read_cache_ttl_incident_ms = 3_600_000;
            c.incident.evaluate_interval_ms = 3_600_000;
            adjust(c);
        })
        .await,
    )
}

/// A browser-like client: keeps cookies, does not follow redirects.
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Declare an incident as a commander; its id.
pub(crate) async fn declare(app: &TestApp) -> String {
    let r = app
        .client
        .post(app.url("/api/v1/incidents"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "title": {"ko": "카카오 서비스 장애", "en": "Kakao services outage"},
            "provider": "Kakao",
            "services": ["KakaoTalk", "Kakao T"],
            "started_at": "2022-10-15T15:30:00+09:00",
            "severity": "critical",
            "message": {"ko": "데이터센터 화재로 서비스가 중단되었습니다.",
                        "en": "A data-centre fire stopped the services."}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn post_update(app: &TestApp, id: &str, status: &str, ko: &str, en: &str) {
    let r = app
        .client
        .post(app.url(&format!("/api/v1/incidents/{id}/updates")))
        .bearer_auth(TOKEN)
        .json(&json!({"status": status, "message": {"ko": ko, "en": en}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The `value` of the input named `name`, or the text of the textarea named so.
fn value_of(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    if tag.starts_with("<textarea") {
        let close = html[tag_end..].find("</textarea>")?;
        return Some(unescape(&html[tag_end + 1..tag_end + close]));
    }
    let v = tag.find("value=\"")? + "value=\"".len();
    let len = tag[v..].find('"')?;
    Some(unescape(&tag[v..v + len]))
}

/// Whether the check box or radio button `id` is ticked.
fn checked(html: &str, id: &str) -> bool {
    let Some(at) = html.find(&format!("id=\"{id}\"")) else {
        return false;
    };
    let end = at + html[at..].find('>').unwrap();
    html[at..end].contains("checked")
}

/// The form fields a person would fill in, as the browser sends them.
pub(crate) fn filled_form(csrf: &str, idem: &str, incident: &str) -> Vec<(&'static str, String)> {
    vec![
        ("csrf", csrf.to_owned()),
        ("idem", idem.to_owned()),
        ("incident_id", incident.to_owned()),
        ("provider", "Kakao".into()),
        ("service", "KakaoTalk".into()),
        ("reporter_type", "merchant".into()),
        ("harm_type", "business_loss".into()),
        ("occurred_at", "2022-10-15T15:40".into()),
        ("amount", "250000".into()),
        ("title", "주문 알림 중단".into()),
        (
            "description",
            "카카오톡 채널 주문 알림이 멈춰 \"주말\" 매출을 잃었습니다.".into(),
        ),
        ("name", "홍길동".into()),
        ("phone", "010-1234-5678".into()),
        ("email", "hong@example.kr".into()),
        ("notify_sms", "on".into()),
        ("consent", "on".into()),
    ]
}

/// Everything in `form` is on the page again as typed: text, the chosen radio button and
/// option, the ticked boxes.
fn assert_filled_in(html: &str, form: &[(&'static str, String)]) {
    for (name, typed) in form {
        match *name {
            "notify_sms" | "notify_email" | "consent" => assert!(checked(html, name), "{name}"),
            "reporter_type" => assert!(checked(html, &format!("reporter_type-{typed}"))),
            "harm_type" => assert!(html.contains(&format!("value=\"{typed}\" selected"))),
            // Left out of the page when there is none.
            "incident_id" if typed.is_empty() => {}
            _ => assert_eq!(
                value_of(html, name).as_deref(),
                Some(typed.as_str()),
                "{name}"
            ),
        }
    }
}

/// The tag of the language switch in the page's header.
fn language_switch(html: &str) -> &str {
    let at = html.find("id=\"lang-switch\"").expect("a language switch");
    let start = html[..at].rfind('<').unwrap();
    let end = at + html[at..].find('>').unwrap();
    &html[start..=end]
}

/// The first submit button of form `id` in document order, the one Enter in a field presses.
fn default_button<'a>(html: &'a str, id: &str) -> &'a str {
    let id_at = html.find(&format!("id=\"{id}\"")).expect("the form");
    let form_start = html[..id_at].rfind("<form").expect("a form tag");
    let form_end = form_start + html[form_start..].find("</form>").unwrap();
    let mut at = 0;
    while let Some(i) = html[at..].find("<button") {
        let start = at + i;
        let end = start + html[start..].find('>').unwrap();
        let tag = &html[start..=end];
        if tag.contains(&format!("form=\"{id}\"")) || (form_start < start && start < form_end) {
            return tag;
        }
        at = end;
    }
    panic!("form {id} has no submit button")
}

/// Post the report form as the browser sends it.
async fn post_report(
    app: &TestApp,
    client: &reqwest::Client,
    form: &[(&str, String)],
) -> reqwest::Response {
    client
        .post(app.url("/report"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// Open the report form with `client`; its CSRF token and idempotency key.
pub(crate) async fn open_form(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
) -> (String, String, String) {
    let r = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    let csrf = value_of(&html, "csrf").expect("csrf field");
    let idem = value_of(&html, "idem").expect("idem field");
    (csrf, idem, html)
}

pub(crate) fn receipt_of(html: &str) -> String {
    let at = html.find("id=\"receipt\">").expect("receipt on the page") + "id=\"receipt\">".len();
    let len = html[at..].find('<').unwrap();
    html[at..at + len].trim().to_owned()
}

// ---- languages ---------------------------------------------------------------------------

async fn every_page_is_korean_by_default_and_english_on_request(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    declare(&app).await;
    // (path, a Korean string it must show, the English one)
    let pages = [
        ("/", KO.home_title, EN.home_title),
        ("/", KO.banner_heading, EN.banner_heading),
        (
            "/report",
            KO.report_incident_title,
            EN.report_incident_title,
        ),
        ("/report", KO.field_reporter_type, EN.field_reporter_type),
        ("/report", KO.submit_report, EN.submit_report),
        ("/lookup", KO.lookup_intro, EN.lookup_intro),
        ("/status", KO.status_title, EN.status_title),
        ("/status", "카카오 서비스 장애", "Kakao services outage"),
        ("/status", KO.status_timeline, EN.status_timeline),
    ];
    for (path, ko, en) in pages {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["content-language"], "ko");
        let html = r.text().await.unwrap();
        assert!(html.contains("<html lang=\"ko\">"), "{path}");
        assert!(html.contains(ko) && !html.contains(en), "{path}: {ko}");

        let r = app
            .client
            .get(app.url(path))
            .header("accept-language", "en-US,en;q=0.9,ko;q=0.5")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-language"], "en");
        let html = r.text().await.unwrap();
        assert!(html.contains("<html lang=\"en\">"), "{path}");
        assert!(html.contains(en) && !html.contains(ko), "{path}: {en}");
    }

    // The visible switch: it is on the page, and the choice sticks for later pages.
    let client = browser();
    let html = client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("href=\"/?lang=en\""));
    assert!(html.contains(KO.switch_label));
    let r = client.get(app.url("/?lang=en")).send().await.unwrap();
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("lang=en")
    );
    let html = r.text().await.unwrap();
    assert!(html.contains(EN.home_title) && html.contains("href=\"/?lang=ko\""));
    let html = client
        .get(app.url("/status"))
        .header("accept-language", "ko")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(EN.status_title),
        "the cookie beats Accept-Language"
    );
    let html = client
        .get(app.url("/lookup?lang=ko"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(KO.lookup_title));
    app.stop().await;
}

// ---- the form round trip -----------------------------------------------------------------

async fn the_incident_form_is_prefilled_and_gives_one_receipt_per_form(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    let incident = declare(&app).await;
    let client = browser();
    let (csrf, idem, html) = open_form(&app, &client, "/report").await;
    assert!(html.contains("id=\"incident-header\""));
    assert_eq!(
        value_of(&html, "incident_id").as_deref(),
        Some(incident.as_str())
    );
    assert_eq!(value_of(&html, "provider").as_deref(), Some("Kakao"));
    assert_eq!(value_of(&html, "service").as_deref(), Some("KakaoTalk"));
    assert_eq!(
        value_of(&html, "occurred_at").as_deref(),
        Some("2022-10-15T15:30")
    );
    assert!(
        html.contains("Kakao T"),
        "every affected service is offered"
    );

    // A second visitor gets another token and key from the same cached page.
    let (csrf2, idem2, _) = open_form(&app, &browser(), "/report").await;
    assert_ne!(csrf, csrf2);
    assert_ne!(idem, idem2);

    let form = filled_form(&csrf, &idem, &incident);
    let r = post_report(&app, &client, &form).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    let receipt = receipt_of(&html);
    assert!(receipt.starts_with("HR-"), "{receipt}");
    assert!(html.contains(KO.receipt_how_lookup) && html.contains(KO.receipt_next));

    // Pressing submit again (or a retry after a lost answer) gives the same receipt.
    let r = post_report(&app, &client, &form).await;
    assert_eq!(receipt_of(&r.text().await.unwrap()), receipt);
    assert_eq!(count_reports(&app).await, 1);

    // The same form sent back with other content is not taken for the first one.
    let mut changed = form.clone();
    changed[10].1 = "다른 내용입니다.".into();
    let r = post_report(&app, &client, &changed).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains(KO.already_used));
    assert_ne!(value_of(&html, "idem").as_deref(), Some(idem.as_str()));
    assert_eq!(
        value_of(&html, "description").as_deref(),
        Some("다른 내용입니다.")
    );
    assert_eq!(count_reports(&app).await, 1);

    // An unknown incident is a page, not an API error.
    let r = client
        .get(app.url(&format!("/report?incident={}", uuid::Uuid::now_v7())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains(KO.not_found_title));

    // The report went the API's way: linked to the incident, through the web channel.
    let stored = app
        .store
        .find_report(&reliefline::domain::Receipt::parse(&receipt).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.incident_id.map(|i| i.to_string()), Some(incident));
    assert!(
        app.metrics_text()
            .await
            .contains("reliefline_reports_accepted_total{channel=\"web\"}")
    );
    app.stop().await;
}

async fn field_errors_are_shown_next_to_their_fields(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    let client = browser();
    let (csrf, idem, html) = open_form(&app, &client, "/report?lang=en").await;
    assert!(
        !html.contains("id=\"incident-header\""),
        "no incident: the general form"
    );
    let mut form = filled_form(&csrf, &idem, "");
    for (name, value) in &mut form {
        match *name {
            "phone" => *value = "12-34".into(),
            "description" => *value = "   ".into(),
            "amount" => *value = "lots".into(),
            "consent" => *value = String::new(),
            _ => {}
        }
    }
    form.retain(|(name, _)| *name != "consent");
    let r = post_report(&app, &client, &form).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains(EN.form_has_errors));
    for (field, message, next) in [
        ("phone", EN.error_phone, "email"),
        ("description", EN.error_required, "name"),
        ("amount", EN.error_amount, "title"),
        ("consent", EN.error_consent, "submit"),
    ] {
        let input = html.find(&format!("name=\"{field}\"")).unwrap();
        let error = html
            .find(&format!("id=\"{field}-error\""))
            .unwrap_or_else(|| panic!("no error for {field}"));
        let following = html[input..].find(&format!("id=\"{next}\"")).unwrap() + input;
        assert!(
            input < error && error < following,
            "{field}'s error is not next to it"
        );
        assert!(html[error..following].contains(message), "{field}");
    }
    assert!(!html.contains("id=\"email-error\""));
    // What was typed is still there, the bad values included.
    assert_eq!(value_of(&html, "phone").as_deref(), Some("12-34"));
    assert_eq!(value_of(&html, "amount").as_deref(), Some("lots"));
    assert_eq!(value_of(&html, "name").as_deref(), Some("홍길동"));
    assert_eq!(value_of(&html, "idem").as_deref(), Some(idem.as_str()));
    assert!(checked(&html, "reporter_type-merchant") && checked(&html, "notify_sms"));
    assert_eq!(count_reports(&app).await, 0);
    app.stop().await;
}

async fn a_busy_service_returns_the_form_with_everything_typed(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::spawn_with(db.into(), |c| {
        c.intake.queue_capacity = 2;
        c.intake.batch_max = 1;
        c.intake.batch_wait_ms = 0;
        c.intake.postgres_writers = 1;
        c.intake.overload_retry_after_secs = 7;
        c.database.busy_timeout_ms = 60_000;
    })
    .await;
    let client = browser();
    let (csrf, idem, _) = open_form(&app, &client, "/report").await;

    // Hold the writer and fill the queue through the API until it refuses.
    let lock = WriteLock::take(&app).await;
    let mut held = Vec::new();
    let mut full = false;
    for _ in 0..8 {
        let (c, url) = (app.client.clone(), app.url("/api/v1/reports"));
        let task = tokio::spawn(async move {
            c.post(url)
                .json(&sample_report())
                .send()
                .await
                .unwrap()
                .status()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        if task.is_finished() {
            assert_eq!(task.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
            full = true;
            break;
        }
        held.push(task);
    }
    assert!(full, "the intake queue never filled");

    let form = filled_form(&csrf, &idem, "");
    let r = post_report(&app, &client, &form).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "7");
    let html = r.text().await.unwrap();
    assert!(html.contains(KO.busy_before) && html.contains(KO.busy_kept));
    assert!(html.contains("<strong id=\"retry-seconds\">7</strong>"));
    // The token is the one the cookie holds; everything else comes back as typed.
    assert_filled_in(&html, &form);
    assert!(!checked(&html, "notify_email"));

    lock.release().await;
    for task in held {
        assert_eq!(task.await.unwrap(), StatusCode::CREATED);
    }
    // Trying again with the re-rendered form succeeds, once.
    let form = filled_form(
        &value_of(&html, "csrf").unwrap(),
        &value_of(&html, "idem").unwrap(),
        "",
    );
    let r = post_report(&app, &client, &form).await;
    assert_eq!(r.status(), StatusCode::OK);
    let before = count_reports(&app).await;
    let r = post_report(&app, &client, &form).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(count_reports(&app).await, before);
    app.stop().await;
}

async fn a_rate_limited_form_comes_back_with_429_and_the_wait(backend: Backend) {
    let Some(app) = spawn(backend, |c| {
        for profile in [&mut c.rate_limits.normal, &mut c.rate_limits.incident] {
            profile.report_ip.per_minute = 1.0;
            profile.report_ip.burst = 1;
        }
    })
    .await
    else {
        return;
    };
    let client = browser();
    let (csrf, _, _) = open_form(&app, &client, "/report").await;
    let first = filled_form(&csrf, "form-first", "");
    let r = post_report(&app, &client, &first).await;
    assert_eq!(r.status(), StatusCode::OK);
    let second = filled_form(&csrf, "form-second", "");
    let r = post_report(&app, &client, &second).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1);
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!("<strong id=\"retry-seconds\">{wait}</strong>")));
    assert_eq!(value_of(&html, "description"), Some(second[10].1.clone()));
    assert_eq!(value_of(&html, "idem").as_deref(), Some("form-second"));
    assert_eq!(count_reports(&app).await, 1);
    app.stop().await;
}

async fn switching_language_on_a_form_keeps_what_was_typed(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    let client = browser();
    let (csrf, idem, html) = open_form(&app, &client, "/report").await;
    // Even before the first submission the switch re-posts the form: a link would lose what
    // was typed so far.
    let switch = language_switch(&html);
    assert!(
        switch.contains("form=\"report-form\"") && switch.contains("value=\"en\""),
        "{switch}"
    );
    assert!(!default_button(&html, "report-form").contains("switch_lang"));
    assert_eq!(value_of(&html, "checked"), None);
    let mut form = filled_form(&csrf, &idem, "");
    form[12].1 = "12-34".into(); // the phone
    form.retain(|(name, _)| *name != "consent");
    // Half typed, switched: the same form in English, nothing checked, nothing stored.
    let mut half = form.clone();
    half.push(("switch_lang", "en".into()));
    let r = post_report(&app, &client, &half).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-language"], "en");
    let html = r.text().await.unwrap();
    assert!(html.contains("<html lang=\"en\">") && html.contains(EN.submit_report));
    assert!(!html.contains(EN.form_has_errors) && !html.contains(EN.error_phone));
    assert_filled_in(&html, &form);
    assert_eq!(value_of(&html, "checked"), None);
    assert!(language_switch(&html).contains("value=\"ko\""));
    half.last_mut().unwrap().1 = "ko".into();
    let r = post_report(&app, &client, &half).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-language"], "ko");
    assert_eq!(count_reports(&app).await, 0);

    let r = post_report(&app, &client, &form).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains(KO.error_phone) && html.contains(KO.error_consent));
    // A submitted form says so, and a switch from it shows its findings again.
    assert_eq!(value_of(&html, "checked").as_deref(), Some("1"));
    form.push(("checked", "1".into()));

    // The switch re-posts the form it stands for instead of linking to a blank one; the
    // browser's own checks must not hold it back.
    let switch = language_switch(&html);
    for part in [
        "<button type=\"submit\"",
        "form=\"report-form\"",
        "name=\"switch_lang\"",
        "value=\"en\"",
        "formnovalidate",
    ] {
        assert!(switch.contains(part), "{part}: {switch}");
    }
    let default = default_button(&html, "report-form");
    assert!(
        !default.contains("switch_lang"),
        "Enter must submit: {default}"
    );

    // What the browser sends when it is pressed: the form as shown, and the button.
    let mut switched = form.clone();
    switched.push(("switch_lang", "en".into()));
    let r = post_report(&app, &client, &switched).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.headers()["content-language"], "en");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("lang=en"),
        "the choice is remembered"
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains(EN.form_has_errors) && !html.contains(KO.form_has_errors));
    assert!(html.contains(EN.error_phone) && html.contains(EN.error_consent));
    assert!(!html.contains(KO.error_phone));
    assert_filled_in(&html, &form);
    assert!(!checked(&html, "consent") && !checked(&html, "notify_email"));
    assert!(language_switch(&html).contains("value=\"ko\""));
    assert_eq!(count_reports(&app).await, 0);

    // A complete form is not submitted by the switch either.
    let mut complete = filled_form(&csrf, &idem, "");
    complete.push(("checked", "1".into()));
    complete.push(("switch_lang", "ko".into()));
    let r = post_report(&app, &client, &complete).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains(KO.submit_report) && !html.contains(KO.form_has_errors));
    complete.pop();
    assert_filled_in(&html, &complete);
    assert_eq!(count_reports(&app).await, 0);
    // Without the form's token the switch is refused like any post.
    let mut forged = complete.clone();
    forged[0].1 = String::new();
    forged.push(("switch_lang", "en".into()));
    let r = post_report(&app, &client, &forged).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Submitted afterwards, the form gives its receipt, once.
    let r = post_report(&app, &client, &complete).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(receipt_of(&r.text().await.unwrap()).starts_with("HR-"));
    assert_eq!(count_reports(&app).await, 1);

    // The lookup form the same way: the switch looks nothing up and keeps both fields.
    let lookup = |pairs: Vec<(&'static str, &'static str)>| {
        let (client, url, csrf) = (client.clone(), app.url("/lookup"), csrf.clone());
        async move {
            let mut pairs: Vec<(&str, &str)> = pairs;
            pairs.push(("csrf", &csrf));
            client.post(url).form(&pairs).send().await.unwrap()
        }
    };
    let blank = client.get(app.url("/lookup?lang=ko")).send().await.unwrap();
    let html = blank.text().await.unwrap();
    assert!(language_switch(&html).contains("form=\"lookup-form\""));
    let typed = vec![("receipt", "HR-123"), ("contact", "010-1234-5678")];
    // Switched before it was submitted: as typed, in English, without findings.
    let r = lookup([typed.clone(), vec![("switch_lang", "en")]].concat()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains(EN.lookup_title) && !html.contains(EN.error_receipt));
    assert_eq!(value_of(&html, "receipt").as_deref(), Some("HR-123"));
    let r = lookup([typed.clone(), vec![("switch_lang", "ko")]].concat()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = lookup(typed.clone()).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains(KO.error_receipt));
    assert_eq!(value_of(&html, "checked").as_deref(), Some("1"));
    let switch = language_switch(&html);
    assert!(
        switch.contains("form=\"lookup-form\"") && switch.contains("value=\"en\""),
        "{switch}"
    );
    assert!(!default_button(&html, "lookup-form").contains("switch_lang"));
    let checked = vec![("checked", "1"), ("switch_lang", "en")];
    let r = lookup([typed.clone(), checked].concat()).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains(EN.lookup_title) && html.contains(EN.error_receipt));
    assert!(!html.contains(EN.error_contact));
    for (name, value) in typed {
        assert_eq!(value_of(&html, name).as_deref(), Some(value), "{name}");
    }
    // Later pages keep the language chosen on the form.
    let r = client.get(app.url("/status")).send().await.unwrap();
    assert!(r.text().await.unwrap().contains(EN.status_title));
    app.stop().await;
}

/// The form was read in English, so the receipt confirmation (here by SMS, spooled to a file)
/// is written in English; the same form in Korean gets a Korean one.
async fn the_receipt_confirmation_speaks_the_language_of_the_form(backend: Backend) {
    let Some(app) = spawn(backend, |c| c.notify.dispatcher.poll_interval_ms = 20).await else {
        return;
    };
    let spool = app.db.dir().join("spool/sms.jsonl");
    let mut receipts = Vec::new();
    for lang in ["en", "ko"] {
        let client = browser();
        let (csrf, idem, _) = open_form(&app, &client, &format!("/report?lang={lang}")).await;
        let r = post_report(&app, &client, &filled_form(&csrf, &idem, "")).await;
        assert_eq!(r.status(), StatusCode::OK);
        receipts.push(receipt_of(&r.text().await.unwrap()));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let text = std::fs::read_to_string(&spool).unwrap_or_default();
        if text.lines().count() >= 2 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no confirmations spooled: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sms_of = |receipt: &str| -> String {
        let line = lines
            .lines()
            .find(|l| l.contains(receipt))
            .unwrap_or_else(|| panic!("no SMS names {receipt}: {lines}"));
        let sms: Value = serde_json::from_str(line).unwrap();
        sms["text"].as_str().unwrap().to_owned()
    };
    let english = sms_of(&receipts[0]);
    assert!(english.contains("harm report received"), "{english}");
    let korean = sms_of(&receipts[1]);
    assert!(!korean.contains("harm report received"), "{korean}");
    assert!(korean.contains("접수"), "{korean}");
    app.stop().await;
}

// ---- CSRF and headers --------------------------------------------------------------------

async fn a_post_without_a_valid_token_is_refused_and_stores_nothing(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    // No cookie, no token: a cross-site form post.
    let r = browser()
        .post(app.url("/report"))
        .form(&filled_form("", "form-a", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains(KO.forbidden_body));

    let client = browser();
    let (csrf, idem, _) = open_form(&app, &client, "/report").await;
    // The cookie is sent but the field carries a made-up token.
    let forged = format!("{}{}", "a".repeat(32), "b".repeat(32));
    let r = client
        .post(app.url("/report"))
        .form(&filled_form(&forged, &idem, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The right token, but the browser says another site sent it.
    for (header, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = client
            .post(app.url("/report"))
            .header(header, value)
            .form(&filled_form(&csrf, &idem, ""))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{header}");
    }
    // The lookup form is protected the same way.
    let r = browser()
        .post(app.url("/lookup"))
        .form(&[
            ("receipt", "HR-7K3M-Q9XD-2PZA-8WNE"),
            ("contact", "010-1234-5678"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(count_reports(&app).await, 0);

    // Same site, right token: accepted.
    let r = client
        .post(app.url("/report"))
        .header("origin", format!("http://{}", app.addr))
        .header("sec-fetch-site", "same-origin")
        .form(&filled_form(&csrf, &idem, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(count_reports(&app).await, 1);
    app.stop().await;
}

fn assert_security_headers(path: &str, headers: &HeaderMap) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{path}");
    assert!(!csp.contains("unsafe-inline"), "{path}");
    assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    assert!(headers.contains_key("referrer-policy"), "{path}");
}

async fn pages_carry_security_headers_and_lookups_are_never_stored(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    for path in ["/", "/report", "/lookup", "/status"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_security_headers(path, r.headers());
        let html = r.text().await.unwrap();
        assert!(
            !html.contains("<script") && !html.contains("style="),
            "{path}"
        );
        let css = format!("href=\"{}\"", reliefline::web::STYLESHEET_HREF);
        assert!(html.contains(&css), "{path}");
    }
    let r = app.client.get(app.url("/lookup")).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let css = app
        .client
        .get(app.url("/static/site.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(
        css.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );

    // A report, then its lookup: found with the right contact, one same page otherwise.
    let client = browser();
    let (csrf, idem, _) = open_form(&app, &client, "/report").await;
    let r = client
        .post(app.url("/report"))
        .form(&filled_form(&csrf, &idem, ""))
        .send()
        .await
        .unwrap();
    let receipt = receipt_of(&r.text().await.unwrap());
    let lookup = |receipt: String, contact: &'static str| {
        let (client, url, csrf) = (client.clone(), app.url("/lookup"), csrf.clone());
        async move {
            client
                .post(url)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("receipt", &receipt.to_lowercase()),
                    ("contact", contact),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let r = lookup(receipt.clone(), "01012345678").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_security_headers("POST /lookup", r.headers());
    let html = r.text().await.unwrap();
    assert!(
        html.contains("data-status=\"received\"")
            && html.contains(KO.report_status(reliefline::domain::ReportStatus::Received))
    );
    assert!(html.contains(&receipt));

    let unknown = lookup("HR-7K3M-Q9XD-2PZA-8WNE".into(), "010-1234-5678").await;
    let wrong = lookup(receipt.clone(), "010-9999-9999").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(wrong.status(), StatusCode::NOT_FOUND);
    assert_eq!(wrong.headers()["cache-control"], "no-store");
    let (unknown, wrong) = (unknown.text().await.unwrap(), wrong.text().await.unwrap());
    assert!(unknown.contains(KO.lookup_not_found) && wrong.contains(KO.lookup_not_found));
    assert!(!wrong.contains("data-status"));
    let r = lookup("not a receipt".into(), "hong@").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains(KO.error_receipt) && html.contains(KO.error_contact));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_address_is_a_page_on_the_site_and_json_under_the_api() {
    let app = spawn(Backend::Sqlite, |_| {}).await.expect("sqlite app");
    let unmatched_before = unmatched_gets(&app).await;
    let home = app.client.get(app.url("/")).send().await.unwrap();
    let asks = [
        ("/no-such-page", None, &KO, "ko"),
        ("/no-such-page?lang=en", None, &EN, "en"),
        (
            "/no/such/page",
            Some(("accept-language", "en-GB,en;q=0.9")),
            &EN,
            "en",
        ),
        ("/no-such-page", Some(("cookie", "lang=en")), &EN, "en"),
    ];
    for (path, header, t, lang) in asks {
        let mut request = app.client.get(app.url(path));
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert_eq!(r.headers()["content-language"], lang, "{path}");
        for name in [
            "content-security-policy",
            "x-content-type-options",
            "x-frame-options",
            "referrer-policy",
        ] {
            assert_eq!(
                r.headers().get(name),
                home.headers().get(name),
                "{path}: {name}"
            );
        }
        let html = r.text().await.unwrap();
        assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{path}");
        assert!(
            html.contains(t.not_found_title) && html.contains(t.not_found_body),
            "{path}"
        );
    }

    // Machine clients keep the API's JSON.
    for path in [
        "/api/v1/no-such-thing",
        "/api",
        "/healthz/no-such-thing",
        // Served on a listener of its own here.
        "/metrics",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "not_found", "{path}");
    }
    // Still counted as unmatched (the recorder is shared by the tests running alongside).
    assert!(unmatched_gets(&app).await >= unmatched_before + 8);
    app.stop().await;
}

/// `GET`s that matched no route, as the metrics count them.
async fn unmatched_gets(app: &TestApp) -> u64 {
    const SERIES: &str =
        r#"reliefline_http_requests_total{route="unmatched",method="GET",status="404"} "#;
    let metrics = app.metrics_text().await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(SERIES))
        .map_or(0, |count| count.trim().parse().unwrap())
}

// ---- the feed and the caches ---------------------------------------------------------------

async fn the_atom_feed_lists_every_update(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    let id = declare(&app).await;
    post_update(
        &app,
        &id,
        "identified",
        "배터리 화재가 원인입니다.",
        "A battery fire is the cause.",
    )
    .await;
    let r = app
        .client
        .get(app.url("/status/feed.atom?lang=en"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    let xml = r.text().await.unwrap();
    let feed = parse_atom(&xml);
    assert!(feed.id.starts_with("http://") && !feed.title.is_empty());
    assert!(chrono::DateTime::parse_from_rfc3339(&feed.updated).is_ok());
    assert_eq!(feed.entries.len(), 2, "{xml}");
    // Newest first, in the asked language.
    assert!(
        feed.entries[0]
            .content
            .contains("A battery fire is the cause.")
    );
    assert!(
        feed.entries[1]
            .content
            .contains("A data-centre fire stopped the services.")
    );
    assert!(feed.entries[0].title.contains("Kakao services outage"));
    assert_ne!(feed.entries[0].id, feed.entries[1].id);
    assert_eq!(feed.updated, feed.entries[0].updated);

    post_update(&app, &id, "resolved", "복구되었습니다.", "Restored.").await;
    let xml = app
        .client
        .get(app.url("/status/feed.atom"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let feed = parse_atom(&xml);
    assert_eq!(
        feed.entries.len(),
        3,
        "a resolved incident stays in the feed"
    );
    assert!(feed.entries[0].content.contains("복구되었습니다."));
    app.stop().await;
}

#[derive(Default, Debug)]
struct AtomFeed {
    id: String,
    title: String,
    updated: String,
    entries: Vec<AtomEntry>,
}

#[derive(Default, Debug)]
struct AtomEntry {
    id: String,
    title: String,
    updated: String,
    content: String,
}

/// A strict read of the feed: any malformed XML fails the test.
fn parse_atom(xml: &str) -> AtomFeed {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut feed = AtomFeed::default();
    let mut path: Vec<String> = Vec::new();
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                if path.is_empty() {
                    assert_eq!(name, "feed");
                    let ns = e.try_get_attribute("xmlns").unwrap().unwrap();
                    assert_eq!(&*ns.value, b"http://www.w3.org/2005/Atom");
                }
                if name == "entry" {
                    feed.entries.push(AtomEntry::default());
                }
                path.push(name);
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                let text = t.decode().unwrap();
                let text = quick_xml::escape::unescape(&text).unwrap().into_owned();
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                match names.as_slice() {
                    ["feed", "id"] => feed.id.push_str(&text),
                    ["feed", "title"] => feed.title.push_str(&text),
                    ["feed", "updated"] => feed.updated.push_str(&text),
                    ["feed", "entry", field] => {
                        let entry = feed.entries.last_mut().unwrap();
                        match *field {
                            "id" => entry.id.push_str(&text),
                            "title" => entry.title.push_str(&text),
                            "updated" => entry.updated.push_str(&text),
                            "content" => entry.content.push_str(&text),
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
            Event::GeneralRef(r) => {
                // Character and entity references inside text.
                let text = format!("&{};", String::from_utf8(r.to_vec()).unwrap());
                let text = quick_xml::escape::unescape(&text).unwrap().into_owned();
                if let [.., "entry", "content"] = path
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice()
                {
                    feed.entries.last_mut().unwrap().content.push_str(&text);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(path.is_empty(), "unclosed elements: {path:?}");
    feed
}

async fn a_crowd_on_the_status_page_costs_one_store_query(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    declare(&app).await;
    let data_before = app.state.incidents.cache_counts(CacheName::Status);
    let page_before = app.state.web.cache_counts(PageCacheName::Status);
    let requests: Vec<_> = (0..60)
        .map(|i| {
            let client = app.client.clone();
            let url = app.url("/status");
            let lang = if i % 2 == 0 { "ko" } else { "en" };
            tokio::spawn(async move {
                let r = client
                    .get(url)
                    .header("accept-language", lang)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                r.text().await.unwrap()
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for r in requests {
        bodies.push(r.await.unwrap());
    }
    assert!(bodies.iter().all(|b| b.contains("Kakao")));
    let data = app.state.incidents.cache_counts(CacheName::Status);
    let pages = app.state.web.cache_counts(PageCacheName::Status);
    assert_eq!(
        data.misses - data_before.misses,
        1,
        "one store query for everyone"
    );
    assert_eq!(data.hits - data_before.hits, 59);
    assert_eq!(
        pages.misses - page_before.misses,
        2,
        "one rendering per language"
    );
    assert_eq!(pages.hits - page_before.hits, 58);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("reliefline_cache_requests_total{cache=\"status_page\",result=\"hit\"}"),
        "{metrics}"
    );

    // A new update makes the next visitor see it: one more load and rendering.
    let id = app.state.incidents.open_incidents().await.unwrap().records[0]
        .incident
        .id;
    post_update(
        &app,
        &id.to_string(),
        "identified",
        "원인 확인",
        "Cause found",
    )
    .await;
    let html = app
        .client
        .get(app.url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("원인 확인"));
    assert_eq!(
        app.state.web.cache_counts(PageCacheName::Status).misses - page_before.misses,
        3
    );
    // The form page is cached too, without anyone's token in it.
    let html = |client: reqwest::Client| {
        let url = app.url("/report");
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let (a, b) = (html(browser()).await, html(browser()).await);
    assert_ne!(value_of(&a, "csrf"), value_of(&b, "csrf"));
    let forms = app.state.web.cache_counts(PageCacheName::ReportForm);
    assert_eq!((forms.misses, forms.hits), (1, 1));
    app.stop().await;
}

on_both_backends!(
    every_page_is_korean_by_default_and_english_on_request,
    the_incident_form_is_prefilled_and_gives_one_receipt_per_form,
    field_errors_are_shown_next_to_their_fields,
    a_busy_service_returns_the_form_with_everything_typed,
    a_rate_limited_form_comes_back_with_429_and_the_wait,
    switching_language_on_a_form_keeps_what_was_typed,
    the_receipt_confirmation_speaks_the_language_of_the_form,
    a_post_without_a_valid_token_is_refused_and_stores_nothing,
    pages_carry_security_headers_and_lookups_are_never_stored,
    the_atom_feed_lists_every_update,
    a_crowd_on_the_status_page_costs_one_store_query,
);
