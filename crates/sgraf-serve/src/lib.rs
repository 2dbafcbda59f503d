//! `sgraf-cli serve`: a folder's images searched from the browser. The
//! models and the folder's listing are loaded once; a query costs only its
//! scoring, which runs on the blocking pool (rayon inside), so concurrent
//! requests are served. JSON API: `/api/health`, `/api/search`,
//! `/api/explain`, `/api/image`; the page at `/` is embedded in the binary.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sgraf::{Folder, Ui};

/// The longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 500;
/// The most results one search returns.
pub const MAX_TOP: usize = 1000;
/// Results when `top` is not given.
pub const DEFAULT_TOP: usize = 50;
/// The longest URL query string accepted, in bytes.
pub const MAX_QUERY_STRING: usize = 4096;
/// The largest photo served, in bytes.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

const PAGE: &str = include_str!("../static/index.html");

/// What `sgraf-cli serve` takes.
#[derive(Clone, Debug)]
pub struct Options {
    pub images: PathBuf,
    /// Model folders or Hub ids; empty: $SGRAF_MODEL, else the index's models.
    pub models: Vec<String>,
    pub device: String,
    pub exclude: Vec<String>,
    pub detector: Option<String>,
    pub host: String,
    pub port: u16,
}

/// The loaded folder every request reads.
pub struct App {
    pub folder: Folder,
    root: PathBuf,
}

impl App {
    pub fn new(folder: Folder) -> Result<Self> {
        let root = folder.dir.canonicalize()?;
        Ok(Self { folder, root })
    }

    /// A listed file's path, only when it really lies inside the folder
    /// (a symlink pointing elsewhere is refused).
    fn inside(&self, rel: &Path) -> Option<PathBuf> {
        let real = self.folder.dir.join(rel).canonicalize().ok()?;
        real.starts_with(&self.root).then_some(real)
    }
}

/// An API error: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

/// The query string's parameters; a repeated one is refused.
fn params(raw: Option<String>) -> Result<HashMap<String, String>, ApiError> {
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_QUERY_STRING {
        return Err(ApiError(
            StatusCode::URI_TOO_LONG,
            format!("the query string is longer than {MAX_QUERY_STRING} bytes"),
        ));
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(&raw).map_err(|e| bad(format!("bad query string: {e}")))?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(bad(format!("parameter {k:?} is given twice")));
        }
    }
    Ok(out)
}

fn required<'a>(p: &'a HashMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    match p.get(name).map(|s| s.trim()) {
        None => Err(bad(format!("missing parameter {name:?}"))),
        Some("") => Err(bad(format!("parameter {name:?} is empty"))),
        Some(_) => Ok(p[name].as_str()),
    }
}

fn query_param(p: &HashMap<String, String>) -> Result<String, ApiError> {
    let q = required(p, "q")?;
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(bad(format!(
            "the query is longer than {MAX_QUERY_CHARS} characters"
        )));
    }
    Ok(q.to_string())
}

/// Runs `f` on the blocking pool; its error is a 400 unless `f` says otherwise.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request failed: {e}"),
        )
    })?
}

async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let models: Vec<Value> = app
        .folder
        .loaded
        .scorer
        .models()
        .iter()
        .zip(&app.folder.loaded.specs)
        .map(|(m, spec)| json!({"module": m.config().module.to_string(), "model": spec}))
        .collect();
    Json(json!({"status": "ok", "images": app.folder.names.len(), "models": models}))
}

async fn search(
    State(app): State<Arc<App>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let p = params(raw)?;
    let q = query_param(&p)?;
    let top = match p.get("top").map(|s| s.trim()) {
        None => DEFAULT_TOP,
        Some(t) => match t.parse::<usize>() {
            Ok(k) if (1..=MAX_TOP).contains(&k) => k,
            _ => {
                return Err(bad(format!(
                    "top must be a number from 1 to {MAX_TOP}, found {t:?}"
                )))
            }
        },
    };
    let rows = blocking(move || {
        let (hits, _) = app
            .folder
            .rank(&q, None, &mut |_| {})
            .map_err(|e| bad(format!("{e:#}")))?;
        let photos = |name: &str| app.folder.photo(name).is_some();
        Ok(hits
            .into_iter()
            .take(top)
            .enumerate()
            .map(|(i, h)| {
                json!({"rank": i + 1, "score": h.score, "file": h.file, "photo": photos(&h.name)})
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(Value::Array(rows)))
}

async fn explain(
    State(app): State<Arc<App>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let p = params(raw)?;
    let file = required(&p, "file")?.to_string();
    let q = query_param(&p)?;
    let name = app
        .folder
        .resolve(&file)
        .ok_or_else(|| not_found(format!("no image {file:?} in the folder")))?
        .to_string();
    let path = app
        .inside(Path::new(&name))
        .ok_or_else(|| not_found(format!("no image {file:?} in the folder")))?;
    // A photo's cached features only while the photo itself lies inside.
    if let Some(photo) = app.folder.photo(&name) {
        let rel = photo.strip_prefix(&app.folder.dir).unwrap_or(&photo);
        if app.inside(rel).is_none() {
            return Err(not_found(format!("no image {file:?} in the folder")));
        }
    }
    let v = blocking(move || {
        let (_, feats) =
            sgraf_data::load_features(&path).map_err(|e| bad(format!("{file}: {e}")))?;
        let mut e = sgraf::explain(&app.folder.loaded.scorer, feats, &q)
            .map_err(|e| bad(format!("{e:#}")))?
            .with_boxes_of(&path);
        e.file = sgraf::display_name(&app.folder.dir, &name);
        let mut v = e.to_json();
        v["photo"] = json!(app.folder.photo(&name).is_some());
        Ok(v)
    })
    .await?;
    Ok(Json(v))
}

fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("bmp") => "image/bmp",
        Some("tif" | "tiff") => "image/tiff",
        _ => "application/octet-stream",
    }
}

async fn image(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let p = params(raw)?;
    let file = required(&p, "file")?.to_string();
    let missing = || not_found(format!("no photo {file:?} in the folder"));
    let name = app.folder.resolve(&file).ok_or_else(missing)?;
    let photo = app.folder.photo(name).ok_or_else(|| {
        not_found(format!(
            "{file:?} is a region-feature file: there is no photo to show"
        ))
    })?;
    let rel = photo.strip_prefix(&app.folder.dir).map_err(|_| missing())?;
    let path = app.inside(rel).ok_or_else(missing)?;
    let ctype = content_type(&path);
    let bytes = blocking(move || {
        let meta = std::fs::metadata(&path).map_err(|_| not_found("the photo is gone"))?;
        if meta.len() > MAX_IMAGE_BYTES {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the photo is too large to serve".into(),
            ));
        }
        std::fs::read(&path).map_err(|_| not_found("the photo is gone"))
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        bytes,
    )
        .into_response())
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn fallback() -> ApiError {
    not_found("no such page")
}

/// The routes over a loaded folder.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/health", get(health))
        .route("/api/search", get(search))
        .route("/api/explain", get(explain))
        .route("/api/image", get(image))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(1024))
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Loads the folder, binds `host:port` (port 0: any free port), calls
/// `ready` with the bound address, and serves until Ctrl-C or SIGTERM.
pub fn run(opts: &Options, ui: &dyn Ui, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let folder = Folder::open(
        &opts.images,
        &opts.models,
        &opts.device,
        &opts.exclude,
        opts.detector.as_deref(),
        ui,
    )?;
    let app = Arc::new(App::new(folder)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", opts.host, opts.port))?;
        ready(listener.local_addr()?);
        serve(listener, app, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
