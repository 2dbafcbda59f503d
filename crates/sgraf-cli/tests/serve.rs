//! `sgraf-cli serve` against a running server on 127.0.0.1 (port 0), and
//! `sgraf-cli explain`: the API's search equals `rank --json` (files named
//! relative to the folder), explanations score as `rank` scores with
//! attention rows that sum to 1, bad requests get 4xx, nothing outside the
//! folder is reachable, no answer names a server path, the access token is
//! required when set, a non-loopback address without a token or --public is
//! refused, files added and removed are seen without a restart, and
//! `explain --out` draws.

mod common;

use common::{detector, fixtures, rcar_models, scratch};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn model(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sgraf-cli"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Five feature files, two photos (one in a sub-folder), and symlinks that
/// point outside the folder: a photo and a features file.
fn folder(root: &Path) -> PathBuf {
    let dir = root.join("images");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let npy = sgraf::data::Npy::open(fixtures().join("precomp/test_ims.npy")).unwrap();
    let data = npy.to_vec().unwrap();
    let per = 36 * 40;
    for i in 0..5 {
        let path = dir.join(format!("img{i}.npy"));
        sgraf::data::npy::write_f32(&path, &[36, 40], &data[i * per..(i + 1) * per]).unwrap();
    }
    let src = fixtures().join("vision/images");
    std::fs::copy(src.join("wide.png"), dir.join("wide.png")).unwrap();
    std::fs::copy(src.join("tall.png"), dir.join("sub/tall.png")).unwrap();
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(src.join("wide.png"), outside.join("secret.png")).unwrap();
    sgraf::data::npy::write_f32(&outside.join("secret.npy"), &[36, 40], &data[..per]).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.join("secret.png"), dir.join("evil.png")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.npy"), dir.join("evil.npy")).unwrap();
    }
    dir
}

struct Server {
    child: Child,
    addr: String,
    /// Everything the server wrote on stderr so far.
    stderr: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Waits (at most 60 s) until stderr holds `what`.
    fn wait_stderr(&self, what: &str) -> String {
        let t = Instant::now();
        loop {
            let err = self.stderr.lock().unwrap().clone();
            if err.contains(what) {
                return err;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no {what:?} in stderr:\n{err}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sgraf-cli"));
    cmd.arg("serve")
        .args(args)
        .env_remove("SGRAF_TOKEN")
        .env_remove("SGRAF_MODEL")
        .env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `sgraf-cli serve ARGS --port 0` with these environment variables; its
/// stderr is collected (and echoed).
fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = serve_command(args, env)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            eprintln!("serve: {line}");
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().expect("serve printed its URL").unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    Server {
        child,
        addr,
        stderr,
    }
}

fn start(args: &[&str]) -> Server {
    start_env(args, &[])
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A raw HTTP/1.1 request with these extra headers: status, headers
/// (lowercase), body.
fn request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut extra = String::new();
    let mut host = addr.to_string();
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("host") {
            host = v.to_string();
        } else {
            extra += &format!("{k}: {v}\r\n");
        }
    }
    let body = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}{body}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 4 + n..];
        }
        body = out;
    }
    (status, head, body)
}

/// A raw HTTP/1.1 GET: status, headers (lowercase), body.
fn get(addr: &str, target: &str) -> (u16, String, Vec<u8>) {
    request(addr, "GET", target, &[])
}

/// Fails when an answer names a server path: the scratch folders (under
/// the temporary folder) or the workspace (the model fixtures).
fn assert_no_paths(what: &str, body: &str) {
    let workspace = fixtures().join("../..").canonicalize().unwrap();
    let mut tmp = vec![std::env::temp_dir().display().to_string()];
    if let Ok(real) = std::env::temp_dir().canonicalize() {
        tmp.push(real.display().to_string());
    }
    for path in tmp.iter().chain([&workspace.display().to_string()]) {
        let path = path.trim_end_matches('/');
        assert!(
            path.len() < 2 || !body.contains(&format!("{path}/")),
            "{what}: the answer names a server path ({path}): {body}"
        );
    }
}

