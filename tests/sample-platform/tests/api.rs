//! The HTTP API against `docs/sample-platform.md`: authentication, account access,
//! pagination, query validation, injected failures, rate limiting and shutdown.

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{basic, bearer, get, send};
use intake_sample_platform::{Fixture, SamplePlatform};
use serde_json::{Value, json};

const ACME: &str = "adsample-token-acme";
const GLOBEX: &str = "adsample-token-globex";

fn start() -> SamplePlatform {
    SamplePlatform::start(Fixture::demo()).expect("start the sample platform")
}

#[test]
fn good_token_sees_its_principal() {
    let p = start();
    assert!(p.base_url().starts_with("http://127.0.0.1:"));
    assert!(!p.base_url().ends_with('/'));
    let reply = get(p.addr(), "/v1/me", Some(&bearer(ACME)));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        json!({"principal": "acme", "accounts": ["acme-eu", "acme-us"]})
    );
    let reply = get(
        p.addr(),
        "/v1/accounts/acme-eu/campaign-stats",
        Some(&bearer(ACME)),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["data"].as_array().map(Vec::len), Some(60));
    assert_eq!(reply.json()["next_page_token"], Value::Null);
}

#[test]
fn echo_quotes_the_authorization_of_a_401_and_padding_keeps_json_valid() {
    let p = start();
    let reply = get(p.addr(), "/v1/me", Some(&bearer("CANARY-1")));
    assert_eq!(reply.status, 401);
    assert!(!reply.body.contains("CANARY-1"), "{}", reply.body);
    p.echo_authorization(true);
    let reply = get(p.addr(), "/v1/me", Some(&bearer("CANARY-1")));
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json()["message"],
        "unknown or expired credential; received authorization: \"Bearer CANARY-1\""
    );
    let reply = get(p.addr(), "/v1/me", Some(&bearer(ACME)));
    assert_eq!(reply.status, 200, "a good credential is not affected");

    p.pad_responses(10_000);
    let reply = get(p.addr(), "/v1/me", Some(&bearer(ACME)));
    assert_eq!(reply.status, 200);
    assert!(reply.body.len() > 10_000, "{}", reply.body.len());
    assert_eq!(reply.json()["principal"], "acme");
    p.pad_responses(0);
    let reply = get(p.addr(), "/v1/me", Some(&bearer(ACME)));
    assert!(reply.body.len() < 100, "{}", reply.body);
}

#[test]
fn bad_credentials_get_401() {
    let p = start();
    for auth in [
        Some("Bearer nope"),
        None,
        Some("Bearer"),
        Some("Token x"),
        Some("Basic %%%"),
    ] {
        let reply = get(p.addr(), "/v1/me", auth);
        assert_eq!(reply.status, 401, "{auth:?}");
        assert_eq!(reply.error(), "invalid_token");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
}

#[test]
fn revoked_token_gets_401_and_new_token_works() {
    let p = start();
    p.revoke_token(ACME);
    let reply = get(p.addr(), "/v1/me", Some(&bearer(ACME)));
    assert_eq!(
        (reply.status, reply.error()),
        (401, "invalid_token".to_owned())
    );
    p.add_bearer_token("rotated-acme", "acme");
    let reply = get(p.addr(), "/v1/me", Some(&bearer("rotated-acme")));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["principal"], "acme");
    // The request log shows what arrived.
    let log = p.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(
        log[0].authorization.as_deref(),
        Some("Bearer adsample-token-acme")
    );
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str(), log[0].status),
        ("GET", "/v1/me", 401)
    );
    assert_eq!(log[1].status, 200);
    p.clear_requests();
    assert!(p.requests().is_empty());
}

#[test]
fn other_account_is_403_and_unknown_is_404() {
    let p = start();
    let reply = get(
        p.addr(),
        "/v1/accounts/acme-us/campaign-stats",
        Some(&bearer(GLOBEX)),
    );
    assert_eq!((reply.status, reply.error()), (403, "forbidden".to_owned()));
    let reply = get(
        p.addr(),
        "/v1/accounts/nope/campaign-stats",
        Some(&bearer(GLOBEX)),
    );
    assert_eq!((reply.status, reply.error()), (404, "not_found".to_owned()));
    let reply = get(p.addr(), "/v1/nothing-here", Some(&bearer(GLOBEX)));
    assert_eq!((reply.status, reply.error()), (404, "not_found".to_owned()));
    let reply = send(
        p.addr(),
        "DELETE",
        "/v1/me",
        &[("authorization", &bearer(GLOBEX))],
        None,
    );
    assert_eq!((reply.status, reply.error()), (404, "not_found".to_owned()));
}

