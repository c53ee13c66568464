import { type Static, Type } from '@sinclair/typebox';
import { Address } from './address-schema.js';

/**
 * REST schemas of account links (coordinator/api/account-link.ts): a local key hands its credit to a wallet, both
 * signing the message of shared/identity/account-link.ts. Amounts in integer micro-credits.
 */

export const LinkNonceView = Type.Object({
  nonce: Type.String({ description: 'Single use; only for an account link.' }),
  expiresAt: Type.Integer({ description: 'unix ms' }),
  domain: Type.String({ description: 'The domain the link message must name.' }),
  chainId: Type.Integer(),
  uri: Type.String({ description: 'A URI for the message (any URI on this domain is accepted).' }),
  statement: Type.String({ description: 'The fixed statement line of the message.' }),
});
export type LinkNonceView = Static<typeof LinkNonceView>;

export const LinkInput = Type.Object(
  {
    message: Type.String({ minLength: 1, maxLength: 4000, description: 'The account-link message text.' }),
    localSignature: Type.String({
      minLength: 1,
      maxLength: 200,
      description: 'personal_sign of the message by From (the local key), 0x hex.',
    }),
    walletSignature: Type.String({
      minLength: 1,
      maxLength: 200,
      description: 'personal_sign of the message by To (the wallet), 0x hex.',
    }),
  },
  { additionalProperties: false },
);
export type LinkInput = Static<typeof LinkInput>;

export const LinkView = Type.Object({
  from: Address,
  to: Address,
  eventKey: Type.String({ description: 'Ledger event of the link: link:<from>.' }),
  created: Type.Boolean({ description: 'false when this very link existed already (nothing moved again).' }),
  pendingMoved: Type.Integer({ description: 'Pending credit moved to the wallet (micro-credits)' }),
  vestedMoved: Type.Integer({ description: 'Vested credit moved to the wallet (micro-credits)' }),
  vestedKept: Type.Integer({
    description: 'Vested credit left with From because a payout statement already promised it (micro-credits)',
  }),
  linkedAt: Type.Integer({ description: 'unix ms' }),
  receipt: Type.String({ description: 'GET this path for the ledger event and its postings.' }),
});
export type LinkView = Static<typeof LinkView>;

export const LinkRef = Type.Object({
  address: Address,
  eventKey: Type.String(),
  linkedAt: Type.Integer({ description: 'unix ms' }),
});
