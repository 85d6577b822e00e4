import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

/**
 * A local stand-in for Prometheus' HTTP API (SPEC §9), the instant-query endpoint only:
 * `GET /api/v1/query?query=…` and `POST /api/v1/query` with a form body
 * (`application/x-www-form-urlencoded`; URL and body parameters merged, as Go's `FormValue` does).
 * Answers are scripted per query string and sent in Prometheus' envelope
 * (`{status, data: {resultType, result}}` or `{status: "error", errorType, error}`), with the
 * HTTP status Prometheus uses for each `errorType` (bad_data 400, execution 422, timeout and
 * unavailable 503, internal 500) and sample values as strings (`"NaN"`, `"+Inf"`, `"-Inf"`).
 *
 * Anything else — another path or method, a POST that is not a form, a missing `query`, a
 * parameter Prometheus' instant query does not take, a query with no scripted answer — is
 * answered the way Prometheus would refuse it and lands in `unexpected`, which tests assert empty.
 */

export type PromNumber = number | 'NaN' | '+Inf' | '-Inf';

export type PrometheusAnswer =
  /** A vector with one sample without labels (what `sum(...)` gives). */
  | number
  /** An empty vector: no series matched. */
  | 'empty'
  /** A vector with one sample whose value is NaN (0/0: no traffic). */
  | 'nan'
  /** Never answers: the request stays open until the client gives up or the server closes. */
  | 'hang'
  | { vector: Array<{ labels?: Record<string, string>; value: PromNumber }> }
  | { scalar: PromNumber }
  | { matrix: Array<{ labels?: Record<string, string>; values: PromNumber[] }> }
  | { status: number; error: string; errorType?: string }
  /** A body sent as is (a proxy's HTML page, a malformed answer). */
  | { raw: { status: number; body: string; contentType?: string } };

export interface RecordedPromRequest {
  method: string;
  path: string;
  /** The `query` parameter, wherever it came from. */
  query: string | undefined;
  /** Every parameter, URL and form body merged. */
  params: Record<string, string>;
  contentType: string | undefined;
}

export interface UnexpectedPromRequest {
  method: string;
  path: string;
  reason: string;
}

export interface PrometheusServer {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  readonly requests: readonly RecordedPromRequest[];
  readonly unexpected: readonly UnexpectedPromRequest[];
  /** Scripts (or replaces) the answer to one exact query string. */
  answer(query: string, answer: PrometheusAnswer): void;
  /** How many requests asked this query. */
  count(query: string): number;
  /** Requests currently held open by `'hang'`. */
  readonly hanging: number;
  close(): Promise<void>;
}

/** The parameters of `/api/v1/query` (https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries). */
const KNOWN_PARAMS: ReadonlySet<string> = new Set(['query', 'time', 'timeout', 'limit', 'lookback_delta', 'stats']);

const STATUS_OF_ERROR_TYPE: Record<string, number> = {
  bad_data: 400,
  execution: 422,
  canceled: 499,
  timeout: 503,
  unavailable: 503,
  internal: 500,
  not_found: 404,
};

const ERROR_TYPE_OF_STATUS: Record<number, string> = {
  400: 'bad_data',
  422: 'execution',
  499: 'canceled',
  503: 'unavailable',
  404: 'not_found',
};

/** Prometheus writes values with Go's FormatFloat(v, 'f', -1, 64); JS `String` agrees except for an exponent on tiny and huge values. */
function wire(value: PromNumber): string {
  if (typeof value === 'string') return value;
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(value);
}

interface Reply {
  status: number;
  body: string;
  contentType: string;
}

const json = (status: number, body: unknown): Reply => ({
  status,
  body: JSON.stringify(body),
  contentType: 'application/json',
});

const success = (resultType: string, result: unknown): Reply =>
  json(200, { status: 'success', data: { resultType, result } });

const failure = (errorType: string, error: string, status = STATUS_OF_ERROR_TYPE[errorType] ?? 500): Reply =>
  json(status, { status: 'error', errorType, error });

