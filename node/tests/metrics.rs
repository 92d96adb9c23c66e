//! Operations: the Grafana dashboards are valid and every query they make returns data from
//! a real Prometheus scraping a real cluster after a put and a get.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{NodeProc, ok};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn dashboards() -> Vec<(String, serde_json::Value)> {
    let dir = repo().join("grafana/dashboards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("dashboards folder") {
        let path = e.expect("entry").path();
        if path.extension().is_some_and(|x| x == "json") {
            let v = serde_json::from_slice(&std::fs::read(&path).expect("read"))
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            out.push((path.display().to_string(), v));
        }
    }
    assert!(out.len() >= 2, "expected the node and cluster dashboards");
    out
}

/// Every query expression of a dashboard.
fn exprs(d: &serde_json::Value) -> Vec<String> {
    d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

/// Metric names an expression reads (`cairn_*` and `up`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if word_start && expr[i..].starts_with("cairn_") {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            names.insert(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    if expr.contains("up{") {
        names.insert("up".into());
    }
    names
}

#[test]
fn dashboards_are_valid_grafana_json() {
    for (path, d) in dashboards() {
        assert!(
            d["schemaVersion"].as_u64().unwrap_or(0) >= 30,
            "{path}: schemaVersion"
        );
        assert!(d["uid"].is_string() && d["title"].is_string(), "{path}");
        let vars = d["templating"]["list"].as_array().expect("templating");
        assert!(
            vars.iter()
                .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
            "{path}: needs a Prometheus datasource variable"
        );
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().expect("panels") {
            let id = p["id"].as_u64().expect("panel id");
            assert!(ids.insert(id), "{path}: panel id {id} repeats");
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{path}: panel {id} must use the datasource variable, not a fixed uid"
            );
            for t in p["targets"].as_array().expect("targets") {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{path}: panel {id}"
                );
                assert!(
                    t["expr"].is_string(),
                    "{path}: panel {id} target without expr"
                );
            }
        }
        assert!(!exprs(&d).is_empty(), "{path}: no queries");
    }
}

struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn curl_json(url: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-sS", "-f"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A real Prometheus scraping `nodes` every second with the repository's alert rules.
fn prometheus(dir: &Path, nodes: &[NodeProc]) -> Prometheus {
    let targets: Vec<String> = nodes
        .iter()
        .map(|n| n.url.trim_start_matches("http://").to_owned())
        .collect();
    std::fs::write(
        dir.join("targets.json"),
        serde_json::to_vec(&serde_json::json!([{"targets": targets}])).expect("json"),
    )
    .expect("targets");
    let config = std::fs::read_to_string(repo().join("ops/prometheus/prometheus.yml"))
        .expect("config")
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("refresh_interval: 5s", "refresh_interval: 1s");
    std::fs::write(dir.join("prometheus.yml"), config).expect("config");
    std::fs::copy(
        repo().join("ops/prometheus/alerts.yml"),
        dir.join("alerts.yml"),
    )
    .expect("rules");
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
        .spawn()
        .expect("prometheus (install with ./ops/install.sh)");
    let p = Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log: dir.join("prometheus.log"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Command::new("curl")
        .args(["-sf", "-o", "/dev/null", &format!("{}/-/ready", p.url)])
        .status()
        .expect("curl")
        .success()
    {
        assert!(Instant::now() < deadline, "prometheus never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

/// Series a PromQL expression returns now (dashboard variables set to "all").
fn query(p: &Prometheus, expr: &str) -> usize {
    let expr = expr.replace("$instance", ".*");
    let v = curl_json(
        &format!("{}/api/v1/query", p.url),
        &["--data-urlencode", &format!("query={expr}")],
    );
    v["data"]["result"].as_array().map_or(0, Vec::len)
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let erasure = "[erasure]\nk = 2\nm = 1\nstripe_size = 4194304\n";
    let nodes = common::cluster(tmp.path(), 3, erasure, |_| Vec::new());
    let prom = prometheus(tmp.path(), &nodes);
    // Traffic only once every node is scraped, so that rates see it happen.
    let deadline = Instant::now() + Duration::from_secs(60);
    while query(&prom, "count(up{job=\"cairn\"} == 1) == 3") == 0 {
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped all three nodes:\n{}",
            prom.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Traffic: a put through one node, a get and a range read through another.
    let src = tmp.path().join("model");
    cairn_node::sample::write_sample(&src, 16 << 20, 5).expect("sample");
    let root = ok(nodes[0].cli(&["put", src.to_str().expect("utf-8")]));
    let out = tmp.path().join("out");
    ok(nodes[2].cli(&["get", &root, "-o", out.to_str().expect("utf-8")]));
    common::assert_same_tree(&src, &out);

    // Wait (polling Prometheus) until it scraped the traffic, then ask every panel.
    let deadline = Instant::now() + Duration::from_secs(90);
    while query(&prom, "sum(rate(cairn_get_bytes_total[1m])) > 0") == 0 {
        assert!(
            Instant::now() < deadline,
            "prometheus never saw the get on all three nodes; targets: {}\nlog:\n{}",
            curl_json(&format!("{}/api/v1/targets", prom.url), &[]),
            prom.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let names: BTreeSet<String> =
        curl_json(&format!("{}/api/v1/label/__name__/values", prom.url), &[])["data"]
            .as_array()
            .expect("metric names")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
    // Series created by the traffic need a second scrape before rates over them answer:
    // ask again until every query answers or the deadline passes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let failures = loop {
        let mut failures = Vec::new();
        for (path, d) in dashboards() {
            for expr in exprs(&d) {
                for name in metric_names(&expr) {
                    if !names.contains(&name) {
                        failures.push(format!("{path}: {name} is exported by no node ({expr})"));
                    }
                }
                if query(&prom, &expr) == 0 {
                    failures.push(format!("{path}: no data for {expr}"));
                }
            }
        }
        if failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `cairn devnet up --prometheus` starts a real Prometheus that scrapes every node with the
/// repository's alert rules loaded; `down` stops it with the nodes.
#[test]
fn devnet_starts_prometheus_scraping_every_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("devnet");
    let d = dir.to_str().expect("utf-8");
    let port = free_port().to_string();
    // Whatever happens below, the devnet's processes do not outlive the test.
    struct Down(PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            if self.0.join("devnet.json").exists() {
                let _ = Command::new(common::BIN)
                    .args(["devnet", "down", "--dir"])
                    .arg(&self.0)
                    .output();
            }
        }
    }
    let _down = Down(dir.clone());
    let up = Command::new(common::BIN)
        .args([
            "devnet", "up", "--dir", d, "--nodes", "3", "--k", "2", "--m", "1",
        ])
        .args(["--prometheus", &port])
        .env("RUST_LOG", "warn")
        .output()
        .expect("devnet up");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let url = format!("http://127.0.0.1:{port}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("devnet.json")).expect("state"))
            .expect("json");
    let prom_pid = state["prometheus"]["pid"].as_u64().expect("prometheus pid");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = curl_json(
            &format!("{url}/api/v1/query"),
            &["--data-urlencode", "query=count(up{job=\"cairn\"} == 1)"],
        );
        if v["data"]["result"][0]["value"][1] == "3" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the 3 nodes: {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let rules = curl_json(&format!("{url}/api/v1/rules"), &[]);
    let names: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"CairnNodeDown"),
        "alert rules not loaded: {names:?}"
    );
    let down = Command::new(common::BIN)
        .args(["devnet", "down", "--dir", d])
        .output()
        .expect("devnet down");
    assert!(down.status.success());
    let stat = std::fs::read_to_string(format!("/proc/{prom_pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    assert!(
        stat.is_empty() || state.starts_with('Z'),
        "prometheus still runs after devnet down"
    );
}
