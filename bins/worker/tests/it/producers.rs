//! Event producers, as users run them: a nats-py producer (docs/examples/python/producer.py)
//! submitting jobs for objects it put in the bucket with boto3, watch folders turning new
//! objects into jobs, and every payload on the subjects users touch checked against
//! docs/asyncapi.yaml by an independent JSON Schema implementation.

use std::time::Duration;

use serde_json::{Value, json};
use tcoder::api::JobView;
use tcoder::events::subjects;
use tcoder::jobs::{JobOrigin, JobStatus, Preset};
use testkit::contracts;

use crate::harness::{Pipeline, SECRET};

const JOB: Duration = Duration::from_secs(90);

/// The producer's command line for tenant `acme` against the pipeline's servers.
struct Producer<'a> {
    pipeline: &'a Pipeline,
}

impl Producer<'_> {
    /// Runs the producer (off the runtime: ingest answers it from this process).
    async fn run(&self, file: &std::path::Path, extra: &[&str]) -> Value {
        let env = &self.pipeline.env;
        let mut args: Vec<String> = vec![
            file.display().to_string(),
            "--tenant".into(),
            "acme".into(),
            "--nats".into(),
            env.nats.url(),
            "--s3-endpoint".into(),
            env.s3.endpoint(),
            "--bucket".into(),
            env.s3.bucket().into(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let credentials = [
            ("AWS_ACCESS_KEY_ID", env.s3.access_key_id().to_owned()),
            ("AWS_SECRET_ACCESS_KEY", env.s3.secret_access_key().to_owned()),
        ];
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> =
                credentials.iter().map(|(k, v)| (*k, v.as_str())).collect();
            contracts::run_producer(&args, &env)
        })
        .await
        .unwrap()
    }
}

