#!/usr/bin/env bash
# Offline check of deploy/: the Kubernetes manifests (deploy/kubernetes), their cross-references
# and the Grafana dashboard (deploy/grafana). No cluster and no network: kubectl cannot validate
# without a server's OpenAPI, so this checks the fields each kind needs itself, parses every
# PromQL expression with promtool, and checks every imagegen_* metric an alert, the autoscaler or
# the dashboard uses against the metrics the server exports, and the Deployment's arguments
# against the flags the server declares (ABSL_FLAG in server/*.cc).
#
# Usage: deploy_check.sh REPO_ROOT [METRICS_URL]
#   METRICS_URL  a running server's /metrics (e.g. http://127.0.0.1:9090/metrics): the exported
#                metrics are read from it; without it, from server/metrics.cc (.Name("imagegen_...")).
# Needs: python3 with yaml (Debian python3-yaml), promtool (Debian prometheus).
set -euo pipefail
root=${1:?usage: deploy_check.sh REPO_ROOT [METRICS_URL]}
metrics_url=${2:-}
PYTHON=/usr/bin/python3  # Debian's: it has python3-yaml (a pyenv python may not)
[ -x "$PYTHON" ] || PYTHON=python3
command -v promtool >/dev/null || { echo "FAIL: promtool not found (Debian package prometheus)"; exit 1; }
"$PYTHON" -c 'import yaml' 2>/dev/null || { echo "FAIL: $PYTHON has no yaml module (Debian package python3-yaml)"; exit 1; }

exec "$PYTHON" - "$root" "$metrics_url" <<'PY'
import json, os, re, subprocess, sys, tempfile, urllib.request
import yaml

root, metrics_url = sys.argv[1], sys.argv[2]
kdir = os.path.join(root, "deploy", "kubernetes")
dashboard_path = os.path.join(root, "deploy", "grafana", "imagegen-dashboard.json")
problems = []
checked = []

def fail(where, msg):
    problems.append(f"{where}: {msg}")

def ok(msg):
    checked.append(msg)

def get(obj, path, default=None):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return default
        obj = obj[part]
    return obj

def need(where, obj, path, typ):
    """The field at path exists and has type typ (a type or tuple); returns it or None."""
    v = get(obj, path)
    if v is None:
        fail(where, f"missing {path}")
        return None
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        fail(where, f"{path} must be {names}, is {type(v).__name__} ({v!r})")
        return None
    return v

DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# ---- the metrics the server exports: name -> type ------------------------------------------
def from_source():
    found = {}
    src = open(os.path.join(root, "server", "metrics.cc")).read()
    for m in re.finditer(r'Build(Counter|Gauge|Histogram|Summary)\(\)\s*\.Name\("(imagegen_[a-z_]+)"\)', src):
        found[m.group(2)] = m.group(1).lower()
    for m in re.finditer(r'\.Name\("(imagegen_[a-z_]+)"\)', src):
        found.setdefault(m.group(1), "unknown")
    return found

exported = {}
if metrics_url:
    # A live server lists a family only once it has a sample (imagegen_previews_replaced_total
    # may never have one in a test): a metric declared in server/metrics.cc but absent from the
    # live text is noted, not failed; one in neither fails.
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    for m in re.finditer(r"^# TYPE (imagegen_[a-z_]+) (\w+)$", text, re.M):
        exported[m.group(1)] = m.group(2)
    source = metrics_url
    declared = from_source()
    for n, t in declared.items():
        if n in exported and t != "unknown" and exported[n] != t:
            fail(source, f"{n} is a {exported[n]} there but a {t} in server/metrics.cc")
    not_yet = sorted(set(declared) - set(exported))
    for n in not_yet:
        exported[n] = declared[n]
    ok(f"in server/metrics.cc but no sample yet at {source}: {not_yet or 'none'}")
    for n in sorted(set(exported) - set(declared)):
        fail(source, f"exports {n}, which server/metrics.cc does not declare")
else:
    source = "server/metrics.cc"
    exported = from_source()
if not exported:
    print(f"FAIL: no imagegen_* metrics found in {source}")
    sys.exit(1)
ok(f"{len(exported)} exported metrics ({source}): " +
   ", ".join(f"{n} ({t})" for n, t in sorted(exported.items())))

SUFFIXES = ("_bucket", "_sum", "_count")
used_metrics = set()

