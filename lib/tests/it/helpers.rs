use tcoder::config::{EnvVars, Service, Settings};
use testkit::TestEnv;

/// Settings that point at the test kit's servers.
pub(crate) fn settings(env: &TestEnv) -> Settings {
    settings_with(env, [])
}

/// As [`settings`], with extra `TCODER__*` overrides.
pub(crate) fn settings_with<const N: usize>(env: &TestEnv, extra: [(&str, &str); N]) -> Settings {
    let mut vars = env.service_env();
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Settings::load_from(Service::Worker, None, EnvVars::from_pairs(vars)).expect("test settings")
}
