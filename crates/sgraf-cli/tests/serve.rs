//! `sgraf-cli serve` against a running server on 127.0.0.1 (port 0), and
//! `sgraf-cli explain`: the API's search equals `rank --json`, explanations
//! score as `rank` scores with attention rows that sum to 1, bad requests get
//! 4xx, nothing outside the folder is reachable, and `explain --out` draws.

mod common;

use common::{detector, fixtures, scratch};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
    let npy = sgraf_data::Npy::open(fixtures().join("precomp/test_ims.npy")).unwrap();
    let data = npy.to_vec().unwrap();
    let per = 36 * 40;
    for i in 0..5 {
        let path = dir.join(format!("img{i}.npy"));
        sgraf_data::npy::write_f32(&path, &[36, 40], &data[i * per..(i + 1) * per]).unwrap();
    }
    let src = fixtures().join("vision/images");
    std::fs::copy(src.join("wide.png"), dir.join("wide.png")).unwrap();
    std::fs::copy(src.join("tall.png"), dir.join("sub/tall.png")).unwrap();
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(src.join("wide.png"), outside.join("secret.png")).unwrap();
    sgraf_data::npy::write_f32(&outside.join("secret.npy"), &[36, 40], &data[..per]).unwrap();
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sgraf-cli"))
        .arg("serve")
        .args(args)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
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
    Server { child, addr }
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

/// A raw HTTP/1.1 GET: status, headers (lowercase), body.
fn get(addr: &str, target: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
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

fn get_json(addr: &str, target: &str) -> (u16, Value) {
    let (status, _, body) = get(addr, target);
    let v = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{target}: not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, v)
}

#[test]
fn serve_api_matches_rank_and_refuses_bad_requests() {
    let root = scratch("api");
    let det = detector(&root);
    let dir = folder(&root);
    let d = dir.display().to_string();
    let (sgr, saf) = (model("sgr"), model("saf"));
    let query = "Two dogs playing in the snow.";
    let base = ["-m", &sgr, "-m", &saf, "--images", &d, "--detector", &det];
    let server = start(&base);
    let addr = server.addr.as_str();

    let (status, health) = get_json(addr, "/api/health");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");

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
        assert_eq!(g["file"], w["file"]);
        assert_eq!(g["score"], w["score"], "{g} vs {w}");
    }
    let (_, all) = get_json(addr, &format!("/api/search?q={}&top=1000", enc(query)));
    let all = all.as_array().unwrap();
    // 5 features, 2 photos, and the two symlinks (as rank lists them).
    assert!(all.len() >= 7, "{all:?}");

    // Explain: rows sum to 1, score equals rank's, boxes for photos.
    for hit in all {
        let file = hit["file"].as_str().unwrap();
        if file.contains("evil") {
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
            assert_eq!(body, std::fs::read(file).unwrap());
        }
    }
    // The relative name works too.
    let (status, _, _) = get(addr, "/api/image?file=sub%2Ftall.png");
    assert_eq!(status, 200);

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
        let (status, _) = get_json(addr, &format!("/api/explain?file={}&q=dog", enc(file)));
        assert!((400..500).contains(&status), "{file}: {status}");
    }
    let (status, _) = get_json(
        addr,
        &format!("/api/explain?file={}&q=dog", enc(&format!("{d}/evil.npy"))),
    );
    assert_eq!(status, 404, "a features symlink out of the folder");
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
