/*
 * Lambda handlers of the test WebSocket API (serverless.yml), run by
 * serverless-offline on loopback.
 *
 * authorize   REQUEST authorizer on $connect: the client presents a JWT as
 *             ?token= (browsers cannot set headers on a WebSocket), HS256 with
 *             APIGW_JWT_SECRET; its `sub` becomes the principalId, i.e. the
 *             customerId. Anything else is 401 ("Unauthorized").
 * connect     $connect: POST {connectionId, customerId} to source-http's
 *             /v1/ws/connect, as API Gateway's HTTP integration would with
 *             the README's request template; source-http's status is the
 *             route's (a non-2xx refuses the WebSocket handshake).
 * disconnect  $disconnect: POST {connectionId, customerId} to /v1/ws/disconnect.
 * message     $default: answers {"connectionId", "customerId"} so a client can
 *             learn its own connection id.
 *
 * Only node's own modules: nothing to install beside serverless-offline.
 */
'use strict';

const crypto = require('node:crypto');

const TIMEOUT_MS = 5000; // under the Lambda default of 6 s

function b64urlDecode(part) {
  return Buffer.from(part.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

/* The token's claims when it is a current HS256 JWT signed with secret;
 * null otherwise. */
function verifyJwt(token, secret) {
  if (typeof token !== 'string' || !secret) return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  let header;
  let claims;
  try {
    header = JSON.parse(b64urlDecode(parts[0]).toString('utf8'));
    claims = JSON.parse(b64urlDecode(parts[1]).toString('utf8'));
  } catch (e) {
    return null;
  }
  if (!header || header.alg !== 'HS256' || !claims || typeof claims !== 'object') return null;
  const want = crypto.createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
  const got = b64urlDecode(parts[2]);
  if (got.length !== want.length || !crypto.timingSafeEqual(got, want)) return null;
  const now = Date.now() / 1000;
  if (typeof claims.exp === 'number' && now >= claims.exp) return null;
  if (typeof claims.nbf === 'number' && now < claims.nbf) return null;
  if (typeof claims.sub !== 'string' || claims.sub === '') return null;
  return claims;
}

function policy(principalId, effect, resource) {
  return {
    principalId,
    policyDocument: {
      Version: '2012-10-17',
      Statement: [{ Action: 'execute-api:Invoke', Effect: effect, Resource: resource }],
    },
  };
}

async function forward(route, body) {
  const base = process.env.CONNECTD_WS_URL;
  if (!base) throw new Error('CONNECTD_WS_URL is not set');
  const headers = { 'Content-Type': 'application/json' };
  if (process.env.CONNECTD_WS_API_KEY) headers['X-Api-Key'] = process.env.CONNECTD_WS_API_KEY;
  const resp = await fetch(`${base.replace(/\/+$/, '')}/v1/ws/${route}`, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const text = await resp.text();
  console.log(`ws ${route} ${body.connectionId} ${body.customerId || '-'}: ${resp.status} ${text}`);
  return { statusCode: resp.status, body: text };
}

function customerOf(event) {
  const a = event.requestContext && event.requestContext.authorizer;
  return a && typeof a.principalId === 'string' ? a.principalId : undefined;
}

/* Callback style: callback('Unauthorized') is how a Lambda authorizer makes
 * API Gateway (and serverless-offline) answer 401. */
exports.authorize = (event, context, callback) => {
  const q = event.queryStringParameters || {};
  const claims = verifyJwt(q.token, process.env.APIGW_JWT_SECRET);
  if (!claims) {
    callback('Unauthorized');
    return;
  }
  callback(null, policy(claims.sub, 'Allow', event.methodArn));
};

exports.connect = async (event) => {
  const connectionId = event.requestContext.connectionId;
  const customerId = customerOf(event);
  if (!customerId) return { statusCode: 401, body: 'no customer' };
  try {
    return await forward('connect', { connectionId, customerId });
  } catch (e) {
    console.log(`ws connect ${connectionId}: ${e.message}`);
    return { statusCode: 502, body: e.message };
  }
};

exports.disconnect = async (event) => {
  const connectionId = event.requestContext.connectionId;
  const body = { connectionId };
  const customerId = customerOf(event);
  if (customerId) body.customerId = customerId;
  try {
    return await forward('disconnect', body);
  } catch (e) {
    console.log(`ws disconnect ${connectionId}: ${e.message}`);
    return { statusCode: 502, body: e.message };
  }
};

exports.message = async (event) => ({
  statusCode: 200,
  body: JSON.stringify({
    connectionId: event.requestContext.connectionId,
    customerId: customerOf(event) || null,
  }),
});
