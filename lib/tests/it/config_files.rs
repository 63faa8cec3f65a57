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
        let secrets = EnvVars::from_pairs([
            ("TCODER__DISPATCHER__FLY__TOKEN", "fly-token"),
            ("TCODER__INGEST__R2_QUEUE__API_TOKEN", "queue-token"),
        ]);
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
    let queue = EnvVars::from_pairs([("TCODER__INGEST__R2_QUEUE__API_TOKEN", "queue-token")]);
    Settings::load_from(Service::Ingest, Some(&file), queue).unwrap();
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

/// The compose stack's files are what the tools take and what a clone needs: make-env.sh
/// writes every secret compose.yaml asks for (and never overwrites them); `docker-compose
/// config` (Debian's docker-compose) accepts the file with them; the tcoder services are built
/// from the repository's Dockerfile targets; each connects to NATS and Redis as its own user;
/// NATS is three nodes whose configuration nats-server accepts, with the users the code
/// defines and the version the tests run; worker scratch is on disk, not in memory.
#[test]
fn the_compose_stack_builds_from_a_clone_with_an_identity_per_service() {
    use tcoder::config::Service;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let compose = root.join("deploy/compose");
    let secrets = tempfile::tempdir().unwrap();
    let env_file = secrets.path().join(".env");
    let make_env = || {
        std::process::Command::new("sh")
            .arg(compose.join("make-env.sh"))
            .arg(&env_file)
            .output()
            .unwrap()
    };
    let made = make_env();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let written = std::fs::read_to_string(&env_file).unwrap();
    assert!(!make_env().status.success(), "an existing .env is kept");
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), written);
    let example = std::fs::read_to_string(compose.join("example.env")).unwrap();
    let names = |text: &str| -> Vec<String> {
        let mut names: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&written), names(&example), "make-env.sh writes what example.env lists");
    let config = std::process::Command::new("docker-compose")
        .arg("--env-file")
        .arg(&env_file)
        .arg("-f")
        .arg(compose.join("compose.yaml"))
        .arg("config")
        .output()
        .expect("docker-compose runs (scripts/setup.sh installs it)");
    assert!(config.status.success(), "{}", String::from_utf8_lossy(&config.stderr));
    let resolved = String::from_utf8_lossy(&config.stdout);
    let services = [
        "nats-1",
        "nats-2",
        "nats-3",
        "redis",
        "ingest",
        "dispatcher",
        "worker",
        "prometheus",
        "grafana",
    ];
    for service in services {
        assert!(resolved.contains(&format!("\n  {service}:\n")), "{service}: {resolved}");
    }
    // A service's lines: from its name to the next line indented as a service name.
    let service_block = |name: &str| -> String {
        let start = resolved.find(&format!("\n  {name}:\n")).unwrap() + 1;
        let mut lines = resolved[start..].lines();
        let mut block = vec![lines.next().unwrap()];
        block.extend(lines.take_while(|l| l.starts_with("   ") || l.is_empty()));
        block.join("\n")
    };
    for (service, target) in
        [("ingest", "services"), ("dispatcher", "services"), ("worker", "worker")]
    {
        let block = service_block(service);
        assert!(block.contains(&format!("target: {target}")), "{service} builds {target}: {block}");
        assert!(block.contains("dockerfile: deploy/images/Dockerfile"), "{block}");
        assert!(block.contains(&format!("TCODER__NATS__USER: {service}")), "{block}");
        assert!(block.contains(&format!("TCODER__REDIS__URL: redis://{service}:")), "{block}");
    }
    assert!(!resolved.contains("tmpfs"), "worker scratch on disk: {resolved}");
    // Clients reach the store at STORE_URL: ingest signs upload URLs for it, and every
    // service writes result URLs under it (not the stack's internal `ingest` name).
    let store_url = written.lines().find_map(|l| l.strip_prefix("STORE_URL=")).unwrap();
    let ingest = service_block("ingest");
    assert!(ingest.contains(&format!("TCODER__S3__ENDPOINT: {store_url}\n")), "{ingest}");
    for service in ["ingest", "dispatcher", "worker"] {
        let block = service_block(service);
        let public = format!("TCODER__S3__PUBLIC_URL: {store_url}/tcoder");
        assert!(block.contains(&public), "{service}: {block}");
    }
    let source = std::fs::read_to_string(compose.join("compose.yaml")).unwrap();
    assert!(!source.lines().any(|l| l.starts_with("version:")), "the obsolete `version:` key");

    let nats_conf = compose.join("nats-server.conf");
    let block = production_authorization_block();
    let conf = std::fs::read_to_string(&nats_conf).unwrap();
    assert!(conf.contains(&block));
    for node in ["nats-1", "nats-2", "nats-3"] {
        assert!(conf.contains(&format!("nats-route://{node}:6222")), "{node} routed");
    }
    let mut check =
        std::process::Command::new(testkit::tool_path("nats-server", "TCODER_NATS_SERVER"));
    check.arg("-t").arg("-c").arg(&nats_conf).env("SERVER_NAME", "nats-1");
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

