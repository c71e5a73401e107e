//! One webhook's HTTP client. Webhook URLs often carry a token in the
//! path or query, so nothing here ever formats the URL or the HTTP
//! client's own error text (which may include it): failures are worded
//! from their kind only.
use std::io;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ureq::http::{HeaderName, HeaderValue, Uri};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::config::{Secret, Webhook};
use crate::units;

/// Why a POST did not deliver, for the caller to choose: try again later,
/// or give up on this body after a few attempts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The receiver is unreachable, slow or overloaded (connection
    /// errors, timeouts, 5xx, 408, 429). `after` is a 429/503
    /// `Retry-After` in seconds.
    #[error("{msg}")]
    Retry {
        msg: String,
        after: Option<Duration>,
    },
    /// The receiver refused this request (other 4xx, 3xx).
    #[error("{0}")]
    Reject(String),
}

pub struct Client {
    agent: ureq::Agent,
    url: Secret,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl Client {
    /// Checks the URL and headers now, so a typo is an error at start,
    /// worded without the secret values.
    pub fn new(hook: &Webhook, url: &str, roots: &RootCerts) -> anyhow::Result<Client> {
        let name = &hook.name;
        let uri: Uri = url
            .parse()
            .ok()
            .with_context(|| format!("sink {name}: url is not a valid URL"))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => {}
            _ => bail!("sink {name}: url must be http:// or https:// with a host"),
        }
        let mut headers = Vec::new();
        for (k, v) in &hook.headers {
            let hn = HeaderName::from_bytes(k.as_bytes())
                .ok()
                .with_context(|| format!("sink {name}: {k:?} is not a valid header name"))?;
            if hn == "idempotency-key" {
                bail!(
                    "sink {name}: headers: Idempotency-Key is set by sentinel, one per event \
                     (the receiver drops retried deliveries by it); remove it"
                );
            }
            let mut hv = HeaderValue::from_str(v.expose()).ok().with_context(|| {
                format!("sink {name}: header {k}: the value is not a valid header value")
            })?;
            hv.set_sensitive(true);
            headers.push((hn, hv));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect could carry the Authorization header elsewhere;
            // a webhook URL that redirects is a configuration to fix.
            .max_redirects(0)
            .timeout_global(Some(hook.timeout))
            .user_agent(format!("sentinel/{}", env!("CARGO_PKG_VERSION")))
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .tls_config(TlsConfig::builder().root_certs(roots.clone()).build())
            .build();
        Ok(Client {
            agent: config.new_agent(),
            url: Secret::new(url),
            headers,
            timeout: hook.timeout,
        })
    }

    /// POSTs a JSON body; 2xx is success. `key` goes in `Idempotency-Key`
    /// so a receiver can drop a retried delivery it already has.
    pub fn post(&self, key: &str, body: &[u8]) -> Result<(), PostError> {
        let mut req = self
            .agent
            .post(self.url.expose())
            .header("Idempotency-Key", key);
        // A configured Content-Type (some receivers want their own) is sent
        // instead of ours, not beside it.
        if !self.headers.iter().any(|(k, _)| k == "content-type") {
            req = req.header("Content-Type", "application/json");
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let mut resp = req.send(body).map_err(|e| self.describe(&e))?;
        // Read (a little of) the body so the connection can be reused;
        // its content is not shown anywhere (a 404 page may echo the URL).
        let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_vec();
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => Err(PostError::Retry {
                msg: format!("HTTP {status}"),
                after: retry_after(resp.headers().get("retry-after")),
            }),
            300..=399 => Err(PostError::Reject(format!(
                "HTTP {status} (redirects are not followed: configure the final URL)"
            ))),
            _ => Err(PostError::Reject(format!("HTTP {status}"))),
        }
    }

    fn describe(&self, e: &ureq::Error) -> PostError {
        use ureq::Error as E;
        let retry = |msg: String| PostError::Retry { msg, after: None };
        match e {
            E::Timeout(_) => retry(format!("timed out after {}", units::duration(self.timeout))),
            E::Io(io) => retry(io_words(io)),
            E::HostNotFound => retry("host not found".into()),
            E::ConnectionFailed => retry("connection failed".into()),
            E::Tls(_) | E::Rustls(_) | E::Pem(_) => retry("TLS handshake failed".into()),
            E::ConnectProxyFailed(_) | E::InvalidProxyUrl => retry("proxy failed".into()),
            E::Protocol(_) | E::LargeResponseHeader(..) | E::BodyStalled => {
                retry("bad HTTP response".into())
            }
            E::StatusCode(s) => retry(format!("HTTP {s}")),
            E::BadUri(_) | E::Http(_) => {
                PostError::Reject("invalid request (check url and headers)".into())
            }
            _ => retry("request failed".into()),
        }
    }
}

fn io_words(e: &io::Error) -> String {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset".into(),
        K::ConnectionAborted => "connection aborted".into(),
        K::TimedOut => "timed out".into(),
        K::UnexpectedEof => "connection closed before the response".into(),
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        K::BrokenPipe => "connection closed while sending".into(),
        kind => format!("I/O error ({kind})"),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare for webhooks and
/// ignored).
fn retry_after(v: Option<&HeaderValue>) -> Option<Duration> {
    let secs: u64 = v?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// The roots TLS trusts: the system's bundle (so a private CA installed
/// with update-ca-certificates works), else the compiled-in Mozilla set.
pub fn system_roots() -> RootCerts {
    let path = std::env::var_os("SSL_CERT_FILE")
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let Ok(pem) = std::fs::read(&path) else {
        return RootCerts::WebPki;
    };
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(certs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(headers: Vec<(String, Secret)>) -> Webhook {
        Webhook {
            name: "team".into(),
            url: Secret::new(""),
            format: crate::config::WebhookFormat::Json,
            headers,
            min_severity: crate::event::Severity::Info,
            timeout: Duration::from_millis(500),
            max_per_minute: 0,
        }
    }

    #[test]
    fn errors_never_show_the_url() {
        let secret = "http://127.0.0.1:1/hooks/T000/SECRETTOKEN";
        let c = Client::new(&hook(vec![]), secret, &RootCerts::WebPki).unwrap();
        // Port 1 on loopback: nothing listens.
        let err = c.post("k", b"{}").unwrap_err();
        assert_eq!(
            err,
            PostError::Retry {
                msg: "connection refused".into(),
                after: None
            }
        );

        for bad in ["not a url", "ftp://host/SECRETTOKEN", "/SECRETTOKEN"] {
            let msg = format!(
                "{:#}",
                Client::new(&hook(vec![]), bad, &RootCerts::WebPki)
                    .err()
                    .unwrap()
            );
            assert!(
                !msg.contains("SECRETTOKEN") && msg.contains("sink team"),
                "{msg}"
            );
        }
        let h = vec![("Authorization".into(), Secret::new("Bearer SECRETTOKEN\n"))];
        let msg = format!(
            "{:#}",
            Client::new(&hook(h), secret, &RootCerts::WebPki)
                .err()
                .unwrap()
        );
        assert!(
            !msg.contains("SECRETTOKEN") && msg.contains("Authorization"),
            "{msg}"
        );
    }

    /// The request head one POST sends, as a receiver on loopback reads it.
    fn request_head(headers: Vec<(String, Secret)>) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut head = String::new();
            let mut r = BufReader::new(&conn);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            (&conn)
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            head
        });
        let c = Client::new(&hook(headers), &url, &RootCerts::WebPki).unwrap();
        c.post("event-1", b"{}").unwrap();
        server.join().unwrap().to_ascii_lowercase()
    }

    #[test]
    fn configured_headers_replace_ours_and_idempotency_is_ours() {
        let head = request_head(vec![]);
        assert_eq!(
            head.matches("content-type: application/json").count(),
            1,
            "{head}"
        );
        assert_eq!(
            head.matches("idempotency-key: event-1").count(),
            1,
            "{head}"
        );
        let head = request_head(vec![(
            "Content-Type".into(),
            Secret::new("application/vnd.x+json"),
        )]);
        assert_eq!(head.matches("content-type:").count(), 1, "{head}");
        assert!(
            head.contains("content-type: application/vnd.x+json"),
            "{head}"
        );

        let h = vec![("Idempotency-Key".into(), Secret::new("fixed"))];
        let msg = format!(
            "{:#}",
            Client::new(&hook(h), "http://127.0.0.1:1/", &RootCerts::WebPki)
                .err()
                .unwrap()
        );
        assert!(msg.contains("Idempotency-Key is set by sentinel"), "{msg}");
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("120"))),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static(
                "Wed, 21 Oct 2015 07:28:00 GMT"
            ))),
            None
        );
        assert_eq!(retry_after(None), None);
    }
}
