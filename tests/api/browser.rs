//! End to end in a real headless browser (Debian's chromium, driven through chromedriver):
//! a person sees the outage banner, reports harm on the incident form in Korean, reads the
//! receipt, looks the report up and checks the status page.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::Backend;
use crate::web::{declare, spawn};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// `None` (with a visible notice) when the browser is not installed outside CI; in CI a
    /// missing browser fails the test.
    async fn start() -> Option<Self> {
        for program in [CHROMEDRIVER, CHROMIUM] {
            if !Path::new(program).exists() {
                assert!(
                    !in_ci(),
                    "{program} is missing: the browser test needs Debian's chromium and \
                     chromium-driver (.ci/run installs them)"
                );
                eprintln!("NOTICE: browser test SKIPPED — {program} is not installed");
                return None;
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let probe = reqwest::Client::new();
        for _ in 0..300 {
            if probe
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Some(driver);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start listening on port {port}");
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--lang=ko-KR", "--window-size=412,915"],
                "prefs": {"intl.accept_languages": "ko-KR,ko"}
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

async fn css(browser: &Client, selector: &str) -> fantoccini::elements::Element {
    let found = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(selector))
        .await;
    match found {
        Ok(element) => element,
        Err(e) => {
            let url = browser.current_url().await.map(|u| u.to_string());
            let text = match browser.find(Locator::Css("main")).await {
                Ok(main) => main.text().await.unwrap_or_default(),
                Err(_) => browser.source().await.unwrap_or_default(),
            };
            panic!("{selector} not on the page ({e}); at {url:?}:\n{text}")
        }
    }
}

async fn type_into(browser: &Client, selector: &str, text: &str) {
    let field = css(browser, selector).await;
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_reports_harm_in_korean_and_follows_it_up() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = spawn(Backend::Sqlite, |_| {}).await.expect("sqlite app");
    let incident = declare(&app).await;
    let browser = driver.browser().await;
    // Run the visit as its own task so a failed step still closes the browser.
    let visit = tokio::spawn({
        let (browser, base) = (browser.clone(), app.url(""));
        async move { walk_through(&browser, &base, &incident).await }
    });
    let outcome = visit.await;
    drop(browser.close().await);
    app.stop().await;
    match outcome {
        Ok(result) => result.unwrap(),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The whole visit; an error names the step that failed.
async fn walk_through(browser: &Client, base: &str, incident: &str) -> Result<(), String> {
    browser
        .goto(&format!("{base}/"))
        .await
        .map_err(|e| e.to_string())?;
    let banner = css(browser, "#incident-banner").await.text().await.unwrap();
    assert!(banner.contains("카카오 서비스 장애"), "banner: {banner}");
    assert!(
        banner.contains("진행 중인 장애"),
        "banner in Korean: {banner}"
    );

    // "Report harm" leads to the incident's own form, already filled in.
    css(browser, "#action-report").await.click().await.unwrap();
    css(browser, "#report-form").await;
    let header = css(browser, "#incident-header").await.text().await.unwrap();
    assert!(header.contains("KakaoTalk") && header.contains("2022-10-15 15:30 KST"));
    let value = |id: &'static str| async move {
        css(browser, id)
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
    };
    assert_eq!(value("#provider").await, "Kakao");
    assert_eq!(value("#service").await, "KakaoTalk");
    assert_eq!(
        css(browser, "input[name=incident_id]")
            .await
            .attr("value")
            .await
            .unwrap()
            .as_deref(),
        Some(incident)
    );

    css(browser, "#reporter_type-individual")
        .await
        .click()
        .await
        .unwrap();
    css(browser, "#harm_type")
        .await
        .select_by_value("service_unavailable")
        .await
        .unwrap();
    type_into(browser, "#amount", "30000").await;
    type_into(browser, "#title", "메신저 불통").await;
    type_into(
        browser,
        "#description",
        "주말 내내 카카오톡으로 가족과 연락할 수 없었습니다.",
    )
    .await;
    type_into(browser, "#name", "홍길동").await;
    type_into(browser, "#phone", "010-1234-5678").await;
    css(browser, "#notify_sms").await.click().await.unwrap();
    css(browser, "#consent").await.click().await.unwrap();
    assert_eq!(value("#name").await, "홍길동");

    // The language switch, before anything was submitted, keeps everything typed.
    for lang in ["en", "ko"] {
        css(browser, "#lang-switch").await.click().await.unwrap();
        css(browser, &format!("html[lang={lang}] #report-form")).await;
        assert_eq!(value("#name").await, "홍길동");
        assert_eq!(value("#amount").await, "30000");
        assert_eq!(value("#phone").await, "010-1234-5678");
        assert_eq!(value("#harm_type").await, "service_unavailable");
        assert!(css(browser, "#consent").await.is_selected().await.unwrap());
        assert!(
            css(browser, "#notify_sms")
                .await
                .is_selected()
                .await
                .unwrap()
        );
        let findings = browser.find_all(Locator::Css(".error")).await.unwrap();
        assert!(
            findings.is_empty(),
            "no findings before the form was submitted"
        );
    }
    css(browser, "#submit").await.click().await.unwrap();

    // The receipt, in large type.
    let receipt = css(browser, "#receipt").await.text().await.unwrap();
    let receipt = receipt.trim().to_owned();
    assert!(
        receipt.starts_with("HR-") && receipt.len() == 22,
        "receipt: {receipt}"
    );
    let page = css(browser, "main").await.text().await.unwrap();
    assert!(page.contains("신고가 접수되었습니다"), "{page}");

    // Look it up with the receipt and the phone number.
    css(browser, "#to-lookup").await.click().await.unwrap();
    css(browser, "#lookup-form").await;
    type_into(browser, "#receipt", &receipt).await;
    type_into(browser, "#contact", "010-1234-5678").await;
    css(browser, "#submit").await.click().await.unwrap();
    let status = css(browser, "#report-status").await;
    assert_eq!(
        status.attr("data-status").await.unwrap().as_deref(),
        Some("received")
    );
    assert_eq!(status.text().await.unwrap().trim(), "접수됨");
    let result = css(browser, "#lookup-result").await.text().await.unwrap();
    assert!(result.contains(&receipt) && result.contains("카카오 서비스 장애"));

    // And the status page shows the incident with its timeline.
    browser
        .find(Locator::LinkText("장애 현황"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let card = css(browser, &format!("#incident-{incident}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(card.contains("카카오 서비스 장애"), "{card}");
    assert!(
        card.contains("데이터센터 화재로 서비스가 중단되었습니다."),
        "{card}"
    );
    assert!(card.contains("KakaoTalk, Kakao T"), "{card}");
    Ok(())
}
