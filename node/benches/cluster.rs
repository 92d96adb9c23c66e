//! Network benchmark, one run on one machine, printed as ratios to raw quinn:
//! 1. raw quinn: one connection, one stream, loopback, with the flow-control windows Cairn
//!    uses, under rustls' default TLS (AES-GCM) and libp2p's (ChaCha20);
//! 2. a libp2p stream over Cairn's swarm (the transport the shard protocol uses);
//! 3. Cairn get of a checkpoint from an 8-node devnet through one gateway, to /dev/null and
//!    with `cairn get` to a folder (every byte verified at the gateway and by the client);
//! 4. `sendme` (iroh-blobs) on the same file, when it is on PATH;
//! 5. the gateway's peak RSS during a get of a larger checkpoint.
//!
//! `cargo bench -p cairn-node --bench cluster`; env `CAIRN_BENCH_MIB` (default 1024) sets the
//! checkpoint size, `CAIRN_BENCH_RSS_MIB` (default 4096, 0 skips) the RSS run's, and
//! `CAIRN_BENCH_DIR` the work directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_node::net::{NetConfig, Network};
use libp2p::StreamProtocol;
use libp2p::futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_cairn");
const CHUNK: usize = 1 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn gib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64 / secs
}

/// Accepts any server certificate: the AES baseline only measures throughput.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS configs with rustls' default cipher order (AES-GCM first), as plain quinn uses.
fn aes_tls() -> (rustls::ServerConfig, rustls::ClientConfig) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["l".into()]).expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let cert = cert.cert.der().clone();
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server cert");
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let mut server = server;
    server.alpn_protocols = vec![b"bench".to_vec()];
    client.alpn_protocols = vec![b"bench".to_vec()];
    (server, client)
}

/// Raw quinn throughput, with libp2p's TLS (ChaCha20 first, what Cairn's transport
/// negotiates) or rustls' defaults (AES-GCM, what plain quinn negotiates).
async fn raw_quinn(bytes: u64, libp2p_tls: bool) -> f64 {
    let server_key = Keypair::generate_ed25519();
    let client_key = Keypair::generate_ed25519();
    let (server_tls, client_tls) = if libp2p_tls {
        (
            libp2p_tls::make_server_config(&server_key).expect("server tls"),
            libp2p_tls::make_client_config(&client_key, Some(server_key.public().to_peer_id()))
                .expect("client tls"),
        )
    } else {
        aes_tls()
    };
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window((16u32 << 20).into());
    transport.receive_window((64u32 << 20).into());
    let transport = Arc::new(transport);
    let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).expect("quic server tls"),
    ));
    server_cfg.transport_config(Arc::clone(&transport));
    let server = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse().expect("addr"))
        .expect("server endpoint");
    let addr = server.local_addr().expect("addr");
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).expect("quic client tls"),
    ));
    client_cfg.transport_config(transport);
    let mut client =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    client.set_default_client_config(client_cfg);
    let recv = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("accepted");
        let mut s = conn.accept_uni().await.expect("stream");
        let mut n = 0u64;
        while let Some(chunk) = s.read_chunk(CHUNK, true).await.expect("read") {
            n += chunk.bytes.len() as u64;
        }
        n
    });
    let conn = client
        .connect(addr, "l")
        .expect("connect")
        .await
        .expect("connected");
    let buf = vec![7u8; CHUNK];
    let t = Instant::now();
    let mut s = conn.open_uni().await.expect("stream");
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&buf).await.expect("write");
        sent += CHUNK as u64;
    }
    s.finish().expect("finish");
    let got = recv.await.expect("receiver");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got, sent);
    gib_s(sent, secs)
}

async fn libp2p_stream(bytes: u64) -> f64 {
    let cancel = CancellationToken::new();
    let listen: libp2p::Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr");
    let (a, _ta) = Network::start(
        Keypair::generate_ed25519(),
        NetConfig {
            account: None,
            listen: listen.clone(),
            bootstrap: Vec::new(),
            membership: cairn_node::net::Membership::open(),
        },
        cairn_node::metrics::Metrics::new::<cairn_storage::MemBackend>(None).swarm,
        cancel.clone(),
    )
    .expect("swarm a");
    let a_addr = loop {
        if let Some(x) = a.listen_addrs().await.into_iter().next() {
            break x;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (b, _tb) = Network::start(
        Keypair::generate_ed25519(),
        NetConfig {
            listen,
            bootstrap: vec![a_addr],
            account: None,
            membership: cairn_node::net::Membership::open(),
        },
        cairn_node::metrics::Metrics::new::<cairn_storage::MemBackend>(None).swarm,
        cancel.clone(),
    )
    .expect("swarm b");
    let proto = StreamProtocol::new("/cairn/bench/1");
    let mut incoming = a.streams().accept(proto.clone()).expect("accept");
    let recv = tokio::spawn(async move {
        let (_, mut s) = incoming.next().await.expect("stream");
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0u64;
        loop {
            let r = s.read(&mut buf).await.expect("read");
            if r == 0 {
                break n;
            }
            n += r as u64;
        }
    });
    while b.connected().await == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let buf = vec![7u8; CHUNK];
    let t = Instant::now();
    let mut s = b
        .streams()
        .open_stream(a.peer_id(), proto)
        .await
        .expect("open");
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&buf).await.expect("write");
        sent += CHUNK as u64;
    }
    s.close().await.expect("close");
    let got = recv.await.expect("receiver");
    let secs = t.elapsed().as_secs_f64();
    cancel.cancel();
    assert_eq!(got, sent);
    gib_s(sent, secs)
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(DEVNET.get().map(|d| ("CAIRN_DEVNET_DIR", d.clone())))
        .stderr(Stdio::inherit())
        .output()
        .expect("run cairn");
    assert!(out.status.success(), "cairn {args:?} failed");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The devnet this bench runs (the CLI reads node tokens through it).
static DEVNET: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn node_field(dir: &Path, i: usize, field: &str) -> String {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("devnet.json")).expect("devnet state"))
            .expect("json");
    match &state["nodes"][i][field] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn peak_rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Time `curl` reading a file from the gateway into /dev/null.
