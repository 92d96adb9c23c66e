//! The shard server over two real swarms on loopback.

use std::sync::Arc;

use cairn_storage::{MemBackend, Store};
use libp2p::PeerId;
use libp2p::futures::AsyncWriteExt;
use libp2p::identity::Keypair;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::net::membership::Membership;
use crate::net::swarm::{NetConfig, Network, SHARD_PROTOCOL};
use crate::net::wire::{self, HEADER_LEN, Request, Response, Status};

fn metrics() -> crate::metrics::Metrics {
    crate::metrics::Metrics::new::<MemBackend>(None)
}

fn stats() -> Arc<TransferStats> {
    Arc::new(TransferStats::new(metrics().transfers))
}

/// Two real swarms on loopback: `a` runs a shard server over an in-memory store.
async fn pair(cancel: &CancellationToken) -> (Store<MemBackend>, Network, Transfers, PeerId) {
    let listen: libp2p::Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr");
    let (a, _) = Network::start(
        Keypair::generate_ed25519(),
        NetConfig {
            account: None,
            listen: listen.clone(),
            bootstrap: Vec::new(),
            membership: Membership::open(),
        },
        metrics().swarm,
        cancel.clone(),
    )
    .expect("a");
    let a_addr = loop {
        if let Some(x) = a.listen_addrs().await.into_iter().next() {
            break x;
        }
        tokio::task::yield_now().await;
    };
    let store = Store::open(MemBackend::new(), 1 << 30).expect("store");
    let server = ShardServer::new(
        store.clone(),
        a.clone(),
        Membership::open(),
        ServerLimits {
            peer_pending_bytes: 1 << 30,
            max_sessions_per_peer: 4,
            upload_idle: Duration::from_secs(120),
        },
        stats(),
        None,
    );
    tokio::spawn(server.run(cancel.clone()));
    let (b, _) = Network::start(
        Keypair::generate_ed25519(),
        NetConfig {
            listen,
            bootstrap: vec![a_addr],
            account: None,
            membership: Membership::open(),
        },
        metrics().swarm,
        cancel.clone(),
    )
    .expect("b");
    // Wait (polling the condition) until b's bootstrap dial to a is up.
    while b.connected().await == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let t = Transfers::new(b.clone(), stats());
    (store, b, t, a.peer_id())
}

