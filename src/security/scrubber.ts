/**
 * Secret scrubbing (SPEC §4): every text that leaves the worker (check output,
 * CI logs, model text, error messages) loses the values of all configured
 * secrets and every common token shape before it reaches the model, chat, the
 * PR, logs or the audit trail.
 *
 * Two layers:
 * - Values: each configured secret (and secrets learned at run time, e.g. a
 *   minted installation token, through `add`), with its URL-encoded and
 *   JSON-escaped forms; a multi-line value (a PEM key) also by each body line
 *   and by its body joined on one line, so a key printed re-wrapped or cut by
 *   a tail window still goes. Longest first, so a secret that contains another
 *   goes whole. Values shorter than MIN_SECRET_LENGTH are ignored: they would
 *   redact ordinary words.
 * - Patterns: token shapes that are recognisable without knowing the value.
 *   They are deliberately narrow: the model reads repository files through
 *   this scrubber too, and a pattern that rewrote ordinary code would make its
 *   `str_replace` edits miss. A 40-hex git sha, `${TOKEN}`-style placeholders
 *   and prose survive (test/unit/scrubber.test.ts).
 *
 * A secret split across two chunks of a stream is only found once the chunks
 * are joined: scrub whole texts (after tail-capping), never chunk by chunk.
 */

/** A plain scrub function, the form sinks take (`(text) => text` when nothing is configured). */
export type Scrub = (text: string) => string;

export interface Scrubber {
  /** The text with every known secret value and token-shaped string replaced by `[REDACTED]`. */
  readonly scrub: Scrub;
  /** Adds a secret learned at run time (e.g. a minted GitHub App installation token); applies from the next scrub on. */
  add(secret: string): void;
}

export const REDACTED = '[REDACTED]';

/** Shorter configured values are ignored: `redis` or `admin` as a password would redact ordinary text. */
export const MIN_SECRET_LENGTH = 8;

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** PEM armour (`-----BEGIN …-----`) and RFC 1421 header lines are not secret; the body lines are. */
const PEM_ARMOUR = /^-----(?:BEGIN|END) [A-Z0-9 ]+-----$/;
const PEM_HEADER = /^[A-Za-z-]+:\s/;

/** Every form in which `secret` may show up in text, each at least MIN_SECRET_LENGTH long. */
export function secretForms(secret: string): string[] {
  const value = secret.trim();
  const forms = new Set<string>([value, encodeURIComponent(value), JSON.stringify(value).slice(1, -1)]);
  // Multi-line values (PEM keys), also when the newlines arrived escaped (`\n` in an env file).
  const lines = value
    .split(/\r?\n|\\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '');
  if (lines.length > 1) {
    const body = lines.filter((line) => !PEM_ARMOUR.test(line) && !PEM_HEADER.test(line));
    for (const line of body) forms.add(line);
    forms.add(body.join(''));
  }
  return [...forms].filter((form) => form.length >= MIN_SECRET_LENGTH);
}

/** `${TOKEN}`, `$TOKEN`, `{{ token }}`, `<password>`, `***`, `password`: documentation, not credentials. */
const PLACEHOLDER =
  /^(?:\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\{\{[^}]*\}\}|<[^>]*>|%[A-Za-z_]+%|\*+|x+|\.\.\.|…|pass(?:word|wd)?|secret|token|changeme|\[REDACTED\])$/i;

const PEM_END = /-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----/g;
const BASE64_CHAR = /[A-Za-z0-9+/=]/;
const MIN_KEY_LINE = 16;

/** Length of the line break (`\n`, `\r\n`, or an escaped `\\n` as in JSON) that ends right before `at`; 0 if none. */
function lineBreakBefore(text: string, at: number): number {
  if (text[at - 1] === '\n') return text[at - 2] === '\r' ? 2 : 1;
  return text[at - 1] === 'n' && text[at - 2] === '\\' ? 2 : 0;
}

/**
 * The end of a private key whose beginning a tail window cut off: the base64 lines right before an
 * END line. Walked backwards by hand, in linear time: a regex that had to find where such a run of
 * lines starts would rescan every long base64 line (a data URI, a lock file) from each position.
 */
function scrubKeyTails(text: string): string {
  let out = '';
  let done = 0;
  for (const match of text.matchAll(PEM_END)) {
    let start = match.index;
    for (;;) {
      const lineBreak = lineBreakBefore(text, start);
      if (lineBreak === 0) break;
      let lineStart = start - lineBreak;
      while (lineStart > done && BASE64_CHAR.test(text.charAt(lineStart - 1))) lineStart--;
      if (start - lineBreak - lineStart < MIN_KEY_LINE) break;
      start = lineStart;
    }
    if (start === match.index) continue;
    out += `${text.slice(done, start)}${REDACTED}`;
    done = match.index + match[0].length;
  }
  return done === 0 ? text : out + text.slice(done);
}

/**
 * Token shapes, applied in order. Each is a function so that capture groups
 * (a header name, a URL's user) can be kept around the redacted part.
 */
