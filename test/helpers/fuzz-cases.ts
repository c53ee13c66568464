import fc from 'fast-check';

/**
 * Generators for the fuzzing test (test/fuzz-api.test.ts): REST requests and WebSocket sessions that stay near the
 * real API (real routes, schema-near bodies and messages with a few fields mutated) and stray far from it (garbage,
 * wrong types, wrong content types, oversize bodies). Everything is data: the test resolves placeholders (`$JOB`,
 * `$LEASE`, …) against the live coordinator and sends it.
 */

/** Values a hostile client puts where the API expects something sensible. */
export const NASTY_SEGMENTS = [
  '%00',
  'a%00b',
  '%00%00%00',
  '%',
  '%zz',
  '%2e%2e%2f%2e%2e%2fetc%2fpasswd',
  '..',
  '.',
  '99999999999999999999999999999',
  '-1',
  '0',
  '1e309',
  'NaN',
  'Infinity',
  'null',
  'undefined',
  '%5B%5D',
  '%7B%7D',
  'true',
  "'%20OR%201%3D1%20--",
  '0x0000000000000000000000000000000000000000',
  '0xffffffffffffffffffffffffffffffffffffffff',
  '0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF',
  '0x12',
  '%F0%9F%92%A9',
  '%C0%AF',
  '%ff%fe',
  '%EF%BB%BF',
  'x'.repeat(5000),
  '$ADDR_LOWER',
  '$ADDR_BADSUM',
  '$JOB%00',
  '$JOB.json',
] as const;

export const NASTY_JSON: unknown[] = [
  1e308,
  -1e308,
  2 ** 53 + 1,
  -(2 ** 53) - 1,
  -1,
  0,
  -0,
  0.5,
  5e-324,
  1e21,
  '',
  '\u0000',
  '%00',
  'x'.repeat(70_000),
  null,
  [],
  {},
  true,
  false,
  '1',
  '-1',
  '1e400',
  [[[[[[[[[[[]]]]]]]]]]],
  { $ref: '#' },
  Array.from({ length: 5000 }, () => 0),
  '0x0000000000000000000000000000000000000000',
  '$ADDR_LOWER',
  '$ADDR_BADSUM',
  '$ADDRESS',
  '$JOB',
  '$LEASE',
  '$TOKEN',
];

const ASCII = fc.string({ maxLength: 40 });
const ANY_TEXT = fc.string({ unit: 'binary', maxLength: 40 });

/** A JSON value from the nasty list or anywhere else. */
export const jsonValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NASTY_JSON) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 1, arbitrary: fc.double().map((d) => (Number.isFinite(d) ? d : null)) },
  { weight: 1, arbitrary: fc.integer() },
);

interface Mutation {
  at: number;
  op: 'set' | 'delete' | 'add' | 'wrap' | 'proto';
  key: string;
  value: unknown;
}

const mutation: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  op: fc.constantFrom('set', 'set', 'set', 'delete', 'add', 'wrap', 'proto'),
  key: fc.oneof(ASCII, fc.constantFrom('__proto__', 'constructor', 'prototype', 'type', 'leaseId', '')),
  value: jsonValue,
});

type Json = Record<string, unknown> | unknown[];

function containers(v: unknown, out: { parent: Json; key: string | number }[] = []) {
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      out.push({ parent: v, key: i });
      containers(x, out);
    });
  } else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      out.push({ parent: v as Json, key: k });
      containers(x, out);
    }
  }
  return out;
}