/// Reads every page of `account` with `page_size`, checking each row shows up once.
fn read_all(p: &SamplePlatform, auth: &str, account: &str, query: &str) -> (Vec<Value>, usize) {
    let mut rows = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("/v1/accounts/{account}/campaign-stats?{query}");
        if let Some(token) = &token {
            path.push_str(&format!("&page_token={token}"));
        }
        let reply = get(p.addr(), &path, Some(auth));
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let json = reply.json();
        rows.extend(json["data"].as_array().cloned().unwrap_or_default());
        pages += 1;
        match &json["next_page_token"] {
            Value::String(next) => token = Some(next.clone()),
            Value::Null => return (rows, pages),
            other => panic!("next_page_token {other}"),
        }
    }
}

#[test]
fn pagination_covers_all_rows_exactly_once() {
    let p = start();
    let (rows, pages) = read_all(&p, &bearer(ACME), "acme-us", "page_size=7");
    assert_eq!(rows.len(), 90);
    assert_eq!(pages, 13);
    assert_eq!(rows, p.expected_rows("acme-us", None));
    let keys: HashSet<(String, String)> = rows
        .iter()
        .map(|r| (r["date"].to_string(), r["campaign_id"].to_string()))
        .collect();
    assert_eq!(keys.len(), 90);
    assert_eq!(rows[0]["date"], "2026-11-01");
    assert_eq!(rows[0]["campaign_id"], "acme-us-c1");
    assert_eq!(rows[0]["campaign_name"], "Acme US Campaign 1");
    assert_eq!(rows[89]["date"], "2026-11-30");
    for field in ["impressions", "clicks", "spend_micros"] {
        assert!(rows.iter().all(|r| r[field].is_u64()), "{field}");
    }

    // `since` is inclusive; with it repeated on every page, or only on the first.
    let expected = p.expected_rows("acme-us", Some("2026-11-28"));
    assert_eq!(expected.len(), 9);
    let (rows, pages) = read_all(&p, &bearer(ACME), "acme-us", "since=2026-11-28&page_size=4");
    assert_eq!((rows, pages), (expected.clone(), 3));
    let first = get(
        p.addr(),
        "/v1/accounts/acme-us/campaign-stats?since=2026-11-28&page_size=5",
        Some(&bearer(ACME)),
    )
    .json();
    let token = first["next_page_token"].as_str().expect("a second page");
    let second = get(
        p.addr(),
        &format!("/v1/accounts/acme-us/campaign-stats?page_token={token}&page_size=5"),
        Some(&bearer(ACME)),
    )
    .json();
    assert_eq!(
        second["data"].as_array().map(Vec::as_slice),
        Some(&expected[5..])
    );
    assert_eq!(second["next_page_token"], Value::Null);

    // Before the first day: everything; after the last: nothing.
    let (rows, _) = read_all(&p, &bearer(ACME), "acme-us", "since=2026-01-01");
    assert_eq!(rows.len(), 90);
    let (rows, _) = read_all(&p, &bearer(ACME), "acme-us", "since=2026-12-01");
    assert!(rows.is_empty());
}

#[test]
fn bad_query_parameters_get_400() {
    let p = start();
    let base = "/v1/accounts/acme-us/campaign-stats";
    let first = get(
        p.addr(),
        &format!("{base}?page_size=10"),
        Some(&bearer(ACME)),
    )
    .json();
    let token = first["next_page_token"]
        .as_str()
        .expect("more pages")
        .to_owned();
    let mut tampered = token.clone();
    tampered.replace_range(0..1, if token.starts_with('A') { "B" } else { "A" });
    for query in [
        "page_size=0".to_owned(),
        "page_size=501".to_owned(),
        "page_size=ten".to_owned(),
        "page_size=-1".to_owned(),
        "since=2026-13-01".to_owned(),
        "since=yesterday".to_owned(),
        "since=".to_owned(),
        format!("page_token={tampered}"),
        "page_token=garbage".to_owned(),
        format!("page_token={token}&since=2026-11-02"),
    ] {
        let reply = get(p.addr(), &format!("{base}?{query}"), Some(&bearer(ACME)));
        assert_eq!(
            (reply.status, reply.error()),
            (400, "bad_request".to_owned()),
            "{query}"
        );
    }
    // A token of one account is no good for another.
    let reply = get(
        p.addr(),
        &format!("/v1/accounts/acme-eu/campaign-stats?page_token={token}"),
        Some(&bearer(ACME)),
    );
    assert_eq!(reply.status, 400);
    assert_eq!(
        get(
            p.addr(),
            &format!("{base}?page_size=500"),
            Some(&bearer(ACME))
        )
        .status,
        200
    );
}

