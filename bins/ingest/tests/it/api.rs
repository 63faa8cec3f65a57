use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Store, spawn};

#[tokio::test]
async fn requests_without_a_valid_key_are_refused() {
    let ingest = spawn(Store::External, &[]).await;
    let url = format!("{}/v1/jobs", ingest.api);
    let no_key = ingest.http.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(no_key.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = no_key.json().await.unwrap();
    assert_eq!(body["code"], "auth.unauthorized");
    let wrong = ingest.http.get(&url).bearer_auth("tk_not-a-real-key").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn another_tenants_job_is_not_found_and_not_listed() {
    let ingest = spawn(Store::External, &[]).await;
    let (status, created) = ingest.create(json!({"preset": "hls"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["job"]["id"].as_str().unwrap();

    let (status, body) = ingest.get_job(&ingest.key_b, id).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("job.not_found")));
    let cancel = ingest
        .http
        .post(format!("{}/v1/jobs/{id}/cancel", ingest.api))
        .bearer_auth(&ingest.key_b)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::NOT_FOUND);
    let listed = ingest.list_jobs(&ingest.key_b).await;
    assert_eq!(listed.jobs, []);
    // Still there for its owner, untouched.
    assert_eq!(ingest.get_job(&ingest.key_a, id).await.1["status"], "awaiting_upload");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_job_and_conflicts_on_different_parameters() {
    let ingest = spawn(Store::External, &[]).await;
    let body = json!({"preset": "hls", "qualities": ["360p"]});
    let (first_status, first) =
        ingest.create_as(&ingest.key_a, body.clone(), Some("order-42")).await;
    let (again_status, again) = ingest.create_as(&ingest.key_a, body, Some("order-42")).await;
    assert_eq!((first_status, again_status), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first["job"]["id"], again["job"]["id"]);
    assert!(
        again["upload"]["url"].is_string(),
        "a replay still gets an upload URL while awaiting upload"
    );

    let (status, conflict) = ingest
        .create_as(&ingest.key_a, json!({"preset": "hls", "qualities": ["720p"]}), Some("order-42"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["code"], "idempotency.conflict");
    // The same key is independent per tenant.
    let (status, other) =
        ingest.create_as(&ingest.key_b, json!({"preset": "hls"}), Some("order-42")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(other["job"]["id"], first["job"]["id"]);
}

#[tokio::test]
async fn invalid_requests_are_problem_json_with_stable_codes() {
    let ingest = spawn(Store::External, &[]).await;
    for (body, status, code) in [
        (json!({"preset": "4k"}), StatusCode::UNPROCESSABLE_ENTITY, "validation.unknown_preset"),
        (
            json!({"qualities": ["480p"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation.unknown_quality",
        ),
        (
            json!({"webhook_url": "http://127.0.0.1:9/hook"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation.webhook_url",
        ),
        (json!({"qualites": ["360p"]}), StatusCode::BAD_REQUEST, "request.invalid_json"),
    ] {
        let response = ingest
            .http
            .post(format!("{}/v1/jobs", ingest.api))
            .bearer_auth(&ingest.key_a)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{body}");
        assert_eq!(problem["status"], status.as_u16());
    }
}

#[tokio::test]
async fn jobs_are_listed_newest_first_with_status_filter_and_cursor() {
    let ingest = spawn(Store::External, &[]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(ingest.create(json!({})).await.1["job"]["id"].as_str().unwrap().to_owned());
    }
    let cancel = ingest
        .http
        .post(format!("{}/v1/jobs/{}/cancel", ingest.api, ids[0]))
        .bearer_auth(&ingest.key_a)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);

    let list = |query: String| {
        let ingest = &ingest;
        async move {
            let url = format!("{}/v1/jobs{query}", ingest.api);
            let page: serde_json::Value = ingest
                .http
                .get(url)
                .bearer_auth(&ingest.key_a)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let ids: Vec<String> = page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned())
                .collect();
            (ids, page["next_cursor"].as_str().map(str::to_owned))
        }
    };
    let (first_page, cursor) = list("?limit=2".into()).await;
    assert_eq!(first_page, vec![ids[2].clone(), ids[1].clone()]);
    let (second_page, end) = list(format!("?limit=2&cursor={}", cursor.unwrap())).await;
    assert_eq!((second_page, end), (vec![ids[0].clone()], None));
    assert_eq!(list("?status=canceled".into()).await.0, vec![ids[0].clone()]);
    assert_eq!(
        list("?status=awaiting_upload".into()).await.0,
        vec![ids[2].clone(), ids[1].clone()]
    );
}

#[tokio::test]
async fn cancel_is_final_and_streams_end_with_the_canceled_event() {
    let ingest = spawn(Store::External, &[]).await;
    let id = ingest.create(json!({})).await.1["job"]["id"].as_str().unwrap().to_owned();
    let events = ingest
        .http
        .get(format!("{}/v1/jobs/{id}/events", ingest.api))
        .bearer_auth(&ingest.key_a)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    // A relay may publish an event twice (core NATS delivers both, the stream keeps one):
    // the event stream carries it once.
    let queued = json!({
        "id": format!("{id}.queued.1"), "type": "queued", "job_id": id, "tenant": "acme",
        "at": "2026-12-01T00:00:00.000Z", "data": {},
    });
    let subject = tcoder::events::subjects::event("acme", &id, "queued");
    for _ in 0..2 {
        ingest.nats.publish(subject.clone(), queued.to_string().into()).await.unwrap();
    }
    ingest.nats.flush().await.unwrap();
    let cancel_url = format!("{}/v1/jobs/{id}/cancel", ingest.api);
    let canceled: serde_json::Value = ingest
        .http
        .post(&cancel_url)
        .bearer_auth(&ingest.key_a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(canceled["status"], "canceled");
    let again = ingest.http.post(&cancel_url).bearer_auth(&ingest.key_a).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);

    // The stream replays `accepted`, then delivers `queued` once, `canceled`, and closes.
    assert_eq!(event_kinds(events).await, ["accepted", "queued", "canceled"]);
}

/// Reads an event stream to its end (bounded) and returns the event kinds it carried.
async fn event_kinds(response: reqwest::Response) -> Vec<String> {
    let body = tokio::time::timeout(Duration::from_secs(10), async {
        let mut text = String::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        text
    })
    .await
    .expect("the event stream ends after the terminal event");
    body.lines().filter_map(|l| l.strip_prefix("event: ")).map(str::to_owned).collect()
}

/// One tenant opening (and holding) 1100 event streams takes only its own share: past 100 it
/// gets 429 with Retry-After, and another tenant's stream still replays and follows its job.
/// Closed streams give their places back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_holding_1100_event_streams_leaves_another_tenant_s_stream_working() {
    let ingest = spawn(Store::External, &[]).await;
    let a_job = ingest.create(json!({})).await.1["job"]["id"].as_str().unwrap().to_owned();
    let b_job = ingest.create_as(&ingest.key_b, json!({}), None).await.1["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let open = |key: &str, id: &str| {
        ingest.http.get(format!("{}/v1/jobs/{id}/events", ingest.api)).bearer_auth(key).send()
    };
    let (mut held, mut refused) = (Vec::new(), 0);
    for _ in 0..11 {
        let batch = futures_util::future::join_all((0..100).map(|_| open(&ingest.key_a, &a_job)));
        for response in batch.await {
            let response = response.unwrap();
            match response.status() {
                StatusCode::OK => held.push(response),
                StatusCode::TOO_MANY_REQUESTS => {
                    assert_eq!(response.headers()["retry-after"], "5");
                    let problem: serde_json::Value = response.json().await.unwrap();
                    assert_eq!(problem["code"], "rate.event_streams");
                    refused += 1;
                }
                other => panic!("unexpected {other}"),
            }
        }
    }
    assert_eq!((held.len(), refused), (100, 1000));

    let b_stream = open(&ingest.key_b, &b_job).await.unwrap();
    assert_eq!(b_stream.status(), StatusCode::OK);
    let cancel = format!("{}/v1/jobs/{b_job}/cancel", ingest.api);
    ingest.http.post(&cancel).bearer_auth(&ingest.key_b).send().await.unwrap();
    assert_eq!(event_kinds(b_stream).await, ["accepted", "canceled"]);

    drop(held);
    testkit::eventually_async(Duration::from_secs(10), || async {
        let again = open(&ingest.key_a, &a_job).await.unwrap();
        if again.status() == StatusCode::OK { Ok(()) } else { Err(again.status()) }
    })
    .await;
}

/// Slowloris: connections to the API and to the embedded store that send half a request head
/// and then nothing are closed by the server at the header timeout (1 s here), while other
/// clients are served meanwhile; so are requests whose body stops (body idle timeout, 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ingest = spawn(
        Store::Embedded,
        &[
            ("TCODER__INGEST__HEADER_TIMEOUT", "1s".into()),
            ("TCODER__INGEST__BODY_IDLE_TIMEOUT", "1s".into()),
        ],
    )
    .await;
    let api: std::net::SocketAddr = ingest.api.trim_start_matches("http://").parse().unwrap();
    let opened = std::time::Instant::now();
    let mut slow = Vec::new();
    for addr in [api, ingest.store.unwrap()] {
        for _ in 0..200 {
            let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
            socket.write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
            slow.push(socket);
        }
    }
    let (status, _) = ingest.get_job(&ingest.key_a, "job_0123").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "others are served during the attack");
    for socket in &mut slow {
        let mut rest = Vec::new();
        // The server closes it: EOF (perhaps after a 408), or a reset — not a wait.
        let closed = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut rest));
        assert!(closed.await.is_ok(), "a slow connection stayed open");
    }
    let took = opened.elapsed();
    assert!(took < Duration::from_secs(6), "closed after {took:?}, timeout 1 s");

    // Whole heads, then a body that stops: a JSON body to the API, an upload to the store.
    let created = ingest.create(json!({})).await.1;
    let upload = reqwest::Url::parse(created["upload"]["url"].as_str().unwrap()).unwrap();
    let stalled = [
        (
            api,
            format!(
                "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"pre",
                ingest.key_a
            ),
        ),
        (
            ingest.store.unwrap(),
            format!(
                "PUT {}?{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\n0123456789",
                upload.path(),
                upload.query().unwrap(),
                upload.host_str().unwrap().to_owned() + ":" + &upload.port().unwrap().to_string(),
            ),
        ),
    ];
    let started = std::time::Instant::now();
    for (addr, request) in stalled {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer));
        assert!(ended.await.is_ok(), "a stalled body kept its connection open ({addr})");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "stalled bodies cut after {took:?}, timeout 1 s");
}