/** Applies mutations to a deep copy of `base`: set a field to a nasty value, delete it, add one, wrap it in an array. */
export function applyMutations(base: unknown, muts: Mutation[]): unknown {
  const root = { v: JSON.parse(JSON.stringify(base)) as unknown };
  for (const mut of muts) {
    // Values of NASTY_JSON are shared between cases: each insertion gets its own copy.
    const m = { ...mut, value: structuredClone(mut.value) };
    const slots = containers(root.v);
    if (slots.length === 0 || m.at % 7 === 0) {
      // Sometimes the whole document is replaced or gets the extra key.
      if (m.op === 'set') root.v = m.value;
      else if (root.v && typeof root.v === 'object' && !Array.isArray(root.v))
        (root.v as Record<string, unknown>)[m.key] = m.value;
      continue;
    }
    const s = slots[m.at % slots.length];
    const parent = s.parent as Record<string | number, unknown>;
    switch (m.op) {
      case 'set':
        parent[s.key] = m.value;
        break;
      case 'delete':
        if (Array.isArray(parent)) parent.splice(Number(s.key), 1);
        else delete parent[s.key];
        break;
      case 'add':
        if (Array.isArray(parent)) parent.push(m.value);
        else parent[m.key] = m.value;
        break;
      case 'wrap':
        parent[s.key] = [parent[s.key]];
        break;
      case 'proto':
        // An own "__proto__" key survives JSON.stringify only when defined like this.
        Object.defineProperty(parent, '__proto__', {
          value: { polluted: true },
          enumerable: true,
          configurable: true,
          writable: true,
        });
        break;
    }
  }
  return root.v;
}

/** A base document with 0..3 mutations applied, as JSON text (`undefined` bodies become 'null'). */
export const mutatedJson = (base: unknown): fc.Arbitrary<string> =>
  fc.array(mutation, { maxLength: 3 }).map((muts) => JSON.stringify(applyMutations(base, muts)) ?? 'null');

// ---- REST ------------------------------------------------------------------------------------------------------

export type BodyBase = 'job' | 'faucet' | 'faucetAddress' | 'signin' | 'key' | 'offer' | 'link' | 'empty' | 'dataset';

interface Route {
  method: string;
  path: string;
  body?: BodyBase;
}

/** Every route of coordinator/app.ts; `:x` parameters get valid or mutated values. */
export const ROUTES: Route[] = [
  { method: 'GET', path: '/api/v1/health' },
  { method: 'GET', path: '/api/v1/jobs' },
  { method: 'POST', path: '/api/v1/jobs', body: 'job' },
  { method: 'GET', path: '/api/v1/jobs/:job' },
  { method: 'POST', path: '/api/v1/jobs/:badjob/cancel', body: 'empty' },
  { method: 'GET', path: '/api/v1/jobs/:job/model/model.json' },
  { method: 'GET', path: '/api/v1/jobs/:job/model/:file' },
  { method: 'GET', path: '/api/v1/accounts/:addr' },
  { method: 'GET', path: '/api/v1/accounts/:addr/credits' },
  { method: 'GET', path: '/api/v1/accounts/:addr/statement' },
  { method: 'GET', path: '/api/v1/ledger/events/:event' },
  { method: 'POST', path: '/api/v1/faucet', body: 'faucet' },
  { method: 'POST', path: '/api/v1/faucet', body: 'faucetAddress' },
  { method: 'GET', path: '/api/v1/auth/nonce' },
  { method: 'POST', path: '/api/v1/auth/signin', body: 'signin' },
  { method: 'POST', path: '/api/v1/auth/signout', body: 'empty' },
  { method: 'GET', path: '/api/v1/auth/me' },
  { method: 'POST', path: '/api/v1/keys', body: 'key' },
  { method: 'GET', path: '/api/v1/keys' },
  { method: 'DELETE', path: '/api/v1/keys/:key' },
  { method: 'GET', path: '/api/v1/accounts/link-nonce' },
  { method: 'POST', path: '/api/v1/accounts/link', body: 'link' },
  { method: 'POST', path: '/api/v1/datasets', body: 'dataset' },
  { method: 'GET', path: '/api/v1/datasets' },
  { method: 'GET', path: '/api/v1/datasets/:dataset' },
  { method: 'POST', path: '/api/v1/offers', body: 'offer' },
  { method: 'DELETE', path: '/api/v1/offers/:offer' },
  { method: 'GET', path: '/api/v1/market' },
  { method: 'GET', path: '/api/v1/stats' },
  { method: 'GET', path: '/api/v1/blobs/:hash' },
  { method: 'GET', path: '/' },
  { method: 'GET', path: '/requester/:any' },
  { method: 'GET', path: '/widget/frame' },
];

