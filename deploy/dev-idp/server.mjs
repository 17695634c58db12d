// Development OpenID Provider for qes-signer: integration tests and the quick start.
// NOT FOR PRODUCTION: in-memory storage, plain-text demo passwords and one-time codes, a minimal
// login form. Two assurance levels: PWD (password) and, only when the authorization request's
// acr_values asks for it, MFA (password, then the user's fixed demo code "otp" on a second page).
//
// Usage: node server.mjs CONFIG.json   (or DEV_IDP_CONFIG=CONFIG.json node server.mjs)
// Config: { issuer, port, resource, access_token_ttl?, jwks? | jwks_file?, jwks_max_age?, cookie_keys?,
//           clients: [{ client_id, client_secret?, grant_types, ..., claims? }],
//           users: [{ username, password, otp?, sub?, claims }] }
// Prints "dev-idp listening on <issuer>" when ready; exits cleanly on SIGTERM/SIGINT.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Provider, { errors } from 'oidc-provider';

const RESERVED = new Set(['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'client_id', 'scope', 'cnf']);
const ACR = 'urn:qes-signer:dev-idp:pwd';
const ACR_MFA = 'urn:qes-signer:dev-idp:mfa';
const PENDING_MS = 10 * 60 * 1000; // as the Interaction TTL

function loadConfig() {
  const file = process.argv[2] || process.env.DEV_IDP_CONFIG;
  if (!file) throw new Error('usage: node server.mjs CONFIG.json (or set DEV_IDP_CONFIG)');
  const config = JSON.parse(fs.readFileSync(file, 'utf8'));
  config.dir = path.dirname(path.resolve(file));
  return config;
}

// The private JWKS: inline in the config, or a file next to it, generated (ES256) when missing.
function loadJwks(config) {
  if (config.jwks) return config.jwks;
  const file = path.resolve(config.dir, config.jwks_file || 'dev-idp-keys.private.json');
  if (!fs.existsSync(file)) {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = privateKey.export({ format: 'jwk' });
    const keys = { keys: [{ ...jwk, kid: `dev-${crypto.randomBytes(6).toString('hex')}`, alg: 'ES256', use: 'sig' }] };
    fs.writeFileSync(file, `${JSON.stringify(keys, null, 2)}\n`, { mode: 0o600 });
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function safeEqual(a, b) {
  const x = crypto.createHash('sha256').update(String(a)).digest();
  const y = crypto.createHash('sha256').update(String(b)).digest();
  return crypto.timingSafeEqual(x, y);
}

function publicClaims(claims) {
  return Object.fromEntries(Object.entries(claims || {}).filter(([k]) => !RESERVED.has(k)));
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, clientId, error) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>dev-idp login</title></head>
<body><h1>Development IdP (not for production)</h1><p>Sign in for ${esc(clientId)}</p>
${error ? `<p role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<label>Username <input name="username" autocomplete="username" autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button></form></body></html>`;
}

function otpPage(uid, error) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>dev-idp second factor</title></head>
<body><h1>Development IdP (not for production)</h1><p>Second factor: enter your one-time code</p>
${error ? `<p role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/otp">
<label>One-time code <input name="otp" inputmode="numeric" autocomplete="one-time-code" autofocus></label>
<button type="submit">Verify</button></form></body></html>`;
}

// MFA only when acr_values (OIDC Core 3.1.2.1) asks for it and does not also accept PWD (the
// lowest level the RP accepts is enough), and the user has a second factor: acr_values is
// voluntary, so a user without one still logs in, at PWD, and the RP decides.
function wantsMfa(details, user) {
  const asked = String(details.params.acr_values || '').split(' ');
  return asked.includes(ACR_MFA) && !asked.includes(ACR) && Boolean(user.otp);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16384) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Grant exactly what was asked for: demo clients are first-party, so there is no consent screen.
async function autoConsent(provider, details) {
  const { prompt: { details: missing }, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

function interactionRoutes(provider, users) {
  const usersBySub = new Map([...users.values()].map((u) => [u.sub, u]));
  // Interaction uid -> { sub, at } after a correct password, until the second factor is correct.
  const pending = new Map();
  const html = (ctx, status, body) => {
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = body;
  };
  return async (ctx, next) => {
    const m = ctx.path.match(/^\/interaction\/([\w-]+)(\/login|\/otp)?$/);
    if (!m) return next();
    ctx.set('cache-control', 'no-store');
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== m[1]) ctx.throw(400, 'interaction mismatch');
    let result;
    if (details.prompt.name === 'consent') {
      result = { consent: { grantId: await autoConsent(provider, details) } };
    } else if (ctx.method === 'POST' && m[2] === '/login') {
      const form = await readForm(ctx.req);
      const user = users.get(form.get('username') || '');
      if (!user || !safeEqual(user.password, form.get('password') || '')) {
        html(ctx, 401, loginPage(details.uid, details.params.client_id, 'Invalid username or password'));
        return undefined;
      }
      if (wantsMfa(details, user)) {
        const now = Date.now();
        for (const [uid, p] of pending) if (now - p.at > PENDING_MS) pending.delete(uid);
        pending.set(details.uid, { sub: user.sub, at: now });
        html(ctx, 200, otpPage(details.uid));
        return undefined;
      }
      result = { login: { accountId: user.sub, acr: ACR, amr: ['pwd'], remember: false } };
    } else if (ctx.method === 'POST' && m[2] === '/otp') {
      const form = await readForm(ctx.req);
      const step = pending.get(details.uid);
      const user = step && Date.now() - step.at <= PENDING_MS && usersBySub.get(step.sub);
      if (!user) {
        pending.delete(details.uid);
        html(ctx, 401, loginPage(details.uid, details.params.client_id, 'Sign in with your password first'));
        return undefined;
      }
      if (!safeEqual(user.otp, form.get('otp') || '')) {
        step.tries = (step.tries || 0) + 1;
        if (step.tries >= 5) pending.delete(details.uid); // then the password again
        html(ctx, 401, otpPage(details.uid, 'Invalid one-time code'));
        return undefined;
      }
      pending.delete(details.uid);
      result = { login: { accountId: user.sub, acr: ACR_MFA, amr: ['pwd', 'otp'], remember: false } };
    } else {
      pending.delete(details.uid);
      html(ctx, 200, loginPage(details.uid, details.params.client_id));
      return undefined;
    }
    // The consent step keeps the login just submitted (as in oidc-provider's own example):
    // without it a prompt=login authorization request would ask for the login again.
    const merge = details.prompt.name === 'consent';
    const location = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: merge });
    ctx.status = 303;
    ctx.redirect(location);
    return undefined;
  };
}

// Lets relying parties cache the JWKS (RFC 9111 max-age); counts fetches for cache tests.
function jwksCaching(maxAge) {
  let fetches = 0;
  return async (ctx, next) => {
    if (ctx.path === '/_dev/stats') {
      ctx.body = { jwks_fetches: fetches };
      return undefined;
    }
    await next();
    if (ctx.path === '/jwks' && ctx.status === 200) {
      fetches += 1;
      ctx.set('cache-control', `public, max-age=${maxAge}`);
    }
    return undefined;
  };
}

function buildProvider(config) {
  const users = new Map(config.users.map((u) => [u.username, { ...u, sub: u.sub || u.username }]));
  const usersBySub = new Map([...users.values()].map((u) => [u.sub, u]));
  const clientClaims = new Map(config.clients.map((c) => [c.client_id, c.claims || {}]));
  const clients = config.clients.map(({ claims, ...metadata }) => metadata);
  const ttl = config.access_token_ttl || 600;
  const resourceServer = {
    scope: 'sign',
    audience: config.resource,
    accessTokenTTL: ttl,
    // RFC 9068 JWT access tokens: oidc-provider signs them with typ "at+jwt", which the signer
    // requires of bearer tokens (its ID tokens carry no such typ and are refused as bearer).
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'ES256' } },
  };

  const provider = new Provider(config.issuer, {
    clients,
    jwks: loadJwks(config),
    cookies: { keys: config.cookie_keys || [crypto.randomBytes(32).toString('hex')] },
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    claims: {
      acr: null, amr: null, auth_time: null, sid: null,
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      profile: ['name', 'given_name', 'family_name', 'birthdate', 'country', 'pno'],
      email: ['email', 'email_verified'],
      roles: ['roles'], // scope "roles": the signer's audit UI reads the auditor role from the ID token
    },
    acrValues: [ACR, ACR_MFA],
    scopes: ['openid', 'offline_access', 'sign'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // RFC 9449: a client that sends a DPoP proof to the token endpoint gets a token bound to
      // its key (cnf.jkt), token_type DPoP; the signer's issuers may require that.
      dPoP: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => config.resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => {
          if (indicator !== config.resource) throw new errors.InvalidTarget();
          return resourceServer;
        },
      },
    },
    // RFC 9068 §2.2.3: identity claims ride in the access token so the API needs no userinfo call.
    extraTokenClaims: async (ctx, token) => {
      if (token.kind === 'ClientCredentials') return publicClaims(clientClaims.get(token.clientId));
      const user = token.accountId && usersBySub.get(token.accountId);
      if (!user) return undefined;
      const { AuthorizationCode: code, RefreshToken: rt } = ctx?.oidc?.entities || {};
      const source = code || rt || {};
      return { ...publicClaims(user.claims), acr: source.acr, amr: source.amr, auth_time: source.authTime };
    },
    findAccount: async (_ctx, sub) => {
      const user = usersBySub.get(sub);
      if (!user) return undefined;
      return { accountId: sub, claims: async () => ({ ...publicClaims(user.claims), sub }) };
    },
    ttl: { AccessToken: ttl, ClientCredentials: ttl, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600, AuthorizationCode: 60 },
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  provider.use(interactionRoutes(provider, users));
  provider.use(jwksCaching(config.jwks_max_age ?? 300));
  return provider;
}

const config = loadConfig();
const provider = buildProvider(config);
const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log(`dev-idp listening on ${config.issuer}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
