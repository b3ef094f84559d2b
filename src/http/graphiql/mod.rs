//! GraphiQL from the binary itself: a pinned GraphiQL and React vendored under `vendor/` (GraphiQL 4.1.2, React and
//! ReactDOM 18.3.1, the UMD production builds from npm; sums, licences and how to refresh them in `README.md` beside
//! this file), our page (`index.html`) and its bootstrap (`boot.js`). Nothing is loaded from another origin: the
//! page's Content-Security-Policy allows this origin only.
//!
//! The assets are served at `/graphiql/<version>/<file>`, `<version>` a hash of all of them, so a build that
//! changes any of them changes every URL and they can be cached for a year as immutable. The page itself (at
//! `/graphiql`, and at `/graphql` for a browser) is not cached. Served only when `KONTAKT_GRAPHIQL` is on.
use std::sync::LazyLock;

use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// One file the page loads.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset { name: "graphiql.min.js", content_type: JAVASCRIPT, bytes: include_bytes!("vendor/graphiql.min.js") },
    Asset {
        name: "graphiql.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("vendor/graphiql.min.css"),
    },
    Asset {
        name: "react.production.min.js",
        content_type: JAVASCRIPT,
        bytes: include_bytes!("vendor/react.production.min.js"),
    },
    Asset {
        name: "react-dom.production.min.js",
        content_type: JAVASCRIPT,
        bytes: include_bytes!("vendor/react-dom.production.min.js"),
    },
    Asset { name: "boot.js", content_type: JAVASCRIPT, bytes: include_bytes!("boot.js") },
    Asset {
        name: "LICENSES.txt",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("vendor/LICENSES.txt"),
    },
];

/// Everything the page may load, and from here only. Inline styles are allowed because GraphiQL's components
/// (Radix, framer-motion) insert `<style>` elements; fonts and icons come as `data:` URLs in its CSS. No inline
/// script: `boot.js` starts GraphiQL. `connect-src 'self'` covers the WebSocket to this origin as well.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The first 16 hex digits of the SHA-256 of every asset (name and content).
static VERSION: LazyLock<String> = LazyLock::new(|| {
    use aws_lc_rs::digest::{Context, SHA256};
    let mut context = Context::new(&SHA256);
    for asset in ASSETS {
        context.update(asset.name.as_bytes());
        context.update(&(asset.bytes.len() as u64).to_be_bytes());
        context.update(asset.bytes);
    }
    context.finish().as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
});

/// The page, its asset URLs relative to it (it is served at `/graphql` and `/graphiql`, both at the root).
static PAGE: LazyLock<String> =
    LazyLock::new(|| include_str!("index.html").replace("{assets}", &format!("graphiql/{}", *VERSION)));

/// Computes the version and the page now rather than on the first request.
pub fn prepare() {
    LazyLock::force(&PAGE);
}

/// The GraphiQL page.
pub fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        PAGE.as_str(),
    )
        .into_response()
}

/// `GET /graphiql`.
pub async fn graphiql_page() -> Response {
    page()
}

/// `GET /graphiql/{version}/{file}`: an asset of this build, or 404 (another build's version included).
pub async fn graphiql_asset(Path((version, file)): Path<(String, String)>) -> Response {
    let found = (version == *VERSION).then(|| ASSETS.iter().find(|a| a.name == file)).flatten();
    let Some(asset) = found else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_every_asset_from_this_version() {
        for asset in ASSETS {
            let url = format!("graphiql/{}/{}", *VERSION, asset.name);
            assert!(PAGE.contains(&format!("\"{url}\"")), "the page does not load {url}");
        }
        assert!(!PAGE.contains("{assets}"));
        assert_eq!(VERSION.len(), 16);
    }
}
