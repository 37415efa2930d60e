//! Fetching `AUTH_JWKS_URL` for tally-auth's key cache. The endpoint is someone else's
//! server, reached from ours, so each fetch is bounded: [`FETCH_TIMEOUT`] for the whole
//! exchange, at most [`MAX_BODY`] of body (a JWKS is a few keys, a couple of KiB), a
//! 2xx answer only, and no redirects (the configured URL is the one tally asks, not
//! wherever an answer points: a redirect is reported as an error, to be fixed in the
//! setting). Each fetch runs as a task of its own, so that it is finished even when the
//! request that started it is dropped (tally-auth takes its answer in at the next
//! verification). How often it is fetched is tally-auth's (`tally_auth::jwks`).

use std::time::Duration;

use reqwest::Url;
use reqwest::header::ACCEPT;
use tally_auth::jwks::{BoxFuture, FetchError, KeySource};

/// The longest a fetch may take, connecting and reading the body included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest JWKS document tally reads.
pub const MAX_BODY: usize = 256 * 1024;

/// `GET AUTH_JWKS_URL`, within the limits above.
#[derive(Clone)]
pub struct HttpKeySource {
    client: reqwest::Client,
    url: Url,
}

impl HttpKeySource {
    pub fn new(url: Url) -> HttpKeySource {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with a timeout and rustls builds");
        HttpKeySource { client, url }
    }

    async fn get(&self) -> Result<Vec<u8>, FetchError> {
        let url = &self.url;
        let failed = |e: reqwest::Error| FetchError(format!("GET {url}: {}", e.without_url()));
        let mut response =
            self.client.get(url.clone()).header(ACCEPT, "application/json").send().await.map_err(failed)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(FetchError(format!("GET {url}: answered {status}; redirects are not followed")));
        }
        if !status.is_success() {
            return Err(FetchError(format!("GET {url}: answered {status}")));
        }
        let too_big = || FetchError(format!("GET {url}: the document is over {} KiB", MAX_BODY / 1024));
        if response.content_length().is_some_and(|length| length > MAX_BODY as u64) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

impl KeySource for HttpKeySource {
    fn fetch(&self) -> BoxFuture<'static, Result<Vec<u8>, FetchError>> {
        let this = self.clone();
        let task = tokio::spawn(async move { this.get().await });
        Box::pin(async move { task.await.map_err(|e| FetchError(format!("the JWKS fetch stopped: {e}")))? })
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;

    /// A local server answering each path as the test says; its base URL.
    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{address}")
    }

    fn source(base: &str, path: &str) -> HttpKeySource {
        HttpKeySource::new(Url::parse(&format!("{base}{path}")).unwrap())
    }

    #[tokio::test]
    async fn a_fetch_takes_only_a_small_2xx_answer_from_the_url_itself() {
        let base = serve(
            Router::new()
                .route("/jwks.json", get(|| async { r#"{"keys":[]}"# }))
                .route("/moved", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/jwks.json")]) }))
                .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
                .route("/huge", get(|| async { vec![b' '; MAX_BODY + 1].into_response() }))
                // No Content-Length: the cap holds while reading.
                .route(
                    "/streamed",
                    get(|| async {
                        let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(vec![b' '; 8 * 1024]));
                        axum::body::Body::from_stream(futures::stream::iter(chunks))
                    }),
                ),
        )
        .await;
        assert_eq!(source(&base, "/jwks.json").fetch().await.unwrap(), br#"{"keys":[]}"#);
        let refused = |path: &'static str| {
            let base = base.clone();
            async move { source(&base, path).fetch().await.unwrap_err().0 }
        };
        assert!(refused("/moved").await.contains("302 Found; redirects are not followed"));
        assert!(refused("/down").await.contains("503"));
        assert!(refused("/huge").await.contains("over 256 KiB"));
        assert!(refused("/streamed").await.contains("over 256 KiB"));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let unreachable = source(&format!("http://{closed}"), "/jwks.json").fetch().await.unwrap_err().0;
        assert!(unreachable.starts_with(&format!("GET http://{closed}/jwks.json: ")), "{unreachable}");
    }
}
