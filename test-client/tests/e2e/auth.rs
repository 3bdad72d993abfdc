//! The front door (SECURITY.md): one test per threat. Each asserts the refusal AND that
//! a bystander client on the same upstream kept working.

use std::time::Duration;

use futures_util::SinkExt;
use protocol::{decode_message, ErrorFrame, FrameKind, Identity, Open, StreamId};
use serde_json::{json, Value};
use test_client::stack::{now_secs, Stack};
use test_client::token::{self, EdDsaKey, Es256Key};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Response;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// A client of the test's tenant that must keep working, and the snippet's counters once
/// it was answered (its upstream up).
struct Bystander {
    ws: Ws,
    joined: Value,
}

impl Bystander {
    async fn join(stack: &Stack) -> Bystander {
        let ws = bystander(stack).await;
        Bystander { ws, joined: stack.snippet_stats().await.expect("stats") }
    }

    /// It still gets answers, and nobody caused another upstream since it joined (on a
    /// stack of the test's own: its upstream is the only one).
    async fn still_fine(mut self, stack: &Stack) {
        assert_eq!(rpc(&mut self.ws, "echo", json!(["still here"]), 99).await["result"], json!(["still here"]));
        let stats = stack.snippet_stats().await.expect("stats");
        assert_eq!(delta(&self.joined, &stats, "backendConnects"), 0, "{stats}");
        park(self.ws);
    }
}

/// An upgrade with extra headers: Ok(response headers) or Err((status, body)).
async fn upgrade(url: &str, headers: &[(&str, &str)]) -> Result<(Ws, Response<Option<Vec<u8>>>), (u16, String)> {
    let mut req = url.into_client_request().expect("url");
    for (k, v) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = k.parse().expect("header name");
        req.headers_mut().insert(name, v.parse().expect("header value"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(ok) => Ok(ok),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res.body().as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            Err((res.status().as_u16(), body))
        }
        Err(e) => panic!("upgrade {url}: {e}"),
    }
}