/// Connections held for free (issue 27): 2,100 sockets that send nothing, from one address,
/// against the API and the store (each keeps 2,048 at most) — a normal request from another
/// address still answers within a second; a silent socket, a partial HTTP/2 preface and an
/// idle kept-alive connection are each closed at the header timeout; a body trickled a byte a
/// second is cut off once it has had its idle timeout's grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_trickling_connections_cannot_take_the_listeners() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ingest = spawn(
        Store::Embedded,
        &[
            ("TCODER__INGEST__HEADER_TIMEOUT", "2s".into()),
            ("TCODER__INGEST__BODY_IDLE_TIMEOUT", "2s".into()),
        ],
    )
    .await;
    let api: std::net::SocketAddr = ingest.api.trim_start_matches("http://").parse().unwrap();
    let store = ingest.store.unwrap();
    // The attacker's address: another loopback address than the normal client's.
    let from_attacker = |addr: std::net::SocketAddr| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        socket.connect(addr).await
    };
    let mut silent = Vec::new();
    for addr in [api, store] {
        for _ in 0..2_100 {
            // Past the peer's share the server closes at once; the connect itself succeeds.
            if let Ok(socket) = from_attacker(addr).await {
                silent.push(socket);
            }
        }
    }
    let asked = std::time::Instant::now();
    let (status, _) = ingest.get_job(&ingest.key_a, "job_0123").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stored = reqwest::get(format!("http://{store}/tcoder/outputs/none")).await.unwrap();
    assert_eq!(stored.status(), StatusCode::NOT_FOUND, "the store answers too");
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(1), "a normal request took {took:?} during the attack");
    drop(silent);

    // One at a time, each closed by the server at the header timeout (2 s): a silent socket,
    // half an HTTP/2 preface, and a connection idle after its first answer.
    let closed_within = |mut socket: tokio::net::TcpStream, what: &'static str| async move {
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut rest));
        assert!(ended.await.is_ok(), "{what} stayed open");
        started.elapsed()
    };
    for addr in [api, store] {
        let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        closed_within(socket, "a silent socket").await;
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"PRI * HTTP/2.0\r\n\r\nSM").await.unwrap();
        closed_within(socket, "a partial HTTP/2 preface").await;
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut first = [0u8; 12];
        socket.read_exact(&mut first).await.unwrap();
        assert!(first.starts_with(b"HTTP/1.1 "), "{first:?}");
        let idle = closed_within(socket, "an idle kept-alive connection").await;
        assert!(idle < Duration::from_secs(6), "idle connection closed after {idle:?}");
    }

    // A body trickled a byte a second never goes quiet for the idle timeout, yet is cut off.
    let mut socket = tokio::net::TcpStream::connect(api).await.unwrap();
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        ingest.key_a
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let cut = loop {
        assert!(started.elapsed() < Duration::from_secs(15), "a trickled body was never cut");
        if socket.write_all(b" ").await.is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !answer.is_empty() && answer.ends_with(b"}") {
            break started.elapsed();
        }
    };
    assert!(cut < Duration::from_secs(8), "trickled body cut after {cut:?}");
}

