import type { FastifyInstance } from 'fastify';
import { LINK_STATEMENT } from '../../shared/identity/account-link.js';
import { LinkInput, LinkNonceView, LinkView } from '../../shared/protocol/account-link-api.js';
import { ApiError as ApiErrorSchema } from '../../shared/protocol/job-spec.js';
import type { Accounts } from '../accounts/index.js';
import { type Ledger, LedgerError, LinkConflict } from '../ledger/index.js';
import { receiptPath } from './accounts.js';
import { ApiError } from './errors.js';

export interface AccountLinkApiOptions {
  accounts: Accounts;
  ledger: Ledger;
}

/**
 * Account links: a browser's local key hands its credit to a real wallet, both keys signing one message
 * (shared/identity/account-link.ts, docs/LEDGER.md "Account links"). No bearer token: the two signatures are the
 * authorisation.
 *   GET  /api/v1/accounts/link-nonce   a single-use link nonce and the domain / chain / URI the message must name
 *   POST /api/v1/accounts/link         {message, localSignature, walletSignature} -> the link and what moved
 */
export async function accountLinkApi(app: FastifyInstance, opts: AccountLinkApiOptions): Promise<void> {
  const { accounts, ledger } = opts;

  app.get(
    '/api/v1/accounts/link-nonce',
    {
      schema: {
        tags: ['accounts'],
        summary: 'A fresh nonce for an account link (single use)',
        response: { 200: LinkNonceView },
      },
    },
    async (req) => {
      const { nonce, expiresAt } = await accounts.issueLinkNonce();
      const { domain, chainId } = accounts.siweParams;
      return { nonce, expiresAt, domain, chainId, uri: `${req.protocol}://${domain}/`, statement: LINK_STATEMENT };
    },
  );

  app.post(
    '/api/v1/accounts/link',
    {
      schema: {
        tags: ['accounts'],
        summary: "Link a local key's account to a wallet: its credit, now and later, goes to the wallet",
        description:
          'Both keys sign the same link message with personal_sign. Pending and vested credit move to the wallet ' +
          'at once (vested credit already promised by a payout statement stays), and credit for later work of the ' +
          'local key is paid to the wallet. 400: a bad message, signature, domain, chain, time or nonce (field ' +
          'names the culprit); 409: From is linked to another wallet, or the link would form a chain.',
        body: LinkInput,
        response: { 200: LinkView, 400: ApiErrorSchema, 409: ApiErrorSchema },
      },
    },
    async (req) => {
      const body = req.body as LinkInput;
      const v = await accounts.verifyAccountLink(body);
      if (!v.ok) throw new ApiError(400, `link refused (${v.code}): ${v.reason}`, v.field);
      try {
        const link = await ledger.linkAccounts({ from: v.message.from, to: v.message.to, proof: body });
        const { postings: _p, ...rest } = link;
        return { ...rest, receipt: receiptPath(link.eventKey) };
      } catch (err) {
        if (err instanceof LinkConflict)
          throw new ApiError(409, `link refused (${err.code}): ${err.message}`, `/message`);
        if (err instanceof LedgerError) throw new ApiError(err.httpStatus, err.message);
        throw err;
      }
    },
  );
}