/** Valid values of each parameter kind; `$…` placeholders are filled in by the test. */
const VALID: Record<string, string[]> = {
  job: ['$JOB'],
  badjob: ['j_doesnotexist', '$JOB%00'],
  file: ['weights.bin', 'group1-shard1of1.bin', '$HASH.bin'],
  addr: ['$ADDRESS', '$ADDR_LOWER'],
  event: ['faucet:x', 'credit:x'],
  key: ['k_1'],
  dataset: ['mnist', 'mnist-small'],
  offer: ['1', 'o_1'],
  hash: ['$HASH'],
  any: ['x', 'new'],
};

const segment = (kind: string): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...(VALID[kind] ?? ['x'])) },
    { weight: 4, arbitrary: fc.constantFrom(...NASTY_SEGMENTS) },
    { weight: 1, arbitrary: ASCII.map(encodeURIComponent) },
    { weight: 1, arbitrary: ANY_TEXT.map((s) => encodeURIComponent(s.replace(/[\uD800-\uDFFF]/g, '?'))) },
    { weight: 1, arbitrary: fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }).map(String) },
    { weight: 1, arbitrary: fc.double().map((d) => encodeURIComponent(String(d))) },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(...(VALID[kind] ?? ['x']))
        .map((v) => `${v}${['%00', '/', '%2F', '?x', '#'][v.length % 5]}`),
    },
  );

const query: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constant('') },
  {
    weight: 2,
    arbitrary: fc
      .record({
        limit: fc.oneof(fc.constantFrom('1', '500', '501', '0', '-1', '1e3', '999', '%00', 'abc', '1.5'), segment('x')),
        cursor: fc.option(fc.oneof(fc.constantFrom('%00', 'x'.repeat(200), '0', 'eyJ9', '$JOB'), segment('x'))),
      })
      .map(({ limit, cursor }) => `?limit=${limit}${cursor === null ? '' : `&cursor=${cursor}`}`),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom('?limit=1&limit=2', '?cursor[]=1', '?a[b]=c', '?%00=%00', `?${'a=1&'.repeat(2000)}`),
  },
);

const BASES: Record<BodyBase, unknown> = {
  job: {
    name: 'fuzz job',
    model: { $model: true },
    dataset: 'mnist',
    loss: 'categoricalCrossentropy',
    optimizer: { type: 'adam', learningRate: 0.003 },
    batchSize: 8,
    localSteps: 2,
    unitsPerRound: 2,
    rounds: 2,
    outer: { learningRate: 1, momentum: 0.5, nesterov: true },
    seed: 1,
    unitDeadlineMs: 60_000,
  },
  faucet: { address: '$ADDRESS', amount: 10 },
  // An address with a broken EIP-55 checksum (mutations also give the all-lower-case spelling).
  faucetAddress: { address: '$ADDR_BADSUM', amount: 1 },
  signin: { message: '$SIWE', signature: `0x${'ab'.repeat(65)}` },
  key: { label: 'fuzz' },
  offer: {
    minPricePerTflop: 1,
    deviceClass: 'webgpu-discrete',
    benchmark: { examplesPerSecond: 5000, backend: 'webgpu' },
    hoursAvailable: 8,
  },
  link: { message: '$SIWE', localSignature: `0x${'cd'.repeat(65)}`, walletSignature: `0x${'ef'.repeat(65)}` },
  empty: {},
  dataset: {},
};

const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=utf-16',
  'text/plain',
  'application/octet-stream',
  'application/x-swarmgrad-dataset',
  'multipart/form-data; boundary=x',
  'application/x-www-form-urlencoded',
  'application/xml',
  'application/json, text/plain',
  '*/*',
  '',
  'garbage;;;=',
];

export type BodySpec =
  | { kind: 'none' }
  | { kind: 'json'; text: string }
  | { kind: 'text'; text: string }
  | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'oversize'; mib: number; shape: 'string' | 'array' | 'nested' | 'bytes' };