/// The Fly set-up of docs/DEPLOY.md, read as an operator follows it: one app per service, each
/// building what it names and running one process; ingest, the dispatcher and the workers each
/// load their settings — the shipped file, their fly.toml's environment and exactly the
/// secrets DEPLOY.md sets on their app — as their own NATS and Redis user; the NATS and Redis
/// apps get every password their configuration names; the settings name those apps, a queue
/// for notifications and where results are served; nothing in them is what an image sets.
#[test]
fn every_fly_app_runs_one_service_with_its_own_identity() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fly_dir = root.join("deploy/fly");
    let dockerfile = std::fs::read_to_string(root.join("deploy/images/Dockerfile")).unwrap();
    let secrets = deploy_secrets(&std::fs::read_to_string(root.join("docs/DEPLOY.md")).unwrap());
    let app = |file: &str| -> toml::Value {
        toml::from_str(&std::fs::read_to_string(fly_dir.join(file)).unwrap()).unwrap()
    };
    let port = |address: &str| address.rsplit(':').next().unwrap().parse::<i64>().unwrap();
    let settings_file = root.join("config/examples/production-r2-fly.toml");
    let shipped: toml::Value =
        toml::from_str(&std::fs::read_to_string(&settings_file).unwrap()).unwrap();
    let mut nats_passwords = Vec::new();

    for (service, file) in
        [(Service::Ingest, "ingest.fly.toml"), (Service::Dispatcher, "dispatcher.fly.toml")]
    {
        let fly = app(file);
        let name = fly["app"].as_str().unwrap();
        let image = build_stage(&dockerfile, &fly_dir, &fly, "services", file);
        assert!(
            !image.contains("ENTRYPOINT"),
            "{file}: an entrypoint would take the process commands as arguments"
        );
        let processes = fly["processes"].as_table().unwrap();
        assert_eq!(processes.len(), 1, "{file}: one service per app, so one identity per app");
        let binary = processes.values().next().unwrap().as_str().unwrap();
        assert_eq!(binary, format!("/usr/local/bin/tcoder-{}", service.name()), "{file}");
        assert!(
            image.contains(&format!("/out/tcoder-{}", service.name())),
            "{file}: not in the image"
        );
        let shipped_file = &fly["files"].as_array().unwrap()[0];
        assert_eq!(
            fly_dir.join(shipped_file["local_path"].as_str().unwrap()).canonicalize().unwrap(),
            settings_file.canonicalize().unwrap()
        );
        assert_eq!(
            fly["env"]["TCODER_CONFIG"].as_str(),
            shipped_file["guest_path"].as_str(),
            "{file}"
        );
        let app_secrets =
            secrets.get(name).unwrap_or_else(|| panic!("DEPLOY.md sets no secrets on {name}"));
        let mut env: Vec<(String, String)> = fly["env"]
            .as_table()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        env.extend(app_secrets.iter().map(|(k, _, v)| (k.clone(), v.clone())));
        let settings = Settings::load_from(service, Some(&settings_file), EnvVars::from_pairs(env))
            .unwrap_or_else(|e| panic!("{name} with the secrets DEPLOY.md sets: {e}"));
        assert_identity(&settings, service.name(), name);
        nats_passwords.push(raw_secret(app_secrets, "TCODER__NATS__PASSWORD", name));
        let admin_port = port(&settings.admin.bind.to_string());
        assert_eq!(fly["metrics"]["port"].as_integer(), Some(admin_port), "{file}: metrics");
        if service == Service::Ingest {
            let http = &fly["http_service"];
            assert_eq!(
                http["internal_port"].as_integer(),
                Some(port(&settings.ingest.http_bind.to_string())),
                "{file}"
            );
            let check = &http["checks"].as_array().unwrap()[0];
            assert_eq!(
                (check["port"].as_integer(), check["path"].as_str()),
                (Some(admin_port), Some("/readyz")),
                "{file}"
            );
        } else {
            assert_eq!(fly["checks"]["healthz"]["port"].as_integer(), Some(admin_port), "{file}");
            // Worker Machines: the settings this dispatcher hands them (no credential), and
            // the worker app's own secrets.
            let workers = app("worker.fly.toml");
            build_stage(&dockerfile, &fly_dir, &workers, "worker", "worker.fly.toml");
            let workers_app = workers["app"].as_str().unwrap();
            assert_eq!(settings.dispatcher.fly.app, workers_app, "[dispatcher.fly] app");
            let handed = settings.for_workers().to_toml_without_secrets();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("worker.toml"), &handed).unwrap();
            let worker_secrets = secrets
                .get(workers_app)
                .unwrap_or_else(|| panic!("DEPLOY.md sets no secrets on {workers_app}"));
            let env = worker_secrets.iter().map(|(k, _, v)| (k.clone(), v.clone()));
            let worker = Settings::load_from(
                Service::Worker,
                Some(&dir.path().join("worker.toml")),
                EnvVars::from_pairs(env),
            )
            .unwrap_or_else(|e| panic!("a worker Machine with {workers_app}'s secrets: {e}"));
            assert_identity(&worker, "worker", workers_app);
            nats_passwords.push(raw_secret(worker_secrets, "TCODER__NATS__PASSWORD", workers_app));
        }
    }
    nats_passwords.sort();
    nats_passwords.dedup();
    assert_eq!(nats_passwords.len(), 3, "each app its own NATS password: {nats_passwords:?}");

    // NATS: the pinned server, the users the code defines, every password a secret of the app.
    let nats = app("nats.fly.toml");
    let nats_app = nats["app"].as_str().unwrap();
    let setup = std::fs::read_to_string(root.join("scripts/setup.sh")).unwrap();
    let version = setup.split("NATS_SERVER_VERSION=\"").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(
        nats["build"]["image"].as_str(),
        Some(format!("docker.io/library/nats:{version}").as_str())
    );
    let conf_path = fly_dir.join(nats["files"][0]["local_path"].as_str().unwrap());
    let conf = std::fs::read_to_string(&conf_path).unwrap();
    assert!(conf.contains(&production_authorization_block()), "{}", conf_path.display());
    assert!(
        conf.contains(&format!("nats-route://{nats_app}.internal:6222")),
        "routes name the app"
    );
    assert!(
        nats["processes"]["nats"]
            .as_str()
            .unwrap()
            .contains(nats["files"][0]["guest_path"].as_str().unwrap())
    );
    assert_eq!(
        nats["mounts"][0]["destination"].as_str(),
        Some("/data"),
        "JetStream's store_dir is on the volume"
    );
    let nats_secrets = &secrets[nats_app];
    let mut check =
        std::process::Command::new(testkit::tool_path("nats-server", "TCODER_NATS_SERVER"));
    check.arg("-t").arg("-c").arg(&conf_path).env("FLY_MACHINE_ID", "e784079b449483");
    for service in Service::ALL {
        let variable = password_variable(service);
        assert!(
            nats_secrets.iter().any(|(k, ..)| *k == variable),
            "{nats_app} lacks the secret {variable}"
        );
        check.env(&variable, "x");
    }
    let checked = check.output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    assert_eq!(
        shipped["nats"]["url"].as_str(),
        Some(format!("nats://{nats_app}.internal:4222").as_str())
    );

    // Redis: its start script's users are the roles the code defines, every password a secret.
    let redis = app("redis.fly.toml");
    let redis_app = redis["app"].as_str().unwrap();
    let script = std::fs::read_to_string(root.join("deploy/redis/start.sh")).unwrap();
    for service in Service::ALL {
        let variable = format!("{}_REDIS_PASSWORD", service.name().to_uppercase());
        let line = format!(
            "user {} on >${{{variable}}} {}\n",
            service.name(),
            tcoder::redis::acl::rights(service)
        );
        assert!(script.contains(&line), "deploy/redis/start.sh should contain:\n{line}");
        assert!(
            secrets[redis_app].iter().any(|(k, ..)| *k == variable),
            "{redis_app} lacks the secret {variable}"
        );
    }
    assert!(
        shipped["redis"]["url"].as_str().unwrap().contains(&format!("@{redis_app}.internal:"))
            || shipped["redis"]["url"]
                .as_str()
                .unwrap()
                .contains(&format!("//{redis_app}.internal:"))
    );

    // Notifications through the queue; results served from the bucket's domain or signed.
    assert_eq!(shipped["ingest"]["r2_queue"]["enabled"].as_bool(), Some(true));
    let public =
        shipped["s3"].get("public_url").and_then(|u| u.as_str()).is_some_and(|u| !u.is_empty());
    let signed = shipped["ingest"].get("delivery").and_then(|d| d.as_str()) == Some("signed");
    assert!(public || signed, "result URLs would point at the private R2 endpoint");
    // Nothing the images set: their ENV would silently win over the file.
    for line in dockerfile.lines().filter_map(|l| l.trim().strip_prefix("ENV TCODER__")) {
        let (path, _) = line.split_once('=').unwrap();
        let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        let set = keys.iter().try_fold(&shipped, |table, key| table.get(key.as_str()));
        assert!(
            set.is_none(),
            "the settings file sets {}, which the image's ENV overrides",
            keys.join(".")
        );
    }
}

