//! The one verified file-reading path every route that sends file bytes shares (v1 files,
//! tensors, the HF `resolve`): `Range` parsing, the answer's headers, and the body, from the
//! local store or the cluster.

use super::*;
use axum::http::response::Builder as ResponseBuilder;
use cairn_erasure::FileEntry;

/// Parse a `Range` header against a file of `size` bytes. `Ok(None)`: serve the whole file
/// (no header, or several ranges, which we answer with the whole file as RFC 9110 allows).
pub(super) fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    // Other units are ignored (RFC 9110 §14.2): the whole file is served.
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .saturating_add(1)
                .min(size)
        };
        if start >= size || start >= end {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

/// The range a request's `Range` header asks of a file of `size` bytes (`None`: all of it);
/// a range outside the file is a 416 naming the size.
pub(super) fn requested_range(
    headers: &HeaderMap,
    size: u64,
) -> Result<Option<(u64, u64)>, ApiError> {
    match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => Ok(None),
        Some(v) => parse_range(v, size).map_err(|()| {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("range {v:?} does not fit a file of {size} bytes"),
            );
            e.content_range = Some(format!("bytes */{size}"));
            e
        }),
    }
}

/// Status and headers of a file answer: 200 with the whole file, or 206 with `range`.
pub(super) fn file_head(size: u64, range: Option<(u64, u64)>, etag: &str) -> ResponseBuilder {
    let (start, end) = range.unwrap_or((0, size));
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, etag)
        .header(header::CONTENT_LENGTH, end - start);
    match range {
        Some(_) => builder.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end.saturating_sub(1)),
        ),
        None => builder.status(StatusCode::OK),
    }
}

/// Bytes `[start, end)` of `file` as a response body: verified, streamed from the first
/// piece, counted. Fails before the first byte when the first piece cannot be had.
pub(super) async fn file_body<B: Backend>(
    s: &AppState<B>,
    m: &Manifest,
    complete: bool,
    file: FileEntry,
    start: u64,
    end: u64,
) -> Result<Body, ApiError> {
    let stream = file_stream(s, m, complete, file, start, end).await?;
    Ok(Body::from_stream(count_sent(stream, &s.metrics)))
}

/// Bytes `[start, end)` of `file` in memory (small reads only: a header), verified.
pub(super) async fn file_bytes<B: Backend>(
    s: &AppState<B>,
    m: &Manifest,
    complete: bool,
    file: FileEntry,
    start: u64,
    end: u64,
) -> Result<Vec<u8>, ApiError> {
    let path = file.path.clone();
    let mut stream = std::pin::pin!(file_stream(s, m, complete, file, start, end).await?);
    let mut out = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "unrecoverable",
                format!("reading {path}: {e}"),
            )
        })?;
        out.extend_from_slice(&chunk);
    }
    if out.len() as u64 != end - start {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "unrecoverable",
            format!(
                "reading {path}: {} of {} bytes came back",
                out.len(),
                end - start
            ),
        ));
    }
    Ok(out)
}

