import { randomUUID } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { type Address, isAddress, normalizeAddress } from '../../shared/identity/address.js';
import {
  PAYOUT_TYPES,
  type PayoutDomainOptions,
  payoutDomain,
  type SignedPayoutStatement,
} from '../../shared/identity/payout-statement.js';
import { domainType } from '../../shared/identity/typed-data.js';
import { ApiError as ApiErrorSchema } from '../../shared/protocol/job-spec.js';
import {
  AccountView,
  CreditView,
  FaucetInput,
  LedgerEventView,
  PayoutStatementView,
} from '../../shared/protocol/market-api.js';
import { faucetAllowed } from '../accounts/index.js';
import { type Credits, readTrust, toMicro } from '../credits/index.js';
import { issuePayoutStatement, type Ledger, LedgerError, listPayoutStatements } from '../ledger/index.js';
import { reliabilityOf } from '../market/reliability.js';
import type { Db } from '../store/db.js';
import type { RequestAuth } from './auth.js';
import { BEARER } from './auth.js';
import { ApiError } from './errors.js';

export interface AccountsApiOptions {
  db: Db;
  ledger: Ledger;
  credits: Credits;
  auth: RequestAuth;
  devMode: boolean;
  faucetMaxCredits: number;
  reliabilityMinLeases: number;
  /** The coordinator's payout-statement signer. */
  signer: { privateKey: `0x${string}`; address: Address } & PayoutDomainOptions;
}

const AddressParams = Type.Object({ address: Type.String({ maxLength: 42 }) });
// Query strings arrive as text (the coordinator's Ajv does not coerce types), so the limit is checked as digits.
const Page = Type.Object({
  limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,3}$', description: 'Items per page, 1..500 (default 50).' })),
  cursor: Type.Optional(Type.String({ maxLength: 140, description: 'nextCursor of the previous page.' })),
});

function pageOf(query: unknown): { limit: number; cursor?: string } {
  const { limit, cursor } = query as { limit?: string; cursor?: string };
  const n = limit === undefined ? 50 : Number(limit);
  if (!(n >= 1 && n <= 500)) throw new ApiError(400, 'querystring/limit must be between 1 and 500', '/limit');
  return { limit: n, cursor };
}

export const receiptPath = (eventKey: string): string => `/api/v1/ledger/events/${encodeURIComponent(eventKey)}`;

function addressParam(value: string): Address {
  if (!isAddress(value)) {
    throw new ApiError(
      400,
      `/address must be a 0x address (40 hex digits, valid EIP-55 checksum if mixed case)`,
      '/address',
    );
  }
  return normalizeAddress(value);
}

function ledgerError(err: unknown): never {
  if (err instanceof LedgerError) throw new ApiError(err.httpStatus, err.message);
  if (err instanceof RangeError) throw new ApiError(400, err.message, '/cursor');
  throw err;
}

/** The EIP-712 typed data of a statement, JSON-safe (uint256 as decimal strings), as eth_signTypedData_v4 takes it. */
function statementView(s: SignedPayoutStatement): PayoutStatementView {
  const message = {
    account: s.statement.account,
    vested: s.statement.vested.toString(),
    statementId: s.statement.statementId.toString(),
    issuedAt: s.statement.issuedAt.toString(),
  };
  return {
    statement: message,
    typedData: {
      types: { EIP712Domain: domainType(s.domain), ...PAYOUT_TYPES },
      primaryType: 'PayoutStatement',
      domain: s.domain,
      message,
    },
    digest: s.digest,
    signature: s.signature,
    signer: s.signer,
  };
}

/**
 * Accounts and the ledger, read side (public: balances and postings are the network's open books), the payout
 * statement, and the faucet (development mode or an admin key).
 */
