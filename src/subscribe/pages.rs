//! The small HTML pages behind the links in messages. Plain markup, no script and no inline
//! style (the CSP forbids both); the web pages may restyle them later. Nothing the visitor sent
//! is echoed except a validated id and token in the form's action.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"ko\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}\n</main>\n\
         </body>\n</html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

pub fn confirmed() -> Response {
    page(
        StatusCode::OK,
        "구독 확인 완료 · Subscription confirmed",
        "<p>장애 소식을 보내 드리겠습니다. 메시지마다 수신 거부 링크가 있습니다.</p>\n\
         <p lang=\"en\">You will receive outage notices. Every message has a link to stop \
         them.</p>",
    )
}

pub fn invalid_confirmation() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "확인할 수 없는 링크 · Link not valid",
        "<p>링크가 잘못되었거나 만료되었습니다. 다시 구독을 신청해 주세요.</p>\n\
         <p lang=\"en\">This link is wrong or has expired. Please subscribe again.</p>",
    )
}

/// A page whose button makes the one-click `POST` to `action`: `/unsubscribe/…` or
/// `/notices/stop/…` with a parsed id and a token that matched, so it holds only hexadecimal
/// digits, hyphens and slashes.
fn one_click_form(title: &str, intro: &str, action: &str) -> Response {
    page(
        StatusCode::OK,
        title,
        &format!(
            "{intro}\n<form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">{title}</button></form>"
        ),
    )
}

pub fn unsubscribe_form(action: &str) -> Response {
    one_click_form(
        "수신 거부 · Unsubscribe",
        "<p>이 구독의 장애 소식을 더 이상 받지 않으려면 아래 버튼을 누르세요.</p>\n\
         <p lang=\"en\">Press the button to stop outage notices for this subscription.</p>",
        action,
    )
}

pub fn unsubscribed() -> Response {
    page(
        StatusCode::OK,
        "수신 거부 완료 · Unsubscribed",
        "<p>이 구독으로는 더 이상 소식을 보내지 않습니다.</p>\n\
         <p lang=\"en\">You will receive no more notices from this subscription.</p>",
    )
}

pub fn stop_notices_form(action: &str) -> Response {
    one_click_form(
        "알림 중단 · Stop notices",
        "<p>이 장애에 대한 소식을 더 이상 받지 않으려면 아래 버튼을 누르세요. 신고하신 건의 \
         처리 결과는 계속 알려 드립니다.</p>\n\
         <p lang=\"en\">Press the button to stop notices about this outage. News about your \
         own report will still reach you.</p>",
        action,
    )
}

pub fn notices_stopped() -> Response {
    page(
        StatusCode::OK,
        "알림 중단 완료 · Notices stopped",
        "<p>이 장애에 대한 소식을 더 이상 보내지 않습니다. 신고하신 건의 처리 결과는 계속 알려 \
         드립니다.</p>\n\
         <p lang=\"en\">You will receive no more notices about this outage. News about your \
         own report will still reach you.</p>",
    )
}

pub fn unknown_link() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "찾을 수 없는 링크 · Link not found",
        "<p>링크가 올바르지 않습니다. 메시지의 링크를 그대로 열어 주세요.</p>\n\
         <p lang=\"en\">This link is not valid. Please open the link from the message as \
         it is.</p>",
    )
}
