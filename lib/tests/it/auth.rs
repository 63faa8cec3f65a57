use tcoder::auth::{self, ApiKeys};
use tcoder::config::ApiKeyEntry;
use tcoder::jobs::Tenant;
use testkit::TestEnv;

use crate::helpers::settings;

#[tokio::test]
async fn keys_resolve_to_tenants_from_config_or_redis_and_revoked_keys_do_not() {
    let env = TestEnv::start();
    let mut redis = tcoder::redis::connect(&settings(&env).redis).await.unwrap();
    let (configured, stored) = (auth::generate_key(), auth::generate_key());
    let entries = [ApiKeyEntry { tenant: "acme".into(), sha256: auth::hash_key(&configured) }];
    let keys = ApiKeys::new(&entries, redis.clone());
    auth::store_key(&mut redis, &stored, &Tenant::parse("globex").unwrap()).await.unwrap();

    assert_eq!(keys.tenant_of(&configured).await.unwrap(), Tenant::parse("acme"));
    assert_eq!(keys.tenant_of(&stored).await.unwrap(), Tenant::parse("globex"));
    assert_eq!(keys.tenant_of("tk_unknown").await.unwrap(), None);
    assert_eq!(keys.tenant_of("no-prefix").await.unwrap(), None);

    auth::revoke_key(&mut redis, &stored).await.unwrap();
    assert_eq!(keys.tenant_of(&stored).await.unwrap(), None);
    // A revocation holds when the key is stored again (tcoder up re-registers its key on every
    // start), and for keys in the config file too.
    auth::store_key(&mut redis, &stored, &Tenant::parse("globex").unwrap()).await.unwrap();
    assert_eq!(keys.tenant_of(&stored).await.unwrap(), None);
    auth::revoke_key(&mut redis, &auth::hash_key(&configured)).await.unwrap();
    assert_eq!(keys.tenant_of(&configured).await.unwrap(), None);
    let listed = keys.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|k| (k.tenant.as_str(), k.source, k.revoked)).collect::<Vec<_>>(),
        [("acme", "config", true), ("globex", "redis", true)]
    );
    // Redis holds only hashes, never the key itself.
    let dump: Vec<String> =
        redis::cmd("HKEYS").arg(auth::redis_key()).query_async(&mut redis).await.unwrap();
    assert!(dump.iter().all(|h| h.len() == 64 && !h.starts_with("tk_")));
}