/// docs/examples/python/subscriber.py, following until the first terminal event.
struct Subscriber {
    process: testkit::ChildProcess,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Subscriber {
    /// Starts it and waits (bounded) until it is subscribed.
    fn start(nats: &str) -> Subscriber {
        use std::io::BufRead as _;
        let root = testkit::workspace_root();
        let mut command = std::process::Command::new(root.join(".tools/venv/bin/python"));
        command
            .arg(root.join("docs/examples/python/subscriber.py"))
            .args(["--tenant", "acme", "--nats", nats, "--until-terminal", "1", "--timeout", "90"])
            .stdout(std::process::Stdio::piped());
        let mut process = testkit::ChildProcess::spawn("subscriber.py", &mut command).unwrap();
        let stdout = process.take_stdout().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines.recv_timeout(Duration::from_secs(30)).expect("subscriber ready");
        assert_eq!(ready, r#"{"ready": true}"#);
        Subscriber { process, lines }
    }

    /// Everything it printed until it exited (after its terminal event, or its own 90 s
    /// timeout: the reading ends when its output does).
    fn finish(mut self) -> Vec<Value> {
        let heard: Vec<Value> =
            self.lines.iter().map(|line| serde_json::from_str(&line).unwrap()).collect();
        let status = testkit::eventually(Duration::from_secs(10), || {
            self.process.try_status().ok_or("still running")
        });
        assert!(status.success(), "subscriber.py: {status}");
        heard
    }
}

/// Jobs of tenant `acme` whose origin says `origin_field == value`.
async fn jobs_with(pipeline: &Pipeline, field: &str, value: &str) -> Vec<JobView> {
    let listed = pipeline.job_list().await;
    let origin = |job: &JobView| serde_json::to_value(&job.origin).unwrap();
    listed.jobs.into_iter().filter(|job| origin(job)[field] == value).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_py_producer_gets_one_job_per_submission_and_typed_rejections() {
    let pipeline = Pipeline::start().await;
    let _worker = pipeline.worker(&[]);
    let producer = Producer { pipeline: &pipeline };
    let clip = testkit::media::tiny_mp4();
    let request = json!({ "preset": "hls", "qualities": ["144p"], "metadata": { "order": "7" } });
    let request_text = request.to_string();
    let key = "uploads/acme/clips/a.mp4";
    let subscriber = Subscriber::start(&pipeline.env.nats.url());

    // boto3 puts the clip, nats-py asks for the job and gets its id back.
    let reply =
        producer.run(&clip, &["--key", key, "--job", &request_text, "--msg-id", "order-7"]).await;
    assert_eq!(reply["replayed"], false, "{reply}");
    let id = reply["job_id"].as_str().unwrap().to_owned();
    let job = pipeline.wait_status(&id, JobStatus::Completed, JOB).await;
    assert_eq!(job.origin, JobOrigin::Nats { submission_id: "order-7".into() });
    let source_key = job.source.as_ref().and_then(|s| s.key.as_deref());
    assert_eq!((job.spec.preset, source_key), (Preset::Hls, Some(key)));
    let master = job.result.as_ref().unwrap().hls_master.as_deref().unwrap();
    let playlist = std::fs::read_to_string(pipeline.stored(master)).unwrap();
    assert!(playlist.contains("RESOLUTION=192x144"), "{playlist}");
    // The object is the producer's: it is still there after the job.
    let bucket_dir = pipeline.env.s3.data_dir().join(pipeline.env.s3.bucket());
    assert!(bucket_dir.join(key).is_file());

    // The example subscriber heard the job from acceptance to completion, in order.
    let heard = subscriber.finish();
    let kinds: Vec<&str> = heard
        .iter()
        .filter(|e| e["event"]["job_id"] == id.as_str())
        .filter_map(|e| e["event"]["type"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"accepted"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    assert!(kinds.contains(&"started") && kinds.contains(&"rendition"), "{kinds:?}");

    // The same message again (a retry after a lost reply): the same job.
    let again =
        producer.run(&clip, &["--key", key, "--job", &request_text, "--msg-id", "order-7"]).await;
    assert_eq!((again["job_id"].as_str(), &again["replayed"]), (Some(id.as_str()), &json!(true)));

    // Published twice without waiting: the SUBMIT stream keeps both copies and ingest makes
    // one job.
    for _ in 0..2 {
        let published = producer
            .run(&clip, &["--key", "uploads/acme/b.mp4", "--msg-id", "order-8", "--publish"])
            .await;
        assert_eq!(published["published"], "order-8", "{published}");
    }
    let submitted = testkit::eventually_async(Duration::from_secs(30), || async {
        let mut stream = pipeline.js.get_stream(subjects::SUBMIT_STREAM).await.unwrap();
        let left = stream.info().await.unwrap().state.messages;
        let jobs = jobs_with(&pipeline, "submission_id", "order-8").await;
        if left == 0 && !jobs.is_empty() { Ok(jobs) } else { Err((left, jobs.len())) }
    })
    .await;
    assert_eq!(submitted.len(), 1, "{submitted:?}");
    let published_id = submitted[0].id.to_string();
    pipeline.wait_status(&published_id, JobStatus::Completed, JOB).await;

    // Bad submissions are answered with a typed error, announced, and make no job. Another
    // tenant's object is there to be named: no spelling of its key reaches it.
    let s3 = &pipeline.s3;
    let globex = "uploads/globex/x.mp4";
    let body = std::fs::read(&clip).unwrap();
    s3.put_object()
        .bucket(pipeline.env.s3.bucket())
        .key(globex)
        .body(body.into())
        .send()
        .await
        .unwrap();
    let bad = [
        (globex, "{}", "bad-tenant", "source.forbidden"),
        ("uploads/acme/../globex/x.mp4", "{}", "bad-dots", "source.invalid_key"),
        ("uploads/acme/x/../../globex/x.mp4", "{}", "bad-dots-2", "source.invalid_key"),
        ("uploads/acme/./../globex/x.mp4", "{}", "bad-dot", "source.invalid_key"),
        ("uploads/acme//../globex/x.mp4", "{}", "bad-slashes", "source.invalid_key"),
        ("uploads/acme/%2e%2e/globex/x.mp4", "{}", "bad-encoded", "source.invalid_key"),
        ("uploads/acme/missing.mp4", "{}", "bad-missing", "source.not_found"),
        (
            "uploads/acme/clips/a.mp4",
            r#"{"preset":"nope"}"#,
            "bad-preset",
            "validation.unknown_preset",
        ),
        // Caption files are named by key in the tenant's own uploads: a submission gets no
        // upload URL.
        (
            "uploads/acme/clips/a.mp4",
            r#"{"captions":[{"language":"en","key":"uploads/globex/en.srt"}]}"#,
            "bad-caption-tenant",
            "validation.captions",
        ),
        (
            "uploads/acme/clips/a.mp4",
            r#"{"captions":[{"language":"en","key":"uploads/acme/../globex/en.srt"}]}"#,
            "bad-caption-dots",
            "validation.captions",
        ),
        (
            "uploads/acme/clips/a.mp4",
            r#"{"captions":[{"language":"en","upload":true}]}"#,
            "bad-caption-upload",
            "validation.captions",
        ),
        (
            "uploads/acme/clips/a.mp4",
            r#"{"captions":[{"language":"en","key":"uploads/acme/missing.srt"}]}"#,
            "bad-caption-missing",
            "validation.captions",
        ),
        // The id of the first submission, asking for something else.
        ("uploads/acme/clips/a.mp4", r#"{"preset":"default"}"#, "order-7", "idempotency.conflict"),
    ];
    // Listeners on the rejection subject hear each rejection once, though ingest handles
    // every submission twice (the request and the copy the SUBMIT stream keeps).
    let mut listener = pipeline.nats.subscribe("tcoder.rejected.acme").await.unwrap();
    let mut replies = vec![reply.clone()];
    for (key, job, msg_id, code) in bad {
        let rejected = producer
            .run(&clip, &["--no-upload", "--key", key, "--job", job, "--msg-id", msg_id])
            .await;
        assert_eq!(rejected["error"]["code"], code, "{rejected}");
        replies.push(rejected);
    }
    // A request naming someone else's subject as its reply (another tenant's inbox, ingest's
    // own, any subject) is not answered there: ingest publishes only on acme's own inbox.
    // (Subjects no stream keeps, so the markers below touch nothing else.)
    use futures_util::StreamExt as _;
    let mut spies = Vec::new();
    let stolen = ["_INBOX_globex.stolen", "_INBOX.stolen", "_INBOX_acmex.stolen", "stolen"];
    for subject in stolen {
        spies.push(pipeline.nats.subscribe(subject).await.unwrap());
    }
    for (n, reply) in stolen.iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("reply-attack-{n}").as_str());
        let body = json!({ "source": { "key": "uploads/acme/nothing-here.mp4" } }).to_string();
        let (subject, reply) = (subjects::submit("acme"), reply.to_string());
        let sent =
            pipeline.nats.publish_with_reply_and_headers(subject, reply, headers, body.into());
        sent.await.unwrap();
    }
    let admin = pipeline.ingest_admin;
    testkit::eventually(Duration::from_secs(10), || {
        let (_, text) = testkit::http_get(admin, "/metrics").unwrap();
        let series = r#"tcoder_submissions_total{outcome="unanswerable",path="request"}"#;
        let refused = crate::harness::sum_series(&text, series);
        if refused >= stolen.len() as f64 { Ok(()) } else { Err(refused) }
    });
    for (subject, mut spy) in stolen.iter().zip(spies) {
        pipeline.nats.publish(subject.to_string(), "marker".into()).await.unwrap();
        let first =
            tokio::time::timeout(Duration::from_secs(5), spy.next()).await.unwrap().unwrap();
        assert_eq!(first.payload.as_ref(), b"marker", "ingest answered on {subject}");
    }

    let rejections = testkit::eventually_async(Duration::from_secs(30), || async {
        let stored =
            pipeline.stored_messages(subjects::EVENTS_STREAM, "tcoder.rejected.acme").await;
        let announced = |msg_id: &str, code: &str| {
            stored.iter().any(|(_, r)| r["submission_id"] == msg_id && r["error"]["code"] == code)
        };
        let missing: Vec<&str> = bad
            .iter()
            .filter(|(_, _, msg_id, code)| !announced(msg_id, code))
            .map(|(_, _, msg_id, _)| *msg_id)
            .collect();
        if missing.is_empty() { Ok(stored) } else { Err(missing) }
    })
    .await;
    // Every stored copy handled: all that will be announced has been.
    testkit::eventually_async(Duration::from_secs(30), || async {
        let stream = pipeline.js.get_stream(subjects::SUBMIT_STREAM).await.unwrap();
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(subjects::SUBMIT_CONSUMER).await.unwrap();
        let info = consumer.info().await.unwrap();
        let left = info.num_pending + info.num_ack_pending as u64;
        if left == 0 { Ok(()) } else { Err(left) }
    })
    .await;
    let mut heard: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(200), listener.next()).await
    {
        let rejection: Value = serde_json::from_slice(&message.payload).unwrap();
        *heard.entry(rejection["submission_id"].as_str().unwrap_or("").to_owned()).or_default() +=
            1;
    }
    for (_, _, msg_id, _) in bad {
        assert_eq!(heard.get(msg_id), Some(&1), "{msg_id} announced: {heard:?}");
    }
    assert!(rejections.len() >= bad.len());
    let listed = pipeline.stored_messages(subjects::EVENTS_STREAM, subjects::EVENTS_ALL).await;
    let accepted = listed.iter().filter(|(subject, _)| subject.ends_with(".accepted")).count();
    assert_eq!(accepted, 2, "one job per submission: {listed:?}");

    // A file that is not a video: the job is made, and fails with a typed error.
    let text = testkit::corpus::text();
    let failed =
        producer.run(&text, &["--key", "uploads/acme/notes.mp4", "--msg-id", "notes"]).await;
    let failed_id = failed["job_id"].as_str().unwrap().to_owned();
    pipeline.wait_status(&failed_id, JobStatus::Failed, JOB).await;

    // Every payload sent on a subject a user touches matches docs/asyncapi.yaml.
    let mut samples: Vec<Value> = Vec::new();
    for (stream, filter) in [
        (subjects::EVENTS_STREAM, subjects::EVENTS_ALL),
        (subjects::EVENTS_STREAM, subjects::REJECTED_ALL),
        (subjects::UPLOADS_STREAM, subjects::UPLOADS_ALL),
    ] {
        for (subject, payload) in pipeline.stored_messages(stream, filter).await {
            samples.push(json!({ "subject": subject, "payload": payload }));
        }
    }
    for reply in replies {
        samples.push(json!({ "message": "submitReply", "payload": reply }));
    }
    let mut submission = request.clone();
    submission["source"] = json!({ "key": key });
    samples.push(json!({ "subject": subjects::submit("acme"), "payload": submission }));
    // Kinds this run did not produce, made by the constructors tcoder publishes them with.
    let store = tcoder::jobs::JobStore::new(pipeline.redis.clone());
    let job = store.get(&tcoder::jobs::JobId::parse(&id).unwrap()).await.unwrap().unwrap();
    let error = tcoder::jobs::JobError { code: "upload.expired".into(), message: "late".into() };
    for event in [
        tcoder::events::JobEvent::canceled(&job),
        tcoder::events::JobEvent::importing(&job, 1, 1 << 20, Some(4 << 20)),
        tcoder::events::JobEvent::expired(&job, &error),
        tcoder::events::JobEvent::deleted(&job, "client"),
    ] {
        samples.push(json!({ "subject": event.subject(), "payload": event }));
    }
    let history = store.history(&job.id).await.unwrap();
    let letter = tcoder::dlq::DeadLetter::new(
        job.id.clone(),
        job.tenant.clone(),
        "job.poison".into(),
        3,
        history,
    );
    samples.push(json!({ "subject": subjects::DLQ_JOBS, "payload": letter }));
    let doc = contracts::asyncapi_document();
    let covered = contracts::check_payloads(&doc, &samples).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(covered, contracts::message_names(&doc), "every message the document describes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_folders_make_one_job_per_new_object_whichever_way_it_is_found() {
    let pipeline =
        Pipeline::start_with(&[("TCODER__INGEST__SWEEP_INTERVAL", "300ms".to_owned())]).await;
    let _worker = pipeline.worker(&[]);
    pipeline.watch_folder("acme-incoming", "incoming/acme/", "acme").await;

    let s3 = &pipeline.s3;
    let bucket = pipeline.env.s3.bucket().to_owned();
    let clip = std::fs::read(testkit::media::tiny_mp4()).unwrap();
    let put = |key: &'static str, body: Vec<u8>| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        async move { s3.put_object().bucket(bucket).key(key).body(body.into()).send().await.unwrap() }
    };
    let notify = |key: &str| {
        let body = json!({ "Records": [{ "eventName": "ObjectCreated:Put", "s3": { "bucket": { "name": bucket }, "object": { "key": key } } }] });
        let request = pipeline
            .http
            .post(format!("{}/v1/notifications/s3", pipeline.api))
            .bearer_auth(SECRET)
            .json(&body);
        async move { assert!(request.send().await.unwrap().status().is_success()) }
    };

    // Notified as S3 would: one job with the rule's preset, recorded as the rule's.
    put("incoming/acme/a.mp4", clip.clone()).await;
    notify("incoming/acme/a.mp4").await;
    let first = testkit::eventually_async(Duration::from_secs(20), || async {
        let jobs = jobs_with(&pipeline, "rule", "acme-incoming").await;
        if jobs.is_empty() { Err("no job yet") } else { Ok(jobs[0].clone()) }
    })
    .await;
    let first_id = first.id.as_str();
    let job = pipeline.wait_status(first_id, JobStatus::Completed, JOB).await;
    let source_key = job.source.as_ref().and_then(|s| s.key.as_deref());
    assert_eq!((job.spec.preset, source_key), (Preset::Hls, Some("incoming/acme/a.mp4")));
    assert_eq!(job.origin, JobOrigin::Watch { rule: "acme-incoming".into() });
    let master = job.result.as_ref().and_then(|r| r.hls_master.as_deref()).unwrap();
    assert!(master.contains(&format!("/outputs/acme/{first_id}/")), "{master}");

    // Its notification lost: the sweep finds the object. Hidden files, folder markers and
    // other folders are not the rule's.
    put("incoming/acme/b.mp4", clip.clone()).await;
    for ignored in ["incoming/acme/.DS_Store", "incoming/acme/sub/", "incoming/globex/c.mp4"] {
        // A folder marker is empty (stores refuse a body there).
        put(ignored, if ignored.ends_with('/') { Vec::new() } else { b"x".to_vec() }).await;
    }
    let both = testkit::eventually_async(Duration::from_secs(20), || async {
        let jobs = jobs_with(&pipeline, "rule", "acme-incoming").await;
        if jobs.len() >= 2 { Ok(jobs) } else { Err(jobs.len()) }
    })
    .await;
    let source_key = |j: &&JobView| j.source.as_ref().and_then(|s| s.key.clone());
    let second =
        both.iter().find(|j| source_key(j).as_deref() == Some("incoming/acme/b.mp4")).unwrap();
    pipeline.wait_status(second.id.as_str(), JobStatus::Completed, JOB).await;

    // A key that climbs out of the folder names nothing: refused as it arrives, no job (the
    // attack: `incoming/acme/../globex/c.mp4` made globex's file a job of acme's rule).
    notify("incoming/acme/../globex/c.mp4").await;
    let admin = pipeline.ingest_admin;
    testkit::eventually(Duration::from_secs(10), || {
        let (_, text) = testkit::http_get(admin, "/metrics").unwrap();
        let series = r#"tcoder_bridge_events_total{outcome="invalid_key",source="s3"}"#;
        let refused = crate::harness::sum_series(&text, series);
        if refused >= 1.0 { Ok(()) } else { Err(refused) }
    });

    // A repeated notification and later sweeps (each seeing both objects again) add nothing.
    notify("incoming/acme/a.mp4").await;
    let seen_again = |text: &str| {
        crate::harness::sum_series(
            text,
            r#"tcoder_bridge_events_total{outcome="duplicate",source="sweep"}"#,
        )
    };
    let (_, before) = testkit::http_get(admin, "/metrics").unwrap();
    testkit::eventually(Duration::from_secs(10), || {
        let (_, now) = testkit::http_get(admin, "/metrics").unwrap();
        // Two more full sweeps over both objects.
        if seen_again(&now) >= seen_again(&before) + 4.0 { Ok(()) } else { Err(seen_again(&now)) }
    });
    let jobs = jobs_with(&pipeline, "rule", "acme-incoming").await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let listed = pipeline.job_list().await;
    assert_eq!(listed.jobs.len(), 2, "no job for ignored objects: {listed:?}");
}