/// Send raw bytes on a fresh stream, half-close, and read the answer frame.
async fn raw(b: &Network, peer: PeerId, bytes: &[u8]) -> Result<Response, TransferError> {
    let mut s = b
        .streams()
        .open_stream(peer, SHARD_PROTOCOL)
        .await
        .map_err(|e| TransferError::Open {
            peer,
            reason: e.to_string(),
        })?;
    write_all(&mut s, bytes, peer).await?;
    let _ = s.close().await;
    let (kind, body) = read_frame(&mut s, peer).await?;
    Response::decode(kind, body).map_err(|source| TransferError::Wire { peer, source })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_errors_and_the_server_keeps_serving() {
    let cancel = CancellationToken::new();
    let (store, b, t, a) = pair(&cancel).await;
    let data = vec![42u8; 100_000];
    let cid = cairn_erasure::shard_cid(&blake3::hash(&data));
    let up = [9u8; 16];

    // Unknown version, oversized body, unknown kind, truncated body, trailing garbage.
    let mut bad_version = Request::Abort { upload: up }.encode();
    bad_version[0] = 99;
    let mut huge = vec![wire::VERSION, 1];
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut unknown = Request::Abort { upload: up }.encode();
    unknown[1] = 200;
    let full = Request::GetShard {
        cid,
        start: 0,
        end: 10,
    }
    .encode();
    let mut truncated = full[..full.len() - 3].to_vec();
    truncated[2..6].copy_from_slice(&((full.len() - HEADER_LEN) as u32).to_le_bytes());
    for (what, frame) in [
        ("version", bad_version),
        ("huge body", huge),
        ("unknown kind", unknown),
    ] {
        let r = raw(&b, a, &frame).await.expect("an answer");
        assert_eq!(r.status, Status::BadRequest, "{what}: {}", r.message());
    }
    // A truncated frame is answered with an error or the stream is cut; never a panic.
    if let Ok(r) = raw(&b, a, &truncated).await {
        assert_ne!(r.status, Status::Ok);
    }
    // A shard longer than the limit is refused before anything is allocated.
    let over = Request::PutShard {
        upload: up,
        cid,
        len: wire::MAX_SHARD_LEN + 1,
    }
    .encode();
    assert_eq!(
        raw(&b, a, &over).await.expect("answer").status,
        Status::BadRequest
    );
    // A shard that ends early is not stored.
    let mut short = Request::PutShard {
        upload: up,
        cid,
        len: data.len() as u64,
    }
    .encode();
    short.extend_from_slice(&data[..1000]);
    let _ = raw(&b, a, &short).await;
    assert!(!store.has_shard(&cid).expect("index"));
    // Bytes that do not match the CID are refused as corrupt.
    let mut wrong = data.clone();
    wrong[5] ^= 1;
    let e = t.push_shard(a, up, &cid, &wrong).await.expect_err("lie");
    assert!(
        matches!(
            e,
            TransferError::Remote {
                status: Status::Corrupt,
                ..
            }
        ),
        "{e}"
    );
    assert!(!store.has_shard(&cid).expect("index"));
    // And the server still works: a real push and a verified ranged read.
    t.push_shard(a, up, &cid, &data).await.expect("push");
    assert!(store.has_shard(&cid).expect("index"));
    let got = t.fetch_range(a, &cid, 20_000, 20_100).await.expect("range");
    assert_eq!(got, data[20_000..20_100]);
    let missing = cairn_erasure::shard_cid(&blake3::hash(b"nothing"));
    assert!(
        t.fetch_range(a, &missing, 0, 1)
            .await
            .expect_err("absent")
            .is_not_found()
    );
    cancel.cancel();
}

/// A checkpoint in `store` whose manifest names `publisher` (format 3); returns its root and
/// how many shards only it references.
fn published_checkpoint(
    store: &Store<MemBackend>,
    publisher: Option<PeerId>,
    seed: u8,
) -> (Cid, usize) {
    let layout = cairn_erasure::Layout::new(2, 1, 1 << 16).expect("layout");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 ^ seed).collect();
    let upload = crate::pipeline::Upload::File {
        path: "w.bin".into(),
        reader: &data[..],
    };
    let (plain, manifest) =
        crate::pipeline::ingest(store, layout, upload, "t", &|_| {}).expect("ingest");
    let Some(publisher) = publisher else {
        return (plain, manifest.shard_cids().count());
    };
    let named = manifest
        .published([7u8; 16], publisher.to_bytes())
        .expect("publisher");
    let root = store
        .begin_put()
        .commit_partial(&named, "t", 0)
        .expect("commit");
    store.unpin(&plain).expect("unpin the unnamed one");
    (root, named.shard_cids().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_publisher_named_in_the_manifest_may_delete() {
    let cancel = CancellationToken::new();
    let (store, b, t, a) = pair(&cancel).await;
    let (mine, shards) = published_checkpoint(&store, Some(b.peer_id()), 1);
    let (theirs, _) = published_checkpoint(&store, Some(PeerId::random()), 2);
    let (unnamed, _) = published_checkpoint(&store, None, 3);
    for (root, what) in [
        (theirs, "another publisher's"),
        (unnamed, "a single node's"),
    ] {
        let e = t.delete(a, &root).await.expect_err(what);
        assert!(
            matches!(
                e,
                TransferError::Remote {
                    status: Status::Forbidden,
                    ..
                }
            ),
            "{what}: {e}"
        );
        assert!(store.manifest_entry(&root).is_ok(), "{what} was unpinned");
    }
    assert_eq!(
        t.delete(a, &mine).await.expect("own checkpoint"),
        shards as u64
    );
    assert!(store.manifest_entry(&mine).is_err());
    let again = t.delete(a, &mine).await.expect_err("gone");
    assert!(again.is_not_found(), "{again}");
    cancel.cancel();
}
