//! `sgraf-cli serve`: a folder's images searched from the browser. The
//! models are loaded once and the folder's listing kept current by a
//! background rescan ([`library`]); a query costs only its scoring, which
//! runs on the blocking pool (rayon inside), so concurrent requests are
//! served. JSON API: `/api/health`, `/api/search`, `/api/explain`,
//! `/api/image`, `/api/session`; the page at `/` is embedded in the binary.
//!
//! Answers name files relative to the folder and models by their name or
//! Hub id, never by a server path (error messages included, see
//! [`redact`]). Who may ask is [`access`]'s rule: a token, loopback only,
//! or `--public`.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Result;
use axum::extract::{DefaultBodyLimit, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sgraf::{Folder, Ui};

pub mod access;
pub mod library;
pub mod redact;

pub use access::{Access, Mode, TOKEN_ENV};
use library::{Listing, Progress};
use redact::Redactor;

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
/// Seconds between rescans of the folder by default.
pub const DEFAULT_RESCAN_SECS: u64 = 5;

const PAGE: &str = include_str!("../static/index.html");

/// What `sgraf-cli serve` takes: the flags below (the command line
/// flattens them), and the models, device and detector, which the command
/// line shares with the other commands.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Folder of region-feature files and/or photos (as for rank).
    #[arg(long)]
    pub images: PathBuf,
    /// Skip files or folders matching this glob; repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Address to listen on; the default serves this machine only. Any
    /// other (e.g. 0.0.0.0) needs an access token (--token or SGRAF_TOKEN)
    /// or --public.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the URL printed says which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Access token every API request must carry (Authorization: Bearer
    /// TOKEN; the page asks for it once). Default: $SGRAF_TOKEN, which,
    /// unlike this flag, other users of the machine cannot read in the
    /// process list. A token applies on any address, loopback included.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Serve without a token on a non-loopback address: anyone who can
    /// reach it can search the folder and view its photos (what is exposed
    /// is printed on start).
    #[arg(long)]
    pub public: bool,
    /// Seconds between rescans of the folder for new, changed and removed
    /// files, which are encoded into the folder's index in the background
    /// (0: only once, at start).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_RESCAN_SECS)]
    pub rescan: u64,
    /// Model folders or Hub ids; empty: $SGRAF_MODEL, else the index's models.
    #[arg(skip)]
    pub models: Vec<String>,
    /// cpu, cuda, cuda:N or metal.
    #[arg(skip = String::from("cpu"))]
    pub device: String,
    /// The detector for photos (default: the models').
    #[arg(skip)]
    pub detector: Option<String>,
}

impl Options {
    /// The access token: `--token`, else a non-empty $SGRAF_TOKEN.
    pub fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            std::env::var(TOKEN_ENV)
                .ok()
                .filter(|t| !t.trim().is_empty())
        })
    }
}

/// How a model is named in answers: a folder by its name, a Hub id as is.
pub fn model_label(spec: &str) -> String {
    let path = Path::new(spec);
    if path.is_dir() {
        let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        real.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".to_string())
    } else {
        spec.to_string()
    }
}

/// The loaded folder every request reads, and its current listing.
pub struct App {
    /// The models, the folder and the listing at start.
    pub folder: Folder,
    root: PathBuf,
    listing: RwLock<Arc<Listing>>,
    progress: Mutex<Progress>,
    pub access: Access,
    redact: Redactor,
    /// The models as /api/health lists them.
    models: Vec<Value>,
    exclude: Vec<String>,
    detector: Option<String>,
    rescan_secs: u64,
    port: u16,
    stop: AtomicBool,
}

