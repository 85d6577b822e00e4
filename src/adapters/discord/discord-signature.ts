import { createPublicKey, verify, type KeyObject } from 'node:crypto';

/**
 * Discord signs every interaction it delivers to the HTTP endpoint with the application's Ed25519
 * key: `X-Signature-Ed25519` is the hex signature of `X-Signature-Timestamp` followed by the raw
 * body (https://discord.com/developers/docs/interactions/overview#setting-up-an-endpoint-validating-security-request-headers).
 * node:crypto verifies it; no extra library holds the trust decision.
 */

/** DER prefix of an SPKI-wrapped Ed25519 public key (RFC 8410): the 32 raw key bytes follow it. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
/**
 * Older timestamps are refused even when signed: a captured request replayed later must not act
 * again. Discord sends at once, so five minutes leaves room for clock skew only.
 */
export const MAX_SIGNATURE_AGE_SECONDS = 300;

/** The application's public key (64 hex characters, as the developer portal shows it) as a KeyObject. */
export function discordPublicKey(hex: string): KeyObject {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new Error('a Discord public key is 64 hex characters');
  return createPublicKey({
    key: Buffer.concat([ED25519_SPKI_PREFIX, Buffer.from(hex, 'hex')]),
    format: 'der',
    type: 'spki',
  });
}

export type SignatureCheck = { ok: true } | { ok: false; reason: string };

/** Whether `body` was signed by the key at `timestamp` (seconds, as Discord sends it) and is recent enough. */
export function verifyDiscordSignature(input: {
  key: KeyObject;
  signature: string | undefined;
  timestamp: string | undefined;
  body: Buffer;
  nowSeconds: number;
}): SignatureCheck {
  const { signature, timestamp } = input;
  if (signature === undefined || timestamp === undefined) return { ok: false, reason: 'missing signature headers' };
  if (!/^[0-9a-fA-F]{128}$/.test(signature)) return { ok: false, reason: 'malformed signature' };
  if (!/^\d{1,12}$/.test(timestamp)) return { ok: false, reason: 'malformed timestamp' };
  const signed = verify(
    null,
    Buffer.concat([Buffer.from(timestamp, 'utf8'), input.body]),
    input.key,
    Buffer.from(signature, 'hex'),
  );
  if (!signed) return { ok: false, reason: 'bad signature' };
  if (Math.abs(input.nowSeconds - Number(timestamp)) > MAX_SIGNATURE_AGE_SECONDS)
    return { ok: false, reason: 'stale timestamp' };
  return { ok: true };
}
