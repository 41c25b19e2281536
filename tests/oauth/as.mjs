// A real OAuth 2.1 / OIDC authorization server for the OAuth integration tests: oidc-provider
// (tests/node, pinned) configured as design §12.1 of docs/design/oauth.md says.
//
// Usage: node tests/oauth/as.mjs [--port N]
//   --port N   TCP port on 127.0.0.1 (default 0: a free one). Always loopback.
//
// Once listening it prints exactly one line to stdout, {"issuer": "http://127.0.0.1:<port>",
// "port": <port>}, and nothing else ever goes to stdout. It exits 0 on SIGTERM/SIGINT and when its
// stdin reaches EOF (so a test that dies leaves no orphan behind).
//
// Environment:
//   AS_ACCESS_TTL   access token lifetime in seconds (default 3600)
//   AS_REFRESH_TTL  refresh token lifetime in seconds (default 14 days)
//   AS_EVENTS       file to which one JSON line per event is appended (see below)
//
// What it is:
//   - dynamic client registration, open (no initial access token), at /reg;
//   - authorization code with PKCE required of every client (S256 only), `iss` in every
//     authorization response; revocation (/token/revocation); introspection (/token/introspection);
//     client credentials;
//   - resource indicators (RFC 8707): every resource is a resource server whose scopes are
//     "tools:read tools:write", audience the resource itself, opaque access tokens (so a revocation
//     is seen by the next introspection);
//   - refresh tokens for every client registered with the refresh_token grant (no offline_access
//     needed), rotated on every use (reusing a rotated one revokes the whole grant: grant.revoked);
//   - any account id logs in; the interaction routes below stand in for a login page and a consent
//     page.
//
// Routes of its own (everything else is oidc-provider's):
//   GET  /interaction/<uid>          JSON {"uid", "prompt": "login"|"consent", "client_id"} (no page)
//   POST /interaction/<uid>/login    form login=<account>: the end-user logs in as <account>
//   POST /interaction/<uid>/confirm  form consent=yes|no: yes saves a Grant of the requested scopes for
//                                    the requested resource(s); no ends with error=access_denied
//   POST /test/revoke?account=<id>   destroys every grant of <id> and their tokens; answers
//                                    {"account", "grants": <count>}; logs a "test.revoked" event
//
// AS_EVENTS lines, each {"event": <name>, "time": <epoch seconds>, ...}, never a token, code or
// secret (a token appears only as "digest": the first 8 hex digits of its SHA-256):
//   registration       client_id, application_type, token_endpoint_auth_method, grant_types, redirect_uris
//   authorization      fields (names), resource, scope, client_id, code_challenge_method
//   token.request      grant_type, fields (names of the form fields), resource (values), client_auth
//                      (basic|post|none), client_id, outcome ("ok" or the OAuth error code)
//   authorization_code.consumed, access_token.saved, refresh_token.saved, refresh_token.consumed
//                      grant_id, client_id, account, digest; access tokens also aud, scope
//   grant.saved        grant_id, client_id, account
//   grant.revoked      grant_id (the provider revoked it: refresh token reuse, revocation endpoint)
//   test.revoked       account, grant_ids (the /test/revoke route)

import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const RESOURCE_SCOPES = 'tools:read tools:write';
const MAX_FORM_BYTES = 65536;

const requireFromTests = createRequire(new URL('../node/package.json', import.meta.url));
const { Provider } = await import(pathToFileURL(requireFromTests.resolve('oidc-provider')).href);

function argPort(argv) {
  const at = argv.indexOf('--port');
  if (at === -1) return 0;
  const port = Number(argv[at + 1]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`as.mjs: --port needs a port number, got ${argv[at + 1]}\n`);
    process.exit(2);
  }
  return port;
}

function seconds(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    process.stderr.write(`as.mjs: ${name} must be a positive whole number of seconds, got ${raw}\n`);
    process.exit(2);
  }
  return value;
}

const accessTokenTTL = seconds('AS_ACCESS_TTL', 3600);
const refreshTokenTTL = seconds('AS_REFRESH_TTL', 14 * 24 * 3600);
const eventsFile = process.env.AS_EVENTS || null;

/** The only form in which a token may be logged: first 8 hex digits of its SHA-256. */
function digest(value) {
  return createHash('sha256').update(String(value)).digest('hex').slice(0, 8);
}

function record(event, fields) {
  if (!eventsFile) return;
  appendFileSync(eventsFile, `${JSON.stringify({ event, time: Date.now() / 1000, ...fields })}\n`);
}

