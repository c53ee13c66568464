import { type Static, Type } from '@sinclair/typebox';
import { LinkRef } from './account-link-api.js';
import { Address } from './address-schema.js';

/**
 * REST schemas of accounts, sign-in, credits and the marketplace (coordinator/api/{auth,accounts,market}.ts).
 * Inputs in credits (what people type); ledger amounts out in integer micro-credits (1 credit = 1,000,000), exact.
 */

const Micro = (description: string) => Type.Integer({ description: `${description} (micro-credits)` });

// ---- sign-in and API keys -----------------------------------------------------------------------------------------

export const NonceView = Type.Object({
  nonce: Type.String(),
  expiresAt: Type.Integer({ description: 'unix ms' }),
  domain: Type.String({ description: 'The domain the SIWE message must name.' }),
  chainId: Type.Integer(),
  uri: Type.String({ description: 'A URI for the message (any URI on this domain is accepted).' }),
  statement: Type.String({ description: 'Suggested statement line.' }),
});
export type NonceView = Static<typeof NonceView>;

export const SignInInput = Type.Object(
  {
    message: Type.String({ minLength: 1, maxLength: 4000, description: 'The EIP-4361 message text that was signed.' }),
    signature: Type.String({ minLength: 1, maxLength: 200, description: 'EIP-191 personal_sign signature, 0x hex.' }),
  },
  { additionalProperties: false },
);
export type SignInInput = Static<typeof SignInInput>;

export const SessionView = Type.Object({
  token: Type.String({ description: 'Send as Authorization: Bearer <token>.' }),
  address: Address,
  expiresAt: Type.Integer({ description: 'unix ms' }),
});
export type SessionView = Static<typeof SessionView>;

export const WhoAmI = Type.Object({
  address: Address,
  via: Type.Union([Type.Literal('session'), Type.Literal('api_key')]),
});
export type WhoAmI = Static<typeof WhoAmI>;

export const ApiKeyInput = Type.Object(
  { label: Type.String({ minLength: 1, maxLength: 100, default: 'default' }) },
  { additionalProperties: false },
);

export const ApiKeyView = Type.Object({
  id: Type.String(),
  label: Type.String(),
  hint: Type.String({ description: 'The first characters of the key.' }),
  createdAt: Type.Integer(),
  lastUsedAt: Type.Union([Type.Integer(), Type.Null()]),
  revokedAt: Type.Union([Type.Integer(), Type.Null()]),
});
export type ApiKeyView = Static<typeof ApiKeyView>;

export const CreatedApiKeyView = Type.Composite([
  ApiKeyView,
  Type.Object({ key: Type.String({ description: 'The API key, shown this once.' }) }),
]);
export type CreatedApiKeyView = Static<typeof CreatedApiKeyView>;

// ---- accounts and the ledger --------------------------------------------------------------------------------------

export const BalancesView = Type.Object({
  available: Micro('Spendable requester balance'),
  escrow: Micro('Held for running jobs'),
  pending: Micro('Worker credit inside its challenge window'),
  vested: Micro('Worker credit past its challenge window'),
  escrowByJob: Type.Record(Type.String(), Type.Integer()),
});

export const PostingView = Type.Object({
  id: Type.Integer(),
  eventKey: Type.String(),
  accountId: Type.String(),
  kind: Type.String(),
  owner: Type.String(),
  amount: Type.Integer({ description: 'Signed micro-credits: positive = the balance grew.' }),
  createdAt: Type.Integer(),
});

export const HistoryItemView = Type.Composite([
  PostingView,
  Type.Object({
    eventKind: Type.String(),
    jobId: Type.Union([Type.String(), Type.Null()]),
    resultId: Type.Union([Type.String(), Type.Null()]),
    memo: Type.Union([Type.String(), Type.Null()]),
    receipt: Type.String({ description: 'GET this path for the event and all its postings.' }),
  }),
]);

export const AccountView = Type.Object({
  address: Address,
  unit: Type.Literal('micro-credits'),
  balances: BalancesView,
  /** The verification layer's trust record, when it keeps one. */
  trust: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  reliability: Type.Object({
    value: Type.Number(),
    known: Type.Boolean(),
    completed: Type.Integer(),
    finished: Type.Integer(),
  }),
  history: Type.Object({
    items: Type.Array(HistoryItemView),
    nextCursor: Type.Union([Type.String(), Type.Null()]),
  }),
  /** Account links (POST /api/v1/accounts/link): where this account's credit goes, and who sends theirs here. */
  linkedTo: Type.Union([LinkRef, Type.Null()]),
  linkedFrom: Type.Array(LinkRef),
});
export type AccountView = Static<typeof AccountView>;

export const CreditView = Type.Object({
  resultId: Type.String(),
  leaseId: Type.Union([Type.String(), Type.Null()]),
  jobId: Type.String(),
  amount: Micro('Price of the unit'),
  pricePerTflop: Micro('Price per TFLOP the unit was paid at'),
  flops: Type.Integer(),
  state: Type.String({ description: 'open (being credited), pending, vested, forfeited, rejected or skipped' }),
  reason: Type.Union([Type.String(), Type.Null()]),
  acceptedAt: Type.Integer(),
  vestAt: Type.Integer(),
  eventKey: Type.String({ description: 'Ledger event of the credit: credit:<resultId>.' }),
  receipt: Type.String(),
});
export type CreditView = Static<typeof CreditView>;

