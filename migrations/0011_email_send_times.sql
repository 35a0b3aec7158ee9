-- When each email flow last mailed an address, keyed by the SHA-256 of the
-- normalised address the request named, whether or not an account has it.
-- `auth.email_min_interval_secs` is enforced from here, so a second request
-- within the interval gets the same 429 for an address with an account as for
-- one without (a per-user record would tell them apart). Hashes, not addresses:
-- the table holds whatever anyone typed, and needs no more than equality.
-- Rows older than a day are swept (the interval is far shorter).
CREATE TABLE auth.email_send_times (
  address_hash  text NOT NULL,
  -- The flow: signup, recovery, otp, invite or email_change.
  flow          text NOT NULL,
  sent_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (address_hash, flow)
);
CREATE INDEX email_send_times_sent_at ON auth.email_send_times (sent_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON auth.email_send_times TO wasmbase_auth;