const PATTERN_RULES: ReadonlyArray<(text: string) => string> = [
  // PEM private key blocks, whole; then a block cut by a window: BEGIN without END, END without BEGIN.
  (text) =>
    text.replace(
      /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----/g,
      REDACTED,
    ),
  (text) =>
    text.replace(
      /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:(?:\r?\n|\\n)(?:[A-Za-z0-9+/=]+|[A-Za-z-]+: [^\r\n]*)?)*/g,
      REDACTED,
    ),
  (text) => scrubKeyTails(text),
  // `Authorization: Bearer …` (also `token`, `Basic`, Discord's `Bot`), in headers, curl lines and JSON logs.
  (text) =>
    text.replace(
      /\b((?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:bearer|basic|token|bot|digest)\s+)[A-Za-z0-9._~+/=-]{6,}/gi,
      `$1${REDACTED}`,
    ),
  // A bare `Bearer <credential>`: only a long value with a digit, so "bearer token" and "Bearer of news" stay.
  (text) => text.replace(/\b([Bb]earer\s+)(?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{16,}=*/g, `$1${REDACTED}`),
  // URL userinfo with a password: `scheme://user:password@host` keeps the user, loses the password.
  (text) =>
    text.replace(
      /\b([a-z][a-z0-9+.-]{0,31}:\/\/)([^\s/?#@:]*):([^\s/?#@]+)@/gi,
      (match, scheme: string, user: string, password: string) =>
        PLACEHOLDER.test(password) ? match : `${scheme}${user}:${REDACTED}@`,
    ),
  // Slack: bot/user/app/refresh tokens and incoming webhook URLs.
  (text) => text.replace(/\bxoxe\.xox[a-z]-[A-Za-z0-9-]+/g, REDACTED),
  (text) => text.replace(/\bxox[abposre]-[A-Za-z0-9-]+/g, REDACTED),
  (text) => text.replace(/\bxapp-[A-Za-z0-9-]+/g, REDACTED),
  (text) =>
    text.replace(
      /\bhttps:\/\/hooks\.slack\.com\/(services|workflows|triggers)\/[A-Za-z0-9/_-]+/g,
      `https://hooks.slack.com/$1/${REDACTED}`,
    ),
  // GitHub: classic and fine-grained personal tokens, OAuth, user-to-server, installation and refresh tokens.
  (text) => text.replace(/\bgh[pousr]_[A-Za-z0-9]{20,}/g, REDACTED),
  (text) => text.replace(/\bgithub_pat_[A-Za-z0-9_]{20,}/g, REDACTED),
  // Anthropic API and admin keys.
  (text) => text.replace(/\bsk-ant-[A-Za-z0-9_-]+/g, REDACTED),
  // AWS access key ids (long-term AKIA, temporary ASIA) and secret keys / session tokens named as such.
  (text) => text.replace(/\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b/g, REDACTED),
  (text) =>
    text.replace(
      /\b(aws_secret_access_key|aws_session_token)(["']?\s*[:=]\s*["']?)[A-Za-z0-9/+=]{16,}/gi,
      `$1$2${REDACTED}`,
    ),
  // JWTs (Kubernetes service-account tokens, OIDC id tokens, the GitHub App's own JWT): base64url JSON header `eyJ…`.
  (text) =>
    text.replace(
      /\beyJ[A-Za-z0-9_-]{8,}\.(?:eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*|[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,})/g,
      REDACTED,
    ),
  // Discord bot tokens: base64 of a numeric snowflake (so `[MNO][DTjz]…`), a 6-char timestamp, an HMAC.
  (text) =>
    text.replace(
      /(?<![A-Za-z0-9_-])[MNO][DTjz][A-Za-z0-9_-]{22,26}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40}(?![A-Za-z0-9_-])/g,
      REDACTED,
    ),
  (text) =>
    text.replace(
      /\b(https:\/\/(?:(?:canary|ptb)\.)?discord(?:app)?\.com\/api\/webhooks\/\d+\/)[A-Za-z0-9_-]+/g,
      `$1${REDACTED}`,
    ),
  // A few more registries' tokens with unmistakable prefixes: npm, Google API keys, Stripe live keys.
  (text) => text.replace(/\bnpm_[A-Za-z0-9]{36}\b/g, REDACTED),
  (text) => text.replace(/\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])/g, REDACTED),
  (text) => text.replace(/\b[rs]k_live_[0-9A-Za-z]{16,}/g, REDACTED),
];

/** The pattern layer alone: what is scrubbed when no configuration is known (the logger's default). */
export function scrubTokenPatterns(text: string): string {
  let out = text;
  for (const rule of PATTERN_RULES) out = rule(out);
  return out;
}

/**
 * A scrubber for the given secret values (see `secretValues` in
 * src/config/config.ts). Built once in the composition root and handed to
 * every sink as `scrubber.scrub`.
 */
export function createScrubber(secretValues: readonly string[]): Scrubber {
  const forms = new Set<string>();
  let values: RegExp | undefined;

  function rebuild(): void {
    // Longest first: an alternation takes the first alternative that matches, so a secret that
    // contains another (a key and one of its lines) is removed whole.
    const sorted = [...forms].sort((a, b) => b.length - a.length || (a < b ? -1 : 1));
    values = sorted.length === 0 ? undefined : new RegExp(sorted.map(escapeRegExp).join('|'), 'g');
  }

  function add(secret: string): void {
    let added = false;
    for (const form of secretForms(secret)) {
      if (forms.has(form)) continue;
      forms.add(form);
      added = true;
    }
    if (added) rebuild();
  }

  for (const secret of secretValues) add(secret);

  return {
    scrub(text) {
      if (text === '') return text;
      const withoutValues = values === undefined ? text : text.replace(values, REDACTED);
      return scrubTokenPatterns(withoutValues);
    },
    add,
  };
}
