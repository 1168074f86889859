//! What the HTTP proxy answers when it does not forward: 403 with the rule that denied,
//! 400 for what is not a proxy request, 502 for upstream failures.

use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{
    Response, StatusCode,
    body::Bytes,
    header::{self, HeaderValue},
};

use crate::config::http_proxy::Verdict;

/// A response body of the proxy: the upstream's, or one of its own.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// Why a request was not forwarded.
pub(crate) enum Refusal {
    /// By a rule (its line), or by no rule.
    Denied(Option<String>),
    /// Allowed by the rules, but the destination is one the router never connects to.
    Forbidden(String),
    BadRequest(&'static str),
    Upstream(String),
}

pub(crate) fn denied(verdict: Verdict<'_>) -> (Refusal, Option<String>) {
    match verdict {
        Verdict::Deny(rule) => (
            Refusal::Denied(Some(rule.line.clone())),
            Some(rule.line.clone()),
        ),
        _ => (Refusal::Denied(None), None),
    }
}

pub(crate) fn upstream_err(err: impl std::error::Error + 'static) -> (Refusal, Option<String>) {
    (
        Refusal::Upstream(crate::error_chain(&err).to_string()),
        None,
    )
}

pub(crate) fn refusal_response(refusal: &Refusal, target: &str) -> Response<Body> {
    let (status, text) = match refusal {
        Refusal::Denied(Some(rule)) => (
            StatusCode::FORBIDDEN,
            format!("egress-router: {target} is denied by rule '{rule}'\n"),
        ),
        Refusal::Denied(None) => (
            StatusCode::FORBIDDEN,
            format!(
                "egress-router: {target} is denied: no rule of EGRESS_HTTP_PROXY_DESTINATION \
                 allows it\n"
            ),
        ),
        Refusal::Forbidden(why) => (StatusCode::FORBIDDEN, format!("egress-router: {why}\n")),
        Refusal::BadRequest(why) => (StatusCode::BAD_REQUEST, format!("egress-router: {why}\n")),
        Refusal::Upstream(why) => (
            StatusCode::BAD_GATEWAY,
            format!("egress-router: {target}: {why}\n"),
        ),
    };
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}
