//! Image transformations (`/storage/v1/render/image/...`): sizes per resize
//! mode, WebP negotiation, the node's result cache and its invalidation when
//! the object is overwritten, the public and signed variants (a signed URL's
//! token fixes the transformation), and bad parameters and images — a
//! decompression bomb among them — refused with storage-api errors.

use crate::harness::*;
use crate::storage::Client;
use image::{ImageFormat, RgbImage};
use serde_json::{json, Value};
use wasmbase_host_api::keys::KeyKind;

/// A `w`×`h` image in `format`, with a gradient so resizing has work to do.
fn picture(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A PNG whose header says 20000×20000 (400 megapixels) and that holds no
/// pixels at all: only reading the header refuses it (decoding would first
/// want 400 MB for the pixels, then find them missing).
fn png_bomb() -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut v = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        v.extend_from_slice(&body);
        v.extend_from_slice(&crc32(&body).to_be_bytes());
        v
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&20_000u32.to_be_bytes());
    ihdr.extend_from_slice(&20_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    // An empty zlib stream: a decoder would find the pixels missing, but the
    // header has to refuse the image before any decoding starts.
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", b""));
    png
}

struct Rendered {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Rendered {
    fn size(&self) -> (u32, u32) {
        let img = image::load_from_memory(&self.body).expect("an image");
        (img.width(), img.height())
    }
    fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

async fn render(s: &TestServer, key: Option<&str>, path: &str, accept: &str) -> Rendered {
    let mut r = s
        .http
        .get(format!("{}/storage/v1/render/image/{path}", s.url))
        .header("accept", accept);
    if let Some(k) = key {
        r = r.header("apikey", k);
    }
    let resp = r.send().await.unwrap();
    Rendered {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

/// A storage client of `s` with the secret key (the service role).
fn service<'a>(s: &'a TestServer, sk: &str) -> Client<'a> {
    Client {
        srv: s,
        key: sk.to_string(),
        bearer: None,
    }
}

async fn server() -> (TestDb, TestServer, String, String) {
    let db = TestDb::new().await;
    let (_, pk) = db.key(KeyKind::Publishable).await;
    let (_, sk) = db.key(KeyKind::Secret).await;
    let s = db.server().await;
    let c = service(&s, &sk);
    for (name, public) in [("pics", true), ("private", false)] {
        let (st, v) = c
            .json(
                reqwest::Method::POST,
                "/bucket",
                json!({"name": name, "public": public}),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    (db, s, pk, sk)
}

#[tokio::test]
async fn sizes_follow_the_resize_mode_webp_is_negotiated_and_results_are_cached_per_version() {
    let (_db, s, pk, sk) = server().await;
    let c = service(&s, &sk);
    let (st, v) = c
        .upload(
            "pics/a.png",
            picture(300, 200, ImageFormat::Png),
            "image/png",
            false,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let auth = |q: &str| format!("authenticated/pics/a.png?{q}");
    for (q, want) in [
        ("width=100&height=100&resize=cover", (100, 100)),
        ("width=100&height=100&resize=contain", (100, 67)),
        ("width=100&height=100&resize=fill", (100, 100)),
        ("width=100&height=100", (100, 100)),
        ("width=100", (100, 67)),
        ("height=50", (75, 50)),
        ("quality=50", (300, 200)),
    ] {
        let r = render(&s, Some(&sk), &auth(q), "image/png").await;
        assert_eq!(r.status, 200, "{q}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), "image/png", "{q}");
        assert_eq!(r.size(), want, "{q}");
    }

    // Cover cuts the sides off (its left edge is the source's x = 50, red 50);
    // fill squeezes the whole width in (its left edge is x = 0).
    let left_red = |r: &Rendered| {
        let img = image::load_from_memory(&r.body).unwrap().to_rgb8();
        img.get_pixel(0, 50)[0]
    };
    let cover = render(
        &s,
        Some(&sk),
        &auth("width=100&height=100&resize=cover"),
        "image/png",
    )
    .await;
    let fill = render(
        &s,
        Some(&sk),
        &auth("width=100&height=100&resize=fill"),
        "image/png",
    )
    .await;
    assert!(
        (40..=60).contains(&left_red(&cover)),
        "cover: {}",
        left_red(&cover)
    );
    assert!(left_red(&fill) <= 10, "fill: {}", left_red(&fill));

    // The first rendering is made, the next comes from the cache, the same.
    let first = render(&s, Some(&sk), &auth("width=64&height=32"), "image/png").await;
    let again = render(&s, Some(&sk), &auth("width=64&height=32"), "image/png").await;
    assert_eq!(first.header("x-wasmbase-render-cache"), "miss");
    assert_eq!(again.header("x-wasmbase-render-cache"), "hit");
    assert_eq!(first.body, again.body);
    assert_eq!(again.header("vary"), "Accept");
    let etag = again.header("etag").to_string();
    let not_modified = s
        .http
        .get(format!(
            "{}/storage/v1/render/image/{}",
            s.url,
            auth("width=64&height=32")
        ))
        .header("apikey", &sk)
        .header("accept", "image/png")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);

    // WebP when the client takes it, unless format=origin.
    let webp = render(
        &s,
        Some(&sk),
        &auth("width=64&height=32"),
        "image/avif,image/webp,*/*",
    )
    .await;
    assert_eq!(webp.header("content-type"), "image/webp");
    assert_eq!(webp.size(), (64, 32));
    assert_eq!(
        webp.header("x-wasmbase-render-cache"),
        "miss",
        "another output, another entry"
    );
    let origin = render(
        &s,
        Some(&sk),
        &auth("width=64&height=32&format=origin"),
        "image/webp",
    )
    .await;
    assert_eq!(origin.header("content-type"), "image/png");

    // A JPEG stays a JPEG for a client without WebP.
    c.upload(
        "pics/b.jpg",
        picture(200, 200, ImageFormat::Jpeg),
        "image/jpeg",
        false,
    )
    .await;
    let jpeg = render(
        &s,
        Some(&sk),
        "authenticated/pics/b.jpg?width=50&quality=30",
        "image/jpeg",
    )
    .await;
    assert_eq!(jpeg.header("content-type"), "image/jpeg");
    assert_eq!(jpeg.size(), (50, 50));

    // Overwritten, the object renders anew: no stale result.
    let (st, v) = c
        .upload(
            "pics/a.png",
            picture(100, 400, ImageFormat::Png),
            "image/png",
            true,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let after = render(
        &s,
        Some(&sk),
        &auth("width=64&height=32&resize=contain"),
        "image/png",
    )
    .await;
    assert_eq!(after.header("x-wasmbase-render-cache"), "miss");
    assert_eq!(after.size(), (8, 32));

    // Public buckets render without a key; private ones do not.
    let public = render(&s, None, "public/pics/a.png?width=50", "image/png").await;
    assert_eq!(public.status, 200);
    assert_eq!(public.size(), (50, 200));
    c.upload(
        "private/p.png",
        picture(10, 10, ImageFormat::Png),
        "image/png",
        false,
    )
    .await;
    let hidden = render(&s, None, "public/private/p.png?width=5", "image/png").await;
    assert_eq!(hidden.status, 400);
    assert_eq!(hidden.json()["statusCode"], "404", "{}", hidden.json());
    // As anon (no policy lets it read): the object is not there.
    let anon = render(
        &s,
        Some(&pk),
        "authenticated/private/p.png?width=5",
        "image/png",
    )
    .await;
    assert_eq!(anon.status, 400);
    assert_eq!(anon.json()["statusCode"], "404", "{}", anon.json());
}

#[tokio::test]
async fn a_signed_render_url_fixes_its_transformation() {
    let (_db, s, _pk, sk) = server().await;
    let c = service(&s, &sk);
    c.upload(
        "private/s.png",
        picture(120, 60, ImageFormat::Png),
        "image/png",
        false,
    )
    .await;
    let (st, v) = c
        .json(
            reqwest::Method::POST,
            "/object/sign/private/s.png",
            json!({"expiresIn": 60, "transform": {"width": 40, "height": 40, "resize": "fill"}}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let url = v["signedURL"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("/render/image/sign/private/s.png?token="),
        "{url}"
    );
    let get = |u: String| {
        let s = &s;
        async move {
            let r = s
                .http
                .get(format!("{}/storage/v1{u}", s.url))
                .header("accept", "image/png")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap().to_vec();
            (status, body)
        }
    };
    let (st, body) = get(url.clone()).await;
    assert_eq!(st, 200);
    let img = image::load_from_memory(&body).unwrap();
    assert_eq!((img.width(), img.height()), (40, 40));
    // The query cannot ask for another rendering: the token's wins.
    let (st, body) = get(format!("{url}&width=200&height=10")).await;
    assert_eq!(st, 200);
    let img = image::load_from_memory(&body).unwrap();
    assert_eq!((img.width(), img.height()), (40, 40));
    // A thumbnail's link does not open the original.
    let original = url.replace("/render/image/sign/", "/object/sign/");
    let (st, body) = get(original).await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "InvalidSignature", "{v}");
    let mut forged = url.clone();
    forged.pop();
    let (st, body) = get(forged).await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    // Bad transform parameters are refused when signing.
    let (st, v) = c
        .json(
            reqwest::Method::POST,
            "/object/sign/private/s.png",
            json!({"expiresIn": 60, "transform": {"width": 9000}}),
        )
        .await;
    assert_eq!((st, v["statusCode"].as_str()), (400, Some("400")), "{v}");
}

#[tokio::test]
async fn bad_parameters_and_bad_images_get_storage_errors() {
    let (_db, s, _pk, sk) = server().await;
    let c = service(&s, &sk);
    c.upload(
        "pics/ok.png",
        picture(20, 20, ImageFormat::Png),
        "image/png",
        false,
    )
    .await;
    for q in [
        "width=0",
        "width=2501",
        "height=abc",
        "quality=19",
        "quality=101",
        "resize=crop",
        "format=gif",
    ] {
        let r = render(
            &s,
            Some(&sk),
            &format!("authenticated/pics/ok.png?{q}"),
            "image/png",
        )
        .await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.json()["code"], "InvalidRequest", "{q}: {}", r.json());
    }
    let jpeg = picture(64, 64, ImageFormat::Jpeg);
    let bad: [(&str, Vec<u8>, &str); 3] = [
        (
            "pics/text.png",
            b"not an image at all".to_vec(),
            "Only JPEG, PNG, WebP and GIF",
        ),
        (
            "pics/cut.jpg",
            jpeg[..jpeg.len() / 3].to_vec(),
            "damaged or truncated",
        ),
        ("pics/bomb.png", png_bomb(), "megapixels"),
    ];
    for (path, bytes, why) in bad {
        let (st, v) = c.upload(path, bytes, "image/png", false).await;
        assert_eq!(st, 200, "{v}");
        let r = render(
            &s,
            Some(&sk),
            &format!("authenticated/{path}?width=10"),
            "image/png",
        )
        .await;
        assert_eq!(r.status, 400, "{path}");
        let v = r.json();
        assert_eq!(
            (v["statusCode"].as_str(), v["code"].as_str()),
            (Some("422"), Some("InvalidImage")),
            "{path}: {v}"
        );
        assert!(
            v["message"].as_str().unwrap_or("").contains(why),
            "{path}: {v}"
        );
    }
}
