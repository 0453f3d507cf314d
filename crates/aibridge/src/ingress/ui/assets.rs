//! The dashboard's static files, embedded in the binary and served under `/ui/assets/`.
//!
//! `dashboard.css`, `dashboard.js` and `favicon.svg` are the gateway's own (the icon spares
//! browsers a request for `/favicon.ico`). uPlot 1.6.32 (MIT, its licence in
//! `uPlot.LICENSE`) is vendored from the npm package `uplot@1.6.32` unchanged:
//! `dist/uPlot.iife.min.js` and `dist/uPlot.min.css`.
//!
//! Pages link each file with `?v=` and a hash of its bytes, so the long cache below never serves
//! an old file after an upgrade.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../../assets/ui/dashboard.css"),
    },
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../assets/ui/dashboard.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../../assets/ui/favicon.svg"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../assets/ui/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../../assets/ui/uPlot.min.css"),
    },
    Asset {
        name: "uPlot.LICENSE",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../../../assets/ui/uPlot.LICENSE"),
    },
];

/// `name?v=hash` of every asset, computed once.
static URLS: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.bytes);
            let version: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            (asset.name, format!("/ui/assets/{}?v={version}", asset.name))
        })
        .collect()
});

/// The URL a page links an asset by.
pub(super) fn url(name: &str) -> &'static str {
    URLS.iter()
        .find(|(asset, _)| *asset == name)
        .map_or("/ui/assets/missing", |(_, url)| url.as_str())
}

/// `GET /ui/assets/{name}`: open to anyone (the login page needs them; they hold no data).
pub(super) async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such asset",
        )
            .into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}