/// GET, parsed as JSON, checked for server paths.
fn get_json_with(addr: &str, target: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, _, body) = request(addr, "GET", target, headers);
    let text = String::from_utf8_lossy(&body);
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{target}: not JSON ({e}): {text}"));
    assert_no_paths(target, &text);
    (status, v)
}

fn get_json(addr: &str, target: &str) -> (u16, Value) {
    get_json_with(addr, target, &[])
}

/// Polls `check` (at most 90 s) until it returns Some.
fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the background rescan has run `scans` times and is idle.
fn wait_scans(addr: &str, scans: u64, headers: &[(&str, &str)]) -> Value {
    poll("the background rescan", || {
        let (status, h) = get_json_with(addr, "/api/health", headers);
        assert_eq!(status, 200, "{h}");
        let ix = &h["indexing"];
        (ix["scans"].as_u64().unwrap() >= scans && ix["active"] == false).then_some(h)
    })
}

/// The files of a search for "dog" (top 1000).
fn files(addr: &str) -> Vec<String> {
    let (status, v) = get_json(addr, "/api/search?q=dog&top=1000");
    assert_eq!(status, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["file"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn serve_api_matches_rank_and_refuses_bad_requests() {
    let root = scratch("api");
    let det = detector(&root);
    let dir = folder(&root);
    // A damaged feature file: rank skips it, explain's error names no path.
    std::fs::write(dir.join("broken.npy"), b"\x93NUMPY garbage").unwrap();
    let d = dir.display().to_string();
    let (sgr, saf) = (model("sgr"), model("saf"));
    let query = "Two dogs playing in the snow.";
    let base = ["-m", &sgr, "-m", &saf, "--images", &d, "--detector", &det];
    let server = start(&base);
    let addr = server.addr.as_str();

    let (status, health) = get_json(addr, "/api/health");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["access"], "loopback");
    // Models by name, never by folder.
    assert_eq!(
        health["models"],
        serde_json::json!([{"module": "SGR", "model": "sgr"}, {"module": "SAF", "model": "saf"}])
    );
    // The first (background) rescan writes the folder's index.
    let health = wait_scans(addr, 1, &[]);
    assert!(health["indexing"]["done"].is_u64() && health["indexing"]["total"].is_u64());
    assert!(health["indexing"]["error"].is_null(), "{health}");
    assert!(dir.join(".sgraf-index").is_dir());

    // Search equals rank --json: same files, order and scores.
    let mut rank_args = vec!["rank"];
    rank_args.extend_from_slice(&base);
    rank_args.extend_from_slice(&["--query", query, "--json", "--top", "4"]);
    let want: Value = serde_json::from_str(&cli(&rank_args)).unwrap();
    let (status, got) = get_json(addr, &format!("/api/search?q={}&top=4", enc(query)));
    assert_eq!(status, 200, "{got}");
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), 4);
    for (g, w) in got.iter().zip(want.as_array().unwrap()) {
        assert_eq!(g["rank"], w["rank"]);
        // rank prints the folder joined with the file; serve the file only.
        let relative = w["file"].as_str().unwrap().strip_prefix(&format!("{d}/"));
        assert_eq!(g["file"].as_str(), relative, "{g} vs {w}");
        assert_eq!(g["score"], w["score"], "{g} vs {w}");
    }
    let (_, all) = get_json(addr, &format!("/api/search?q={}&top=1000", enc(query)));
    let all = all.as_array().unwrap();
    // 5 features, 2 photos, and the two symlinks (as rank lists them).
    assert!(all.len() >= 7, "{all:?}");
    assert!(all
        .iter()
        .all(|h| !h["file"].as_str().unwrap().starts_with('/')));
    assert!(all.iter().any(|h| h["file"] == "sub/tall.png"), "{all:?}");

    // Explain: rows sum to 1, score equals rank's, boxes for photos.
    for hit in all {
        let file = hit["file"].as_str().unwrap();
        if file.contains("evil") || file.contains("broken") {
            continue;
        }
        let (status, e) = get_json(
            addr,
            &format!("/api/explain?file={}&q={}", enc(file), enc(query)),
        );
        assert_eq!(status, 200, "{file}: {e}");
        let score = e["score"].as_f64().unwrap();
        let want = hit["score"].as_f64().unwrap();
        assert!(
            (score - want).abs() < 1e-5,
            "{file}: explain {score} rank {want}"
        );
        let words = e["words"].as_array().unwrap();
        assert_eq!(words.first().unwrap(), "<start>");
        let attention = e["attention"].as_array().unwrap();
        assert_eq!(attention.len(), words.len());
        for row in attention {
            let row = row.as_array().unwrap();
            assert_eq!(row.len(), 36);
            let sum: f64 = row.iter().map(|v| v.as_f64().unwrap()).sum();
            assert!((sum - 1.0).abs() < 1e-4, "{file}: row sums to {sum}");
        }
        assert_eq!(e["saf_weights"].as_array().unwrap().len(), words.len());
        assert!(
            e["scores"]["SGR"].is_number() && e["scores"]["SAF"].is_number(),
            "{e}"
        );
        let is_photo = file.ends_with(".png");
        assert_eq!(e["boxes"].is_array(), is_photo, "{file}: {}", e["boxes"]);
        if is_photo {
            assert_eq!(e["boxes"].as_array().unwrap().len(), 36);
            let (status, head, body) = get(addr, &format!("/api/image?file={}", enc(file)));
            assert_eq!(status, 200, "{file}");
            assert!(head.contains("content-type: image/png"), "{head}");
            assert_eq!(body, std::fs::read(dir.join(file)).unwrap());
        }
    }
    let (status, _, _) = get(addr, "/api/image?file=sub%2Ftall.png");
    assert_eq!(status, 200);
    // An unreadable file: an error without the server's paths.
    let (status, v) = get_json(
        addr,
        &format!("/api/explain?file=broken.npy&q={}", enc(query)),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("broken.npy"), "{v}");

    // The page.
    let (status, head, body) = get(addr, "/?q=dogs");
    assert_eq!(status, 200);
    assert!(head.contains("text/html"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("/api/search"));

    // Bad requests: 4xx with {"error"}.
    let long = "a".repeat(600);
    let bad = [
        "/api/search".to_string(),
        "/api/search?q=".to_string(),
        "/api/search?q=%20%20".to_string(),
        "/api/search?q=dog&top=0".to_string(),
        "/api/search?q=dog&top=1001".to_string(),
        "/api/search?q=dog&top=abc".to_string(),
        "/api/search?q=dog&top=".to_string(),
        "/api/search?q=dog&q=cat".to_string(),
        format!("/api/search?q={long}"),
        format!("/api/search?q={}", "b".repeat(5000)),
        "/api/explain?q=dog".to_string(),
        "/api/explain?file=img0.npy".to_string(),
        "/api/explain?file=&q=dog".to_string(),
        "/api/explain?file=nope.npy&q=dog".to_string(),
        "/api/image".to_string(),
        "/api/image?file=nope.png".to_string(),
        "/api/image?file=img0.npy".to_string(),
        "/api/nothing".to_string(),
    ];
    for target in &bad {
        let (status, v) = get_json(addr, target);
        assert!((400..500).contains(&status), "{target}: {status} {v}");
        assert!(v["error"].is_string(), "{target}: {v}");
    }
    // Nothing outside the folder: traversal, absolute paths, symlinks out.
    let secret = root.join("outside/secret.png").display().to_string();
    let traversal = [
        "../outside/secret.png".to_string(),
        format!("{d}/../outside/secret.png"),
        secret.clone(),
        "/etc/passwd".to_string(),
        "evil.png".to_string(),
        format!("{d}/evil.png"),
        "%2e%2e%2foutside%2fsecret.png".to_string(),
        "..".to_string(),
        ".sgraf-regions/../../outside/secret.png".to_string(),
    ];
    for file in &traversal {
        let (status, _, body) = get(addr, &format!("/api/image?file={}", enc(file)));
        assert!((400..500).contains(&status), "{file}: {status}");
        assert!(!body.starts_with(b"\x89PNG"), "{file} was served");
        let (status, _, _) = get(addr, &format!("/api/explain?file={}&q=dog", enc(file)));
        assert!((400..500).contains(&status), "{file}: {status}");
    }
    for file in ["evil.npy", &format!("{d}/evil.npy")] {
        let (status, _, _) = get(addr, &format!("/api/explain?file={}&q=dog", enc(file)));
        assert_eq!(status, 404, "a features symlink out of the folder: {file}");
    }
    // A page of another site whose name points here (DNS rebinding).
    let (status, _, _) = request(addr, "GET", "/api/health", &[("Host", "evil.example")]);
    assert_eq!(status, 403);
    let (status, _, _) = request(addr, "GET", "/api/health", &[("Host", "localhost:1")]);
    assert_eq!(status, 200);
    // Concurrent requests, and the server is still alive after all this.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let addr = server.addr.clone();
            std::thread::spawn(move || get_json(&addr, &format!("/api/search?q=dog+{i}&top=3")).0)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert_eq!(get_json(addr, "/api/health").0, 200);
}

/// Feature files only (three of the fixture's images): a quick folder.
fn small_folder(root: &Path) -> PathBuf {
    let dir = root.join("images");
    std::fs::create_dir_all(&dir).unwrap();
    let npy = sgraf::data::Npy::open(fixtures().join("precomp/test_ims.npy")).unwrap();
    let data = npy.to_vec().unwrap();
    let per = 36 * 40;
    for i in 0..3 {
        let path = dir.join(format!("f{i}.npy"));
        sgraf::data::npy::write_f32(&path, &[36, 40], &data[i * per..(i + 1) * per]).unwrap();
    }
    dir
}

#[test]
fn serve_requires_the_token_when_one_is_set() {
    let root = scratch("token");
    let det = detector(&root);
    let dir = folder(&root);
    let d = dir.display().to_string();
    let sgr = model("sgr");
    let token = "s3cret-token-for-the-test";
    let base = ["-m", &sgr, "--images", &d, "--detector", &det];
    let mut args = base.to_vec();
    args.extend(["--token", token]);
    let server = start(&args);
    let addr = server.addr.as_str();
    server.wait_stderr("access token required");
    let good = format!("Bearer {token}");
    let api = [
        "/api/health",
        "/api/search?q=dog",
        "/api/explain?file=img0.npy&q=dog",
        "/api/image?file=wide.png",
        "/api/nothing",
    ];
    for target in api {
        for headers in [
            vec![],
            vec![("Authorization", "Bearer wrong")],
            vec![("Authorization", "Bearer s3cret-token-for-the-tes")],
            vec![("Authorization", "Basic czNjcmV0")],
            vec![("Authorization", token)],
        ] {
            let (status, head, body) = request(addr, "GET", target, &headers);
            assert_eq!(status, 401, "{target} {headers:?}");
            assert!(head.contains("www-authenticate: bearer"), "{head}");
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"].is_string(), "{v}");
        }
    }
    // With the token: 200 (and the usual 404 for an unknown page).
    let auth = [("Authorization", good.as_str())];
    for target in &api[..3] {
        let (status, v) = get_json_with(addr, target, &auth);
        assert_eq!(status, 200, "{target}: {v}");
    }
    let (status, h) = get_json_with(addr, "/api/health", &auth);
    assert_eq!((status, h["access"].as_str()), (200, Some("token")));
    let (status, _, body) = request(addr, "GET", "/api/image?file=wide.png", &auth);
    assert_eq!(status, 200);
    assert!(body.starts_with(b"\x89PNG"));
    assert_eq!(get_json_with(addr, "/api/nothing", &auth).0, 404);
    // The page itself holds no data and asks for the token.
    let (status, _, body) = get(addr, "/");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("Authorization"));
    // The session: the token checked, a cookie for <img> tags (photos only).
    let (status, _, _) = request(addr, "POST", "/api/session", &[]);
    assert_eq!(status, 401);
    let (status, head, _) = request(addr, "POST", "/api/session", &auth);
    assert_eq!(status, 200);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("httponly") && cookie.contains("samesite=strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(token));
    // (Header names were lowercased; the value is hex.)
    let pair = cookie.split(';').next().unwrap().to_string();
    let with_cookie = [("Cookie", pair.as_str())];
    let (status, _, body) = request(addr, "GET", "/api/image?file=wide.png", &with_cookie);
    assert_eq!(status, 200);
    assert!(body.starts_with(b"\x89PNG"));
    assert_eq!(
        request(addr, "GET", "/api/search?q=dog", &with_cookie).0,
        401
    );
    let (status, _, _) = request(
        addr,
        "GET",
        "/api/image?file=wide.png",
        &[("Cookie", "sgraf_session_1=00ff")],
    );
    assert_eq!(status, 401);
    // A token also lifts the Host check (the name may be anything).
    let (status, _, _) = request(
        addr,
        "GET",
        "/api/health",
        &[("Host", "photos.example"), auth[0]],
    );
    assert_eq!(status, 200);
    drop(server);

    // The same from SGRAF_TOKEN.
    let server = start_env(&base, &[("SGRAF_TOKEN", "from-the-environment")]);
    let addr = server.addr.as_str();
    assert_eq!(get(addr, "/api/health").0, 401);
    assert_eq!(
        request(addr, "GET", "/api/health", &[("Authorization", &good)]).0,
        401
    );
    let (status, _) = get_json_with(
        addr,
        "/api/health",
        &[("Authorization", "Bearer from-the-environment")],
    );
    assert_eq!(status, 200);
}

#[test]
fn serve_refuses_a_network_address_without_a_token_or_public() {
    let root = scratch("refuse");
    let dir = small_folder(&root);
    let d = dir.display().to_string();
    let sgr = model("sgr");
    for (args, env, want) in [
        (
            vec!["--host", "0.0.0.0"],
            vec![],
            "refusing to serve on 0.0.0.0",
        ),
        (
            vec!["--host", "0.0.0.0"],
            vec![("SGRAF_TOKEN", "")],
            "refusing",
        ),
        (vec!["--host", "::"], vec![], "refusing"),
        (
            vec!["--host", "0.0.0.0", "--token", ""],
            vec![],
            "token is empty",
        ),
    ] {
        let mut all = vec!["-m", &sgr, "--images", &d, "--port", "0"];
        all.extend(&args);
        let mut child = serve_command(&all, &env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // It must exit at once, never serving.
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("{args:?}: serve did not refuse");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        let mut err = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success(), "{args:?}");
        assert!(!out.contains("http://"), "{args:?} served: {out}");
        assert!(err.contains(want), "{args:?}: {err}");
        if want.starts_with("refusing") {
            assert!(
                err.contains("--token") && err.contains("SGRAF_TOKEN") && err.contains("--public"),
                "{err}"
            );
        }
    }
}

#[test]
fn serve_public_says_what_it_exposes() {
    let root = scratch("public");
    let dir = small_folder(&root);
    let d = dir.display().to_string();
    let sgr = model("sgr");
    // On 127.0.0.1 here (tests serve nothing to the network); --public
    // prints the same notice on any address, and drops the Host check.
    let server = start(&["-m", &sgr, "--images", &d, "--public"]);
    let addr = server.addr.as_str();
    let err = server.wait_stderr("--public");
    let line = err.lines().find(|l| l.contains("--public")).unwrap();
    assert!(line.contains("no access token"), "{line}");
    assert!(line.contains(&format!("http://{addr}/")), "{line}");
    assert!(line.contains("3 images") && line.contains(&d), "{line}");
    let (status, h) = get_json(addr, "/api/health");
    assert_eq!((status, h["access"].as_str()), (200, Some("public")));
    let (status, _, _) = request(addr, "GET", "/api/health", &[("Host", "photos.example")]);
    assert_eq!(status, 200);
}

#[test]
fn serve_sees_new_changed_and_removed_files() {
    let root = scratch("rescan");
    let dir = small_folder(&root);
    let d = dir.display().to_string();
    let sgr = model("sgr");
    let server = start(&["-m", &sgr, "--images", &d, "--rescan", "1"]);
    let addr = server.addr.as_str();
    let h = wait_scans(addr, 1, &[]);
    assert_eq!(h["images"], 3);
    assert_eq!(h["indexing"]["rescan_secs"], 1);
    let mut want = vec!["f0.npy", "f1.npy", "f2.npy"];
    let mut got = files(addr);
    got.sort();
    assert_eq!(got, want);

    // A new file (a copy of a fixture, in a new sub-folder): listed once
    // indexed, with f0's score.
    std::fs::create_dir_all(dir.join("later")).unwrap();
    std::fs::copy(dir.join("f0.npy"), dir.join("later/new.npy")).unwrap();
    let hits = poll("the new file in the results", || {
        let (_, v) = get_json(addr, "/api/search?q=dog&top=1000");
        let hits = v.as_array().unwrap().clone();
        hits.iter()
            .any(|h| h["file"] == "later/new.npy")
            .then_some(hits)
    });
    let score = |f: &str| {
        hits.iter().find(|h| h["file"] == f).unwrap()["score"]
            .as_f64()
            .unwrap()
    };
    assert!((score("later/new.npy") - score("f0.npy")).abs() < 1e-6);
    want.push("later/new.npy");
    let h = wait_scans(addr, 1, &[]);
    assert_eq!(h["images"], 4, "{h}");
    assert!(h["indexing"]["error"].is_null(), "{h}");

    // A removed file leaves the results.
    std::fs::remove_file(dir.join("f1.npy")).unwrap();
    poll("the removed file to leave the results", || {
        (!files(addr).contains(&"f1.npy".to_string())).then_some(())
    });
    // A changed file (f2 now holds f0's features) is scored anew.
    let npy = sgraf::data::Npy::open(fixtures().join("precomp/test_ims.npy")).unwrap();
    let data = npy.to_vec().unwrap();
    let tmp = root.join("f2.npy");
    sgraf::data::npy::write_f32(&tmp, &[36, 40], &data[..36 * 40]).unwrap();
    std::fs::rename(&tmp, dir.join("f2.npy")).unwrap();
    poll("the changed file's new score", || {
        let (_, v) = get_json(addr, "/api/search?q=dog&top=1000");
        let hits = v.as_array().unwrap();
        let s = |f: &str| {
            hits.iter()
                .find(|h| h["file"] == f)
                .map(|h| h["score"].as_f64().unwrap())
        };
        (s("f2.npy")? - s("f0.npy")?).abs().lt(&1e-6).then_some(())
    });
    let mut got = files(addr);
    got.sort();
    assert_eq!(got, ["f0.npy", "f2.npy", "later/new.npy"]);
    // Searches answered all along; the server is still alive.
    assert_eq!(get_json(addr, "/api/health").0, 200);
}

#[test]
fn explain_prints_words_and_draws_the_regions() {
    let root = scratch("explain");
    let det = detector(&root);
    let dir = folder(&root);
    let (sgr, saf) = (model("sgr"), model("saf"));
    let photo = dir.join("wide.png").display().to_string();
    let out = root.join("overlay.png");
    let query = "a dog in the snow";
    let json = cli(&[
        "explain",
        "-m",
        &sgr,
        "-m",
        &saf,
        "--image",
        &photo,
        "--detector",
        &det,
        "--query",
        query,
        "--json",
        "--out",
        &out.display().to_string(),
        "--panels",
        "4",
    ]);
    let e: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(e["boxes"].as_array().unwrap().len(), 36);
    assert_eq!(
        e["words"].as_array().unwrap().len(),
        e["attention"].as_array().unwrap().len()
    );
    // Its score is rank's for the photo.
    let ranked: Value = serde_json::from_str(&cli(&[
        "rank",
        "-m",
        &sgr,
        "-m",
        &saf,
        "--images",
        &dir.display().to_string(),
        "--detector",
        &det,
        "--query",
        query,
        "--json",
    ]))
    .unwrap();
    let want = ranked
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["file"] == photo.as_str())
        .unwrap()["score"]
        .as_f64()
        .unwrap();
    assert!((e["score"].as_f64().unwrap() - want).abs() < 1e-5);

    // 4 panels of the photo (3 columns, 2 rows, 4 px gaps), boxes drawn red.
    let img = image::open(&out).unwrap().to_rgb8();
    let (w, h) = image::image_dimensions(dir.join("wide.png")).unwrap();
    assert_eq!(img.dimensions(), (3 * w + 2 * 4, 2 * h + 4));
    let panel_has_red = |px: u32, py: u32| {
        (py..py + h).any(|y| (px..px + w).any(|x| img.get_pixel(x, y).0 == [255, 0, 0]))
    };
    for (px, py) in [(0, 0), (w + 4, 0), (2 * (w + 4), 0), (0, h + 4)] {
        assert!(
            panel_has_red(px, py),
            "no strongest-region outline in the panel at {px},{py}"
        );
    }
    // The empty 6th slot stays white.
    assert_eq!(
        img.get_pixel(2 * (w + 4) + w / 2, h + 4 + h / 2).0,
        [255, 255, 255]
    );

    // Text output: one line per word with its regions.
    let text = cli(&[
        "explain",
        "-m",
        &sgr,
        "--image",
        &dir.join("img1.npy").display().to_string(),
        "--query",
        query,
    ]);
    assert!(text.contains("score"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("dog") && l.contains("region")),
        "{text}"
    );
    // A feature file without NAME.json cannot be drawn.
    let err = Command::new(env!("CARGO_BIN_EXE_sgraf-cli"))
        .args([
            "explain",
            "-m",
            &sgr,
            "--image",
            &dir.join("img1.npy").display().to_string(),
        ])
        .args([
            "--query",
            query,
            "--out",
            &root.join("x.png").display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("boxes"));
}

/// An RCAR "ALL" ensemble (t2i + i2t, folders from the converter) served
/// over a folder indexed first: search equals `rank --json` through the
/// index, explain scores as rank and answers with RCAR's attention.
#[test]
fn serve_runs_an_rcar_ensemble_over_an_indexed_folder() {
    let root = scratch("rcar");
    let [t2i, i2t] = rcar_models(&root);
    let dir = small_folder(&root);
    let d = dir.display().to_string();
    cli(&["index", "-m", &t2i, "-m", &i2t, "--images", &d]);
    let query = "a woman holding an umbrella";
    let base = ["-m", &t2i, "-m", &i2t, "--images", &d];
    let server = start(&base);
    let addr = server.addr.as_str();
    let (status, health) = get_json(addr, "/api/health");
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        health["models"],
        serde_json::json!([
            {"module": "RCAR t2i", "model": "rcar_t2i"},
            {"module": "RCAR i2t", "model": "rcar_i2t"}
        ])
    );
    let want: Value =
        serde_json::from_str(&cli(&["rank", "--images", &d, "--query", query, "--json"])).unwrap();
    let want = want.as_array().unwrap();
    let (status, got) = get_json(addr, &format!("/api/search?q={}&top=1000", enc(query)));
    assert_eq!(status, 200, "{got}");
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), want.len());
    assert!(!got.is_empty());
    for (g, w) in got.iter().zip(want) {
        let relative = w["file"].as_str().unwrap().strip_prefix(&format!("{d}/"));
        assert_eq!(g["file"].as_str(), relative, "{g} vs {w}");
        assert_eq!(g["score"], w["score"], "{g} vs {w}");
    }
    let best = got[0]["file"].as_str().unwrap();
    let (status, e) = get_json(
        addr,
        &format!("/api/explain?file={}&q={}", enc(best), enc(query)),
    );
    assert_eq!(status, 200, "{e}");
    assert!((e["score"].as_f64().unwrap() - got[0]["score"].as_f64().unwrap()).abs() < 1e-5);
    assert_eq!(
        e["words"].as_array().unwrap().len(),
        e["attention"].as_array().unwrap().len()
    );
    drop(server);
    std::fs::remove_dir_all(&root).unwrap();
}
