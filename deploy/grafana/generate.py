#!/usr/bin/env python3
"""Generates the tcoder Grafana dashboards (deploy/grafana/dashboards/*.json).

Edit panels here, run it, commit both: the test suite checks every query only uses metrics
the services export."""
import json, os
# Writes the dashboards JSON next to this script: python3 deploy/grafana/generate.py
OUT=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'dashboards')
os.makedirs(OUT, exist_ok=True)
DS={"type":"prometheus","uid":"${datasource}"}

def panel(pid, title, exprs, x, y, w=12, h=8, unit="short", kind="timeseries", desc=""):
    targets=[{"datasource":DS,"expr":e,"legendFormat":l,"refId":chr(65+i)} for i,(e,l) in enumerate(exprs)]
    p={"id":pid,"type":kind,"title":title,"description":desc,"datasource":DS,
       "gridPos":{"x":x,"y":y,"w":w,"h":h},"targets":targets,
       "fieldConfig":{"defaults":{"unit":unit},"overrides":[]},"options":{}}
    if kind=="stat":
        p["options"]={"reduceOptions":{"calcs":["lastNotNull"],"fields":"","values":False},"colorMode":"value","graphMode":"area"}
    return p

def dashboard(uid, title, desc, panels):
    return {"uid":uid,"title":title,"description":desc,"tags":["tcoder"],"timezone":"browser",
            "schemaVersion":38,"version":1,"editable":True,"refresh":"30s",
            "time":{"from":"now-6h","to":"now"},
            "templating":{"list":[{"name":"datasource","type":"datasource","query":"prometheus","label":"Data source","current":{}}]},
            "annotations":{"list":[]},"links":[{"title":"tcoder","type":"dashboards","tags":["tcoder"],"asDropdown":True}],
            "panels":panels}

def write(name, d):
    with open(os.path.join(OUT,name),'w') as f:
        json.dump(d,f,indent=2); f.write("\n")

# Pipeline overview
P=[]
P.append(panel(1,"Jobs completed / min",[('sum(rate(tcoder_worker_jobs_total{outcome="completed"}[5m])) * 60',"completed")],0,0,6,5,"short","stat"))
P.append(panel(2,"Job failure ratio (30m)",[('sum(rate(tcoder_worker_jobs_total{outcome="failed"}[30m])) / sum(rate(tcoder_worker_jobs_total{outcome=~"completed|failed"}[30m]))',"failed")],6,0,6,5,"percentunit","stat"))
P.append(panel(3,"Queued jobs",[('sum(tcoder_queue_depth)',"queued")],12,0,6,5,"short","stat"))
P.append(panel(4,"Oldest waiting job",[('max(tcoder_queue_oldest_age_seconds)',"age")],18,0,6,5,"s","stat"))
P.append(panel(5,"Throughput: jobs created and finished",[
    ('sum(rate(tcoder_jobs_created_total[5m])) * 60',"created / min"),
    ('sum by (outcome) (rate(tcoder_worker_jobs_total[5m])) * 60',"{{outcome}} / min")],0,5,12,8,"short"))
P.append(panel(6,"Jobs by state",[('sum by (state) (tcoder_jobs)',"{{state}}")],12,5,12,8,"short"))
P.append(panel(7,"Job duration (claim to commit)",[
    ('histogram_quantile(0.5, sum by (le) (rate(tcoder_job_duration_seconds_bucket[10m])))',"p50"),
    ('histogram_quantile(0.95, sum by (le) (rate(tcoder_job_duration_seconds_bucket[10m])))',"p95")],0,13,12,8,"s"))
P.append(panel(8,"Where time goes: p95 per stage",[
    ('histogram_quantile(0.95, sum by (le, stage) (rate(tcoder_job_stage_duration_seconds_bucket[10m])))',"{{stage}}")],12,13,12,8,"s"))
P.append(panel(9,"Queue depth by priority",[('tcoder_queue_depth',"{{priority}}")],0,21,12,8,"short"))
P.append(panel(10,"Oldest waiting work item by priority",[('tcoder_queue_oldest_age_seconds',"{{priority}}")],12,21,12,8,"s"))
P.append(panel(11,"Failures by error code",[('sum by (code) (increase(tcoder_worker_jobs_total{outcome="failed"}[1h]))',"{{code}}")],0,29,12,8,"short","timeseries"))
P.append(panel(12,"Dead letters",[('tcoder_dlq_jobs',"kept on DLQ"),('sum(increase(tcoder_dead_letters_total{outcome="dead_lettered"}[1h]))',"dead-lettered / h")],12,29,12,8,"short"))
P.append(panel(13,"API requests by route and status",[('sum by (route, status) (rate(tcoder_http_requests_total[5m]))',"{{route}} {{status}}")],0,37,12,8,"reqps"))
P.append(panel(14,"API latency p99",[('histogram_quantile(0.99, sum by (le, route) (rate(tcoder_http_request_duration_seconds_bucket[5m])))',"{{route}}")],12,37,12,8,"s"))
P.append(panel(15,"Uploads and bridge events",[('sum by (outcome) (rate(tcoder_uploads_total[5m]))',"upload {{outcome}}"),('sum by (source, outcome) (rate(tcoder_bridge_events_total[5m]))',"bridge {{source}} {{outcome}}"),('sum by (outcome) (rate(tcoder_dispatcher_upload_events_total[5m]))',"dispatcher {{outcome}}")],0,45,12,8,"ops"))
P.append(panel(16,"Reconciler actions and redeliveries",[('sum by (action) (increase(tcoder_reconciler_actions_total[1h]))',"{{action}}"),('sum(increase(tcoder_redeliveries_total[1h]))',"redeliveries")],12,45,12,8,"short"))
write("tcoder-pipeline.json", dashboard("tcoder-pipeline","tcoder / Pipeline overview","Do jobs flow? Throughput, latency, queue and errors.",P))

