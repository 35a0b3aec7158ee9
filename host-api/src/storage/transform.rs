//! Image transformations (`/storage/v1/render/image/...`, storage-js's
//! `transform` option): Supabase's parameters and bounds, done in-process
//! with the `image` crate. [`render`] is CPU work: run it on the blocking
//! pool, behind a limit on how many run at once.
//!
//! A decompression bomb is refused from its header: the dimensions are read
//! before anything is decoded, and decoding itself runs under the `image`
//! crate's allocation limits.

use super::StorageError;
use image::{DynamicImage, ImageFormat, ImageReader};
use sha2::{Digest, Sha256};
use std::io::Cursor;

/// Largest width or height asked for (Supabase's bound).
pub const MAX_SIDE: u32 = 2500;
/// Largest source object transformed (Supabase's bound).
pub const MAX_SOURCE_BYTES: u64 = 25 * 1024 * 1024;
/// Largest source image, in pixels (Supabase's bound).
pub const MAX_SOURCE_PIXELS: u64 = 50_000_000;
/// Quality when none is asked for (Supabase's default).
pub const DEFAULT_QUALITY: u8 = 80;
/// Largest intermediate of a resize, in pixels: `image` resizes in two passes,
/// the first `source width × target height` (16 bytes a pixel), so a long thin
/// source asked for a tall box would otherwise want gigabytes.
const MAX_INTERMEDIATE_PIXELS: u64 = 25_000_000;

/// How the image fills the asked-for box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resize {
    /// Fill the box, keeping the aspect ratio; what sticks out is cut (the default).
    Cover,
    /// Fit inside the box, keeping the aspect ratio.
    Contain,
    /// Stretch to the box.
    Fill,
}

/// One transformation, as the query (or a signed URL's token) asks for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transform {
    /// Wanted width in pixels.
    pub width: Option<u32>,
    /// Wanted height in pixels.
    pub height: Option<u32>,
    /// How to fit the box.
    pub resize: Resize,
    /// Encoder quality, 20–100 (JPEG honours it; see [`render`]).
    pub quality: u8,
    /// `format=origin`: keep the source's format even when WebP is accepted.
    pub keep_format: bool,
}

fn bad(message: impl Into<String>) -> StorageError {
    StorageError::new(400, "InvalidRequest", "invalid_request", message)
}

impl Transform {
    /// Reads `width`, `height`, `resize`, `quality` and `format` from query
    /// pairs; anything else is ignored (`token`, `download`).
    pub fn parse<'a>(
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<Transform, StorageError> {
        let mut t = Transform {
            width: None,
            height: None,
            resize: Resize::Cover,
            quality: DEFAULT_QUALITY,
            keep_format: false,
        };
        let side = |k: &str, v: &str| -> Result<u32, StorageError> {
            v.parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_SIDE).contains(n))
                .ok_or_else(|| bad(format!("{k} must be an integer between 1 and {MAX_SIDE}")))
        };
        for (k, v) in pairs {
            match k {
                "width" => t.width = Some(side(k, v)?),
                "height" => t.height = Some(side(k, v)?),
                "resize" => {
                    t.resize = match v {
                        "cover" => Resize::Cover,
                        "contain" => Resize::Contain,
                        "fill" => Resize::Fill,
                        _ => return Err(bad("resize must be one of cover, contain, fill")),
                    }
                }
                "quality" => {
                    t.quality = v
                        .parse::<u8>()
                        .ok()
                        .filter(|q| (20..=100).contains(q))
                        .ok_or_else(|| bad("quality must be an integer between 20 and 100"))?
                }
                "format" => {
                    t.keep_format = match v {
                        "origin" => true,
                        "" => false,
                        _ => return Err(bad("format must be origin")),
                    }
                }
                _ => {}
            }
        }
        Ok(t)
    }

    /// The canonical query of this transformation (what a signed URL's token
    /// carries; parsing it gives the same transformation).
    pub fn to_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(w) = self.width {
            q.append_pair("width", &w.to_string());
        }
        if let Some(h) = self.height {
            q.append_pair("height", &h.to_string());
        }
        q.append_pair(
            "resize",
            match self.resize {
                Resize::Cover => "cover",
                Resize::Contain => "contain",
                Resize::Fill => "fill",
            },
        );
        q.append_pair("quality", &self.quality.to_string());
        if self.keep_format {
            q.append_pair("format", "origin");
        }
        q.finish()
    }

    /// A name for the result of this transformation of the bytes stored under
    /// `version` (a new upload is a new version, so a changed object never
    /// meets an old result), into WebP or not.
    pub fn cache_key(&self, version: &str, webp: bool) -> String {
        let mut h = Sha256::new();
        h.update(b"wasmbase render v2\0");
        h.update(version.as_bytes());
        h.update(b"\0");
        h.update(self.to_query().as_bytes());
        h.update(if webp { b"\0webp" } else { b"\0orig" });
        hex::encode(h.finalize())
    }

    /// Whether the answer is WebP: the client accepts it and `format=origin`
    /// was not asked for (Supabase's negotiation).
    pub fn webp_for(&self, accept: Option<&str>) -> bool {
        !self.keep_format
            && accept.is_some_and(|a| {
                a.split(',')
                    .any(|m| m.split(';').next().unwrap_or("").trim() == "image/webp")
            })
    }
}

