use std::path::Path;

use tcoder::config::{ConfigError, EnvVars, Service, Settings};

/// Every TOML file shipped in config/ (including examples) must load for every service, so a
/// broken default fails CI rather than a deploy.
#[test]
fn every_shipped_config_file_parses_for_every_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut files = Vec::new();
    collect_toml(&root, &mut files);
    assert!(files.len() >= 5, "expected config files under {}", root.display());
    for file in &files {
        // Secrets a production file leaves to the environment, as a deployment would set them.
        let secrets = EnvVars::from_pairs([("TCODER__DISPATCHER__FLY__TOKEN", "fly-token")]);
        for service in Service::ALL {
            Settings::load_from(service, Some(file), secrets.clone())
                .unwrap_or_else(|e| panic!("{} as {}: {e}", file.display(), service.name()));
        }
    }
}

#[test]
fn a_bad_value_in_a_config_file_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[shutdown]\ndrain_deadline = \"soon\"\n").unwrap();
    let err = Settings::load_from(Service::Ingest, Some(&file), EnvVars::default()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ConfigError::Invalid { .. }), "{message}");
    assert!(message.contains("shutdown.drain_deadline"), "{message}");
    assert!(message.contains("bad.toml"), "{message}");
}

fn collect_toml(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_toml(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn the_fly_token_is_required_by_the_dispatcher_only() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/examples/production-r2-fly.toml");
    let err = Settings::load_from(Service::Dispatcher, Some(&file), EnvVars::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("dispatcher.fly.token"), "{err}");
    Settings::load_from(Service::Ingest, Some(&file), EnvVars::default()).unwrap();
}

/// The embedded store with the example credentials everyone has, reachable from other hosts,
/// would hand every tenant's objects to anyone: ingest refuses to start so. Loopback, or own
/// credentials, are fine; a wildcard address is never a valid endpoint for presigned URLs.
#[test]
fn the_store_is_not_exposed_with_the_shipped_credentials() {
    let load = |pairs: &[(&str, &str)]| {
        let env =
            EnvVars::from_pairs(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Settings::load_from(Service::Ingest, None, env).map(|_| ()).map_err(|e| e.to_string())
    };
    let exposed = ("TCODER__INGEST__LOCAL_STORE__BIND", "0.0.0.0:19000");
    let err = load(&[exposed]).unwrap_err();
    assert!(err.contains("ingest.local_store.bind") && err.contains("credentials"), "{err}");
    load(&[]).unwrap();
    load(&[
        exposed,
        ("TCODER__S3__ENDPOINT", "http://192.0.2.10:19000"),
        ("TCODER__S3__ACCESS_KEY_ID", "mine"),
        ("TCODER__S3__SECRET_ACCESS_KEY", "a-secret-of-my-own"),
    ])
    .unwrap();
    let err = load(&[("TCODER__S3__ENDPOINT", "http://0.0.0.0:19000")]).unwrap_err();
    assert!(err.contains("s3.endpoint") && err.contains("wildcard"), "{err}");
    // Other services do not run the store: the check is ingest's.
    let env = EnvVars::from_pairs([(exposed.0.to_owned(), exposed.1.to_owned())]);
    Settings::load_from(Service::Worker, None, env).unwrap();
}

/// The production nats-server configuration gives each service exactly the permissions the
/// code defines (and `tcoder up` uses): the shipped file cannot drift from them.
#[test]
fn the_shipped_nats_config_has_the_services_permissions() {
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/nats-server.conf");
    let shipped = std::fs::read_to_string(file).unwrap();
    let block = production_authorization_block();
    assert!(shipped.contains(&block), "deploy/nats/nats-server.conf should contain:\n{block}");
    // Its example producer user is the one the code defines.
    let acme = tcoder::jobs::Tenant::parse("acme").unwrap();
    let with_producer = tcoder::events::permissions::authorization_block_with_producers(
        &[],
        &[(acme, "$PRODUCER_ACME_NATS_PASSWORD")],
    );
    let producer = with_producer.lines().find(|l| l.contains("producer-acme")).unwrap();
    assert!(shipped.contains(&format!("#   {}", producer.trim())), "{producer}");
}

/// The production Redis ACL lines are the roles the code defines (and `tcoder up` writes).
#[test]
fn the_shipped_redis_config_has_each_role_s_keys() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/redis/redis.conf");
    let shipped = std::fs::read_to_string(file).unwrap();
    for service in tcoder::config::Service::ALL {
        let line = format!(
            "#   user {} on >CHANGE-ME {}\n",
            service.name(),
            tcoder::redis::acl::rights(service)
        );
        assert!(shipped.contains(&line), "deploy/redis/redis.conf should contain:\n{line}");
    }
}

/// The compose stack's files are what the tools take: `docker-compose config` (Debian's
/// docker-compose) accepts compose.yaml with the example secrets, nats-server accepts its
/// configuration, which gives each service the permissions the code defines, and it runs the
/// nats-server version the tests run.
#[test]
fn the_compose_stack_is_accepted_by_docker_compose_and_nats_server() {
    use tcoder::config::Service;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let compose = root.join("deploy/compose");
    let config = std::process::Command::new("docker-compose")
        .arg("--env-file")
        .arg(compose.join("example.env"))
        .arg("-f")
        .arg(compose.join("compose.yaml"))
        .arg("config")
        .output()
        .expect("docker-compose runs (scripts/setup.sh installs it)");
    assert!(config.status.success(), "{}", String::from_utf8_lossy(&config.stderr));
    let resolved = String::from_utf8_lossy(&config.stdout);
    for service in ["nats", "redis", "ingest", "dispatcher", "worker", "prometheus", "grafana"] {
        assert!(resolved.contains(&format!("\n  {service}:\n")), "{service}: {resolved}");
    }

    let nats_conf = compose.join("nats-server.conf");
    let block = production_authorization_block();
    assert!(std::fs::read_to_string(&nats_conf).unwrap().contains(&block));
    let mut check =
        std::process::Command::new(testkit::tool_path("nats-server", "TCODER_NATS_SERVER"));
    check.arg("-t").arg("-c").arg(&nats_conf);
    for service in Service::ALL {
        check.env(password_variable(service), "x");
    }
    let checked = check.output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));

    let setup = std::fs::read_to_string(root.join("scripts/setup.sh")).unwrap();
    let version = setup.split("NATS_SERVER_VERSION=\"").nth(1).unwrap().split('"').next().unwrap();
    assert!(resolved.contains(&format!("image: docker.io/library/nats:{version}\n")), "{resolved}");
}