# Workers and machines
W=[]
W.append(panel(1,"Machines by state",[('sum by (state) (tcoder_machines)',"{{state}}")],0,0,12,8,"short"))
W.append(panel(2,"Machines by provider",[('sum by (provider) (tcoder_machines)',"{{provider}}")],12,0,12,8,"short"))
W.append(panel(3,"Admission decisions",[('sum by (decision) (rate(tcoder_admission_decisions_total[5m]))',"{{decision}}")],0,8,12,8,"ops"))
W.append(panel(4,"Provider API calls",[('sum by (provider, action, outcome) (rate(tcoder_provider_calls_total[5m]))',"{{provider}} {{action}} {{outcome}}")],12,8,12,8,"reqps"))
W.append(panel(5,"Reaper actions",[('sum by (action) (increase(tcoder_reaper_actions_total[1h]))',"{{action}}")],0,16,12,8,"short"))
W.append(panel(6,"Encode speed (x realtime), median",[('histogram_quantile(0.5, sum by (le) (rate(tcoder_encode_speed_ratio_bucket[15m])))',"p50")],12,16,12,8,"short"))
W.append(panel(7,"Bytes in / out",[('sum(rate(tcoder_worker_bytes_downloaded_total[5m]))',"downloaded"),('sum(rate(tcoder_worker_bytes_uploaded_total[5m]))',"uploaded")],0,24,12,8,"Bps"))
W.append(panel(8,"Engine CPU (cores busy)",[('sum(rate(tcoder_engine_cpu_seconds_total[5m]))',"engine"),('sum by (instance) (rate(process_cpu_seconds_total{job="tcoder-worker"}[5m]))',"worker process {{instance}}")],12,24,12,8,"short"))
W.append(panel(9,"Lease trouble",[('sum(increase(tcoder_lease_renewals_failed_total[15m]))',"renewals failed"),('sum(increase(tcoder_self_fences_total[15m]))',"self-fences"),('sum(increase(tcoder_worker_jobs_total{outcome=~"fenced|retried|released"}[15m]))',"fenced/retried/released")],0,32,12,8,"short"))
W.append(panel(10,"Worker memory (RSS)",[('process_resident_memory_bytes{job="tcoder-worker"}',"{{instance}}")],12,32,12,8,"bytes"))
write("tcoder-workers.json", dashboard("tcoder-workers","tcoder / Workers and machines","Pool size, admission, provider calls, worker health.",W))

# Webhooks
H=[]
H.append(panel(1,"Webhook attempts by outcome",[('sum by (outcome) (rate(tcoder_webhook_attempts_total[5m]))',"{{outcome}}")],0,0,12,8,"ops"))
H.append(panel(2,"Webhook failure ratio",[('sum(rate(tcoder_webhook_attempts_total{outcome!="delivered"}[15m])) / sum(rate(tcoder_webhook_attempts_total[15m]))',"failing")],12,0,12,8,"percentunit"))
H.append(panel(3,"Webhook latency",[
    ('histogram_quantile(0.5, sum by (le) (rate(tcoder_webhook_duration_seconds_bucket[10m])))',"p50"),
    ('histogram_quantile(0.99, sum by (le) (rate(tcoder_webhook_duration_seconds_bucket[10m])))',"p99")],0,8,12,8,"s"))
H.append(panel(4,"Exhausted deliveries (last 24h)",[('sum(increase(tcoder_webhook_attempts_total{outcome="exhausted"}[24h]))',"exhausted")],12,8,12,8,"short","stat"))
write("tcoder-webhooks.json", dashboard("tcoder-webhooks","tcoder / Webhooks","Delivery of signed webhooks to customers' endpoints.",H))

# Cost
C=[]
C.append(panel(1,"Estimated spend (last 24h)",[('sum(increase(tcoder_job_cost_usd_total[24h]))',"USD")],0,0,8,5,"currencyUSD","stat"))
C.append(panel(2,"Mean cost per job (last 24h)",[('sum(increase(tcoder_job_cost_usd_sum[24h])) / sum(increase(tcoder_job_cost_usd_count[24h]))',"USD / job")],8,0,8,5,"currencyUSD","stat"))
C.append(panel(3,"p95 cost per job",[('histogram_quantile(0.95, sum by (le) (rate(tcoder_job_cost_usd_bucket[1h])))',"p95")],16,0,8,5,"currencyUSD","stat"))
C.append(panel(4,"Spend rate (USD / hour)",[('sum(rate(tcoder_job_cost_usd_total[15m])) * 3600',"USD / h")],0,5,12,8,"currencyUSD"))
C.append(panel(5,"Machine seconds vs engine CPU seconds",[('sum(rate(tcoder_job_machine_seconds_total[15m]))',"machine s / s"),('sum(rate(tcoder_engine_cpu_seconds_total[15m]))',"engine CPU s / s")],12,5,12,8,"short"))
C.append(panel(6,"Storage writes",[('sum(rate(tcoder_storage_put_requests_total[15m])) * 3600',"PUT requests / h"),('sum(rate(tcoder_worker_bytes_uploaded_total[15m])) * 3600',"bytes stored / h")],0,13,24,8,"short"))
write("tcoder-cost.json", dashboard("tcoder-cost","tcoder / Cost","What jobs cost: estimated from measured usage and the [worker.cost] prices.",C))