#[test]
fn basic_auth() {
    let p = start();
    let reply = get(
        p.addr(),
        "/v1/me",
        Some(&basic("initech", "initech-secret")),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"principal": "initech", "accounts": ["initech"]})
    );
    let (rows, _) = read_all(&p, &basic("initech", "initech-secret"), "initech", "");
    assert_eq!(rows.len(), 60);
    let reply = get(p.addr(), "/v1/me", Some(&basic("initech", "wrong")));
    assert_eq!(
        (reply.status, reply.error()),
        (401, "invalid_token".to_owned())
    );
    let reply = get(p.addr(), "/v1/me", Some(&basic("nobody", "initech-secret")));
    assert_eq!(reply.status, 401);
    p.revoke_token("initech-secret");
    let reply = get(
        p.addr(),
        "/v1/me",
        Some(&basic("initech", "initech-secret")),
    );
    assert_eq!(reply.status, 401);
}

#[test]
fn fail_next_answers_injected_statuses_before_auth() {
    let p = start();
    p.fail_next(2, 429);
    p.fail_next(1, 503);
    p.fail_next(1, 500);
    for _ in 0..2 {
        let reply = get(p.addr(), "/v1/me", None);
        assert_eq!(
            (reply.status, reply.error()),
            (429, "rate_limited".to_owned())
        );
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    // /oauth/token is not /v1 and does not consume injected failures.
    assert_eq!(
        common::post_form(p.addr(), "/oauth/token", "grant_type=x").status,
        400
    );
    let reply = get(p.addr(), "/v1/me", Some(&bearer(ACME)));
    assert_eq!(
        (reply.status, reply.error()),
        (503, "unavailable".to_owned())
    );
    let reply = get(p.addr(), "/v1/me", Some(&bearer(ACME)));
    assert_eq!((reply.status, reply.error()), (500, "internal".to_owned()));
    assert_eq!(get(p.addr(), "/v1/me", Some(&bearer(ACME))).status, 200);
    let statuses: Vec<u16> = p.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 400, 503, 500, 200]);
}

#[test]
fn rate_limit_kicks_in_per_principal() {
    let p = start();
    p.set_rate_limit(1, 3);
    for _ in 0..3 {
        assert_eq!(get(p.addr(), "/v1/me", Some(&bearer(ACME))).status, 200);
    }
    let reply = get(p.addr(), "/v1/me", Some(&bearer(ACME)));
    assert_eq!(
        (reply.status, reply.error()),
        (429, "rate_limited".to_owned())
    );
    let seconds: u64 = reply
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .expect("retry-after seconds");
    assert!((1..=2).contains(&seconds), "{seconds}");
    // Another principal has its own bucket; lifting the limit lets acme in again.
    assert_eq!(get(p.addr(), "/v1/me", Some(&bearer(GLOBEX))).status, 200);
    p.set_rate_limit(0, 0);
    for _ in 0..10 {
        assert_eq!(get(p.addr(), "/v1/me", Some(&bearer(ACME))).status, 200);
    }
}

#[test]
fn demo_rate_limit_allows_a_burst_of_100() {
    let p = start();
    let started = Instant::now();
    let statuses: Vec<u16> = (0..110)
        .map(|_| get(p.addr(), "/v1/me", Some(&bearer(ACME))).status)
        .collect();
    let elapsed = started.elapsed();
    assert!(statuses[..100].iter().all(|s| *s == 200));
    // The bucket refills 50 per second: sending 110 in less than 10 / 50 seconds must
    // see at least one refused (a slow machine may not get there that fast).
    if elapsed < Duration::from_millis(150) {
        assert!(statuses.contains(&429), "{statuses:?}");
    }
}

#[test]
fn add_days_extends_the_data() {
    let p = start();
    assert_eq!(p.expected_rows("globex", None).len(), 120);
    p.add_days(2);
    let new = p.expected_rows("globex", Some("2026-12-01"));
    assert_eq!(new.len(), 8);
    assert_eq!(new[7]["date"], "2026-12-02");
    let (rows, _) = read_all(&p, &bearer(GLOBEX), "globex", "since=2026-12-01");
    assert_eq!(rows, new);
    assert!(p.expected_rows("nope", None).is_empty());
    assert!(p.expected_rows("globex", Some("bad")).is_empty());
}

#[test]
fn drop_stops_the_server_even_with_an_idle_connection() {
    let p = start();
    let addr = p.addr();
    let idle = TcpStream::connect(addr).expect("connect");
    let started = Instant::now();
    drop(p);
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(idle);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn start_on_a_taken_address_fails() {
    let p = start();
    assert!(SamplePlatform::start_on(p.addr(), Fixture::demo()).is_err());
}

#[tokio::test]
async fn works_from_an_async_test() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let p = start();
    let mut stream = tokio::net::TcpStream::connect(p.addr())
        .await
        .expect("connect");
    let request = format!(
        "GET /v1/me HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {ACME}\r\nconnection: close\r\n\r\n",
        p.addr()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let reply = common::parse(&raw);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["principal"], "acme");
    drop(p);
}
