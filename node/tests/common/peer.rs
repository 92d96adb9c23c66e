//! A scripted peer for hostile-peer tests: a real libp2p swarm (the node's own `Network`, with
//! QUIC, Kademlia and identify) that sends any frame it is told to, and can answer shard
//! streams however a test wants (acknowledge without storing, serve garbage, ...).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_erasure::{Cid, Outboard};
use cairn_node::net::swarm::SHARD_PROTOCOL;
use cairn_node::net::wire::{self, HEADER_LEN, Request, Response, ShardHeader, Status};
use cairn_node::net::{Membership, NetConfig, Network};
use libp2p::futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, Stream};
use tokio_util::sync::CancellationToken;

/// How a scripted peer answers the shard streams it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Accepts nothing (streams are read and dropped).
    Silent,
    /// Acknowledges every shard without keeping it; answers reads `NotFound`.
    AckWithoutStoring,
    /// Keeps shards, and serves them with one byte flipped (outboard of the real bytes).
    ServeGarbage,
    /// Keeps and serves shards honestly, but refuses every commit.
    RefuseCommit,
}

/// What a scripted peer saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub pushes: usize,
    pub reads: usize,
    pub commits: usize,
    /// Upload ids of pushes received.
    pub uploads: Vec<[u8; 16]>,
}

pub struct ScriptedPeer {
    pub net: Network,
    pub id: PeerId,
    pub seen: Arc<Mutex<Seen>>,
    cancel: CancellationToken,
}

impl Drop for ScriptedPeer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// An answer read off a stream.
#[derive(Debug)]
pub struct Answer {
    pub status: Status,
    pub message: String,
    pub body: Vec<u8>,
}

async fn read_frame(s: &mut Stream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).await?;
    let (kind, len) = wire::decode_header(&h).map_err(std::io::Error::other)?;
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await?;
    Ok((kind, body))
}