/// The verified bytes `[start, end)` of `file`, in order: from the cluster when this node
/// does not hold every shard, else from the local store.
async fn file_stream<B: Backend>(
    s: &AppState<B>,
    m: &Manifest,
    complete: bool,
    file: FileEntry,
    start: u64,
    end: u64,
) -> Result<impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + use<B>, ApiError> {
    let layout = m.layout().map_err(|e| ApiError::internal(e.to_string()))?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    if let (false, Some(cluster)) = (complete, &s.cluster) {
        let mut pieces = cluster.read(layout, m.salt.clone(), file, start, end);
        // Fail before the first byte when the first piece cannot be had; later failures cut
        // the body short (a client resuming from there then gets the error as JSON).
        let first = match pieces.recv().await {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => return Err(e.into()),
            None => None,
        };
        tokio::spawn(async move {
            // A client that stops reading for too long lets the read go (and its pieces).
            let send = |item| {
                let tx = tx.clone();
                async move {
                    matches!(
                        tokio::time::timeout(CLIENT_IDLE_TIMEOUT, tx.send(item)).await,
                        Ok(Ok(()))
                    )
                }
            };
            if let Some(b) = first
                && !send(Ok(b)).await
            {
                return;
            }
            while let Some(item) = pieces.recv().await {
                let item = item.map_err(|e| {
                    tracing::error!(error = %e, "cluster read failed mid-stream; aborting response");
                    std::io::Error::other(e.to_string())
                });
                let failed = item.is_err();
                if !send(item).await || failed {
                    break;
                }
            }
        });
    } else {
        // Fail before the first byte when a stripe is known to be beyond repair.
        let store = s.store.clone();
        let pre = file.clone();
        blocking(move || Ok(FileReader::new(&store, layout).preflight(&pre, start, end)?)).await?;
        let store = s.store.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let reader = FileReader::new(&store, layout);
            // Stops when the client goes away or stops reading for too long.
            let send = |item| {
                runtime.block_on(async {
                    matches!(
                        tokio::time::timeout(CLIENT_IDLE_TIMEOUT, tx.send(item)).await,
                        Ok(Ok(()))
                    )
                })
            };
            let result = reader.read(&file, start, end, &mut |bytes| send(Ok(Bytes::from(bytes))));
            if let Err(e) = result {
                tracing::error!(path = %file.path, error = %e, "read failed mid-stream; aborting response");
                // The client sees the body end early; nothing unverified was sent.
                send(Err(std::io::Error::other(e.to_string())));
            }
        });
    }
    Ok(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Count the file bytes a response body sends.
pub(super) fn count_sent<S>(
    stream: S,
    m: &Metrics,
) -> impl futures_util::Stream<Item = S::Item> + use<S>
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>>,
{
    let sent = m.http.get_bytes.clone();
    stream.inspect(move |r| {
        if let Ok(b) = r {
            sent.inc_by(b.len() as u64);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_range;
    use proptest::prelude::*;

    /// Cases per fuzz test: `PROPTEST_CASES` when set (`ops/fuzz.sh`), else `ci`.
    fn cases(ci: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(ci)
    }

    /// `parse_range` on a client's header value: no panic, and a range it returns is
    /// non-empty and within the file.
    fn check_range(value: &str, size: u64) -> Result<(), TestCaseError> {
        if let Ok(Some((a, b))) = parse_range(value, size) {
            prop_assert!(
                a < b && b <= size,
                "{:?} of {} bytes gave {}..{}",
                value,
                size,
                a,
                b
            );
        }
        Ok(())
    }

    /// File sizes and positions: small, around the limits of u64, anything.
    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..4,
            0u64..100_000,
            Just(u64::MAX),
            u64::MAX - 3..=u64::MAX,
            any::<u64>()
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(2048)))]

        /// Random header values, header-shaped ones, and valid ones with characters
        /// overwritten or inserted; well-formed single ranges answer what RFC 9110 says.
        #[test]
        fn fuzz_range_header(
            junk in ".{0,40}",
            shaped in " ?(bytes|BYTES|items)?=?[ 0-9+-]{0,24}(,[ 0-9-]{0,8})?",
            digits in "[0-9]{18,40}",
            size in number(),
            (a, b, n) in (number(), number(), number()),
            edits in prop::collection::vec(
                (any::<prop::sample::Index>(), "[0-9=, +-]|.", any::<bool>()),
                0..4,
            ),
        ) {
            check_range(&junk, size)?;
            check_range(&shaped, size)?;
            check_range(&format!("bytes={junk}"), size)?;
            for v in [format!("bytes={digits}-"), format!("bytes=-{digits}"), format!("bytes=0-{digits}")] {
                check_range(&v, size)?;
            }
            let (lo, hi) = (a.min(b), a.max(b));
            let first_last = (lo < size).then(|| Some((lo, hi.saturating_add(1).min(size))));
            prop_assert_eq!(parse_range(&format!("bytes={lo}-{hi}"), size), first_last.ok_or(()));
            let from = (lo < size).then_some(Some((lo, size)));
            prop_assert_eq!(parse_range(&format!("bytes={lo}-"), size), from.ok_or(()));
            let suffix = (n > 0 && size > 0).then(|| Some((size - n.min(size), size)));
            prop_assert_eq!(parse_range(&format!("bytes=-{n}"), size), suffix.ok_or(()));
            prop_assert_eq!(parse_range(&format!("bytes={lo}-{hi},0-1"), size), Ok(None));
            let mut v: Vec<char> = format!("bytes={lo}-{hi}").chars().collect();
            for (at, c, insert) in edits {
                let c = c.chars().next().unwrap_or('x');
                if insert {
                    v.insert(at.index(v.len() + 1), c);
                } else {
                    let i = at.index(v.len());
                    v[i] = c;
                }
            }
            check_range(&v.into_iter().collect::<String>(), size)?;
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 100))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 100))));
        assert_eq!(parse_range("bytes=-1000", 100), Ok(Some((0, 100))));
        assert_eq!(parse_range("bytes=5-1000", 100), Ok(Some((5, 100))));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=9-3", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=-5", 0), Err(()));
        assert_eq!(parse_range("bytes=0-0", 0), Err(()));
    }
}
