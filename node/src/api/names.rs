//! The node-local name table over HTTP: `org/model` names pointing at roots, with history.
//! Setting a name needs the token; reading is open (names are how readers find checkpoints).

use cairn_storage::{NameEntry, NameError};

use super::*;
use crate::pipeline::now_unix;

/// One name, as listed.
#[derive(Debug, Serialize, Deserialize)]
pub struct NameAnswer {
    pub name: String,
    pub root: String,
    /// Unix seconds when the name was set to `root`.
    pub set: u64,
    /// Earlier roots, oldest first (only when one name is asked for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Revision>,
}

/// An earlier revision of a name.
#[derive(Debug, Serialize, Deserialize)]
pub struct Revision {
    pub root: String,
    pub set: u64,
}

/// Body of `PUT /v1/names/{name}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SetName {
    pub root: String,
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::Invalid { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_name", e.to_string())
            }
            e => Self::internal(e.to_string()),
        }
    }
}

fn answer(name: String, e: NameEntry, history: Vec<Revision>) -> NameAnswer {
    NameAnswer {
        name,
        root: e.root.to_string(),
        set: e.set,
        history,
    }
}

pub(super) async fn list<B: Backend>(
    State(s): State<AppState<B>>,
) -> Result<Json<Vec<NameAnswer>>, ApiError> {
    let store = s.store.clone();
    let names = blocking(move || Ok(store.names()?)).await?;
    Ok(Json(
        names
            .into_iter()
            .map(|(n, e)| answer(n, e, Vec::new()))
            .collect(),
    ))
}

pub(super) async fn show<B: Backend>(
    State(s): State<AppState<B>>,
    Path(name): Path<String>,
) -> Result<Json<NameAnswer>, ApiError> {
    let store = s.store.clone();
    let n = name.clone();
    let mut history = blocking(move || Ok(store.name_history(&n)?)).await?;
    let Some(now) = history.pop() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "name_not_found",
            format!("no checkpoint is named {name:?} on this node"),
        ));
    };
    let history = history
        .into_iter()
        .map(|e| Revision {
            root: e.root.to_string(),
            set: e.set,
        })
        .collect();
    Ok(Json(answer(name, now, history)))
}

/// Point a name at a root this node can find (locally or in the cluster).
pub(super) async fn set<B: Backend>(
    _: auth::Writer,
    State(s): State<AppState<B>>,
    Path(name): Path<String>,
    Json(body): Json<SetName>,
) -> Result<Json<NameAnswer>, ApiError> {
    cairn_storage::check_name(&name)?;
    let root = root_of(&body.root)?;
    find_manifest(&s, root).await?;
    let (store, n) = (s.store.clone(), name.clone());
    let now = now_unix();
    blocking(move || Ok(store.set_name(&n, &root, now)?)).await?;
    tracing::info!(%name, %root, "name set");
    Ok(Json(answer(name, NameEntry { root, set: now }, Vec::new())))
}