impl ScriptedPeer {
    /// Start a swarm with `key`, dialing `bootstrap`, answering shard streams as `behaviour`.
    pub async fn start(key: Keypair, bootstrap: &[String], behaviour: Behaviour) -> Self {
        let cancel = CancellationToken::new();
        let id = key.public().to_peer_id();
        let (net, _task) = Network::start(
            key,
            NetConfig {
                listen: "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"),
                bootstrap: bootstrap
                    .iter()
                    .map(|a| a.parse::<Multiaddr>().expect("multiaddr"))
                    .collect(),
                account: None,
                membership: Membership::open(),
            },
            cairn_node::metrics::Metrics::new::<cairn_storage::MemBackend>(None).swarm,
            cancel.clone(),
        )
        .expect("scripted peer swarm");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut incoming = net.streams().accept(SHARD_PROTOCOL).expect("accept");
        let held: Arc<Mutex<HashMap<Cid, Vec<u8>>>> = Arc::default();
        let (c, s2) = (cancel.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = c.cancelled() => break,
                    next = incoming.next() => {
                        let Some((_, stream)) = next else { break };
                        let (seen, held) = (Arc::clone(&s2), Arc::clone(&held));
                        tokio::spawn(answer(stream, behaviour, seen, held));
                    }
                }
            }
        });
        while net.connected().await == 0 && !bootstrap.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            net,
            id,
            seen,
            cancel,
        }
    }

    /// Open a shard stream to `peer`, send `frame` and `bytes`, and read the answer frame.
    pub async fn send(&self, peer: PeerId, frame: &[u8], bytes: &[u8]) -> std::io::Result<Answer> {
        let mut s = self
            .net
            .streams()
            .open_stream(peer, SHARD_PROTOCOL)
            .await
            .map_err(std::io::Error::other)?;
        // A refused request may be answered before its bytes (or even its frame) are read:
        // a failed write is not the answer.
        let _ = s.write_all(frame).await;
        let _ = s.write_all(bytes).await;
        let _ = s.flush().await;
        let (kind, body) = read_frame(&mut s).await?;
        let r = Response::decode(kind, body).map_err(std::io::Error::other)?;
        Ok(Answer {
            status: r.status,
            message: r.message(),
            body: r.body,
        })
    }

    /// Push one shard of `upload` to `peer`.
    pub async fn push(&self, peer: PeerId, upload: [u8; 16], data: &[u8]) -> Answer {
        let cid = cairn_erasure::shard_cid(&blake3::hash(data));
        let frame = Request::PutShard {
            upload,
            cid,
            len: data.len() as u64,
        }
        .encode();
        self.send(peer, &frame, data)
            .await
            .unwrap_or_else(|e| Answer {
                status: Status::Internal,
                message: format!("no answer: {e}"),
                body: Vec::new(),
            })
    }

    /// Commit `upload` on `peer` under `manifest`, naming `placed`.
    pub async fn commit(
        &self,
        peer: PeerId,
        upload: [u8; 16],
        manifest: &[u8],
        placed: &[Cid],
    ) -> Answer {
        let frame = Request::Commit {
            upload,
            name: "scripted".into(),
            manifest_len: manifest.len() as u32,
            shards: placed.len() as u32,
            digest: wire::shards_digest(placed),
        }
        .encode();
        self.send(peer, &frame, manifest).await.expect("an answer")
    }

    pub async fn abort(&self, peer: PeerId, upload: [u8; 16]) -> Answer {
        self.send(peer, &Request::Abort { upload }.encode(), &[])
            .await
            .expect("an answer")
    }

    /// Read bytes `[start, end)` of a shard from `peer`, verified against its CID; sent once
    /// more if the stream was dropped unanswered, as the node's own client does.
    pub async fn get(
        &self,
        peer: PeerId,
        cid: &Cid,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, String> {
        match self.get_once(peer, cid, start, end).await {
            Err(e) if e.contains("end of file") => self.get_once(peer, cid, start, end).await,
            r => r,
        }
    }

    async fn get_once(
        &self,
        peer: PeerId,
        cid: &Cid,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, String> {
        let mut s = self
            .net
            .streams()
            .open_stream(peer, SHARD_PROTOCOL)
            .await
            .map_err(|e| e.to_string())?;
        let frame = Request::GetShard {
            cid: *cid,
            start,
            end,
        }
        .encode();
        s.write_all(&frame).await.map_err(|e| e.to_string())?;
        let (kind, body) = read_frame(&mut s).await.map_err(|e| e.to_string())?;
        let r = Response::decode(kind, body).map_err(|e| e.to_string())?;
        if r.status != Status::Ok {
            return Err(format!("{:?}: {}", r.status, r.message()));
        }
        let h = ShardHeader::decode(&r.body).map_err(|e| e.to_string())?;
        let ob = Outboard::from_bytes(&h.outboard).map_err(|e| e.to_string())?;
        let hash = cairn_erasure::shard_hash(cid).map_err(|e| e.to_string())?;
        ob.check(&hash).map_err(|e| e.to_string())?;
        let mut data = vec![0u8; (h.end - h.start) as usize];
        s.read_exact(&mut data).await.map_err(|e| e.to_string())?;
        ob.verify_groups(&hash, h.start, &data)
            .map_err(|e| e.to_string())?;
        Ok(data[(start - h.start) as usize..(end.min(h.end) - h.start) as usize].to_vec())
    }

    /// Open a shard stream to `peer` and send nothing on it (held until dropped).
    pub async fn open_idle(&self, peer: PeerId) -> Option<Stream> {
        let mut s = self
            .net
            .streams()
            .open_stream(peer, SHARD_PROTOCOL)
            .await
            .ok()?;
        // One byte so the stream exists on the other side; never a whole header.
        s.write_all(&[wire::VERSION]).await.ok()?;
        s.flush().await.ok()?;
        Some(s)
    }
}

async fn answer(
    mut s: Stream,
    behaviour: Behaviour,
    seen: Arc<Mutex<Seen>>,
    held: Arc<Mutex<HashMap<Cid, Vec<u8>>>>,
) {
    let Ok((kind, body)) = read_frame(&mut s).await else {
        return;
    };
    let Ok(req) = Request::decode(kind, &body) else {
        return;
    };
    if behaviour == Behaviour::Silent {
        return;
    }
    let reply = match req {
        Request::PutShard { upload, cid, len } => {
            let mut data = vec![0u8; len as usize];
            if s.read_exact(&mut data).await.is_err() {
                return;
            }
            {
                let mut seen = seen.lock().expect("seen");
                seen.pushes += 1;
                seen.uploads.push(upload);
            }
            if behaviour != Behaviour::AckWithoutStoring {
                held.lock().expect("held").insert(cid, data);
            }
            Response::ok(Vec::new()).encode()
        }
        Request::Have { cids } => {
            let held = held.lock().expect("held");
            let bits: Vec<bool> = cids.iter().map(|c| held.contains_key(c)).collect();
            Response::ok(cairn_node::net::wire::encode_have(&bits)).encode()
        }
        Request::GetShard { cid, start, end } => {
            seen.lock().expect("seen").reads += 1;
            let data = held.lock().expect("held").get(&cid).cloned();
            match data {
                None => Response::error(Status::NotFound, "not here").encode(),
                Some(mut data) => {
                    let (_, ob) = Outboard::compute(&data);
                    let end = end.min(ob.len());
                    let Ok((a, b)) = ob.aligned(start, end) else {
                        return;
                    };
                    if behaviour == Behaviour::ServeGarbage {
                        data[a as usize] ^= 0x5a;
                    }
                    let header = ShardHeader {
                        shard_len: ob.len(),
                        outboard: ob.to_bytes(),
                        start: a,
                        end: b,
                    };
                    let mut out = Response::ok(header.encode()).encode();
                    out.extend_from_slice(&data[a as usize..b as usize]);
                    out
                }
            }
        }
        Request::Commit { manifest_len, .. } => {
            let mut m = vec![0u8; manifest_len as usize];
            if s.read_exact(&mut m).await.is_err() {
                return;
            }
            seen.lock().expect("seen").commits += 1;
            if behaviour == Behaviour::RefuseCommit {
                Response::error(Status::Internal, "this peer aborts every commit").encode()
            } else {
                Response::ok(Vec::new()).encode()
            }
        }
        Request::Abort { .. } => Response::ok(Vec::new()).encode(),
        Request::GetManifest { .. } | Request::Delete { .. } => {
            Response::error(Status::NotFound, "none").encode()
        }
    };
    let _ = s.write_all(&reply).await;
    let _ = s.close().await;
}