fn curl_get(url: &str) -> f64 {
    let t = Instant::now();
    let ok = Command::new("curl")
        .args(["-sS", "-f", "-o", "/dev/null", url])
        .status()
        .expect("curl")
        .success();
    assert!(ok, "curl {url} failed");
    t.elapsed().as_secs_f64()
}

fn sendme(file: &Path, work: &Path) -> Option<f64> {
    let which = Command::new("sh")
        .args(["-c", "command -v sendme"])
        .output()
        .ok()?;
    if !which.status.success() {
        return None;
    }
    // `sendme send` keeps its store in a `.sendme-send-*` folder of its working directory: it
    // runs in a folder of the work dir, which goes away with it (hence the absolute path).
    let file = std::path::absolute(file).ok()?;
    let send_dir = work.join("sendme-send");
    std::fs::create_dir_all(&send_dir).ok()?;
    let mut send = Command::new("sendme")
        .args(["send", "--relay", "disabled"])
        .arg(&file)
        .current_dir(&send_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut out = std::io::BufReader::new(send.stdout.take()?);
    let mut ticket = None;
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut out, &mut line).ok()? > 0 {
        if let Some(t) = line.split_whitespace().find(|w| w.starts_with("blob")) {
            ticket = Some(t.to_owned());
            break;
        }
        line.clear();
    }
    let ticket = ticket?;
    let dir = work.join("sendme-recv");
    std::fs::create_dir_all(&dir).ok()?;
    let t = Instant::now();
    let ok = Command::new("sendme")
        .args(["receive", "--relay", "disabled", &ticket])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    let secs = t.elapsed().as_secs_f64();
    let _ = send.kill();
    let _ = send.wait();
    ok.then_some(secs)
}

/// A Prometheus scraping the devnet's nodes (its `targets.json`) every second; paused and
/// resumed with SIGSTOP/SIGCONT so that it scrapes only during the runs that measure it.
struct Prom {
    child: std::process::Child,
    url: String,
}

impl Prom {
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }
    fn pause(&self) {
        self.signal("-STOP");
    }
    fn resume(&self) {
        self.signal("-CONT");
    }
    fn scrapes(&self) -> String {
        let out = Command::new("curl")
            .args([
                "-s",
                "--data-urlencode",
                "query=sum(count_over_time(up[1h]))",
            ])
            .arg(format!("{}/api/v1/query", self.url))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        v["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or("?")
            .to_owned()
    }
}