impl App {
    pub fn new(folder: Folder, opts: &Options, access: Access, port: u16) -> Result<Self> {
        let root = folder.dir.canonicalize()?;
        let mut redact = Redactor::new(&folder.dir);
        let loaded = &folder.loaded;
        let labels: Vec<String> = loaded.specs.iter().map(|s| model_label(s)).collect();
        for (dir, label) in loaded.folders.iter().zip(&labels) {
            redact.add(dir, label);
        }
        for spec in &loaded.specs {
            if Path::new(spec).is_dir() {
                redact.add(Path::new(spec), &model_label(spec));
            }
        }
        let models = loaded
            .configs()
            .into_iter()
            .zip(&labels)
            .map(|(cfg, label)| json!({"module": cfg.name(), "model": label}))
            .collect();
        let listing = Listing::new(folder.names.clone());
        Ok(Self {
            folder,
            root,
            listing: RwLock::new(Arc::new(listing)),
            progress: Mutex::new(Progress::default()),
            access,
            redact,
            models,
            exclude: opts.exclude.clone(),
            detector: opts.detector.clone(),
            rescan_secs: opts.rescan,
            port,
            stop: AtomicBool::new(false),
        })
    }

    /// The current listing (a snapshot: a rescan replaces, never edits it).
    pub fn listing(&self) -> Arc<Listing> {
        self.listing.read().unwrap().clone()
    }

    fn publish(&self, listing: Listing) {
        *self.listing.write().unwrap() = Arc::new(listing);
    }

    /// The background rescan's state.
    pub fn progress(&self) -> Progress {
        self.progress.lock().unwrap().clone()
    }

    /// Starts the background rescan (every `--rescan` seconds; once at
    /// start when 0) on its own thread.
    pub fn watch(self: &Arc<Self>) -> std::io::Result<()> {
        let app = self.clone();
        let every = Duration::from_secs(self.rescan_secs);
        std::thread::Builder::new()
            .name("sgraf-rescan".into())
            .spawn(move || library::watch(app, every))
            .map(|_| ())
    }

    /// Asks the background rescan to stop (at its next step).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A listed file's path, only when it really lies inside the folder
    /// (a symlink pointing elsewhere is refused).
    fn inside(&self, rel: &Path) -> Option<PathBuf> {
        let real = self.folder.dir.join(rel).canonicalize().ok()?;
        real.starts_with(&self.root).then_some(real)
    }

    /// The photo behind a feature file, when it is a photo's cached features.
    fn photo<'a>(&self, name: &'a str) -> Option<&'a str> {
        sgraf::photo_of(name)
    }

    /// A library error as a client may see it: without server paths.
    fn clean(&self, msg: impl std::fmt::Display) -> String {
        self.redact.clean(&msg.to_string())
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
    app: &Arc<App>,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            app.clean(format!("the request failed: {e}")),
        )
    })?
}