def check_metric_names(where, expr):
    for name in sorted(set(re.findall(r"imagegen_[a-z_]+", expr))):
        if name in exported and exported[name] not in ("histogram", "summary"):
            used_metrics.add(name)
            continue
        if name in exported:  # a histogram's bare name has no series
            fail(where, f"{name} is a {exported[name]}: use {name}_bucket/_sum/_count")
            continue
        base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), None)
        if base in exported and exported[base] in ("histogram", "summary", "unknown"):
            if name.endswith("_bucket") and exported[base] == "summary":
                fail(where, f"{base} is a summary: it has no _bucket series")
            used_metrics.add(base)
            continue
        if base in exported:
            fail(where, f"{name}: {base} is a {exported[base]}, it has no {name[len(base):]} series")
        else:
            fail(where, f"metric {name} is not exported by the server ({source})")

# ---- PromQL parsing: promtool check rules on a generated rules file -------------------------
def promtool_rules(groups, where, report=True):
    """promtool check rules on {groups}; True if it passes."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": groups}, f)
        path = f.name
    try:
        r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if r.returncode != 0 and report:
        lines = [l.replace(path + ": ", "").strip() for l in (r.stdout + r.stderr).splitlines()]
        lines = [l for l in lines if l and not l.startswith(("Checking", "FAILED"))]
        fail(where, "promtool check rules: " + "; ".join(lines))
    return r.returncode == 0

def promql_exprs(where, exprs):
    """Parses [(label, expr)] as PromQL with promtool (one recording rule each)."""
    if not exprs:
        return
    rules = [{"record": f"check:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    if promtool_rules([{"name": "check", "rules": rules}], where, report=False):
        return
    for label, e in exprs:  # name the ones that fail
        r = subprocess.run(["promtool", "check", "rules", "/dev/stdin"], input=yaml.safe_dump(
            {"groups": [{"name": "one", "rules": [{"record": "check:one", "expr": e}]}]}),
            capture_output=True, text=True)
        if r.returncode != 0:
            err = re.search(r"could not parse expression: (.*)", r.stdout + r.stderr)
            fail(label, f"PromQL does not parse ({err.group(1) if err else 'promtool failed'}): {e}")

# ---- the manifests ---------------------------------------------------------------------------
KNOWN = {
    ("v1", "Namespace"), ("v1", "Service"), ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"), ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("v1", "ConfigMap"),
}
kust_path = os.path.join(kdir, "kustomization.yaml")
kust = yaml.safe_load(open(kust_path))
if get(kust, "kind") != "Kustomization":
    fail("kustomization.yaml", "kind must be Kustomization")
resources = need("kustomization.yaml", kust, "resources", list) or []
namespace = kust.get("namespace")
on_disk = sorted(f for f in os.listdir(kdir) if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml")
for f in on_disk:
    if f not in resources:
        fail("kustomization.yaml", f"{f} is in deploy/kubernetes but not in resources")
objs = []  # (file, doc)
for f in resources:
    p = os.path.join(kdir, f)
    if not os.path.isfile(p):
        fail("kustomization.yaml", f"resource {f} does not exist")
        continue
    try:
        docs = [d for d in yaml.safe_load_all(open(p)) if d is not None]
    except yaml.YAMLError as e:
        fail(f, f"YAML: {e}")
        continue
    for d in docs:
        objs.append((f, d))
ok(f"kustomization.yaml: {len(resources)} resources, all present, every manifest listed; namespace {namespace}")

by_kind = {}
for f, d in objs:
    if not isinstance(d, dict):
        fail(f, "a document is not a mapping")
        continue
    api, kind = d.get("apiVersion"), d.get("kind")
    name = get(d, "metadata.name")
    where = f"{f} {kind}/{name}"
    if (api, kind) not in KNOWN:
        fail(where, f"unknown apiVersion/kind {api}/{kind}")
        continue
    if not isinstance(name, str) or not DNS1123.match(name):
        fail(where, "metadata.name missing or not a DNS-1123 name")
    by_kind.setdefault(kind, []).append((where, d))

def labels_select(selector, labels):
    return isinstance(selector, dict) and selector and all(labels.get(k) == v for k, v in selector.items())

def parse_flag(args, flag):
    for a in args:
        if isinstance(a, str) and a.startswith(f"--{flag}="):
            return a.split("=", 1)[1]
    return None

# the server's flags, from its ABSL_FLAG declarations: name -> (type, default)
server_flags = {}
for f in sorted(os.listdir(os.path.join(root, "server"))):
    if f.endswith(".cc"):
        for m in re.finditer(r"ABSL_FLAG\(\s*([\w:]+(?:<[^>]*>)?)\s*,\s*(\w+)\s*,\s*([^,]+),",
                             open(os.path.join(root, "server", f)).read()):
            server_flags[m.group(2)] = (m.group(1), m.group(3).strip())
if server_flags:
    ok(f"{len(server_flags)} server flags declared in server/*.cc")

deployments = {}  # name -> dict(labels, ports{name: port}, where)
for where, d in by_kind.get("Deployment", []):
    name = d["metadata"]["name"]
    match = need(where, d, "spec.selector.matchLabels", dict) or {}
    tlabels = need(where, d, "spec.template.metadata.labels", dict) or {}
    if match and not labels_select(match, tlabels):
        fail(where, f"spec.selector.matchLabels {match} do not match template labels {tlabels}")
    pod = get(d, "spec.template.spec", {})
    containers = need(where, d, "spec.template.spec.containers", list) or []
    if not containers:
        fail(where, "no containers")
    ports = {}
    for c in containers:
        cw = f"{where} container {c.get('name')}"
        need(cw, c, "name", str)
        need(cw, c, "image", str)
        cports = need(cw, c, "ports", list) or []
        for p in cports:
            cp = need(cw, p, "containerPort", int)
            pn = p.get("name")
            if cp is not None:
                ports[pn or str(cp)] = cp
        numbers = set(ports.values())
        args = c.get("args", []) or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            fail(cw, "args must be a list of strings")
            args = []
        # every argument is a flag the server declares, ints are ints
        for a in args:
            fm = re.match(r"^--([a-z_0-9]+)(=(.*))?$", a)
            if not fm:
                fail(cw, f"argument {a!r} is not --flag=value")
            elif server_flags and fm.group(1) not in server_flags and fm.group(1) != "flagfile":
                fail(cw, f"--{fm.group(1)} is not a flag imagegen-server declares (server/*.cc)")
            elif server_flags and fm.group(1) in server_flags and server_flags[fm.group(1)][0] in ("int", "int32_t", "int64_t") \
                    and not re.match(r"^-?[0-9]+$", fm.group(3) or ""):
                fail(cw, f"--{fm.group(1)} takes an integer, got {fm.group(3)!r}")
        # the server's listen addresses agree with the declared ports
        for flag, default, pname in (("listen", 50051, "grpc"), ("metrics_listen", 9090, "metrics")):
            v = parse_flag(args, flag)
            port = int(v.rsplit(":", 1)[1]) if v and ":" in v else default
            if ports.get(pname) != port:
                fail(cw, f"--{flag} serves port {port} but the containerPort named {pname} is {ports.get(pname)}")
        grpc_port = ports.get("grpc")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            pr = c.get(probe)
            if probe == "startupProbe" and pr is None:
                continue
            if not isinstance(pr, dict):
                fail(cw, f"{probe} missing")
                continue
            gp = need(cw, pr, "grpc.port", int)
            if gp is not None and gp not in numbers:
                fail(cw, f"{probe}.grpc.port {gp} is not a containerPort ({sorted(numbers)})")
            if gp is not None and gp != grpc_port:
                fail(cw, f"{probe}.grpc.port {gp} is not the grpc port {grpc_port}")
        # GPU: request == limit, and the server is told to use it
        req = get(c, "resources.requests", {}) or {}
        lim = get(c, "resources.limits", {}) or {}
        if not req or not lim:
            fail(cw, "resources.requests and resources.limits must both be set")
        gpu = lim.get("nvidia.com/gpu")
        devices = parse_flag(args, "devices") or "cpu"
        if gpu is not None:
            if req.get("nvidia.com/gpu", gpu) != gpu:
                fail(cw, "nvidia.com/gpu request and limit differ")
            cuda = [x for x in devices.split(",") if x.startswith("cuda")]
            if len(cuda) != int(gpu):
                fail(cw, f"--devices={devices} names {len(cuda)} CUDA devices but the pod gets {gpu} GPUs")
        elif devices != "cpu":
            fail(cw, f"--devices={devices} but no nvidia.com/gpu limit")
        # drain: grace period covers preStop sleep + drain + margin; liveness never kills a draining pod
        drain_default = server_flags.get("drain_timeout_s", ("int", "30"))[1]
        drain = int(drain_default) if drain_default.isdigit() else 30
        v = parse_flag(args, "drain_timeout_s")
        if v and v.isdigit():
            drain = int(v)
        prestop = 0
        cmd = get(c, "lifecycle.preStop.exec.command")
        if isinstance(cmd, list) and len(cmd) == 2 and cmd[0] == "sleep":
            prestop = int(cmd[1])
        sleep = get(c, "lifecycle.preStop.sleep.seconds")
        if isinstance(sleep, int):
            prestop = sleep
        grace = need(where, d, "spec.template.spec.terminationGracePeriodSeconds", int)
        if grace is not None and grace < prestop + drain + 5:
            fail(where, f"terminationGracePeriodSeconds {grace} < preStop {prestop} + drain {drain} + 5 s margin")
        lp = c.get("livenessProbe") or {}
        live_window = lp.get("periodSeconds", 10) * lp.get("failureThreshold", 3)
        if live_window <= prestop + drain:
            fail(cw, f"livenessProbe fails after {live_window}s of NOT_SERVING, within the drain "
                     f"({prestop}+{drain}s): a draining pod would be restarted")
        csc = c.get("securityContext", {}) or {}
        if csc.get("allowPrivilegeEscalation") is not False:
            fail(cw, "securityContext.allowPrivilegeEscalation must be false")
    psc = pod.get("securityContext", {}) or {}
    if psc.get("runAsNonRoot") is not True:
        fail(where, "pod securityContext.runAsNonRoot must be true")
    uid = psc.get("runAsUser")
    if not isinstance(uid, int) or uid == 0:
        fail(where, "pod securityContext.runAsUser must be a non-zero UID (the image's user is not numeric)")
    deployments[name] = {"labels": tlabels, "ports": ports, "where": where,
                         "replicas": get(d, "spec.replicas")}
    ok(f"{where}: selector matches template, ports {ports}, gRPC probes on {ports.get('grpc')}, "
       f"grace {get(d, 'spec.template.spec.terminationGracePeriodSeconds')}s, non-root")
if not deployments:
    fail("deploy/kubernetes", "no Deployment")

def deployment_for(where, selector):
    hits = [n for n, dep in deployments.items() if labels_select(selector, dep["labels"])]
    if not hits:
        fail(where, f"selector {selector} matches no Deployment's pod labels")
    return hits

services = {}  # name -> dict(labels, ports{name: port})
for where, d in by_kind.get("Service", []):
    name = d["metadata"]["name"]
    if get(d, "spec.clusterIP") != "None":
        fail(where, "must be headless (spec.clusterIP: None) for client-side gRPC load balancing")
    sel = need(where, d, "spec.selector", dict) or {}
    targets = deployment_for(where, sel)
    sports = {}
    for p in need(where, d, "spec.ports", list) or []:
        pn = need(where, p, "name", str)
        pp = need(where, p, "port", int)
        tp = p.get("targetPort", pp)
        for t in targets:
            cports = deployments[t]["ports"]
            if (isinstance(tp, str) and tp not in cports) or (isinstance(tp, int) and tp not in cports.values()):
                fail(where, f"port {pn}: targetPort {tp} is no containerPort of Deployment {t}")
        if pn:
            sports[pn] = pp
    if "grpc" not in sports:
        fail(where, "no port named grpc")
    services[name] = {"labels": get(d, "metadata.labels", {}) or {}, "ports": sports}
    ok(f"{where}: headless, selects Deployment {targets}, ports {sports}")

jobs = set()
for where, d in by_kind.get("ServiceMonitor", []):
    sel = need(where, d, "spec.selector.matchLabels", dict) or {}
    hits = [n for n, s in services.items() if labels_select(sel, s["labels"])]
    if not hits:
        fail(where, f"selector {sel} matches no Service's labels")
    eps = need(where, d, "spec.endpoints", list) or []
    for ep in eps:
        port = ep.get("port")
        for h in hits:
            if port not in services[h]["ports"]:
                fail(where, f"endpoint port {port!r} is not a port name of Service {h}")
        if ep.get("path", "/metrics") != "/metrics":
            fail(where, f"endpoint path {ep.get('path')} is not /metrics")
        for k in ("interval", "scrapeTimeout"):
            if k in ep and not DURATION.match(str(ep[k])):
                fail(where, f"{k} {ep[k]!r} is not a duration")
    job_label = get(d, "spec.jobLabel")
    for h in hits:
        jobs.add(services[h]["labels"].get(job_label, h) if job_label else h)
    ok(f"{where}: scrapes Service {hits} port(s) {[e.get('port') for e in eps]}, job {sorted(jobs)}")
for where, d in by_kind.get("PodMonitor", []):
    sel = need(where, d, "spec.selector.matchLabels", dict) or {}
    targets = deployment_for(where, sel)
    for ep in need(where, d, "spec.podMetricsEndpoints", list) or []:
        for t in targets:
            if ep.get("port") not in deployments[t]["ports"]:
                fail(where, f"port {ep.get('port')!r} is not a containerPort name of {t}")
    ns = namespace or get(d, "metadata.namespace", "default")
    jobs.add(f"{ns}/{d['metadata']['name']}")
    ok(f"{where}: scrapes Deployment {targets}")
if not jobs:
    fail("deploy/kubernetes", "no ServiceMonitor or PodMonitor: nothing scrapes the metrics")

def check_jobs(where, expr):
    for j in re.findall(r'job\s*=\s*"([^"]*)"', expr):
        if j not in jobs:
            fail(where, f'job="{j}" is not the scrape job ({sorted(jobs)})')

alerts = []
for where, d in by_kind.get("PrometheusRule", []):
    groups = need(where, d, "spec.groups", list) or []
    for g in groups:
        gw = f"{where} group {g.get('name')}"
        need(gw, g, "name", str)
        for r in need(gw, g, "rules", list) or []:
            rw = f"{gw} rule {r.get('alert') or r.get('record')}"
            if bool(r.get("alert")) == bool(r.get("record")):
                fail(rw, "exactly one of alert/record")
            expr = r.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                fail(rw, "expr empty")
                continue
            check_metric_names(rw, expr)
            check_jobs(rw, expr)
            if r.get("alert"):
                alerts.append(r["alert"])
                if "for" in r and not DURATION.match(str(r["for"])):
                    fail(rw, f"for {r['for']!r} is not a duration")
                if not get(r, "labels.severity"):
                    fail(rw, "labels.severity missing")
                if not get(r, "annotations.summary"):
                    fail(rw, "annotations.summary missing")
    if groups and promtool_rules(groups, where):
        ok(f"{where}: promtool check rules passed; alerts {alerts}")
for needed, pattern in (("queue saturation", r"imagegen_queue_depth"),
                        ("error rate", r'outcome\s*=\s*"failed"'),
                        ("p95 latency", r"histogram_quantile\(0\.95,[\s\S]*imagegen_request_duration_seconds_bucket"),
                        ("no serving replicas", r"\bup\b")):
    rules = [r for _, d in by_kind.get("PrometheusRule", []) for g in get(d, "spec.groups", []) or []
             for r in g.get("rules", []) or [] if r.get("alert") and re.search(pattern, r.get("expr", ""))]
    if not rules:
        fail("PrometheusRule", f"no alert for {needed}")

autoscaled = set()
for where, d in by_kind.get("ScaledObject", []):
    ref = need(where, d, "spec.scaleTargetRef.name", str)
    if get(d, "spec.scaleTargetRef.kind", "Deployment") != "Deployment" or ref not in deployments:
        fail(where, f"scaleTargetRef {ref} is not a Deployment here ({sorted(deployments)})")
    autoscaled.add(ref)
    lo, hi = get(d, "spec.minReplicaCount", 0), get(d, "spec.maxReplicaCount", 100)
    if not (isinstance(lo, int) and isinstance(hi, int) and lo <= hi):
        fail(where, f"minReplicaCount {lo} / maxReplicaCount {hi}")
    triggers = need(where, d, "spec.triggers", list) or []
    if not triggers:
        fail(where, "no triggers")
    for t in triggers:
        if t.get("type") != "prometheus":
            continue
        tw = f"{where} trigger prometheus"
        for k in ("serverAddress", "query", "threshold"):
            need(tw, t, f"metadata.{k}", str)
        try:
            float(get(t, "metadata.threshold", "x"))
        except ValueError:
            fail(tw, "metadata.threshold must be a number in a string")
        q = get(t, "metadata.query", "")
        if "imagegen_queue_depth" not in q:
            fail(tw, "query does not use imagegen_queue_depth")
        check_metric_names(tw, q)
        check_jobs(tw, q)
        if namespace:
            for ns in re.findall(r'namespace\s*=\s*"([^"]*)"', q):
                if ns != namespace:
                    fail(tw, f'namespace="{ns}" but the kustomization deploys to {namespace}')
        promql_exprs(tw, [("query", q)])
        ok(f"{tw}: targets Deployment {ref}, query {q!r} parses, threshold {get(t, 'metadata.threshold')}")
for where, d in by_kind.get("HorizontalPodAutoscaler", []):
    ref = need(where, d, "spec.scaleTargetRef.name", str)
    if get(d, "spec.scaleTargetRef.kind") != "Deployment" or ref not in deployments:
        fail(where, f"scaleTargetRef {ref} is not a Deployment here")
    autoscaled.add(ref)
    need(where, d, "spec.maxReplicas", int)
    if not need(where, d, "spec.metrics", list):
        fail(where, "no metrics")
if not autoscaled:
    fail("deploy/kubernetes", "no ScaledObject or HorizontalPodAutoscaler")
for n in autoscaled & set(deployments):
    if deployments[n]["replicas"] is not None:
        fail(deployments[n]["where"], "sets spec.replicas although an autoscaler owns it "
                                      "(every kubectl apply would reset the count)")

for where, d in by_kind.get("PodDisruptionBudget", []):
    sel = need(where, d, "spec.selector.matchLabels", dict) or {}
    targets = deployment_for(where, sel)
    if ("minAvailable" in d.get("spec", {})) == ("maxUnavailable" in d.get("spec", {})):
        fail(where, "exactly one of minAvailable/maxUnavailable")
    ok(f"{where}: selects Deployment {targets}")
for kind in ("Service", "PodDisruptionBudget", "PrometheusRule"):
    if kind not in by_kind:
        fail("deploy/kubernetes", f"no {kind}")

# ---- the dashboard ---------------------------------------------------------------------------
try:
    dash = json.load(open(dashboard_path))
except (OSError, ValueError) as e:
    fail("deploy/grafana/imagegen-dashboard.json", f"not valid JSON: {e}")
    dash = {}
dw = "imagegen-dashboard.json"
for k, t in (("title", str), ("uid", str), ("panels", list), ("templating.list", list)):
    need(dw, dash, k, t)
variables = {v.get("name") for v in get(dash, "templating.list", []) or []}
builtin = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}

def substitute(expr):
    """Grafana variables -> values PromQL accepts ($__rate_interval -> 5m, $var -> .*)."""
    for v in re.findall(r"\$\{?(\w+)", expr):
        if v not in variables and v not in builtin:
            fail(dw, f"expression uses undefined variable ${v}: {expr}")
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    return re.sub(r"\$\{?\w+(:\w+)?\}?", ".*", expr)

def all_panels(ps):
    for p in ps or []:
        yield p
        yield from all_panels(p.get("panels"))

exprs, ids = [], set()
for p in all_panels(dash.get("panels")):
    pw = f"{dw} panel {p.get('id')} {p.get('title')!r}"
    if p.get("id") in ids:
        fail(pw, "duplicate panel id")
    ids.add(p.get("id"))
    if not isinstance(p.get("gridPos"), dict):
        fail(pw, "gridPos missing")
    if p.get("type") == "row":
        continue
    targets = p.get("targets") or []
    if not targets:
        fail(pw, "no targets")
    for t in targets:
        e = t.get("expr")
        if not isinstance(e, str) or not e.strip():
            fail(pw, f"target {t.get('refId')} has no expr")
            continue
        check_metric_names(pw, e)
        exprs.append((f"{pw} {t.get('refId')}", substitute(e)))
for v in get(dash, "templating.list", []) or []:
    q = v.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    if v.get("type") == "query" and isinstance(q, str):
        check_metric_names(f"{dw} variable {v.get('name')}", q)
promql_exprs(dw, exprs)
ok(f"{dw}: {len(ids)} panels, {len(exprs)} PromQL expressions parsed by promtool, variables {sorted(variables)}")

wanted = {"imagegen_images_generated_total", "imagegen_requests_total", "imagegen_queue_depth",
          "imagegen_request_duration_seconds", "imagegen_queue_duration_seconds",
          "imagegen_time_to_first_preview_seconds", "imagegen_step_duration_seconds",
          "imagegen_batch_rows", "imagegen_previews_sent_total", "imagegen_previews_replaced_total"}
dash_text = json.dumps(dash)
for m in sorted(wanted):
    if m not in dash_text:
        fail(dw, f"no panel shows {m}")
unused = sorted(set(exported) - used_metrics)
ok(f"metrics used by alerts, autoscaler and dashboard: {len(used_metrics)}; exported but unused: {unused or 'none'}")

for c in checked:
    print("ok:", c)
problems = list(dict.fromkeys(problems))
for p in problems:
    print("FAIL:", p)
print(f"deploy_check: {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PY
