//! `URL` on the `url` crate (WHATWG URL Standard): parsing and the setters,
//! through its `quirks` module, which implements exactly the web API's rules.

use rquickjs::{Ctx, Object, Result};
use url::{quirks, Url};

/// The components the JS `URL` class caches.
pub struct Parts {
    href: String,
    origin: String,
    protocol: String,
    username: String,
    password: String,
    host: String,
    hostname: String,
    port: String,
    pathname: String,
    search: String,
    hash: String,
}

fn parts(u: &Url) -> Parts {
    Parts {
        href: quirks::href(u).to_string(),
        origin: quirks::origin(u),
        protocol: quirks::protocol(u).to_string(),
        username: quirks::username(u).to_string(),
        password: quirks::password(u).to_string(),
        host: quirks::host(u).to_string(),
        hostname: quirks::hostname(u).to_string(),
        port: quirks::port(u).to_string(),
        pathname: quirks::pathname(u).to_string(),
        search: quirks::search(u).to_string(),
        hash: quirks::hash(u).to_string(),
    }
}

/// `new URL(input, base)`; None is the TypeError case.
pub fn parse(input: &str, base: Option<&str>) -> Option<Parts> {
    let u = match base {
        Some(b) => Url::parse(b).ok()?.join(input).ok()?,
        None => Url::parse(input).ok()?,
    };
    Some(parts(&u))
}

/// Sets one component of `href` as the `URL` setters do (an invalid value
/// leaves the URL as it was, except `href`, which fails).
pub fn set(href: &str, prop: &str, value: &str) -> Option<Parts> {
    let mut u = Url::parse(href).ok()?;
    match prop {
        "href" => {
            u = Url::parse(value).ok()?;
        }
        "protocol" => {
            let _ = quirks::set_protocol(&mut u, value);
        }
        "username" => {
            let _ = quirks::set_username(&mut u, value);
        }
        "password" => {
            let _ = quirks::set_password(&mut u, value);
        }
        "host" => {
            let _ = quirks::set_host(&mut u, value);
        }
        "hostname" => {
            let _ = quirks::set_hostname(&mut u, value);
        }
        "port" => {
            let _ = quirks::set_port(&mut u, value);
        }
        "pathname" => quirks::set_pathname(&mut u, value),
        "search" => quirks::set_search(&mut u, value),
        "hash" => quirks::set_hash(&mut u, value),
        _ => return None,
    }
    Some(parts(&u))
}

/// The parts as a plain JS object.
pub fn to_js<'js>(ctx: &Ctx<'js>, p: &Parts) -> Result<Object<'js>> {
    let o = Object::new(ctx.clone())?;
    o.set("href", p.href.as_str())?;
    o.set("origin", p.origin.as_str())?;
    o.set("protocol", p.protocol.as_str())?;
    o.set("username", p.username.as_str())?;
    o.set("password", p.password.as_str())?;
    o.set("host", p.host.as_str())?;
    o.set("hostname", p.hostname.as_str())?;
    o.set("port", p.port.as_str())?;
    o.set("pathname", p.pathname.as_str())?;
    o.set("search", p.search.as_str())?;
    o.set("hash", p.hash.as_str())?;
    Ok(o)
}