export const LedgerEventView = Type.Object({
  eventKey: Type.String(),
  kind: Type.String(),
  jobId: Type.Union([Type.String(), Type.Null()]),
  resultId: Type.Union([Type.String(), Type.Null()]),
  memo: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.Integer(),
  postings: Type.Array(PostingView),
});

export const FaucetInput = Type.Object(
  {
    address: Address,
    amount: Type.Number({ exclusiveMinimum: 0, description: 'Credits to mint into the available balance.' }),
  },
  { additionalProperties: false },
);
export type FaucetInput = Static<typeof FaucetInput>;

export const PayoutStatementView = Type.Object({
  statement: Type.Object({
    account: Address,
    vested: Type.String({ description: 'Cumulative vested micro-credits (uint256, decimal).' }),
    statementId: Type.String(),
    issuedAt: Type.String({ description: 'unix seconds' }),
  }),
  typedData: Type.Unknown({ description: 'The EIP-712 typed data that was signed (eth_signTypedData_v4 shape).' }),
  digest: Type.String(),
  signature: Type.String(),
  signer: Address,
});
export type PayoutStatementView = Static<typeof PayoutStatementView>;

// ---- marketplace --------------------------------------------------------------------------------------------------

export const OfferInput = Type.Object(
  {
    minPricePerTflop: Type.Number({ minimum: 0, maximum: 1_000_000, description: 'Credits per 10^12 FLOP.' }),
    deviceClass: Type.String({
      minLength: 1,
      maxLength: 64,
      pattern: '^[A-Za-z0-9._ -]+$',
      description: 'e.g. "webgpu-discrete", "webgpu-integrated", "wasm-cpu"',
    }),
    benchmark: Type.Object(
      {
        examplesPerSecond: Type.Number({ minimum: 0, maximum: 1e9 }),
        backend: Type.Optional(Type.String({ maxLength: 32 })),
      },
      { additionalProperties: false, description: 'What the provider measured (reported, not checked).' },
    ),
    hoursAvailable: Type.Number({ minimum: 0, maximum: 8784, description: 'Hours available in the coming period.' }),
  },
  { additionalProperties: false },
);
export type OfferInput = Static<typeof OfferInput>;

export const ReliabilityView = Type.Object({
  value: Type.Number({ description: 'completed / finished leases; 1 while unknown' }),
  known: Type.Boolean({ description: 'false until the account has enough finished leases' }),
  completed: Type.Integer(),
  finished: Type.Integer(),
});

export const OfferView = Type.Object({
  id: Type.String(),
  provider: Address,
  minPricePerTflop: Type.Number({ description: 'credits per TFLOP' }),
  deviceClass: Type.String(),
  benchmark: Type.Object({ examplesPerSecond: Type.Number(), backend: Type.Union([Type.String(), Type.Null()]) }),
  hoursAvailable: Type.Number(),
  createdAt: Type.Integer(),
  measured: Type.Object({
    examplesPerSecond: Type.Union([Type.Number(), Type.Null()], {
      description: 'From accepted units of the last 7 days: examples / (result time - lease time).',
    }),
    units: Type.Integer(),
  }),
  reliability: ReliabilityView,
  audit: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  online: Type.Integer({ description: 'Workers of this provider connected now.' }),
});
export type OfferView = Static<typeof OfferView>;

export const MarketView = Type.Object({
  defaultPricePerTflop: Type.Number({ description: 'What volunteers without an offer are paid, credits per TFLOP.' }),
  offers: Type.Array(OfferView),
  priceDistribution: Type.Object({
    offers: Type.Integer(),
    min: Type.Union([Type.Number(), Type.Null()]),
    p25: Type.Union([Type.Number(), Type.Null()]),
    median: Type.Union([Type.Number(), Type.Null()]),
    p75: Type.Union([Type.Number(), Type.Null()]),
    max: Type.Union([Type.Number(), Type.Null()]),
    buckets: Type.Array(Type.Object({ from: Type.Number(), to: Type.Number(), offers: Type.Integer() })),
  }),
  capacity: Type.Object({
    offers: Type.Integer(),
    hoursAvailable: Type.Number(),
    benchmarkExamplesPerSecond: Type.Number({ description: 'Sum of the active offers’ reported benchmarks.' }),
    workersOnline: Type.Integer(),
    accountsOnline: Type.Integer(),
    measuredExamplesPerSecond: Type.Number({ description: 'Sum of measured throughput of accounts online now.' }),
  }),
});
export type MarketView = Static<typeof MarketView>;

export const StatsView = Type.Object({
  jobs: Type.Object({ queued: Type.Integer(), running: Type.Integer(), completed: Type.Integer() }),
  workersOnline: Type.Integer(),
  unitsDone: Type.Integer(),
  creditsPaid: Micro('Paid to workers for accepted units, all time'),
});
export type StatsView = Static<typeof StatsView>;