/// The Fly Redis app's start script, run here with redis-server in place of the image: the ACL
/// file it writes from the secrets lets each role in with its password and no further than
/// its keys (a worker cannot write API keys; the operator can).
#[test]
fn the_fly_redis_start_script_gives_each_role_its_own_rights() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let data = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let stub = bin.path().join("docker-entrypoint.sh");
    // The image's entrypoint runs its arguments (dropping to the redis user); here on loopback.
    std::fs::write(
        &stub,
        "#!/bin/sh\nshift\nexec \"$REDIS_SERVER\" \"$@\" --port \"$STUB_PORT\" --bind 127.0.0.1\n",
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let port = testkit::free_port();
    let mut command = std::process::Command::new("sh");
    command
        .arg(root.join("deploy/redis/start.sh"))
        .env("PATH", format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap()))
        .env("REDIS_DATA", data.path())
        .env("REDIS_CONF", root.join("deploy/redis/redis.conf"))
        .env("REDIS_SERVER", testkit::tool_path("redis-server", "TCODER_REDIS_SERVER"))
        .env("STUB_PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for role in ["INGEST", "DISPATCHER", "WORKER", "CLI"] {
        command.env(format!("{role}_REDIS_PASSWORD"), format!("pw-{}", role.to_lowercase()));
    }
    let _redis = testkit::ChildProcess::spawn("redis-server", &mut command).unwrap();
    let as_user = |user: &str, args: &[&str]| -> String {
        let password = format!("pw-{user}");
        resp(port, &[&["AUTH", user, &password], args])
    };
    testkit::eventually(std::time::Duration::from_secs(10), || {
        let reply = std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ());
        reply.map_err(|e| e.to_string())
    });
    assert!(as_user("worker", &["SET", "tcoder:job:x", "1"]).starts_with("+OK"));
    assert!(as_user("worker", &["SET", "tcoder:apikeys", "1"]).starts_with("-NOPERM"));
    assert!(as_user("ingest", &["SET", "tcoder:apikeys", "1"]).starts_with("-NOPERM"));
    assert!(as_user("cli", &["SET", "tcoder:apikeys", "1"]).starts_with("+OK"));
    assert!(resp(port, &[&["AUTH", "worker", "wrong"]]).starts_with("-WRONGPASS"));
    assert!(resp(port, &[&["PING"]]).starts_with("-NOAUTH"), "no anonymous access");
    let acl = std::fs::metadata(data.path().join("users.acl")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&acl.permissions()) & 0o077,
        0,
        "the ACL file is private"
    );
}