function reply(answer: Exclude<PrometheusAnswer, 'hang'>, now: number): Reply {
  if (typeof answer === 'number') return success('vector', [{ metric: {}, value: [now, wire(answer)] }]);
  if (answer === 'empty') return success('vector', []);
  if (answer === 'nan') return success('vector', [{ metric: {}, value: [now, 'NaN'] }]);
  if ('vector' in answer) {
    return success(
      'vector',
      answer.vector.map((s) => ({ metric: s.labels ?? {}, value: [now, wire(s.value)] })),
    );
  }
  if ('scalar' in answer) return success('scalar', [now, wire(answer.scalar)]);
  if ('matrix' in answer) {
    return success(
      'matrix',
      answer.matrix.map((s) => ({
        metric: s.labels ?? {},
        values: s.values.map((v, i) => [now - 60 * (s.values.length - 1 - i), wire(v)]),
      })),
    );
  }
  if ('raw' in answer) {
    return { status: answer.raw.status, body: answer.raw.body, contentType: answer.raw.contentType ?? 'text/plain' };
  }
  return failure(answer.errorType ?? ERROR_TYPE_OF_STATUS[answer.status] ?? 'internal', answer.error, answer.status);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks).toString('utf8');
}

export async function startPrometheusServer(): Promise<PrometheusServer> {
  const answers = new Map<string, PrometheusAnswer>();
  const requests: RecordedPromRequest[] = [];
  const unexpected: UnexpectedPromRequest[] = [];
  const held = new Set<ServerResponse>();

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<Reply | 'hang'> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://localhost');
    const contentType = req.headers['content-type'];
    const params = new URLSearchParams(url.searchParams);
    const body = await readBody(req);
    const refuse = (reason: string, answer: Reply): Reply => {
      unexpected.push({ method, path: url.pathname, reason });
      return answer;
    };

    if (url.pathname !== '/api/v1/query') {
      return refuse('unknown path', { status: 404, body: '404 page not found\n', contentType: 'text/plain' });
    }
    if (method === 'POST') {
      if (contentType?.split(';')[0]?.trim() !== 'application/x-www-form-urlencoded') {
        return refuse(
          `POST with content-type ${contentType ?? 'none'}`,
          failure('bad_data', 'invalid parameter "query": unknown position: parse error: no expression found in input'),
        );
      }
      for (const [key, value] of new URLSearchParams(body)) params.append(key, value);
    } else if (method !== 'GET') {
      return refuse(`method ${method}`, { status: 405, body: 'Method Not Allowed\n', contentType: 'text/plain' });
    }

    const query = params.get('query') ?? undefined;
    requests.push({ method, path: url.pathname, query, params: Object.fromEntries(params), contentType });
    for (const key of new Set(params.keys())) {
      if (!KNOWN_PARAMS.has(key))
        return refuse(`unknown parameter ${key}`, failure('bad_data', `unknown parameter ${key}`));
    }
    if (query === undefined || query === '') {
      return refuse(
        'no query',
        failure('bad_data', 'invalid parameter "query": unknown position: parse error: no expression found in input'),
      );
    }
    const answer = answers.get(query);
    if (answer === undefined)
      return refuse(
        `no scripted answer for ${JSON.stringify(query)}`,
        failure('bad_data', `unscripted query ${query}`),
      );
    if (answer === 'hang') {
      held.add(res);
      res.on('close', () => held.delete(res));
      return 'hang';
    }
    return reply(answer, Date.now() / 1000);
  }

  const server = createServer((req, res) => {
    handle(req, res).then(
      (answer) => {
        if (answer === 'hang') return;
        res.writeHead(answer.status, { 'content-type': answer.contentType });
        res.end(answer.body);
      },
      (error: unknown) => {
        unexpected.push({
          method: req.method ?? 'GET',
          path: req.url ?? '/',
          reason: `server error: ${String(error)}`,
        });
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('internal error\n');
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('prometheus test server: no TCP address');

  return {
    url: `http://127.0.0.1:${address.port}`,
    requests,
    unexpected,
    answer(query, answer) {
      answers.set(query, answer);
    },
    count(query) {
      return requests.filter((r) => r.query === query).length;
    },
    get hanging() {
      return held.size;
    },
    async close() {
      // Hung requests would keep `close` waiting for ever.
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