fn unprocessable(message: impl Into<String>) -> StorageError {
    StorageError::new(422, "InvalidImage", "invalid_image", message)
}

/// Transforms the source image `src` (JPEG, PNG, WebP or GIF; a GIF's first
/// frame). The result is WebP when `webp`, else the source's format. JPEG
/// output honours `quality`; PNG, GIF and WebP output are lossless (the
/// `image` crate's WebP encoder is lossless only), so `quality` does not
/// change them.
pub fn render(src: &[u8], t: &Transform, webp: bool) -> Result<Vec<u8>, StorageError> {
    if src.len() as u64 > MAX_SOURCE_BYTES {
        return Err(unprocessable(format!(
            "The source image is larger than {} MB",
            MAX_SOURCE_BYTES / (1024 * 1024)
        )));
    }
    let reader = || {
        ImageReader::new(Cursor::new(src))
            .with_guessed_format()
            .map_err(|_| unprocessable("The object is not an image"))
    };
    let format = reader()?
        .format()
        .filter(|f| {
            matches!(
                f,
                ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif
            )
        })
        .ok_or_else(|| unprocessable("Only JPEG, PNG, WebP and GIF images can be transformed"))?;
    // The header alone: a bomb is refused before a byte of it is decoded.
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|_| unprocessable("The image is damaged or truncated"))?;
    if w == 0 || h == 0 {
        return Err(unprocessable("The image has no pixels"));
    }
    if u64::from(w) * u64::from(h) > MAX_SOURCE_PIXELS {
        return Err(unprocessable(format!(
            "The source image is {w}x{h}, more than {} megapixels",
            MAX_SOURCE_PIXELS / 1_000_000
        )));
    }
    let mut r = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // Room for the decoded image (8 bytes a pixel at most here) and the decoder.
    limits.max_alloc = Some(MAX_SOURCE_PIXELS * 8 + (64 << 20));
    r.limits(limits);
    let damaged = |_| unprocessable("The image is damaged or truncated");
    let mut decoder = r.into_decoder().map_err(damaged)?;
    // Phone photos are stored sideways with an EXIF orientation: apply it.
    let orientation = image::ImageDecoder::orientation(&mut decoder).map_err(damaged)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(damaged)?;
    img.apply_orientation(orientation);
    let out = resize(img, t)?;
    encode(
        &out,
        if webp { ImageFormat::WebP } else { format },
        t.quality,
    )
}

/// The media type of an encoded result, read from its bytes (a cached result
/// is a bare file).
pub fn media_type(bytes: &[u8]) -> &'static str {
    image::guess_format(bytes)
        .map(|f| f.to_mime_type())
        .unwrap_or("application/octet-stream")
}

/// `a × num / den`, rounded, at least 1.
fn scale(a: u32, num: u32, den: u32) -> u32 {
    ((u64::from(a) * u64::from(num) + u64::from(den) / 2) / u64::from(den.max(1))).max(1) as u32
}

/// The size of the result, given the source's: a missing side follows the
/// aspect ratio (none asked keeps the size); `contain` fits inside the box.
/// Whatever is asked, neither side exceeds [`MAX_SIDE`]: a larger result is
/// scaled down whole, never stretched.
fn target(t: &Transform, w: u32, h: u32) -> (u32, u32) {
    let (tw, th) = match (t.width, t.height) {
        (None, None) => (w, h),
        (Some(tw), None) => (tw, scale(h, tw, w)),
        (None, Some(th)) => (scale(w, th, h), th),
        (Some(tw), Some(th)) if t.resize == Resize::Contain => {
            // The largest box of the source's aspect inside tw × th.
            if u64::from(w) * u64::from(th) > u64::from(h) * u64::from(tw) {
                (tw, scale(h, tw, w))
            } else {
                (scale(w, th, h), th)
            }
        }
        (Some(tw), Some(th)) => (tw, th),
    };
    let big = tw.max(th);
    if big > MAX_SIDE {
        (scale(tw, MAX_SIDE, big), scale(th, MAX_SIDE, big))
    } else {
        (tw, th)
    }
}

