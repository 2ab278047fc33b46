//! `POST /oauth/token`: single-use refresh tokens, access tokens replaced by the next
//! refresh or expired by the test, and form validation.

mod common;

use common::{bearer, get, post_form};
use intake_sample_platform::{Fixture, SamplePlatform};

fn refresh(p: &SamplePlatform, token: &str) -> common::Reply {
    post_form(
        p.addr(),
        "/oauth/token",
        &format!("grant_type=refresh_token&refresh_token={token}&client_id=intake-demo"),
    )
}

#[test]
fn refresh_tokens_are_single_use() {
    let p = SamplePlatform::start(Fixture::demo()).expect("start");
    assert_eq!(
        p.current_refresh_token("umbrella").as_deref(),
        Some("adsample-refresh-umbrella-0")
    );
    assert_eq!(p.current_refresh_token("acme"), None);

    let reply = refresh(&p, "adsample-refresh-umbrella-0");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let first = reply.json();
    assert_eq!(first["token_type"], "bearer");
    assert_eq!(first["expires_in"], 3600);
    let access = first["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let next = first["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    assert_ne!(next, "adsample-refresh-umbrella-0");
    assert_eq!(
        p.current_refresh_token("umbrella").as_deref(),
        Some(next.as_str())
    );

    let me = get(p.addr(), "/v1/me", Some(&bearer(&access)));
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["accounts"], serde_json::json!(["umbrella"]));
    assert_eq!(
        get(
            p.addr(),
            "/v1/accounts/umbrella/campaign-stats",
            Some(&bearer(&access))
        )
        .status,
        200
    );

    // The used refresh token is dead.
    let reply = refresh(&p, "adsample-refresh-umbrella-0");
    assert_eq!(
        (reply.status, reply.error()),
        (400, "invalid_grant".to_owned())
    );

    // The next refresh invalidates the previous access token.
    let second = refresh(&p, &next).json();
    let access2 = second["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    assert_ne!(access, access2);
    assert_eq!(get(p.addr(), "/v1/me", Some(&bearer(&access))).status, 401);
    assert_eq!(get(p.addr(), "/v1/me", Some(&bearer(&access2))).status, 200);

    // Expiry kills access tokens but not the refresh token.
    p.expire_access_tokens();
    let reply = get(p.addr(), "/v1/me", Some(&bearer(&access2)));
    assert_eq!(
        (reply.status, reply.error()),
        (401, "invalid_token".to_owned())
    );
    let current = p
        .current_refresh_token("umbrella")
        .expect("oauth principal");
    let third = refresh(&p, &current).json();
    let access3 = third["access_token"].as_str().expect("access token");
    assert_eq!(get(p.addr(), "/v1/me", Some(&bearer(access3))).status, 200);

    // Revoking the access token or the refresh token.
    p.revoke_token(access3);
    assert_eq!(get(p.addr(), "/v1/me", Some(&bearer(access3))).status, 401);
    let current = p
        .current_refresh_token("umbrella")
        .expect("oauth principal");
    p.revoke_token(&current);
    assert_eq!(refresh(&p, &current).status, 400);

    // The log keeps the form bodies, secrets included, as sent.
    let posts: Vec<_> = p
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 5);
    assert_eq!(posts[0].path, "/oauth/token");
    assert_eq!(
        posts[0].body.as_deref(),
        Some(
            "grant_type=refresh_token&refresh_token=adsample-refresh-umbrella-0&client_id=intake-demo"
        )
    );
}

#[test]
fn bad_token_requests_get_400() {
    let p = SamplePlatform::start(Fixture::demo()).expect("start");
    let cases = [
        (
            "grant_type=refresh_token&refresh_token=adsample-refresh-umbrella-0&client_id=other",
            "invalid_grant",
        ),
        (
            "grant_type=refresh_token&refresh_token=nope&client_id=intake-demo",
            "invalid_grant",
        ),
        (
            "grant_type=password&refresh_token=adsample-refresh-umbrella-0&client_id=intake-demo",
            "bad_request",
        ),
        (
            "refresh_token=adsample-refresh-umbrella-0&client_id=intake-demo",
            "bad_request",
        ),
        (
            "grant_type=refresh_token&client_id=intake-demo",
            "bad_request",
        ),
        (
            "grant_type=refresh_token&refresh_token=adsample-refresh-umbrella-0",
            "bad_request",
        ),
    ];
    for (form, error) in cases {
        let reply = post_form(p.addr(), "/oauth/token", form);
        assert_eq!(
            (reply.status, reply.error()),
            (400, error.to_owned()),
            "{form}"
        );
    }
    // Not a form at all.
    let reply = common::send(
        p.addr(),
        "POST",
        "/oauth/token",
        &[("content-type", "application/json")],
        Some("{}"),
    );
    assert_eq!(
        (reply.status, reply.error()),
        (400, "bad_request".to_owned())
    );
    let reply = get(p.addr(), "/oauth/token", None);
    assert_eq!((reply.status, reply.error()), (404, "not_found".to_owned()));
    // None of that used up the refresh token.
    assert_eq!(
        p.current_refresh_token("umbrella").as_deref(),
        Some("adsample-refresh-umbrella-0")
    );
}
