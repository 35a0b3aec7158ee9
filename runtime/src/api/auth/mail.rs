//! Outgoing auth email: SMTP (lettre) when `[auth.smtp]` is set, otherwise the dev
//! mailbox table (`wasmbase mail`, `GET /admin/v1/mail`), the MailHog role, which
//! `serve` uses only with `auth.dev_mailbox = true` (it stores live links).
//! Mail is sent after the transaction that created its token commits.

use super::error::{AuthApiError, AuthResult};
use crate::config::SmtpConfig;
use crate::server::state::AppState;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;
use wasmbase_host_api::db;

/// Where mail goes.
pub enum Mailer {
    /// `wasmbase.mailbox`, for development and tests.
    Mailbox,
    /// A real SMTP server.
    Smtp(Box<Smtp>),
}

/// An SMTP transport and the sender address.
pub struct Smtp {
    /// The transport (connection pool).
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// Sender.
    from: Mailbox,
}

/// One message.
pub struct Mail {
    /// Recipient.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

impl Mailer {
    /// SMTP when configured, else the mailbox.
    pub fn from_config(smtp: Option<&SmtpConfig>) -> anyhow::Result<Mailer> {
        let Some(s) = smtp else {
            return Ok(Mailer::Mailbox);
        };
        let builder = match s.tls.as_str() {
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)?,
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host),
            _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)?,
        };
        let mut builder = builder.port(s.port).timeout(Some(Duration::from_secs(15)));
        if let (Some(u), Some(p)) = (&s.user, &s.pass) {
            builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
        }
        Ok(Mailer::Smtp(Box::new(Smtp {
            transport: builder.build(),
            from: s.from.parse()?,
        })))
    }

    /// Sends (or files) a message.
    pub async fn send(&self, st: &AppState, mail: Mail) -> AuthResult<()> {
        match self {
            Mailer::Mailbox => {
                db::in_transaction::<_, AuthApiError, _>(&st.auth.pool, |c| {
                    Box::pin(async move {
                        c.execute(
                            "INSERT INTO wasmbase.mailbox (to_addr, subject, body_text, body_html) VALUES ($1, $2, $3, $4)",
                            &[&mail.to, &mail.subject, &mail.text, &mail.html],
                        )
                        .await?;
                        Ok(())
                    })
                })
                .await
            }
            Mailer::Smtp(smtp) => {
                let Smtp { transport, from } = smtp.as_ref();
                let to: Mailbox = mail.to.parse().map_err(|_| {
                    AuthApiError::new(
                        400,
                        "email_address_invalid",
                        format!("Email address \"{}\" is invalid", mail.to),
                    )
                })?;
                let msg = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(mail.subject)
                    .multipart(
                        MultiPart::alternative()
                            .singlepart(
                                SinglePart::builder()
                                    .header(ContentType::TEXT_PLAIN)
                                    .body(mail.text),
                            )
                            .singlepart(
                                SinglePart::builder()
                                    .header(ContentType::TEXT_HTML)
                                    .body(mail.html),
                            ),
                    )
                    .map_err(AuthApiError::internal)?;
                transport.send(msg).await.map_err(|e| {
                    tracing::error!(error = %e, "sending auth email");
                    AuthApiError::new(500, "unexpected_failure", "Error sending email")
                })?;
                Ok(())
            }
        }
    }
}

/// Hands a mail to the mailer without making the request wait for an SMTP
/// server. Flows that answer alike whether or not an address has an account
/// (recover, otp, resend, sign-up with confirmation) use this: a response that
/// waited on the SMTP round trip, or failed when it failed, would tell an
/// attacker which addresses get mail. SMTP failures are logged (never the
/// message, which holds a live link). The dev mailbox is a local insert and stays
/// in line, so `wasmbase mail` shows the message once the request returns.
pub async fn deliver(st: &AppState, mail: Mail) -> AuthResult<()> {
    match &st.auth.mailer {
        Mailer::Mailbox => st.auth.mailer.send(st, mail).await,
        Mailer::Smtp(_) => {
            let st = st.clone();
            tokio::spawn(async move {
                if let Err(e) = st.auth.mailer.send(&st, mail).await {
                    tracing::error!(code = e.code, "auth email not delivered");
                }
            });
            Ok(())
        }
    }
}

/// Reads the dev mailbox, newest first (for `wasmbase mail` and the admin API).
pub async fn mailbox(
    c: &tokio_postgres::Client,
    to: Option<&str>,
    limit: i64,
) -> Result<serde_json::Value, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT coalesce(jsonb_agg(m ORDER BY id DESC), '[]') FROM (SELECT id, to_addr AS to, subject, body_text AS text, \
               created_at FROM wasmbase.mailbox WHERE $1::text IS NULL OR lower(to_addr) = lower($1) ORDER BY id DESC LIMIT $2) m",
            &[&to, &limit.clamp(1, 1000)],
        )
        .await?;
    Ok(rows[0].get(0))
}

/// Which email a flow sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// Confirm a sign-up.
    Confirmation,
    /// Reset a password.
    Recovery,
    /// Sign in without a password.
    MagicLink,
    /// Confirm a new email address.
    EmailChange,
    /// Join by invitation.
    Invite,
}

impl Template {
    /// The `type` of the verify link.
    pub fn verify_type(self) -> &'static str {
        match self {
            Template::Confirmation => "signup",
            Template::Recovery => "recovery",
            Template::MagicLink => "magiclink",
            Template::EmailChange => "email_change",
            Template::Invite => "invite",
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders an email with its link (`{external}/auth/v1/verify?...`) and OTP code.
pub fn render(t: Template, to: &str, link: &str, otp: &str) -> Mail {
    let (subject, intro, action) = match t {
        Template::Confirmation => (
            "Confirm your signup",
            "Follow this link to confirm your email address:",
            "Confirm your email",
        ),
        Template::Recovery => (
            "Reset your password",
            "Follow this link to reset the password for your account:",
            "Reset password",
        ),
        Template::MagicLink => (
            "Your sign-in link",
            "Follow this link to sign in:",
            "Sign in",
        ),
        Template::EmailChange => (
            "Confirm your new email",
            "Follow this link to confirm this as your new email address:",
            "Confirm new email",
        ),
        Template::Invite => (
            "You have been invited",
            "You have been invited to create an account. Follow this link to accept:",
            "Accept the invite",
        ),
    };
    let text = format!("{intro}\n\n{link}\n\nOr enter this code: {otp}\n\nIf you did not ask for this, ignore this email.\n");
    let html = format!(
        "<h2>{subject}</h2><p>{intro}</p><p><a href=\"{l}\">{action}</a></p><p>Or enter this code: <b>{otp}</b></p>\
         <p>If you did not ask for this, ignore this email.</p>",
        l = escape(link)
    );
    Mail {
        to: to.to_string(),
        subject: subject.to_string(),
        text,
        html,
    }
}