export async function accountsApi(app: FastifyInstance, opts: AccountsApiOptions): Promise<void> {
  const { db, ledger, credits, auth } = opts;
  const errors = { 400: ApiErrorSchema, 404: ApiErrorSchema };

  app.get(
    '/api/v1/accounts/:address',
    {
      schema: {
        tags: ['accounts'],
        summary: 'Balances by kind, trust, reliability and paginated ledger history of an address',
        params: AddressParams,
        querystring: Page,
        response: { 200: AccountView, ...errors },
      },
    },
    async (req) => {
      const address = addressParam((req.params as { address: string }).address);
      const { limit, cursor } = pageOf(req.query);
      const [balances, history, trust, reliability, links] = await Promise.all([
        ledger.balances(address),
        ledger.history(address, { limit, cursor }).catch(ledgerError),
        readTrust(db, address),
        reliabilityOf(db, address, opts.reliabilityMinLeases),
        ledger.links(address),
      ]);
      const { address: _a, ...byKind } = balances;
      return {
        address,
        unit: 'micro-credits' as const,
        balances: byKind,
        trust,
        reliability,
        history: {
          items: history.items.map((h) => ({ ...h, receipt: receiptPath(h.eventKey) })),
          nextCursor: history.nextCursor,
        },
        ...links,
      };
    },
  );

  app.get(
    '/api/v1/accounts/:address/credits',
    {
      schema: {
        tags: ['accounts'],
        summary: "A worker's credits per accepted unit (newest first), each with its ledger event",
        params: AddressParams,
        querystring: Page,
        response: {
          200: Type.Object({ items: Type.Array(CreditView), nextCursor: Type.Union([Type.String(), Type.Null()]) }),
          ...errors,
        },
      },
    },
    async (req) => {
      const address = addressParam((req.params as { address: string }).address);
      const { limit, cursor } = pageOf(req.query);
      const page = await credits.creditsOf(address, { limit, cursor }).catch(ledgerError);
      return {
        items: page.items.map((c) => ({ ...c, receipt: receiptPath(c.eventKey) })),
        nextCursor: page.nextCursor,
      };
    },
  );

  app.get(
    '/api/v1/ledger/events/:eventKey',
    {
      schema: {
        tags: ['accounts'],
        summary: 'A ledger event (receipt) and all of its postings',
        params: Type.Object({ eventKey: Type.String({ maxLength: 200 }) }),
        response: { 200: LedgerEventView, ...errors },
      },
    },
    async (req) => {
      const { eventKey } = req.params as { eventKey: string };
      const ev = await ledger.postingsForEvent(eventKey);
      if (!ev) throw new ApiError(404, `no ledger event ${eventKey}`, '/eventKey');
      return ev;
    },
  );

  app.get(
    '/api/v1/accounts/:address/statement',
    {
      schema: {
        tags: ['accounts'],
        summary: 'Payout statement: cumulative vested credit signed by the coordinator (EIP-712)',
        description:
          'A new statement (next statementId) is issued when the vested total changed since the last one; otherwise ' +
          'the last one is returned. docs/LEDGER.md documents the typed-data schema.',
        params: AddressParams,
        response: { 200: PayoutStatementView, ...errors },
      },
    },
    async (req) => {
      const address = addressParam((req.params as { address: string }).address);
      const vested = await ledger.cumulativeVested(address);
      const last = (await listPayoutStatements(db, address))[0];
      const domainOpts = { chainId: opts.signer.chainId, verifyingContract: opts.signer.verifyingContract };
      if (last && last.vested === String(vested) && last.signer === opts.signer.address) {
        return statementView({
          statement: {
            account: address,
            vested: BigInt(last.vested),
            statementId: BigInt(last.statementId),
            issuedAt: BigInt(last.issuedAt),
          },
          domain: payoutDomain(domainOpts),
          digest: last.digest as `0x${string}`,
          signature: last.signature as `0x${string}`,
          signer: last.signer as Address,
        });
      }
      const signed = await issuePayoutStatement(db, ledger, address, {
        privateKey: opts.signer.privateKey,
        ...domainOpts,
      }).catch(ledgerError);
      return statementView(signed);
    },
  );

  app.post(
    '/api/v1/faucet',
    {
      schema: {
        tags: ['accounts'],
        summary: 'Mint credits into an available balance (an admin key; or development mode on loopback)',
        security: BEARER,
        body: FaucetInput,
        response: {
          200: Type.Object({
            address: Type.String(),
            deposited: Type.Integer({ description: 'micro-credits' }),
            eventKey: Type.String(),
            available: Type.Integer({ description: 'micro-credits' }),
          }),
          ...errors,
          403: ApiErrorSchema,
        },
      },
    },
    async (req) => {
      if (!faucetAllowed({ devMode: opts.devMode, isAdmin: auth.isAdmin(req) })) {
        throw new ApiError(
          403,
          'the faucet needs an admin key (ADMIN_KEYS); without one it is open only to a development coordinator ' +
            'listening on loopback (HOST=127.0.0.1)',
          '/headers/authorization',
        );
      }
      const body = req.body as FaucetInput;
      if (body.amount > opts.faucetMaxCredits) {
        throw new ApiError(400, `/amount may be at most ${opts.faucetMaxCredits} credits per request`, '/amount');
      }
      const address = normalizeAddress(body.address);
      const eventKey = `faucet:${randomUUID()}`;
      const posted = await ledger.deposit(address, toMicro(body.amount), eventKey, 'faucet').catch(ledgerError);
      const balances = await ledger.balances(address);
      return {
        address,
        deposited: posted.postings.find((p) => p.amount > 0)?.amount ?? 0,
        eventKey,
        available: balances.available,
      };
    },
  );
}
