//! The route table: every path the API serves with its methods, built once for the router
//! and checked against the OpenAPI description the node serves (`GET /v1/openapi.json`).

use axum::routing::{MethodRouter, delete, put};

use super::*;

/// The OpenAPI description of every route (v1 and HF).
pub const OPENAPI: &str = include_str!("openapi.json");

/// One route: its pattern (axum syntax) and the methods it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub path: &'static str,
    pub methods: &'static [&'static str],
}

/// The router under construction and the routes it has.
pub struct Table<B: Backend> {
    pub router: Router<AppState<B>>,
    pub routes: Vec<Route>,
}

impl<B: Backend> Table<B> {
    fn add(
        mut self,
        path: &'static str,
        methods: &'static [&'static str],
        handler: MethodRouter<AppState<B>>,
    ) -> Self {
        self.router = self.router.route(path, handler);
        self.routes.push(Route { path, methods });
        self
    }
}

/// Every route of the API, with its handlers.
pub fn table<B: Backend>() -> Table<B> {
    Table {
        router: Router::new(),
        routes: Vec::new(),
    }
    .add("/v1/status", &["GET"], get(info::status::<B>))
    .add("/v1/wallet", &["GET"], get(info::wallet::<B>))
    .add(
        "/v1/checkpoints",
        &["GET", "POST"],
        post(write::put_checkpoint::<B>).get(info::list::<B>),
    )
    .add(
        "/v1/checkpoints/{cid}",
        &["GET", "DELETE"],
        get(info::manifest::<B>).merge(delete(delete::unpin::<B>)),
    )
    .add("/v1/checkpoints/{cid}/stat", &["GET"], get(info::stat::<B>))
    .add(
        "/v1/checkpoints/{cid}/keep",
        &["POST"],
        post(write::keep::<B>),
    )
    .add(
        "/v1/checkpoints/{cid}/lineage",
        &["GET"],
        get(provenance::lineage::<B>),
    )
    .add("/v1/shards/{cid}", &["GET"], get(info::shard_status::<B>))
    .add("/v1/uploads/{key}", &["GET"], get(uploads::show::<B>))
    .add(
        "/v1/checkpoints/{cid}/files/{*path}",
        &["GET", "HEAD"],
        get(read::get_file::<B>),
    )
    .add(
        "/v1/manifests",
        &["POST"],
        post(write::import_manifest::<B>).layer(DefaultBodyLimit::max(MAX_MANIFEST_LEN)),
    )
    .add(
        "/v1/chain/names/{*name}",
        &["GET"],
        get(provenance::name_log::<B>),
    )
    .add("/v1/names", &["GET"], get(names::list::<B>))
    .add(
        "/v1/names/{*name}",
        &["GET", "PUT"],
        get(names::show::<B>).merge(put(names::set::<B>)),
    )
    .add("/v1/openapi.json", &["GET"], get(openapi))
    .add("/v1/jobs", &["GET"], get(jobs::<B>))
    .add("/hf/api/models/{*rest}", &["GET"], get(hf::api::<B>))
    .add("/hf/{*rest}", &["GET", "HEAD"], get(hf::resolve_file::<B>))
    .add("/metrics", &["GET"], get(metrics::<B>))
}

/// The routes, without handlers.
pub fn routes() -> Vec<Route> {
    table::<cairn_storage::MemBackend>().routes
}

async fn jobs<B: Backend>(State(s): State<AppState<B>>) -> Json<Vec<crate::worker::JobStatus>> {
    Json(s.jobs.list())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_storage::MemBackend;

    /// The OpenAPI paths with their methods (lowercase, as the document writes them).
    fn documented() -> Vec<(String, Vec<String>)> {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is json");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .map(|(p, ops)| {
                let methods = ops
                    .as_object()
                    .expect("operations")
                    .keys()
                    .filter(|k| k.as_str() != "parameters")
                    .cloned()
                    .collect();
                (p.clone(), methods)
            })
            .collect()
    }

    /// A documented path with every `{param}` filled in.
    fn example(path: &str) -> String {
        let mut out = String::new();
        let mut rest = path;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let j = rest[i..].find('}').expect("closed parameter") + i;
            out.push('x');
            rest = &rest[j + 1..];
        }
        out + rest
    }

    /// Every documented operation is a route of the router with that method, and every
    /// route and method of the router is documented.
    #[test]
    fn openapi_describes_every_route() {
        let routes = routes();
        let mut table = matchit::Router::new();
        for (i, r) in routes.iter().enumerate() {
            table.insert(r.path, i).expect("routes do not conflict");
        }
        let mut seen: Vec<Vec<String>> = vec![Vec::new(); routes.len()];
        for (path, methods) in documented() {
            let url = example(&path);
            let i = *table
                .at(&url)
                .unwrap_or_else(|_| panic!("documented {path} is no route"))
                .value;
            for m in methods {
                let upper = m.to_uppercase();
                assert!(
                    routes[i].methods.contains(&upper.as_str()),
                    "{upper} {path} is documented; {} answers {:?}",
                    routes[i].path,
                    routes[i].methods
                );
                seen[i].push(upper);
            }
        }
        for (r, seen) in routes.iter().zip(&seen) {
            for m in r.methods {
                assert!(
                    seen.iter().any(|s| s == m),
                    "{m} {} is served but not documented in openapi.json",
                    r.path
                );
            }
        }
    }

    /// The router answers each listed method of each route, and 405 for the others: the
    /// table's method lists are what the handlers really take.
    #[tokio::test]
    async fn routes_answer_their_methods() {
        let store = Store::open(MemBackend::new(), 1 << 20).expect("store");
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = AppState {
            store: store.clone(),
            default_layout: Layout::new(2, 1, 1 << 16).expect("layout"),
            put_permits: Arc::new(Semaphore::new(1)),
            max_puts: 1,
            started: Instant::now(),
            cluster: None,
            publisher: None,
            metrics: Metrics::new(Some(store)),
            access: Arc::new(auth::Access::new("t".into(), addr, &[])),
            tensors: Default::default(),
            jobs: Default::default(),
            uploads: Default::default(),
        };
        let app = router(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        for r in routes() {
            let url = format!("http://{addr}{}", example(&r.path.replace("{*", "{")));
            for m in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"] {
                let method = reqwest::Method::from_bytes(m.as_bytes()).expect("method");
                let resp = http.request(method, &url).send().await.expect("request");
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                let listed = r.methods.contains(&m);
                // axum answers HEAD wherever it answers GET.
                let implied = m == "HEAD" && r.methods.contains(&"GET");
                if listed || implied {
                    assert!(
                        status != 405 && !body.contains("no_route"),
                        "{m} {} answered {status} {body}",
                        r.path
                    );
                } else {
                    assert_eq!(status, 405, "{m} {} is not listed but answered", r.path);
                }
            }
        }
    }
}