impl Drop for Prom {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(devnet: &Path) -> Option<Prom> {
    let config = devnet.join("prometheus-1s.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cairn\n    file_sd_configs:\n      - files: [{:?}]\n        refresh_interval: 1s\n",
            devnet.join("targets.json").display().to_string()
        ),
    )
    .ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            devnet.join("bench-tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let prom = Prom {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Wait until every node has been scraped once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("curl")
            .args(["-s", "--data-urlencode", "query=count(up == 1)"])
            .arg(format!("{}/api/v1/query", prom.url))
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["data"]["result"][0]["value"][1] == "8" {
            break;
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    prom.pause();
    Some(prom)
}

fn main() {
    let mib = env_u64("CAIRN_BENCH_MIB", 1024);
    let rss_mib = env_u64("CAIRN_BENCH_RSS_MIB", 4096);
    let bytes = mib << 20;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let gso = quinn::udp::UdpSocketState::new((&sock).into())
        .map(|s| s.max_gso_segments())
        .unwrap_or(0);
    println!("UDP GSO segments per send on this machine: {gso} (1 = GSO off)");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let aes = rt.block_on(raw_quinn(bytes, false));
    let quinn = rt.block_on(raw_quinn(bytes, true));
    let stream = rt.block_on(libp2p_stream(bytes));
    drop(rt);
    println!("raw quinn, 1 connection, 1 stream, AES-GCM (rustls default): {aes:.3} GiB/s");
    println!(
        "raw quinn, 1 connection, 1 stream, libp2p TLS (ChaCha20): {quinn:.3} GiB/s = {:.2}x AES",
        quinn / aes
    );
    println!(
        "libp2p stream (Cairn's transport):  {stream:.3} GiB/s = {:.2}x raw quinn",
        stream / quinn
    );

    let work = match std::env::var("CAIRN_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).expect("work dir"),
        Err(_) => tempfile::tempdir().expect("work dir"),
    };
    let dir = work.path().join("devnet");
    // The CLI finds each node's API token through the devnet's state.
    let _ = DEVNET.set(dir.clone());
    let d = dir.to_str().expect("utf-8");
    cli(&["devnet", "up", "--dir", d, "--nodes", "8"]);
    // The nodes do not outlive the benchmark, even when it fails.
    struct Down(std::path::PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            if self.0.join("devnet.json").exists() {
                let _ = Command::new(BIN)
                    .args(["devnet", "down", "--dir"])
                    .arg(&self.0)
                    .output();
            }
        }
    }
    let _down = Down(dir.clone());
    let file = work.path().join("checkpoint.bin");
    let mut data = vec![0u8; usize::try_from(bytes).expect("fits")];
    cairn_node::sample::fill_random(&mut 99, &mut data);
    std::fs::write(&file, &data).expect("write");
    drop(data);
    let up = node_field(&dir, 0, "http");
    let root = cli(&[
        "--node",
        &up,
        "--quiet",
        "put",
        file.to_str().expect("utf-8"),
    ]);
    let root = root.trim();
    let gw = node_field(&dir, 5, "http");
    let url = format!("{gw}/v1/checkpoints/{root}/files/checkpoint.bin");
    let secs = curl_get(&url);
    let cairn = gib_s(bytes, secs);
    println!(
        "cairn get, 8-node devnet, gateway to /dev/null: {cairn:.3} GiB/s = {:.2}x raw quinn (ChaCha20), {:.2}x raw quinn (AES)",
        cairn / quinn,
        cairn / aes
    );
    // Metrics cost: the same get, alternating without and with a real Prometheus scraping
    // every node's /metrics each second; best of three each.
    match start_prometheus(&dir) {
        Some(prom) => {
            let mut plain = secs;
            let mut scraped = f64::MAX;
            for _ in 0..3 {
                prom.resume();
                scraped = scraped.min(curl_get(&url));
                prom.pause();
                plain = plain.min(curl_get(&url));
            }
            prom.resume();
            println!(
                "cairn get while Prometheus scrapes every node each second: {:.3} of the throughput without (best of 3 each; {} scrapes)",
                plain / scraped,
                prom.scrapes()
            );
        }
        None => println!("prometheus: not on PATH (./ops/install.sh), metrics cost skipped"),
    }
    let out = work.path().join("got");
    let t = Instant::now();
    cli(&[
        "--node",
        &gw,
        "--quiet",
        "get",
        root,
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    let to_disk = gib_s(bytes, t.elapsed().as_secs_f64());
    println!(
        "cairn get to a folder (client verifies too):  {to_disk:.3} GiB/s = {:.2}x raw quinn (ChaCha20), {:.2}x raw quinn (AES)",
        to_disk / quinn,
        to_disk / aes
    );
    match sendme(&file, work.path()) {
        Some(s) => {
            let sm = gib_s(bytes, s);
            println!(
                "sendme (iroh-blobs) of the same file: {sm:.3} GiB/s; cairn/sendme = {:.2}x",
                to_disk / sm
            );
        }
        None => println!("sendme: not on PATH (cargo install sendme), skipped"),
    }
    if rss_mib > 0 {
        let big = work.path().join("big.bin");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&big).expect("create");
            let mut buf = vec![0u8; 64 << 20];
            let mut state = 5u64;
            for _ in 0..rss_mib / 64 {
                cairn_node::sample::fill_random(&mut state, &mut buf);
                f.write_all(&buf).expect("write");
            }
        }
        let root = cli(&[
            "--node",
            &up,
            "--quiet",
            "put",
            big.to_str().expect("utf-8"),
        ]);
        std::fs::remove_file(&big).expect("remove");
        let gw_pid = node_field(&dir, 6, "pid");
        let gw = node_field(&dir, 6, "http");
        let before = peak_rss_mib(&gw_pid);
        curl_get(&format!(
            "{gw}/v1/checkpoints/{}/files/big.bin",
            root.trim()
        ));
        println!(
            "gateway peak RSS over a {rss_mib} MiB get: {:.0} MiB (before the get: {before:.0} MiB)",
            peak_rss_mib(&gw_pid)
        );
    }
    cli(&["devnet", "down", "--dir", d]);
}
