//! File reads: whole files and ranges, from the local store or the cluster, verified.

use super::*;
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

pub(super) async fn get_file<B: Backend>(
    State(s): State<AppState<B>>,
    Path((cid, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let root = root_of(&cid)?;
    let (m, complete) = find_manifest(&s, root).await?;
    let layout = m.layout().map_err(|e| ApiError::internal(e.to_string()))?;
    let file = m.file(&path).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "file_not_found",
            format!("{root} has no file {path:?}"),
        )
    })?;
    let size = file.size;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(v) => parse_range(v, size).map_err(|()| {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("range {v:?} does not fit a file of {size} bytes"),
            );
            e.content_range = Some(format!("bytes */{size}"));
            e
        })?,
    };
    let (start, end) = range.unwrap_or((0, size));
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{}\"", file.hash().to_hex()))
        .header(header::CONTENT_LENGTH, end - start);
    builder = match range {
        Some(_) => builder.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end.saturating_sub(1)),
        ),
        None => builder.status(StatusCode::OK),
    };
    if method == Method::HEAD {
        return builder
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    if let (false, Some(cluster)) = (complete, &s.cluster) {
        let mut rx = cluster.read(layout, m.salt.clone(), file, start, end);
        // Fail before the first byte when the first piece cannot be had; later failures cut
        // the body short (a client resuming from there then gets the error as JSON).
        let first = match rx.recv().await {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => return Err(e.into()),
            None => None,
        };
        let stream = futures_util::stream::unfold((first, rx), |(first, mut rx)| async move {
            if let Some(b) = first {
                return Some((Ok(b), (None, rx)));
            }
            match rx.recv().await? {
                Ok(b) => Some((Ok(b), (None, rx))),
                Err(e) => {
                    tracing::error!(error = %e, "cluster read failed mid-stream; aborting response");
                    Some((Err(std::io::Error::other(e.to_string())), (None, rx)))
                }
            }
        });
        return builder
            .body(Body::from_stream(count_sent(stream, &s.metrics)))
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    // Fail before the first byte when a stripe is known to be beyond repair.
    let store = s.store.clone();
    let pre = file.clone();
    blocking(move || Ok(FileReader::new(&store, layout).preflight(&pre, start, end)?)).await?;

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
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
            tracing::error!(%root, path = %file.path, error = %e, "read failed mid-stream; aborting response");
            // The client sees the body end early; nothing unverified was sent.
            send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    builder
        .body(Body::from_stream(count_sent(stream, &s.metrics)))
        .map_err(|e| ApiError::internal(e.to_string()))
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