/// POST with extra headers: (status, WWW-Authenticate, JSON body).
async fn post_with(url: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Option<String>, Value) {
    let mut req = reqwest::Client::new().post(url).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("POST");
    let status = res.status().as_u16();
    let challenge = res.headers().get("WWW-Authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = res.text().await.expect("body");
    (status, challenge, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn anonymous_sql_and_anonymous_upgrades_are_refused() {
    e2e().run(async |stack| {
        let by = Bystander::join(stack).await;
        let http = stack.snippet.http();
        let evil = json!({ "sql": "create table t(v); insert into t values (1)" });
        for path in ["/query", "/rpc"] {
            let (status, challenge, body) = post_with(&format!("{http}{path}"), &[], &evil).await;
            assert_eq!(status, 401, "{path}: {body}");
            assert_eq!(challenge.as_deref(), Some("Bearer realm=\"snippet-proxy\""), "{path}");
            assert!(body["requestId"].as_str().is_some_and(|id| id.len() == 16), "{body}");
        }
        for path in ["/ws", "/ws/echo"] {
            let err = upgrade(&format!("{}{path}", stack.snippet.ws()), &[]).await.err();
            assert_eq!(err.map(|e| e.0), Some(401), "{path}: refused before the upgrade, not accepted then closed");
        }
        // Nothing reached the backend: the table does not exist.
        let (s, b) =
            post(&format!("{http}/query"), Some(&stack.client_token), &json!({ "sql": "select * from t" })).await;
        assert_eq!(s, 400, "{b}");
        assert!(b.to_string().contains("no such table"), "{b}");
        by.still_fine(stack).await;
    });
}

#[test]
fn forged_expired_early_none_wrong_key_and_confused_tokens_are_refused() {
    let (ec, ed, stranger) = (Es256Key::generate(), EdDsaKey::generate(), Es256Key::generate());
    let jwks = json!({ "keys": [ec.public_jwk("ec1"), ed.public_jwk("ed1")] }).to_string();
    e2e().vars(&[("AUTH_JWKS", &jwks)]).run(async |stack| {
        let by = Bystander::join(stack).await;
        let now = now_secs();
        let good = token::claims("eve", "*", "read", 600, now);
        let secret = stack.auth_secret.as_bytes();
        let with = |extra: Value| {
            let mut c = good.clone();
            c.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
            c
        };
        let accepted = [
            ("HS256 with AUTH_SECRET", token::hs256(secret, &good)),
            ("ES256 with a JWKS key", ec.token(Some("ec1"), &good)),
            ("ES256 without kid", ec.token(None, &good)),
            ("EdDSA with a JWKS key", ed.token(Some("ed1"), &good)),
        ];
        let none = token::encode(&json!({ "alg": "none", "typ": "JWT" }), &good, |_| Vec::new());
        // The classic confusion: HS256 "signed" with the server's public key as the secret.
        let public = ec.public_jwk("ec1").to_string();
        let confused =
            token::encode(&json!({ "alg": "HS256", "kid": "ec1" }), &good, |d| token::hs256_sign(public.as_bytes(), d));
        let mut tampered = token::hs256(secret, &good);
        let payload = token::b64url(with(json!({ "scope": "admin" })).to_string().as_bytes());
        let parts: Vec<&str> = tampered.split('.').collect();
        tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        let refused = [
            ("forged (another secret)", token::hs256(b"not-the-secret-not-the-secret-not-the", &good)),
            ("tampered claims", tampered),
            ("expired", token::hs256(secret, &with(json!({ "exp": now - 1 })))),
            ("no exp", token::hs256(secret, &json!({ "sub": "eve", "tenant": "*", "scope": "read" }))),
            ("not yet valid (nbf beyond the 60 s leeway)", token::hs256(secret, &with(json!({ "nbf": now + 300 })))),
            ("alg none", none),
            ("wrong key (ES256, key not in AUTH_JWKS)", stranger.token(Some("ec1"), &good)),
            ("confused algorithm (HS256 keyed with the public JWK)", confused),
            ("garbage", "not.a.token".to_owned()),
        ];
        let rpc_url = format!("{}/rpc", stack.snippet.http());
        let ping = json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 });
        for (what, t) in &accepted {
            let (status, _, body) = post_with(&rpc_url, &[("Authorization", &bearer(t))], &ping).await;
            assert_eq!((status, &body["result"]), (200, &json!("pong")), "{what}: {body}");
        }
        for (what, t) in &refused {
            let (status, challenge, body) = post_with(&rpc_url, &[("Authorization", &bearer(t))], &ping).await;
            assert_eq!(status, 401, "{what}: {body}");
            assert!(challenge.unwrap_or_default().contains("invalid_token"), "{what}");
            assert!(!body.to_string().contains(t.as_str()), "{what}: the token is never echoed");
            let ws = format!("{}/ws?access_token={t}", stack.snippet.ws());
            assert_eq!(upgrade(&ws, &[]).await.err().map(|e| e.0), Some(401), "{what} (upgrade)");
        }
        by.still_fine(stack).await;
        let logs = stack.logs();
        for (what, t) in refused.iter().chain(&accepted) {
            assert!(!logs.contains(t.as_str()), "{what}: a token reached a log");
        }
    });
}

/// Each kind of write a read-scope caller might try, and a query that shows whether it
/// changed anything.
const WRITES: [&str; 22] = [
    "insert into notes (body) values ('x')",
    "update notes set body = 'changed'",
    "delete from notes",
    "replace into notes (id, body) values (1, 'replaced')",
    "insert or replace into notes (id, body) values (1, 'replaced')",
    "drop table notes",
    "alter table notes add column extra text",
    "create table sneaky (v)",
    "create trigger trg after insert on notes begin delete from notes; end",
    "create view v as select * from notes",
    "create index idx on notes (body)",
    "with w as (select 1) insert into notes (body) select 'cte' from w",
    "select 1; insert into notes (body) values ('second statement')",
    "attach database 'file:other' as other",
    "pragma user_version = 7",
    "insert into notes (body) values ('x') returning id",
    // Statements that would end or escape the enclosing transaction.
    "commit",
    "rollback",
    "savepoint s1",
    "release s1",
    "begin; insert into notes (body) values ('x'); commit",
    "create temp table t2 (v)",
];

/// Settings of the object's one SQLite connection that a `read` caller might try to
/// change: flags, not data, so a rollback does not undo them (RUNTIME.md §9). With each,
/// whether it outlives the read-only transaction, so must be refused: `foreign_keys`
/// cannot change inside a transaction and `defer_foreign_keys` ends with it, so those two
/// may answer (the backend refuses either if it sees it changed). The last two are
/// spelled to slip past a reading of the text.
const SETTING_CHANGES: [(&str, bool); 9] = [
    ("pragma ignore_check_constraints = 1", true),
    ("pragma recursive_triggers = on", true),
    ("pragma reverse_unordered_selects = yes", true),
    ("pragma legacy_alter_table = true", true),
    ("pragma case_sensitive_like = 1", true),
    ("pragma foreign_keys = 0", false),
    ("pragma defer_foreign_keys = 1", false),
    ("PRAGMA/**/main.ignore_check_constraints/**/=/**/'1'", true),
    ("select 1; pragma recursive_triggers = 1", true),
];

/// Every connection setting [`SETTING_CHANGES`] touches, in one row, as a writer sees it
/// (`case_sensitive_like` cannot be read back; `'a' like 'A'` shows it).
const SETTINGS_NOW: &str = "select (select * from pragma_ignore_check_constraints), \
     (select * from pragma_recursive_triggers), (select * from pragma_reverse_unordered_selects), \
     (select * from pragma_legacy_alter_table), (select * from pragma_foreign_keys), \
     (select * from pragma_defer_foreign_keys), 'a' like 'A'";

/// What a reader's settings did to writers before they were set back (issue 19): a
/// `CHECK` a writer's insert violates is enforced, a self-updating trigger fires once, and
/// `LIKE` ignores case.
async fn writers_are_unaffected<F, Fut>(admin_sql: &F, url: &str, reader: &str)
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    assert_eq!(admin_sql("create table checked (x integer check (x > 0))").await.0, 200);
    assert_eq!(admin_sql("create table counter (n integer)").await.0, 200);
    assert_eq!(admin_sql("insert into counter values (0)").await.0, 200);
    let bump = "create trigger bump after update on counter begin update counter set n = n + 1; end";
    assert_eq!(admin_sql(bump).await.0, 200);
    for sql in
        ["pragma ignore_check_constraints = 1", "pragma recursive_triggers = 1", "pragma case_sensitive_like = 1"]
    {
        let (status, body) = post(url, Some(reader), &json!({ "sql": sql })).await;
        assert_eq!(status, 403, "{sql}: {body}");
    }
    let (status, body) = admin_sql("insert into checked values (-1)").await;
    assert_eq!(status, 400, "the writer's CHECK still holds: {body}");
    assert!(body.to_string().contains("CHECK constraint failed"), "{body}");
    let (status, body) = admin_sql("update counter set n = n + 1").await;
    assert_eq!(status, 200, "the trigger does not recurse: {body}");
    assert_eq!(admin_sql("select n from counter").await.1["rows"], json!([[2]]), "updated, then bumped once");
    assert_eq!(admin_sql("select 'a' like 'A'").await.1["rows"], json!([[1]]), "LIKE still ignores case");
    for sql in ["drop trigger bump", "drop table counter", "drop table checked"] {
        assert_eq!(admin_sql(sql).await.0, 200, "{sql}");
    }
}

