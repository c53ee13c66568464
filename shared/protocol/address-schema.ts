import { Type } from '@sinclair/typebox';

/** An Ethereum address in REST schemas (answers carry the EIP-55 checksummed form). */
export const Address = Type.String({ pattern: '^0x[0-9a-fA-F]{40}$', description: 'EIP-55 address' });
