import {
  type Address,
  addressFromPrivateKey,
  normalizeAddress,
  type PrivateKey,
} from '../../shared/identity/address.js';
import {
  type PayoutDomainOptions,
  type SignedPayoutStatement,
  signPayoutStatement,
} from '../../shared/identity/payout-statement.js';
import type { Db } from '../store/db.js';
import { workerVested } from './account-ids.js';
import type { Ledger } from './ledger.js';
import { withRetry } from './postings.js';

export interface PayoutSigner extends PayoutDomainOptions {
  /** The coordinator's signing key; its address is what payers trust. */
  privateKey: PrivateKey;
}

/**
 * Issues the next payout statement of `address`: its cumulative vested credit, signed by the coordinator as EIP-712
 * typed data (schema in docs/LEDGER.md). Statement ids count 1, 2, 3, … per account; each one is stored so it can be
 * shown again and audited.
 */
export async function issuePayoutStatement(
  db: Db,
  ledger: Ledger,
  addr: string,
  signer: PayoutSigner,
  now: number = Date.now(),
): Promise<SignedPayoutStatement> {
  const signerAddress = addressFromPrivateKey(signer.privateKey);
  const account = normalizeAddress(addr);
  // Everything below runs on the transaction's own connection: PGlite has one, and a query outside it would wait
  // for this transaction forever.
  return withRetry(db, async (q) => {
    // Lock the vested account row (when it exists) so statement ids and vested totals are issued in order.
    await q.query('SELECT 1 FROM ledger_accounts WHERE id = $1 FOR NO KEY UPDATE', [workerVested(account).id]);
    const vested = await ledger.cumulativeVested(account, q);
    const last = await q.query<{ n: number }>(
      'SELECT COALESCE(MAX(statement_id), 0)::bigint AS n FROM ledger_statements WHERE account = $1',
      [account],
    );
    const statementId = BigInt(Number(last.rows[0].n) + 1);
    const signed = signPayoutStatement(
      { account, vested: BigInt(vested), statementId, issuedAt: BigInt(Math.floor(now / 1000)) },
      { chainId: signer.chainId, verifyingContract: signer.verifyingContract },
      signer.privateKey,
    );
    await q.query(
      `INSERT INTO ledger_statements (account, statement_id, vested, issued_at, chain_id, digest, signature, signer)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [
        account,
        Number(statementId),
        vested,
        Number(signed.statement.issuedAt),
        signer.chainId,
        signed.digest,
        signed.signature,
        signerAddress,
      ],
    );
    return signed;
  });
}

/** Statements issued to `address`, newest first, as JSON-safe values (bigints as decimal strings). */
export async function listPayoutStatements(db: Db, account: Address) {
  const r = await db.query(
    `SELECT statement_id, vested, issued_at, chain_id, digest, signature, signer FROM ledger_statements
     WHERE account = $1 ORDER BY statement_id DESC`,
    [account],
  );
  return r.rows.map((row) => ({
    account,
    statementId: String(row.statement_id),
    vested: String(row.vested),
    issuedAt: String(row.issued_at),
    chainId: Number(row.chain_id),
    digest: String(row.digest),
    signature: String(row.signature),
    signer: String(row.signer),
  }));
}