#[test]
fn a_read_scope_token_cannot_write_by_any_statement() {
    // On the shared stack, under a tenant of its own: a database nobody else has touched.
    const TENANT: &str = "read-scope";
    e2e().tenant(TENANT).run(async |stack| {
        let by = Bystander::join(stack).await;
        let url = format!("{}/query", stack.snippet.http());
        let q = |sql: &str| json!({ "sql": sql });
        let writer = stack.mint("w", TENANT, "write", 600);
        let reader = stack.mint("r", TENANT, "read", 600);
        let admin_sql = |sql: &'static str| {
            let (url, writer) = (url.clone(), writer.clone());
            async move { post(&url, Some(&writer), &json!({ "sql": sql })).await }
        };
        assert_eq!(admin_sql("create table notes (id integer primary key, body text)").await.0, 200);
        assert_eq!(admin_sql("insert into notes (body) values ('original')").await.0, 200);
        let snapshot = || async {
            let rows = admin_sql("select id, body from notes order by id").await.1;
            let schema = admin_sql("select type, name, sql from sqlite_master order by name").await.1;
            let version = admin_sql("pragma user_version").await.1;
            let settings = admin_sql(SETTINGS_NOW).await.1;
            (rows["rows"].clone(), schema["rows"].clone(), version["rows"].clone(), settings["rows"].clone())
        };
        let before = snapshot().await;
        assert_eq!(before.0, json!([[1, "original"]]));
        assert_eq!(before.3, json!([[0, 0, 0, 0, 1, 0, 1]]), "SQLite's defaults");
        // Reads work.
        let (s, b) = post(&url, Some(&reader), &q("select body from notes")).await;
        assert_eq!((s, &b["rows"]), (200, &json!([["original"]])), "{b}");
        let mut outcomes = Vec::new();
        // Settings first: after a string of several statements has run (the last of
        // SETTING_CHANGES, one of WRITES), `case_sensitive_like` silently does nothing
        // (RUNTIME.md §9), and these must see it take effect.
        writers_are_unaffected(&admin_sql, &url, &reader).await;
        assert_eq!(snapshot().await, before);
        for (sql, changes_something) in SETTING_CHANGES {
            let (status, body) = post(&url, Some(&reader), &q(sql)).await;
            assert_eq!(snapshot().await, before, "{sql:?} changed the connection for everyone");
            if changes_something {
                assert_eq!((status, &body["code"]), (403, &json!(-32004)), "{sql:?}: {body}");
            }
            outcomes.push(format!("{status} {sql}"));
        }
        for sql in WRITES {
            let (status, body) = post(&url, Some(&reader), &q(sql)).await;
            assert_ne!(status, 200, "a read token got a result for {sql:?}: {body}");
            assert_eq!(snapshot().await, before, "{sql:?} changed the database");
            outcomes.push(format!("{status} {sql}"));
        }
        eprintln!("read-scope write attempts:\n  {}", outcomes.join("\n  "));
        // The same over a WebSocket stream, JSON-RPC style.
        let mut ws = ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&reader)).await.expect("ws");
        let r = rpc(&mut ws, "sql", json!({ "sql": "delete from notes" }), 5).await;
        assert_eq!(r["error"]["code"], -32004, "{r}");
        assert_eq!(snapshot().await, before);
        // Other scopes: broadcast needs publish, stats needs admin.
        assert_eq!(rpc(&mut ws, "broadcast", json!({ "message": "spam" }), 6).await["error"]["code"], -32002);
        assert_eq!(rpc(&mut ws, "stats", json!([]), 7).await["error"]["code"], -32002);
        // The object's bookkeeping is out of reach of SQL, whatever the scope: the KV
        // table exists (the object keeps its wake counter there) and SQL is refused access.
        let tables = admin_sql("select name from sqlite_master where name like '%cf_kv%'").await.1;
        assert!(tables["rows"].to_string().to_lowercase().contains("cf_kv"), "the KV table exists: {tables}");
        let kv_table = tables["rows"][0][0].as_str().unwrap_or_default().to_owned();
        for t in [&reader, &writer] {
            for sql in [format!("select * from {kv_table}"), format!("delete from {kv_table}")] {
                let (s, b) = post(&url, Some(t), &json!({ "sql": sql })).await;
                assert_eq!(s, 400, "{sql}: {b}");
                assert!(!b.to_string().contains("no such table"), "refused, not missing: {b}");
            }
        }
        by.still_fine(stack).await;
    });
}

