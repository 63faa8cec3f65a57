use std::time::Duration;

use tcoder::webhooks::{Deliverer, Delivery, WebhookSecret};
use testkit::Canary;
use testkit::webhook::{WebhookReceiver, verify_with_standardwebhooks};

fn deliverer(allowed: Vec<std::net::SocketAddr>) -> Deliverer {
    Deliverer { allowed, timeout: Duration::from_secs(5) }
}

#[tokio::test]
async fn signed_webhooks_verify_with_the_independent_standardwebhooks_package() {
    let receiver = WebhookReceiver::start(&[]);
    let secret = WebhookSecret::generate();
    let body =
        br#"{"type":"job.completed","timestamp":"2026-11-24T12:00:00Z","data":{"job_id":"job_1"}}"#;
    let outcome = deliverer(vec![receiver.addr()])
        .send(&receiver.url(), "msg_job_1_completed", body, &secret)
        .await;
    assert_eq!(outcome, Delivery::Delivered(200));
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].header("webhook-id"), Some("msg_job_1_completed"));
    verify_with_standardwebhooks(&secret.display(), &received[0]).unwrap();
    // A tampered body fails the same verifier.
    let mut tampered = received[0].clone();
    tampered.body = br#"{"type":"job.completed","data":{"job_id":"job_2"}}"#.to_vec();
    assert!(verify_with_standardwebhooks(&secret.display(), &tampered).is_err());
    // So does another secret.
    assert!(
        verify_with_standardwebhooks(&WebhookSecret::generate().display(), &received[0]).is_err()
    );
}

#[tokio::test]
async fn internal_destinations_and_redirects_to_them_are_refused_and_the_canary_stays_silent() {
    let canary = Canary::start();
    let port = canary.port();
    let sender = deliverer(Vec::new());
    let secret = WebhookSecret::generate();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://localhost:{port}/"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        format!("http://[fd00::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0x7f000001:{port}/"),
    ] {
        let outcome = sender.send(&url, "msg_1", b"{}", &secret).await;
        assert!(matches!(outcome, Delivery::Refused(_)), "{url}: {outcome:?}");
    }
    // An allowed receiver that redirects to the canary: the redirect is not followed.
    let redirecting = WebhookReceiver::redirecting_to(&format!("http://127.0.0.1:{port}/internal"));
    let outcome =
        deliverer(vec![redirecting.addr()]).send(&redirecting.url(), "msg_2", b"{}", &secret).await;
    assert!(matches!(outcome, Delivery::Failed { status: Some(302), .. }), "{outcome:?}");
    assert_eq!(redirecting.received().len(), 1);
    assert_eq!(canary.hits(), 0, "the canary was contacted");
}

#[tokio::test]
async fn gone_receivers_are_told_apart_from_failing_ones() {
    let receiver = WebhookReceiver::start(&[500, 410]);
    let sender = deliverer(vec![receiver.addr()]);
    let secret = WebhookSecret::generate();
    assert!(matches!(
        sender.send(&receiver.url(), "msg_1", b"{}", &secret).await,
        Delivery::Failed { status: Some(500), .. }
    ));
    assert_eq!(sender.send(&receiver.url(), "msg_1", b"{}", &secret).await, Delivery::Gone);
}

/// With `webhooks.secret_key` set, a tenant's signing secret is sealed in Redis (a dump shows
/// nothing that could sign a webhook), stays the same across reads, and one stored in
/// plaintext before the key was set is sealed on its next use.
#[tokio::test]
async fn signing_secrets_are_sealed_at_rest() {
    use redis::AsyncCommands as _;
    let env = testkit::TestEnv::start();
    let settings = crate::helpers::settings(&env);
    let mut redis = tcoder::redis::connect(&settings.redis).await.unwrap();
    let at_rest = tcoder::webhooks::AtRest::new(&"ab".repeat(32)).unwrap();
    let tenant = tcoder::jobs::Tenant::parse("acme").unwrap();
    let first = tcoder::webhooks::tenant_secret(&mut redis, &tenant, &at_rest).await.unwrap();
    let again = tcoder::webhooks::tenant_secret(&mut redis, &tenant, &at_rest).await.unwrap();
    assert_eq!(first.display(), again.display());
    let key = tcoder::redis::keys::webhook_secret(&tenant);
    let stored: String = redis.get(&key).await.unwrap();
    assert!(stored.starts_with("sealed:v1:") && !stored.contains(&first.display()), "{stored}");
    // Without the key, the sealed secret cannot be used.
    let unkeyed = tcoder::webhooks::AtRest::new("").unwrap();
    assert!(tcoder::webhooks::tenant_secret(&mut redis, &tenant, &unkeyed).await.is_err());

    let old = tcoder::jobs::Tenant::parse("legacy").unwrap();
    let plain = WebhookSecret::generate().display();
    let _: () = redis.set(tcoder::redis::keys::webhook_secret(&old), &plain).await.unwrap();
    let read = tcoder::webhooks::tenant_secret(&mut redis, &old, &at_rest).await.unwrap();
    assert_eq!(read.display(), plain);
    let resealed: String = redis.get(tcoder::redis::keys::webhook_secret(&old)).await.unwrap();
    assert!(resealed.starts_with("sealed:v1:"), "{resealed}");
}