/// Sends `commands` on one connection; the reply to the last (its first line).
fn resp(port: u16, commands: &[&[&str]]) -> String {
    use std::io::{BufRead, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut last = String::new();
    for command in commands {
        let mut request = format!("*{}\r\n", command.len());
        for arg in *command {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        writer.write_all(request.as_bytes()).unwrap();
        last.clear();
        reader.read_line(&mut last).unwrap();
    }
    last
}

/// The Dockerfile stage `target` that `fly` builds, after checking it builds it.
fn build_stage(
    dockerfile: &str,
    dir: &Path,
    fly: &toml::Value,
    target: &str,
    file: &str,
) -> String {
    let build = &fly["build"];
    assert!(dir.join(build["dockerfile"].as_str().unwrap()).is_file(), "{file}: dockerfile");
    assert_eq!(build["build-target"].as_str(), Some(target), "{file}");
    let start =
        dockerfile.find(&format!(" AS {target}\n")).unwrap_or_else(|| panic!("no stage {target}"));
    let rest = &dockerfile[start..];
    rest[1..].find("\nFROM ").map_or(rest, |end| &rest[..end + 1]).to_owned()
}

/// Settings of `app` connect to NATS as `user` and to Redis as `user`, with passwords.
fn assert_identity(settings: &Settings, user: &str, app: &str) {
    assert_eq!(settings.nats.user, user, "{app}: NATS user");
    assert!(!settings.nats.password.expose().is_empty(), "{app}: NATS password");
    let redis = settings.redis.url.split("://").nth(1).unwrap().split('@').next().unwrap();
    assert!(
        redis.starts_with(&format!("{user}:")) && redis.len() > user.len() + 1,
        "{app}: Redis user of {}",
        settings.redis.url
    );
    assert!(
        !settings.s3.access_key_id.is_empty() && !settings.s3.secret_access_key.expose().is_empty(),
        "{app}: store keys"
    );
}

/// The value DEPLOY.md gives `name` on `app`, as written (before the shell expands it).
fn raw_secret(secrets: &[(String, String, String)], name: &str, app: &str) -> String {
    secrets
        .iter()
        .find(|(k, ..)| k == name)
        .map(|(_, raw, _)| raw.clone())
        .unwrap_or_else(|| panic!("{app}: no {name}"))
}

/// Every `fly secrets set -a <app> NAME=value …` of DEPLOY.md: per app, (name, the value as
/// written, the value with each `$VARIABLE` and `$(command)` replaced by 64 hex digits — what
/// the shell would put there, as long as the longest generated secret).
fn deploy_secrets(doc: &str) -> std::collections::BTreeMap<String, Vec<(String, String, String)>> {
    const STANDIN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mut apps = std::collections::BTreeMap::new();
    for command in doc.replace("\\\n", " ").lines() {
        let Some(rest) = command.trim().strip_prefix("fly secrets set -a ") else { continue };
        let mut rest = rest.to_owned();
        while let Some(start) = rest.find("\"$(") {
            let end = start + rest[start..].find(")\"").unwrap() + 2;
            rest.replace_range(start..end, "$SUBSTITUTED");
        }
        let mut words = rest.split_whitespace();
        let app = words.next().unwrap().to_owned();
        let mut secrets = Vec::new();
        for word in words.filter(|w| !w.starts_with("--")) {
            let (name, raw) = word.split_once('=').unwrap_or_else(|| panic!("{app}: `{word}`"));
            let mut value = String::new();
            let mut chars = raw.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' {
                    while chars.peek().is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
                        chars.next();
                    }
                    value.push_str(STANDIN);
                } else {
                    value.push(c);
                }
            }
            secrets.push((name.to_owned(), raw.to_owned(), value));
        }
        apps.insert(app, secrets);
    }
    apps
}