#[test]
fn a_token_in_the_query_or_protocol_works_for_browser_style_upgrades_and_is_not_forwarded() {
    e2e().run(async |stack| {
        let t = stack.mint("browser-user", "default", "read", 600);
        let by = Bystander::join(stack).await;
        // HTTP routes take the token only in the header (a URL ends up in request logs).
        let (status, _, _) =
            post_with(&format!("{}/rpc?access_token={t}", stack.snippet.http()), &[], &json!({})).await;
        assert_eq!(status, 400);
        let (mut ws, res) =
            upgrade(&format!("{}/ws?access_token={t}", stack.snippet.ws()), &[]).await.expect("upgrade");
        assert!(res.headers().get("Sec-WebSocket-Protocol").is_none());
        let who = rpc(&mut ws, "whoami", json!([]), 1).await["result"].clone();
        assert_eq!(who["subject"], "browser-user", "{who}");
        assert_eq!((who["tenant"].as_str(), who["scopes"].as_str()), (Some("default"), Some("read")), "{who}");
        // A browser offers the token as a subprotocol entry and gets its real protocol back.
        let offer = format!("snippet-proxy, bearer.{t}");
        let (mut ws2, res) = upgrade(&format!("{}/ws", stack.snippet.ws()), &[("Sec-WebSocket-Protocol", &offer)])
            .await
            .expect("upgrade");
        let chosen = res.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(chosen.as_deref(), Some("snippet-proxy"));
        assert_eq!(rpc(&mut ws2, "whoami", json!([]), 2).await["result"]["subject"], "browser-user");
        // One place only.
        let twice =
            upgrade(&format!("{}/ws?access_token={t}", stack.snippet.ws()), &[("Authorization", &bearer(&t))]).await;
        assert_eq!(twice.err().map(|e| e.0), Some(400));
        let only_token =
            upgrade(&format!("{}/ws", stack.snippet.ws()), &[("Sec-WebSocket-Protocol", &format!("bearer.{t}"))]).await;
        assert_eq!(only_token.err().map(|e| e.0), Some(400), "a lone token entry cannot be chosen as the protocol");
        by.still_fine(stack).await;
        // What reaches the backend is frames; had the token been forwarded or logged
        // anywhere on the way (URL, header, subprotocol), one of the two logs would hold
        // it. All of both logs: on a shared stack, no test may have logged a token.
        let logs = stack.logs();
        assert!(!logs.contains("access_token="), "no URL with a token is logged");
        assert!(!logs.contains(&t), "the token is in no log");
    });
}