const INVALID_JSON = ['{', '{"a":', 'nul', '[1,2', '\u0000', '{"a":1}}', '', '{"a":1,}', "{'a':1}", 'NaN', '"\\ud800"'];

const body = (base: BodyBase | undefined): fc.Arbitrary<BodySpec> =>
  fc.oneof(
    { weight: base ? 4 : 24, arbitrary: fc.constant<BodySpec>({ kind: 'none' }) },
    {
      weight: base ? 32 : 4,
      arbitrary: mutatedJson(BASES[base ?? 'empty']).map((text): BodySpec => ({ kind: 'json', text })),
    },
    {
      weight: 4,
      arbitrary: fc
        .oneof(fc.constantFrom(...INVALID_JSON), fc.string({ maxLength: 200 }))
        .map((text): BodySpec => ({ kind: 'text', text })),
    },
    { weight: 4, arbitrary: fc.uint8Array({ maxLength: 4096 }).map((bytes): BodySpec => ({ kind: 'bytes', bytes })) },
    {
      weight: 1,
      arbitrary: fc
        .record({ mib: fc.constantFrom(1, 2, 3, 4.5), shape: fc.constantFrom('string', 'array', 'nested', 'bytes') })
        .map((o): BodySpec => ({ kind: 'oversize', ...o }) as BodySpec),
    },
  );

export interface RestCase {
  method: string;
  /** Path template with `$…` placeholders, already percent-encoded. */
  path: string;
  route: string;
  auth: 'none' | 'apiKey' | 'session' | 'garbage' | 'basic' | 'otherKey';
  contentType: string | null;
  body: BodySpec;
}

export const restCase: fc.Arbitrary<RestCase> = fc
  .record({
    route: fc.constantFrom(...ROUTES),
    methodSwap: fc.oneof(
      { weight: 6, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'PROPFIND') },
    ),
    stray: fc.oneof(
      { weight: 12, arbitrary: fc.constant(null) },
      {
        weight: 1,
        arbitrary: fc.oneof(
          fc.constantFrom(
            '/api',
            '/api/v2/jobs',
            '/api/v1/',
            '//api//v1//jobs',
            '/api/v1/jobs/',
            '/%00',
            '/api/v1/%2e%2e/%2e%2e/etc/passwd',
          ),
          ASCII.map((s) => `/${encodeURIComponent(s)}`),
          fc.array(segment('x'), { maxLength: 6 }).map((s) => `/api/v1/${s.join('/')}`),
        ),
      },
    ),
    params: fc.record(
      Object.fromEntries(Object.keys(VALID).map((k) => [k, segment(k)])) as Record<string, fc.Arbitrary<string>>,
    ),
    query,
    auth: fc.constantFrom('none', 'apiKey', 'apiKey', 'session', 'session', 'garbage', 'basic', 'otherKey'),
    ctMode: fc.oneof(
      { weight: 5, arbitrary: fc.constant(null) },
      { weight: 2, arbitrary: fc.constantFrom(...CONTENT_TYPES) },
    ),
    bodySeed: fc.nat(),
  })
  .chain((r) =>
    body(r.route.body).map((b): RestCase => {
      const path =
        r.stray ??
        r.route.path.replace(/:([a-z]+)/g, (_m, k: string) => (r.params as Record<string, string>)[k] ?? 'x');
      const natural =
        b.kind === 'none'
          ? null
          : r.route.body === 'dataset' || b.kind === 'bytes' || (b.kind === 'oversize' && b.shape === 'bytes')
            ? 'application/octet-stream'
            : 'application/json';
      return {
        method: r.methodSwap ?? r.route.method,
        path: `${path}${r.query}`,
        route: r.stray ? '(stray path)' : `${r.route.method} ${r.route.path}`,
        auth: r.auth as RestCase['auth'],
        contentType: r.ctMode ?? natural,
        body: b,
      };
    }),
  );

// ---- WebSocket ---------------------------------------------------------------------------------------------------

