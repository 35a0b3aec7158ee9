-- Sign-in with OAuth 2 / OpenID Connect providers (docs/AUTH.md, "Social and
-- OIDC sign-in"). A flow is created by GET /auth/v1/authorize and consumed
-- once by GET /auth/v1/callback, on whichever node the browser comes back to.
-- Nothing here is usable without the state the browser carries: the state is
-- stored as its SHA-256, and our PKCE verifier towards the provider is sealed
-- with a key derived from the state.
CREATE TABLE IF NOT EXISTS auth.oauth_flows (
  state_hash             text PRIMARY KEY,
  provider               text NOT NULL,
  redirect_to            text NOT NULL,
  -- The app's PKCE challenge; NULL for the implicit flow (tokens in the fragment).
  code_challenge         text,
  code_challenge_method  text CHECK (code_challenge_method IN ('s256', 'plain')),
  verifier_sealed        text NOT NULL,
  nonce                  text NOT NULL,
  -- Set by GET /user/identities/authorize: the identity is added to this user.
  linking_user_id        uuid REFERENCES auth.users (id) ON DELETE CASCADE,
  created_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS oauth_flows_created ON auth.oauth_flows (created_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON auth.oauth_flows TO wasmbase_auth;

-- The provider's access and refresh tokens of an OAuth PKCE flow, sealed with
-- a key derived from the auth code (stored only as its SHA-256, like every auth
-- code from now on), until the app exchanges the code (GoTrue returns them as
-- provider_token / provider_refresh_token).
ALTER TABLE auth.flow_state ADD COLUMN IF NOT EXISTS provider_tokens_sealed text;
-- A linkIdentity flow's provider identity, joined to the user only at the code
-- exchange, where the verifier proves it is the browser that started the link.
ALTER TABLE auth.flow_state ADD COLUMN IF NOT EXISTS pending_identity jsonb;
-- Auth codes were stored in clear before this migration: hashed here, so the
-- codes of flows in progress keep working.
UPDATE auth.flow_state SET auth_code = encode(sha256(convert_to(auth_code, 'UTF8')), 'hex')
  WHERE auth_code_issued_at IS NOT NULL;

-- Anonymous users are swept by age.
CREATE INDEX IF NOT EXISTS users_anonymous_created ON auth.users (created_at) WHERE is_anonymous;
