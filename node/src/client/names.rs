//! Names and tensors: the name table (`cairn tag`, `cairn names`) and tensor reads
//! (`cairn get --tensor`).

use std::path::Path;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{Client, ClientError, check, io_err, url_path};
use crate::api::names::{NameAnswer, SetName};

/// One tensor read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRead {
    /// The safetensors file it came from.
    pub file: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub bytes: u64,
}

impl Client {
    /// Point `name` at `root` in the node's name table.
    pub async fn tag(&self, name: &str, root: &str) -> Result<NameAnswer, ClientError> {
        cairn_storage::check_name(name).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let req = self
            .http
            .put(self.url(&format!("/v1/names/{name}")))
            .json(&SetName { root: root.into() });
        Ok(check(self.write(req).send().await?).await?.json().await?)
    }

    /// Every name with its current root, or one name with its history.
    pub async fn names(&self, name: Option<&str>) -> Result<Vec<NameAnswer>, ClientError> {
        let v = match name {
            Some(n) => {
                cairn_storage::check_name(n).map_err(|e| ClientError::Invalid(e.to_string()))?;
                let one = self.json(&format!("/v1/names/{n}")).await?;
                serde_json::Value::Array(vec![one])
            }
            None => self.json("/v1/names").await?,
        };
        serde_json::from_value(v).map_err(|e| ClientError::Invalid(format!("names answer: {e}")))
    }

    /// The safetensors file of a checkpoint holding tensor `name`: `file` when given, else
    /// the first `.safetensors` file whose header lists it.
    pub async fn tensor_file(
        &self,
        root: &str,
        file: Option<&str>,
        name: &str,
    ) -> Result<String, ClientError> {
        if let Some(f) = file {
            return Ok(f.to_owned());
        }
        let manifest = self.manifest(root).await?;
        for f in manifest
            .files
            .iter()
            .filter(|f| f.path.ends_with(".safetensors"))
        {
            let listed = self
                .http
                .get(self.url(&format!(
                    "/v1/checkpoints/{root}/files/{}/tensors",
                    url_path(&f.path)
                )))
                .query(&[("names", name)])
                .send()
                .await?;
            if listed.status().is_success() {
                return Ok(f.path.clone());
            }
        }
        Err(ClientError::Invalid(format!(
            "no safetensors file of {root} has a tensor {name:?}"
        )))
    }

    /// Read one tensor's bytes (verified by the node) into `out`.
    pub async fn read_tensor(
        &self,
        root: &str,
        file: &str,
        name: &str,
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<TensorRead, ClientError> {
        let url = self.url(&format!(
            "/v1/checkpoints/{root}/files/{}/tensors/{}",
            url_path(file),
            url_path(name)
        ));
        let resp = check(self.http.get(url).send().await?).await?;
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let dtype = header("x-tensor-dtype");
        let shape = header("x-tensor-shape")
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| d.parse::<u64>())
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|_| ClientError::Invalid("node sent an unparsable tensor shape".into()))?;
        let want = resp.content_length();
        let mut stream = resp.bytes_stream();
        let mut got = 0u64;
        let path = Path::new(name);
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            out.write_all(&chunk).await.map_err(io_err(path))?;
            got += chunk.len() as u64;
        }
        out.flush().await.map_err(io_err(path))?;
        if want.is_some_and(|w| w != got) {
            return Err(ClientError::Truncated {
                path: format!("{file}:{name}"),
                got,
                want: want.unwrap_or(0),
            });
        }
        Ok(TensorRead {
            file: file.to_owned(),
            dtype,
            shape,
            bytes: got,
        })
    }
}