function asList(value) {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

/** Which client authentication a token request used, judged from its shape alone. */
function clientAuth(ctx) {
  if ((ctx.get('authorization') || '').toLowerCase().startsWith('basic ')) return 'basic';
  const body = ctx.oidc?.body || {};
  if ('client_secret' in body) return 'post';
  if ('client_assertion' in body) return 'assertion';
  return 'none';
}

function tokenFields(token) {
  return {
    grant_id: token.grantId,
    client_id: token.clientId,
    account: token.accountId,
    digest: digest(token.jti),
  };
}

// Grants by account, for /test/revoke (the memory adapter cannot list them).
const grantsByAccount = new Map();

function signingKeys() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { keys: [{ ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256' }] };
}

function configuration() {
  return {
    jwks: signingKeys(),
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    interactions: { url: async (ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        getResourceServerInfo: async (ctx, resource) => ({
          scope: RESOURCE_SCOPES,
          audience: resource,
          accessTokenFormat: 'opaque',
          accessTokenTTL,
        }),
      },
    },
    pkce: { required: () => true },
    rotateRefreshToken: true,
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: accessTokenTTL,
      ClientCredentials: accessTokenTTL,
      RefreshToken: refreshTokenTTL,
      AuthorizationCode: 60,
      Interaction: 600,
      Session: 3600,
      Grant: refreshTokenTTL,
    },
  };
}

function watchEvents(provider) {
  provider.on('registration_create.success', (ctx, client) => record('registration', {
    client_id: client.clientId,
    application_type: client.applicationType,
    token_endpoint_auth_method: client.clientAuthMethod,
    grant_types: client.grantTypes,
    redirect_uris: client.redirectUris,
  }));
  provider.on('authorization.accepted', (ctx) => {
    const { params } = ctx.oidc;
    record('authorization', {
      client_id: params.client_id,
      fields: Object.keys(params).filter((name) => params[name] !== undefined).sort(),
      resource: asList(params.resource),
      scope: params.scope ?? null,
      code_challenge_method: params.code_challenge_method ?? null,
    });
  });
  const tokenRequest = (ctx, error) => {
    const body = ctx.oidc?.body || {};
    record('token.request', {
      grant_type: body.grant_type ?? null,
      fields: Object.keys(body).sort(),
      resource: asList(body.resource),
      client_auth: clientAuth(ctx),
      client_id: ctx.oidc?.client?.clientId ?? null,
      outcome: error ? (error.error || 'server_error') : 'ok',
    });
  };
  provider.on('grant.success', (ctx) => tokenRequest(ctx, null));
  provider.on('grant.error', (ctx, error) => tokenRequest(ctx, error));
  provider.on('authorization_code.consumed', (code) => record('authorization_code.consumed', tokenFields(code)));
  provider.on('access_token.saved', (token) => record('access_token.saved', {
    ...tokenFields(token), aud: token.aud ?? null, scope: token.scope ?? null,
  }));
  provider.on('refresh_token.saved', (token) => record('refresh_token.saved', tokenFields(token)));
  provider.on('refresh_token.consumed', (token) => record('refresh_token.consumed', tokenFields(token)));
  provider.on('grant.saved', (grant) => {
    if (!grantsByAccount.has(grant.accountId)) grantsByAccount.set(grant.accountId, new Set());
    grantsByAccount.get(grant.accountId).add(grant.jti);
    record('grant.saved', { grant_id: grant.jti, client_id: grant.clientId, account: grant.accountId });
  });
  provider.on('grant.revoked', (ctx, grantId) => record('grant.revoked', { grant_id: grantId }));
  provider.on('server_error', (ctx, error) => process.stderr.write(`as.mjs: server error: ${error.stack}\n`));
}

function sendJson(res, status, body) {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': data.length, 'cache-control': 'no-store' });
  res.end(data);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function login(provider, req, res, details) {
  if (details.prompt.name !== 'login') {
    sendJson(res, 400, { error: `this interaction asks for ${details.prompt.name}, not login` });
    return;
  }
  const account = (await readForm(req)).get('login');
  if (!account) {
    sendJson(res, 400, { error: 'the form needs login=<account>' });
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: account } }, { mergeWithLastSubmission: false });
}

async function confirm(provider, req, res, details) {
  if (details.prompt.name !== 'consent') {
    sendJson(res, 400, { error: `this interaction asks for ${details.prompt.name}, not consent` });
    return;
  }
  const answer = (await readForm(req)).get('consent');
  if (answer !== 'yes') {
    await provider.interactionFinished(
      req, res,
      { error: 'access_denied', error_description: 'the end-user refused consent' },
      { mergeWithLastSubmission: false },
    );
    return;
  }
  const { prompt: { details: missing }, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [resource, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(resource, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: details.grantId ? {} : { grantId } }, { mergeWithLastSubmission: true });
}

async function revokeAccount(provider, res, account) {
  if (!account) {
    sendJson(res, 400, { error: 'the query needs account=<id>' });
    return;
  }
  const grantIds = [...(grantsByAccount.get(account) || [])];
  grantsByAccount.delete(account);
  for (const grantId of grantIds) {
    await Promise.all([
      provider.AccessToken.revokeByGrantId(grantId),
      provider.RefreshToken.revokeByGrantId(grantId),
      provider.AuthorizationCode.revokeByGrantId(grantId),
      provider.Grant.adapter.destroy(grantId),
    ]);
  }
  record('test.revoked', { account, grant_ids: grantIds });
  sendJson(res, 200, { account, grants: grantIds.length });
}

const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm))?$/;

/** Our own routes; anything else goes to the provider. */
function handler(provider) {
  const callback = provider.callback();
  return async (req, res) => {
    const url = new URL(req.url, provider.issuer);
    const interaction = url.pathname.match(INTERACTION);
    try {
      if (interaction) {
        const [, uid, action] = interaction;
        const expected = action ? 'POST' : 'GET';
        if (req.method !== expected) {
          sendJson(res, 405, { error: `${expected} only` });
          return;
        }
        const details = await provider.interactionDetails(req, res);
        if (details.uid !== uid) {
          sendJson(res, 400, { error: 'this interaction is not the one the browser is in' });
        } else if (!action) {
          sendJson(res, 200, { uid, prompt: details.prompt.name, client_id: details.params.client_id });
        } else if (action === 'login') {
          await login(provider, req, res, details);
        } else {
          await confirm(provider, req, res, details);
        }
        return;
      }
      if (url.pathname === '/test/revoke') {
        if (req.method !== 'POST') {
          sendJson(res, 405, { error: 'POST only' });
          return;
        }
        await revokeAccount(provider, res, url.searchParams.get('account'));
        return;
      }
    } catch (error) {
      if (!res.headersSent) sendJson(res, 400, { error: error.name, error_description: error.message });
      return;
    }
    callback(req, res);
  };
}

const server = createServer();
server.listen(argPort(process.argv), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration());
  watchEvents(provider);
  server.on('request', handler(provider));
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

function stop() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