const CLIENT_BASES: Record<string, unknown> = {
  hello: {
    type: 'hello',
    protocol: 1,
    account: '$ADDRESS',
    backend: 'wasm',
    capabilities: { backends: ['wasm'], examplesPerSecond: 100 },
    payTo: '$ADDRESS',
    resume: [{ leaseId: '$LEASE', token: '$TOKEN' }],
  },
  request: { type: 'request' },
  progress: { type: 'progress', leaseId: '$LEASE', step: 1, loss: 2.3 },
  release: { type: 'release', leaseId: '$LEASE' },
  revealError: { type: 'reveal-error', requestId: 'r1', reason: 'gone' },
};

const RESULT_HEADER = {
  type: 'result',
  leaseId: '$LEASE',
  token: '$TOKEN',
  deltaHash: '$DELTAHASH',
  finalHash: 'a'.repeat(64),
  checkpoints: ['b'.repeat(64), 'c'.repeat(64)],
  losses: [2.3, 2.2, null],
  examples: 16,
  flops: 1000,
  backend: 'wasm',
  timings: { totalMs: 10, trainMs: 9 },
};

const REVEAL_HEADER = { type: 'reveal', requestId: 'r1', leaseId: '$LEASE', index: 0 };

export type EnvelopeFraming = 'ok' | 'badMagic' | 'hugeLength' | 'zeroLength' | 'truncated' | 'short';
export type PayloadKind = 'empty' | 'random' | 'zeros' | 'wrongShape' | 'garbageWeights' | 'big';

export type WsFrame =
  | { kind: 'text'; text: string }
  | { kind: 'envelope'; header: string; framing: EnvelopeFraming; payload: PayloadKind; seed: number }
  | { kind: 'binary'; bytes: Uint8Array };

export interface WsCase {
  hello: 'none' | 'signed' | 'unsigned' | 'forged' | 'foreignPayTo';
  identity: number;
  /** Ask for a lease after hello, so results and reveals can name a real lease. */
  lease: boolean;
  frames: WsFrame[];
}

const wsFrame: fc.Arbitrary<WsFrame> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .constantFrom(...Object.keys(CLIENT_BASES))
      .chain((k) => mutatedJson(CLIENT_BASES[k]))
      .map((text): WsFrame => ({ kind: 'text', text })),
  },
  {
    weight: 1,
    arbitrary: fc
      .oneof(
        fc.constantFrom(...INVALID_JSON, '{"type":"request"}', '{"type":"request"} ', '[]', '1', '"hello"'),
        fc.string({ maxLength: 300 }),
        fc
          .constantFrom(256 * 1024, 1024 * 1024)
          .map((n) => `{"type":"progress","leaseId":"${'x'.repeat(n)}","step":1}`),
      )
      .map((text): WsFrame => ({ kind: 'text', text })),
  },
  {
    weight: 4,
    arbitrary: fc
      .record({
        header: fc.oneof(
          { weight: 4, arbitrary: mutatedJson(RESULT_HEADER) },
          { weight: 1, arbitrary: mutatedJson(REVEAL_HEADER) },
        ),
        framing: fc.constantFrom('ok', 'ok', 'ok', 'ok', 'badMagic', 'hugeLength', 'zeroLength', 'truncated', 'short'),
        payload: fc.constantFrom('empty', 'random', 'zeros', 'zeros', 'wrongShape', 'garbageWeights', 'big'),
        seed: fc.nat(),
      })
      .map((e): WsFrame => ({ kind: 'envelope', ...(e as Omit<Extract<WsFrame, { kind: 'envelope' }>, 'kind'>) })),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2048 }).map((bytes): WsFrame => ({ kind: 'binary', bytes })) },
);

export const wsCase: fc.Arbitrary<WsCase> = fc.record({
  hello: fc.constantFrom('none', 'signed', 'signed', 'signed', 'signed', 'unsigned', 'forged', 'foreignPayTo'),
  identity: fc.nat(7),
  lease: fc.boolean(),
  frames: fc.array(wsFrame, { minLength: 1, maxLength: 6 }),
});
