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

/// `action` is `/unsubscribe/{id}/{token}` with a parsed id and a token that matched, so it
/// holds only hexadecimal digits, hyphens and slashes.
pub fn unsubscribe_form(action: &str) -> Response {
    page(
        StatusCode::OK,
        "수신 거부 · Unsubscribe",
        &format!(
            "<p>이 구독의 장애 소식을 더 이상 받지 않으려면 아래 버튼을 누르세요.</p>\n\
             <p lang=\"en\">Press the button to stop outage notices for this subscription.</p>\n\
             <form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">수신 거부 · Unsubscribe</button></form>"
        ),
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

pub fn unknown_link() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "찾을 수 없는 링크 · Link not found",
        "<p>링크가 올바르지 않습니다. 메시지의 링크를 그대로 열어 주세요.</p>\n\
         <p lang=\"en\">This link is not valid. Please open the link from the message as \
         it is.</p>",
    )
}