#[test]
fn cross_origin_upgrades_are_refused_and_cors_answers_the_allowed_list() {
    e2e().vars(&[("ALLOWED_ORIGINS", "https://app.example")]).run(async |stack| {
        let by = Bystander::join(stack).await;
        let t = stack.client_token.clone();
        let ws = format!("{}/ws?access_token={t}", stack.snippet.ws());
        let evil = upgrade(&ws, &[("Origin", "https://evil.example")]).await;
        assert_eq!(evil.err().map(|e| e.0), Some(403), "cross-site WebSocket hijacking");
        let (app, _) = upgrade(&ws, &[("Origin", "https://app.example")]).await.expect("an allowed origin");
        park(app);
        let own = stack.snippet.http();
        let (page, _) = upgrade(&ws, &[("Origin", &own)]).await.expect("the snippet's own pages");
        park(page);

        let rpc_url = format!("{own}/rpc");
        let client = reqwest::Client::new();
        let preflight = |origin: &'static str| {
            client
                .request(reqwest::Method::OPTIONS, &rpc_url)
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST")
                .header("Access-Control-Request-Headers", "authorization, content-type")
                .send()
        };
        let ok = preflight("https://app.example").await.expect("preflight");
        assert_eq!(ok.status().as_u16(), 204);
        let allow = |h: &str| ok.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(allow("Access-Control-Allow-Origin"), "https://app.example");
        assert!(allow("Access-Control-Allow-Headers").contains("Authorization"));
        assert_eq!(preflight("https://evil.example").await.expect("preflight").status().as_u16(), 403);
        let ping = json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 });
        let res = client
            .post(&rpc_url)
            .bearer_auth(&t)
            .header("Origin", "https://app.example")
            .json(&ping)
            .send()
            .await
            .expect("post");
        assert_eq!(
            res.headers().get("Access-Control-Allow-Origin").and_then(|v| v.to_str().ok()),
            Some("https://app.example")
        );
        // Every response the snippet makes says nosniff: the preflight and a relayed answer.
        for r in [&ok, &res] {
            assert_eq!(r.headers().get("X-Content-Type-Options").and_then(|v| v.to_str().ok()), Some("nosniff"));
        }
        let (status, _, _) =
            post_with(&rpc_url, &[("Origin", "https://evil.example"), ("Authorization", &bearer(&t))], &ping).await;
        assert_eq!(status, 403);
        by.still_fine(stack).await;
    });
}