/// A key creating jobs faster than its bucket refills gets 429 with Retry-After once the burst
/// is spent; another key is not affected, and the first may create again after the wait.
#[tokio::test]
async fn job_creation_is_rate_limited_per_key() {
    let limits = [
        ("TCODER__INGEST__CREATE_BURST", "5".to_owned()),
        ("TCODER__INGEST__CREATE_PER_SECOND", "2".to_owned()),
    ];
    let ingest = spawn(Store::External, &limits).await;
    for _ in 0..5 {
        assert_eq!(ingest.create(json!({})).await.0, StatusCode::CREATED);
    }
    let refused = ingest
        .http
        .post(format!("{}/v1/jobs", ingest.api))
        .bearer_auth(&ingest.key_a)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "rate.limited");
    assert_eq!(ingest.create_as(&ingest.key_b, json!({}), None).await.0, StatusCode::CREATED);
    testkit::eventually_async(Duration::from_secs(5), || async {
        let (status, _) = ingest.create(json!({})).await;
        if status == StatusCode::CREATED { Ok(()) } else { Err(status) }
    })
    .await;
}

#[tokio::test]
async fn api_requests_are_counted_by_route_template() {
    let ingest = spawn(Store::External, &[]).await;
    let id = ingest.create(json!({})).await.1["job"]["id"].as_str().unwrap().to_owned();
    ingest.get_job(&ingest.key_a, &id).await;
    let metrics =
        reqwest::get(format!("{}/metrics", ingest.admin)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            r#"tcoder_http_requests_total{method="POST",route="/v1/jobs",status="201"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"tcoder_http_requests_total{method="GET",route="/v1/jobs/{id}",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains(&id), "job ids must never be metric labels");
}

/// Errors the framework produces itself are problem+json like the API's own: a wrong method
/// (405, keeping `Allow`), an oversized notification body (413), an unknown path (404).
#[tokio::test]
async fn every_error_answer_is_problem_json() {
    let ingest = spawn(Store::External, &[]).await;
    let check = |response: reqwest::Response, status: StatusCode, code: &'static str| async move {
        assert_eq!(response.status(), status);
        let kind = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(kind, "application/problem+json");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            (problem["code"].as_str(), problem["status"].as_u64()),
            (Some(code), Some(u64::from(status.as_u16())))
        );
    };
    let wrong_method = ingest
        .http
        .delete(format!("{}/v1/jobs", ingest.api))
        .bearer_auth(&ingest.key_a)
        .send()
        .await
        .unwrap();
    assert!(wrong_method.headers().contains_key("allow"));
    check(wrong_method, StatusCode::METHOD_NOT_ALLOWED, "request.method_not_allowed").await;
    let too_large = ingest
        .http
        .post(format!("{}/v1/notifications/s3", ingest.api))
        .bearer_auth(crate::helpers::NOTIFY_SECRET)
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .unwrap();
    check(too_large, StatusCode::PAYLOAD_TOO_LARGE, "request.too_large").await;
    let unknown = ingest.http.get(format!("{}/nowhere", ingest.api)).send().await.unwrap();
    check(unknown, StatusCode::NOT_FOUND, "not_found").await;
}