fn resize(img: DynamicImage, t: &Transform) -> Result<DynamicImage, StorageError> {
    use image::imageops::FilterType::CatmullRom;
    let (w, h) = (img.width(), img.height());
    let (tw, th) = target(t, w, h);
    if (tw, th) == (w, h) {
        return Ok(img);
    }
    // Cover cuts the source to the box's aspect first (centred), then scales:
    // never a scaled copy larger than the box.
    let img = if t.resize == Resize::Cover && t.width.is_some() && t.height.is_some() {
        let (cw, ch) = if u64::from(w) * u64::from(th) > u64::from(h) * u64::from(tw) {
            (scale(h, tw, th).min(w), h)
        } else {
            (w, scale(w, th, tw).min(h))
        };
        img.crop_imm((w - cw) / 2, (h - ch) / 2, cw, ch)
    } else {
        img
    };
    if u64::from(img.width()) * u64::from(th) > MAX_INTERMEDIATE_PIXELS {
        return Err(unprocessable(format!(
            "A {w}x{h} image cannot be resized to {tw}x{th}: the aspect ratios are too far apart"
        )));
    }
    Ok(img.resize_exact(tw, th, CatmullRom))
}

fn encode(img: &DynamicImage, format: ImageFormat, quality: u8) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::new();
    let failed = |_| StorageError::internal();
    match format {
        ImageFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            // JPEG has no alpha channel.
            img.to_rgb8().write_with_encoder(enc).map_err(failed)?;
        }
        ImageFormat::WebP => {
            let enc = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            img.to_rgba8().write_with_encoder(enc).map_err(failed)?;
        }
        ImageFormat::Gif => {
            let enc = image::codecs::gif::GifEncoder::new(&mut out);
            img.to_rgba8().write_with_encoder(enc).map_err(failed)?;
        }
        other => {
            img.write_to(&mut Cursor::new(&mut out), other)
                .map_err(failed)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<Transform, StorageError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(s.as_bytes())
            .into_owned()
            .collect();
        Transform::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    #[test]
    fn parameters_have_supabases_bounds_and_a_canonical_form() {
        let t = q("width=100&height=50&resize=contain&quality=60&format=origin&token=x").unwrap();
        assert_eq!(q(&t.to_query()).unwrap(), t);
        for bad in [
            "width=0",
            "width=2501",
            "height=-1",
            "quality=19",
            "quality=101",
            "resize=crop",
            "format=png",
            "width=1.5",
        ] {
            assert!(q(bad).is_err(), "{bad}");
        }
        let d = q("").unwrap();
        assert_eq!(
            (d.resize, d.quality, d.keep_format),
            (Resize::Cover, 80, false)
        );
        assert!(d.webp_for(Some("image/avif,image/webp;q=0.9,*/*")));
        assert!(!d.webp_for(Some("image/png")) && !d.webp_for(None));
        assert!(
            !t.webp_for(Some("image/webp")),
            "format=origin keeps the format"
        );
        assert_ne!(d.cache_key("v1", true), d.cache_key("v2", true));
        assert_ne!(d.cache_key("v1", true), d.cache_key("v1", false));
    }

    #[test]
    fn a_missing_side_follows_the_aspect_ratio() {
        let t = |w, h| Transform {
            width: w,
            height: h,
            ..q("").unwrap()
        };
        assert_eq!(target(&t(Some(100), None), 300, 200), (100, 67));
        assert_eq!(target(&t(None, Some(100)), 300, 200), (150, 100));
        assert_eq!(target(&t(None, None), 300, 200), (300, 200));
        assert_eq!(target(&t(Some(1), None), 10, 1), (1, 1));
        // Never more than MAX_SIDE on a side, and never stretched to get there.
        assert_eq!(target(&t(Some(1000), None), 1000, 4000), (625, 2500));
        assert_eq!(target(&t(None, None), 5000, 2500), (2500, 1250));
        let contain = Transform {
            width: Some(100),
            height: Some(100),
            resize: Resize::Contain,
            ..q("").unwrap()
        };
        assert_eq!(target(&contain, 300, 200), (100, 67));
        assert_eq!(target(&contain, 200, 300), (67, 100));
    }

    #[test]
    fn a_long_thin_image_is_refused_not_allocated() {
        // 20000×1 asked to fill 2500×2500: a 50-megapixel first pass, refused.
        let src = {
            let img = image::GrayImage::from_pixel(20_000, 1, image::Luma([7]));
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, ImageFormat::Png).unwrap();
            out.into_inner()
        };
        let fill = Transform {
            width: Some(2500),
            height: Some(2500),
            resize: Resize::Fill,
            ..q("").unwrap()
        };
        let e = render(&src, &fill, false).unwrap_err();
        assert_eq!(e.code, "InvalidImage", "{}", e.message);
        // Cover cuts first, so the same box is cheap and works.
        let cover = Transform {
            resize: Resize::Cover,
            ..fill
        };
        let out = render(&src, &cover, false).unwrap();
        assert_eq!(media_type(&out), "image/png");
        let img = image::load_from_memory(&out).unwrap();
        assert_eq!((img.width(), img.height()), (2500, 2500));
    }
}