#[test]
fn a_token_for_tenant_a_is_refused_on_tenant_b() {
    e2e().tenant("tenant-b").run(async |stack| {
        let by = Bystander::join(stack).await;
        let for_a = stack.mint("a-user", "tenant-a", "read write", 600);
        let for_b = stack.mint("b-user", "tenant-b", "read write", 600);
        let ws = format!("{}/ws", stack.snippet.ws());
        let (status, challenge, body) = post_with(
            &format!("{}/query", stack.snippet.http()),
            &[("Authorization", &bearer(&for_a))],
            &json!({ "sql": "select 1" }),
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert!(challenge.unwrap_or_default().contains("insufficient_scope"));
        assert!(body["error"].as_str().unwrap_or_default().contains("tenant-b"), "{body}");
        assert_eq!(ws_connect(&ws, Some(&for_a)).await.err(), Some(403));
        let mut b = ws_connect(&ws, Some(&for_b)).await.expect("tenant b's own token");
        assert_eq!(rpc(&mut b, "whoami", json!([]), 1).await["result"]["tenant"], "tenant-b");
        // The backend checks again: an Open for tenant A on tenant B's object is refused
        // even from a peer holding BACKEND_TOKEN (as the snippet does).
        let mut mux =
            ws_connect(&format!("{}/db/tenant-b/mux", stack.backend.ws()), Some(&stack.token)).await.expect("mux");
        for (stream, tenant, code) in [(5, "tenant-a", Some(403)), (6, "tenant-b", None)] {
            let identity =
                Identity { subject: "s".into(), tenant: tenant.into(), scopes: "read".into(), expires_at: 0 };
            let mut batch = Vec::new();
            protocol::begin_message(&mut batch);
            let open = Open { path: "/echo".into(), identity, attach: None }.encode();
            protocol::encode_frame(&mut batch, FrameKind::Open, StreamId(stream), &open).expect("frame");
            protocol::encode_frame(&mut batch, FrameKind::Text, StreamId(stream), b"hi").expect("frame");
            mux.send(Message::Binary(batch.into())).await.expect("send");
            let Message::Binary(reply) = next_message(&mut mux).await else { panic!("a batch") };
            let f = decode_message(&reply).expect("v").next().expect("frame").expect("ok");
            match code {
                Some(code) => {
                    assert_eq!((f.kind, f.stream), (FrameKind::Error, StreamId(stream)));
                    assert_eq!(ErrorFrame::decode(f.payload).expect("error").code, code);
                }
                None => assert_eq!((f.kind, f.payload), (FrameKind::Text, &b"hi"[..])),
            }
        }
        by.still_fine(stack).await;
    });
}

#[test]
fn stats_need_an_operator_token() {
    e2e().run(async |stack| {
        let by = Bystander::join(stack).await;
        let url = format!("{}/__stats", stack.snippet.origin());
        let get = |t: Option<String>| {
            let mut req = reqwest::Client::new().get(&url);
            if let Some(t) = t {
                req = req.bearer_auth(t);
            }
            req.send()
        };
        assert_eq!(get(None).await.expect("get").status().as_u16(), 401);
        assert_eq!(get(Some(stack.client_token.clone())).await.expect("get").status().as_u16(), 403);
        let tenant_admin = stack.mint("x", "default", "admin", 600);
        assert_eq!(
            get(Some(tenant_admin)).await.expect("get").status().as_u16(),
            403,
            "a tenant's admin is no operator"
        );
        assert_eq!(get(Some(stack.admin_token.clone())).await.expect("get").status().as_u16(), 200);
        by.still_fine(stack).await;
    });
}

#[test]
fn a_session_is_closed_with_1008_when_its_token_expires() {
    e2e().run(async |stack| {
        let by = Bystander::join(stack).await;
        let short = stack.mint("brief", "default", "read", 3);
        let mut ws = ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&short)).await.expect("ws");
        assert_eq!(rpc(&mut ws, "ping", json!([]), 1).await["result"], "pong");
        // Used over HTTP too, so the snippet has it in its cache of verified tokens.
        let rpc_url = format!("{}/rpc", stack.snippet.http());
        let ping = json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 });
        assert_eq!(post(&rpc_url, Some(&short), &ping).await.0, 200);
        let closed = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                match next_message(&mut ws).await {
                    Message::Close(f) => return f,
                    _ => continue,
                }
            }
        })
        .await
        .expect("closed at expiry");
        let f = closed.expect("a close frame");
        assert_eq!((u16::from(f.code), f.reason.as_str()), (1008, "token expired"));
        // A cached token is refused once it expires, like any other.
        let (status, challenge, body) = post_with(&rpc_url, &[("Authorization", &bearer(&short))], &ping).await;
        assert_eq!(status, 401, "{body}");
        assert!(challenge.unwrap_or_default().contains("expired"), "{body}");
        by.still_fine(stack).await;
    });
}