/// The nats-server variable holding `service`'s password in the shipped configurations.
fn password_variable(service: tcoder::config::Service) -> String {
    format!("{}_NATS_PASSWORD", service.name().to_uppercase())
}

/// The `authorization` block the code generates with every password a `$VARIABLE`, as the
/// shipped nats-server configurations must contain it.
fn production_authorization_block() -> String {
    use tcoder::config::Service;
    let placeholders = Service::ALL.map(|s| (s, format!("${}", password_variable(s))));
    let users: Vec<(Service, &str)> = placeholders.iter().map(|(s, p)| (*s, p.as_str())).collect();
    tcoder::events::permissions::authorization_block(&users)
}

/// The Fly apps in deploy/fly/ build the repository's Dockerfile stages, ship a settings file
/// that exists, and route traffic, checks and metrics to the ports those settings open; each
/// process command is a binary the services image has, run as a command (the image has no
/// entrypoint that would take it as an argument). The worker app has no processes: the
/// dispatcher starts its machines, which run the image's entrypoint.
#[test]
fn fly_apps_build_the_repositorys_images_and_reach_the_ports_their_settings_open() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dockerfile = std::fs::read_to_string(root.join("deploy/images/Dockerfile")).unwrap();
    let stage = |name: &str| {
        let start =
            dockerfile.find(&format!(" AS {name}\n")).unwrap_or_else(|| panic!("no stage {name}"));
        let rest = &dockerfile[start..];
        rest[1..].find("\nFROM ").map_or(rest, |end| &rest[..end + 1]).to_owned()
    };
    let port = |address: &str| address.rsplit(':').next().unwrap().parse::<i64>().unwrap();
    for (file, target) in [("services.fly.toml", "services"), ("worker.fly.toml", "worker")] {
        let dir = root.join("deploy/fly");
        let app: toml::Value =
            toml::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        let build = &app["build"];
        assert!(dir.join(build["dockerfile"].as_str().unwrap()).is_file(), "{file}: dockerfile");
        assert_eq!(build["build-target"].as_str(), Some(target), "{file}");
        let shipped = &app["files"].as_array().unwrap()[0];
        let settings_path = dir.join(shipped["local_path"].as_str().unwrap());
        assert_eq!(app["env"]["TCODER_CONFIG"].as_str(), shipped["guest_path"].as_str(), "{file}");
        let settings: toml::Value =
            toml::from_str(&std::fs::read_to_string(&settings_path).unwrap()).unwrap();
        let admin_port = port(settings["admin"]["bind"].as_str().unwrap());
        assert_eq!(app["metrics"]["port"].as_integer(), Some(admin_port), "{file}: metrics");
        let image = stage(target);
        if target == "services" {
            assert!(
                !image.contains("ENTRYPOINT"),
                "{file}: an entrypoint would take the process commands as arguments"
            );
            let http = &app["http_service"];
            let ingest_port = port(settings["ingest"]["http_bind"].as_str().unwrap());
            assert_eq!(
                http["internal_port"].as_integer(),
                Some(ingest_port),
                "{file}: ingest port"
            );
            let check = &http["checks"].as_array().unwrap()[0];
            assert_eq!(check["port"].as_integer(), Some(admin_port), "{file}: check port");
            assert_eq!(check["path"].as_str(), Some("/readyz"), "{file}: check path");
            for (name, command) in app["processes"].as_table().unwrap() {
                let binary = command.as_str().unwrap().split_whitespace().next().unwrap();
                let file_name = binary.rsplit('/').next().unwrap();
                assert!(
                    binary.starts_with("/usr/local/bin/")
                        && image.contains(&format!("/out/{file_name}")),
                    "{file}: process {name} runs {binary}, which the services image does not have"
                );
            }
        }
    }
}
