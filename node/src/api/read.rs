//! File reads: whole files and ranges (and, below a safetensors file, its tensors).

use super::body::{file_body, file_head, requested_range};
use super::*;

pub(super) async fn get_file<B: Backend>(
    State(s): State<AppState<B>>,
    Path((cid, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let root = root_of(&cid)?;
    let (m, complete) = find_manifest(&s, root).await?;
    let Some(file) = m.file(&path).cloned() else {
        // `<file>/tensors` and `<file>/tensors/<name>` read a safetensors file's tensors.
        if let Some((file, tensor)) = super::tensors::split_path(&m, &path) {
            let file = file.clone();
            let at = (root, &m, complete);
            return super::tensors::answer(&s, at, file, tensor, &method, &headers, &uri).await;
        }
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "file_not_found",
            format!("{root} has no file {path:?}"),
        ));
    };
    let range = requested_range(&headers, file.size)?;
    let etag = format!("\"{}\"", file.hash().to_hex());
    let builder = file_head(file.size, range, &etag);
    if method == Method::HEAD {
        return builder
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    let (start, end) = range.unwrap_or((0, file.size));
    let body = file_body(&s, &m, complete, file, start, end).await?;
    builder
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}