/// Two configurations, so two stacks of their own, one after the other.
#[test]
fn without_a_key_everything_fails_closed_and_anonymous_access_is_opt_in() {
    e2e().no_auth_secret().run(async |closed| {
        let (status, body) = post(&format!("{}/rpc", closed.snippet.http()), None, &json!({})).await;
        assert_eq!(status, 500, "{body}");
        assert!(body["error"].as_str().unwrap_or_default().contains("AUTH_SECRET"), "{body}");
        assert_eq!(ws_connect(&format!("{}/ws", closed.snippet.ws()), None).await.err(), Some(500));
    });
    e2e().no_auth_secret().vars(&[("ALLOW_ANONYMOUS", "true")]).run(async |open| {
        let url = format!("{}/query", open.snippet.http());
        let (s, b) = post(&url, None, &json!({ "sql": "select 41 + 1 as x" })).await;
        assert_eq!((s, &b["rows"]), (200, &json!([[42]])), "anonymous read: {b}");
        let (s, b) = post(&url, None, &json!({ "sql": "create table t (v)" })).await;
        assert_eq!(s, 403, "anonymous callers get read only: {b}");
        let mut ws = ws_connect(&format!("{}/ws", open.snippet.ws()), None).await.expect("anonymous ws");
        let who = rpc(&mut ws, "whoami", json!([]), 1).await;
        assert_eq!(who["result"]["anonymous"], true, "{who}");
    });
}