async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let progress = app.progress();
    Json(json!({
        "status": "ok",
        "images": app.listing().names.len(),
        "models": app.models,
        "indexing": progress.to_json(app.rescan_secs),
        "access": match app.access.mode {
            Mode::Token => "token",
            Mode::Loopback => "loopback",
            Mode::Public => "public",
        },
    }))
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
    let a = app.clone();
    let rows = blocking(&app, move || {
        let listing = a.listing();
        let (ranked, _) = a
            .folder
            .rank_among(&listing.names, &q, None, &mut |_| {})
            .map_err(|e| bad(a.clean(e)))?;
        // Best first, equal scores by name: as `rank` orders them.
        Ok(ranked
            .into_iter()
            .take(top)
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "rank": i + 1,
                    "score": r.score,
                    "file": library::shown(&r.name),
                    "photo": a.photo(&r.name).is_some(),
                })
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
    let missing = || not_found(format!("no image {file:?} in the folder"));
    let listing = app.listing();
    let name = listing.resolve(&file).ok_or_else(missing)?.to_string();
    let path = app.inside(Path::new(&name)).ok_or_else(missing)?;
    // A photo's cached features only while the photo itself lies inside.
    if let Some(photo) = app.photo(&name) {
        if app.inside(Path::new(photo)).is_none() {
            return Err(missing());
        }
    }
    let a = app.clone();
    let v = blocking(&app, move || {
        let shown = library::shown(&name).to_string();
        let (_, feats) =
            sgraf::load_features(&path).map_err(|e| bad(format!("{shown}: {}", a.clean(e))))?;
        let mut e = a
            .folder
            .loaded
            .explain(&feats, &q)
            .map_err(|e| bad(a.clean(e)))?
            .with_boxes_of(&path);
        e.file = shown;
        let mut v = e.to_json();
        v["photo"] = json!(a.photo(&name).is_some());
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
    let listing = app.listing();
    let name = listing.resolve(&file).ok_or_else(missing)?;
    let photo = app.photo(name).ok_or_else(|| {
        not_found(format!(
            "{file:?} is a region-feature file: there is no photo to show"
        ))
    })?;
    let path = app.inside(Path::new(photo)).ok_or_else(missing)?;
    let ctype = content_type(&path);
    let bytes = blocking(&app, move || {
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

/// `POST /api/session` (with the token, as every API request): sets the
/// cookie that lets the page's `<img>` tags load photos.
async fn session(State(app): State<Arc<App>>) -> Response {
    let body = Json(json!({"token": app.access.needs_token()}));
    match app.access.session_cookie(app.port) {
        Some(cookie) => ([(header::SET_COOKIE, cookie)], body).into_response(),
        None => body.into_response(),
    }
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn fallback() -> ApiError {
    not_found("no such page")
}

fn unauthorized(msg: &str) -> Response {
    let mut r = ApiError(StatusCode::UNAUTHORIZED, msg.to_string()).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sgraf\""),
    );
    r
}

/// The access rule, and headers every answer carries.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if !app.access.host_ok(headers) {
        return ApiError(
            StatusCode::FORBIDDEN,
            "this server answers requests for 127.0.0.1 or localhost only (the Host header names \
             another site); use --token to serve under another name"
                .into(),
        )
        .into_response();
    }
    let path = req.uri().path();
    if path.starts_with("/api/") && app.access.needs_token() {
        let ok = app.access.bearer_ok(headers)
            || (path == "/api/image" && app.access.cookie_ok(headers));
        if !ok {
            let sent = headers.contains_key(header::AUTHORIZATION);
            return unauthorized(if sent {
                "wrong access token"
            } else {
                "this server needs an access token: send Authorization: Bearer TOKEN"
            });
        }
    }
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The routes over a loaded folder.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/health", get(health))
        .route("/api/search", get(search))
        .route("/api/explain", get(explain))
        .route("/api/image", get(image))
        .route("/api/session", post(session))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(1024))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
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

/// The addresses `host:port` names.
pub fn addresses(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot listen on {host}:{port}: {e}"))?
        .collect();
    if addrs.is_empty() {
        anyhow::bail!("cannot listen on {host}:{port}: the name has no address");
    }
    Ok(addrs)
}

/// Decides who may ask (refusing a non-loopback address without a token
/// or --public before anything is loaded), loads the folder, binds
/// `host:port` (port 0: any free port), calls `ready` with the bound
/// address, rescans the folder in the background, and serves until Ctrl-C
/// or SIGTERM.
pub fn run(opts: &Options, ui: &dyn Ui, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let addrs = addresses(&opts.host, opts.port)?;
    let token = opts.token();
    let access = Access::decide(&addrs, token.as_deref(), opts.public, &opts.host)
        .map_err(anyhow::Error::msg)?;
    if opts.public && access.mode == Mode::Token {
        ui.note("note: --public has no effect: an access token is set, and requests need it");
    }
    let device = sgraf::parse_device(&opts.device)?;
    let models = sgraf::Sgraf::for_folder(&opts.images, &opts.models, &device)?;
    let listing = sgraf::FolderOptions {
        exclude: opts.exclude.clone(),
        detector: opts.detector.clone(),
    };
    let folder = Folder::open(&opts.images, models, &listing, ui)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addrs.as_slice())
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", opts.host, opts.port))?;
        let addr = listener.local_addr()?;
        let n = folder.names.len();
        let app = Arc::new(App::new(folder, opts, access, addr.port())?);
        match app.access.mode {
            Mode::Public => ui.note(&format!(
                "warning: --public: no access token. Anyone who can reach http://{addr}/ can \
                 search the {n} images of {} (and those added later), view its photos, and read \
                 the files' names (relative to the folder), their scores and explanations, and \
                 the models' names",
                opts.images.display()
            )),
            Mode::Token => ui.note(
                "access token required: the page asks for it once; API clients send \
                 Authorization: Bearer TOKEN",
            ),
            Mode::Loopback => {}
        }
        app.watch()?;
        ready(addr);
        let result = serve(listener, app.clone(), shutdown_signal()).await;
        app.stop();
        result
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
