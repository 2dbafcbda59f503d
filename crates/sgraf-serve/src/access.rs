//! Who may ask: an access token (`--token` or `SGRAF_TOKEN`), required on
//! every API request when set; without one, loopback addresses only (and
//! only under a loopback or IP `Host`, against DNS rebinding), unless
//! `--public` says otherwise.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

/// The environment variable that holds the access token.
pub const TOKEN_ENV: &str = "SGRAF_TOKEN";
/// The cookie `POST /api/session` sets for `<img>` requests: its name
/// begins with this, and its value is derived from the token.
pub const SESSION_COOKIE: &str = "sgraf_session";

/// How requests are let in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every API request carries the token.
    Token,
    /// A loopback address without a token: only requests naming this
    /// machine in `Host` (a DNS-rebinding page is refused).
    Loopback,
    /// Anyone who can reach the address (`--public`).
    Public,
}

/// The access rule of a running server.
#[derive(Clone)]
pub struct Access {
    pub mode: Mode,
    token: Option<[u8; 32]>,
    session: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token, nor what is derived from it.
        f.debug_struct("Access").field("mode", &self.mode).finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `a == b` in a time that does not depend on where they differ (nor, as
/// both are digests, on their lengths).
pub fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Whether every address is a loopback one (127.0.0.0/8, ::1, or
/// ::ffff:127.x.y.z); 0.0.0.0 and :: are not.
pub fn all_loopback(addrs: &[SocketAddr]) -> bool {
    !addrs.is_empty() && addrs.iter().all(|a| a.ip().to_canonical().is_loopback())
}

impl Access {
    /// The rule for serving on `addrs` with `token` (the flag's, else the
    /// environment's) and `--public`; an error (the message to print) when
    /// a non-loopback address is asked for without either.
    pub fn decide(
        addrs: &[SocketAddr],
        token: Option<&str>,
        public: bool,
        host: &str,
    ) -> Result<Self, String> {
        if let Some(t) = token {
            if t.trim().is_empty() {
                return Err(format!(
                    "the access token is empty: pass --token TOKEN or set {TOKEN_ENV} to a long random string"
                ));
            }
            let d = digest(t.as_bytes());
            let mut s = Sha256::new();
            s.update(b"sgraf-serve session cookie\0");
            s.update(d);
            let session = s.finalize().iter().map(|b| format!("{b:02x}")).collect();
            return Ok(Self {
                mode: Mode::Token,
                token: Some(d),
                session: Some(session),
            });
        }
        let mode = if public {
            Mode::Public
        } else if all_loopback(addrs) {
            Mode::Loopback
        } else {
            return Err(format!(
                "refusing to serve on {host} ({}) without an access token: it is not a loopback \
                 address, so anyone who can reach this machine could search the folder and view \
                 its photos. Set {TOKEN_ENV}=TOKEN (or pass --token TOKEN) to require a token, or \
                 pass --public to serve it to everyone anyway; --host 127.0.0.1 (the default) \
                 serves this machine only",
                addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        Ok(Self {
            mode,
            token: None,
            session: None,
        })
    }

    /// Whether a token is required.
    pub fn needs_token(&self) -> bool {
        self.token.is_some()
    }

    /// The `Set-Cookie` value that lets `<img>` tags of the page through.
    pub fn session_cookie(&self, port: u16) -> Option<String> {
        self.session.as_ref().map(|s| {
            format!("{SESSION_COOKIE}_{port}={s}; Path=/api/image; HttpOnly; SameSite=Strict")
        })
    }

    /// Whether `Authorization: Bearer TOKEN` carries the token.
    pub fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let mut ok = false;
        for v in headers.get_all(header::AUTHORIZATION) {
            let Ok(v) = v.to_str() else { continue };
            let v = v.trim();
            let Some(given) = v
                .get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| v[7..].trim())
            else {
                continue;
            };
            ok |= same(want, &digest(given.as_bytes()));
        }
        ok
    }

    /// Whether a session cookie (from [`Access::session_cookie`]) is sent.
    pub fn cookie_ok(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.session else {
            return true;
        };
        let want = digest(want.as_bytes());
        let mut ok = false;
        for v in headers.get_all(header::COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            for pair in v.split(';') {
                if let Some((name, value)) = pair.trim().split_once('=') {
                    if name.starts_with(SESSION_COOKIE) {
                        ok |= same(&want, &digest(value.trim().as_bytes()));
                    }
                }
            }
        }
        ok
    }

    /// Whether the request's `Host` may be answered: in loopback mode only
    /// an IP address or `localhost` (a page on another site whose name
    /// was rebound to 127.0.0.1 names its own host); always otherwise.
    pub fn host_ok(&self, headers: &HeaderMap) -> bool {
        if self.mode != Mode::Loopback {
            return true;
        }
        match headers.get(header::HOST).map(|h| h.to_str()) {
            None => true,
            Some(Ok(h)) => local_host_name(h),
            Some(Err(_)) => false,
        }
    }
}

/// Whether a `Host` header names this machine by address or as localhost.
pub fn local_host_name(host: &str) -> bool {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, port)) = rest.split_once(']') else {
            return false;
        };
        let port_ok = port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return port_ok && ip.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let name = {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let lower = name.to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok()
        || lower == "localhost"
        || lower == "localhost."
        || lower.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn addr(s: &str) -> Vec<SocketAddr> {
        vec![s.parse().unwrap()]
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn loopback_is_127_slash_8_and_ipv6_one() {
        for a in [
            "127.0.0.1:1",
            "127.0.0.2:1",
            "127.255.0.9:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(all_loopback(&addr(a)), "{a}");
        }
        for a in [
            "0.0.0.0:1",
            "[::]:1",
            "192.168.1.2:1",
            "10.0.0.1:1",
            "[::ffff:10.0.0.1]:1",
        ] {
            assert!(!all_loopback(&addr(a)), "{a}");
        }
        assert!(!all_loopback(&[]));
        let mixed = vec![
            "127.0.0.1:1".parse().unwrap(),
            "10.0.0.1:1".parse().unwrap(),
        ];
        assert!(!all_loopback(&mixed));
    }

    #[test]
    fn non_loopback_needs_a_token_or_public() {
        let any = addr("0.0.0.0:8080");
        let err = Access::decide(&any, None, false, "0.0.0.0").unwrap_err();
        assert!(
            err.contains("--token") && err.contains("--public") && err.contains(TOKEN_ENV),
            "{err}"
        );
        assert_eq!(
            Access::decide(&any, None, true, "0.0.0.0").unwrap().mode,
            Mode::Public
        );
        assert_eq!(
            Access::decide(&any, Some("s3cret"), false, "0.0.0.0")
                .unwrap()
                .mode,
            Mode::Token
        );
        assert!(Access::decide(&any, Some("  "), false, "0.0.0.0").is_err());
        let lo = addr("127.0.0.1:8080");
        assert_eq!(
            Access::decide(&lo, None, false, "127.0.0.1").unwrap().mode,
            Mode::Loopback
        );
        assert_eq!(
            Access::decide(&lo, Some("t"), false, "127.0.0.1")
                .unwrap()
                .mode,
            Mode::Token
        );
    }

    #[test]
    fn bearer_and_cookie_checks() {
        let a = Access::decide(&addr("127.0.0.1:1"), Some("right-token"), false, "x").unwrap();
        let ok = headers(&[(header::AUTHORIZATION, "Bearer right-token")]);
        assert!(a.bearer_ok(&ok));
        assert!(a.bearer_ok(&headers(&[(header::AUTHORIZATION, "bearer  right-token ")])));
        for bad in [
            "Bearer wrong",
            "Bearer right-toke",
            "Bearer right-token2",
            "Basic right-token",
            "right-token",
            "Bearer",
            "",
        ] {
            assert!(
                !a.bearer_ok(&headers(&[(header::AUTHORIZATION, bad)])),
                "{bad:?}"
            );
        }
        assert!(!a.bearer_ok(&HeaderMap::new()));
        let cookie = a.session_cookie(8080).unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("right-token"));
        let pair = cookie.split(';').next().unwrap();
        assert!(a.cookie_ok(&headers(&[(header::COOKIE, &format!("x=1; {pair}"))])));
        assert!(!a.cookie_ok(&headers(&[(header::COOKIE, "sgraf_session_8080=abc")])));
        assert!(!a.cookie_ok(&HeaderMap::new()));
        // Without a token everything passes these two checks.
        let open = Access::decide(&addr("127.0.0.1:1"), None, false, "x").unwrap();
        assert!(open.bearer_ok(&HeaderMap::new()) && open.cookie_ok(&HeaderMap::new()));
        assert!(open.session_cookie(1).is_none());
        assert!(!format!("{a:?}").contains("right"));
    }

    #[test]
    fn rebinding_hosts_are_refused_on_loopback() {
        for h in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:80",
            "LOCALHOST",
            "[::1]:8080",
            "[::1]",
            "app.localhost:1",
        ] {
            assert!(local_host_name(h), "{h}");
        }
        for h in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::1]x",
            "[evil]:80",
            "a:b",
        ] {
            assert!(!local_host_name(h), "{h}");
        }
        let open = Access::decide(&addr("127.0.0.1:1"), None, false, "x").unwrap();
        assert!(!open.host_ok(&headers(&[(header::HOST, "evil.example")])));
        assert!(open.host_ok(&headers(&[(header::HOST, "127.0.0.1:5")])));
        let public = Access::decide(&addr("127.0.0.1:1"), None, true, "x").unwrap();
        assert!(public.host_ok(&headers(&[(header::HOST, "evil.example")])));
    }
}
