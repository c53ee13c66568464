import { keccak_256 } from '@noble/hashes/sha3.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { describe, expect, it } from 'vitest';
import {
  addressFromPrivateKey,
  encodeType,
  generatePrivateKey,
  hashDomain,
  hashPayoutStatement,
  hashPersonalMessage,
  hashStruct,
  hashTypedData,
  isAddress,
  normalizeAddress,
  type PayoutStatement,
  payoutTypedData,
  personalSign,
  recoverPersonalSignAddress,
  recoverTypedDataSigner,
  signPayoutStatement,
  signTypedData,
  type TypedData,
  toChecksumAddress,
  toHex,
  typeHash,
  verifyPayoutStatement,
} from '../shared/identity/index.js';

// web3.js documentation vector: this key, its address and its personal_sign of 'Some data'.
const WEB3_KEY = '0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318';
const WEB3_ADDRESS = '0x2c7536E3605D9C16a7a3D7b1898e529396a65c23';

describe('EIP-55 addresses', () => {
  // The checksummed examples of the EIP-55 specification.
  const SPEC = [
    '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed',
    '0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359',
    '0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB',
    '0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb',
  ];

  it('checksums the specification examples from any case', () => {
    for (const a of SPEC) {
      expect(toChecksumAddress(a.toLowerCase())).toBe(a);
      expect(toChecksumAddress(`0x${a.slice(2).toUpperCase()}`)).toBe(a);
      expect(isAddress(a, { strict: true })).toBe(true);
    }
  });

  it('rejects a checksummed address with one letter of the wrong case', () => {
    const bad = `${SPEC[0].slice(0, 3)}${SPEC[0][3] === 'a' ? 'A' : 'a'}${SPEC[0].slice(4)}`;
    expect(isAddress(bad)).toBe(false);
    expect(() => normalizeAddress(bad)).toThrow(/EIP-55/);
  });

  it('accepts unchecksummed all-lower / all-upper forms except in strict mode, rejects bad shapes', () => {
    expect(isAddress(SPEC[1].toLowerCase())).toBe(true);
    expect(isAddress(SPEC[1].toLowerCase(), { strict: true })).toBe(false);
    for (const bad of ['', '0x', '0x123', `${SPEC[0]}00`, SPEC[0].slice(2), `0x${'g'.repeat(40)}`, 42, null]) {
      expect(isAddress(bad)).toBe(false);
    }
  });

  it('derives the address of a known private key', () => {
    expect(addressFromPrivateKey(WEB3_KEY)).toBe(WEB3_ADDRESS);
  });

  it('generates distinct valid keys', () => {
    const a = generatePrivateKey();
    const b = generatePrivateKey();
    expect(a).toMatch(/^0x[0-9a-f]{64}$/);
    expect(a).not.toBe(b);
    expect(isAddress(addressFromPrivateKey(a), { strict: true })).toBe(true);
  });

  it('rejects invalid private keys', () => {
    expect(() => addressFromPrivateKey(`0x${'00'.repeat(32)}`)).toThrow();
    expect(() => addressFromPrivateKey(`0x${'ff'.repeat(32)}`)).toThrow();
    expect(() => addressFromPrivateKey('0x1234')).toThrow();
  });
});

describe('EIP-191 personal_sign', () => {
  it('matches the web3.js vector for "Some data"', () => {
    expect(toHex(hashPersonalMessage('Some data'))).toBe(
      '0x1da44b586eb0729ff70a73c326926f6ed5a25f5b056e7f47fbc6e58d86871655',
    );
    const sig = personalSign('Some data', WEB3_KEY);
    expect(sig).toBe(
      '0xb91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a0291c',
    );
    expect(recoverPersonalSignAddress('Some data', sig)).toBe(WEB3_ADDRESS);
  });

  it('hashes by UTF-8 byte length, not character count', () => {
    const text = 'héllo ✓';
    const bytes = utf8ToBytes(text);
    expect(bytes.length).not.toBe(text.length);
    expect(hashPersonalMessage(text)).toEqual(hashPersonalMessage(bytes));
    const key = generatePrivateKey();
    expect(recoverPersonalSignAddress(text, personalSign(text, key))).toBe(addressFromPrivateKey(key));
  });

  it('accepts v as 0/1 as well as 27/28', () => {
    const sig = personalSign('Some data', WEB3_KEY);
    const v01 = `${sig.slice(0, 130)}${(Number.parseInt(sig.slice(130), 16) - 27).toString(16).padStart(2, '0')}`;
    expect(recoverPersonalSignAddress('Some data', v01)).toBe(WEB3_ADDRESS);
  });

  it('rejects malformed, out-of-range and high-s signatures', () => {
    const sig = personalSign('Some data', WEB3_KEY);
    expect(() => recoverPersonalSignAddress('Some data', sig.slice(0, 130))).toThrow(/65 bytes/);
    expect(() => recoverPersonalSignAddress('Some data', `${sig.slice(0, 130)}1d`)).toThrow(/v must be/);
    expect(() => recoverPersonalSignAddress('Some data', `0x${'00'.repeat(64)}1b`)).toThrow();
    // s' = n - s is the malleable twin: same signer mathematically, refused by policy.
    const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
    const s = BigInt(`0x${sig.slice(66, 130)}`);
    const v = sig.slice(130) === '1b' ? '1c' : '1b';
    const twin = `${sig.slice(0, 66)}${(n - s).toString(16).padStart(64, '0')}${v}`;
    expect(() => recoverPersonalSignAddress('Some data', twin)).toThrow(/upper half/);
  });
});

describe('EIP-712 typed data', () => {
  // The Mail example of the EIP-712 specification, signed with keccak256('cow').
  const COW_KEY = toHex(keccak_256(utf8ToBytes('cow')));
  const MAIL: TypedData = {
    types: {
      EIP712Domain: [
        { name: 'name', type: 'string' },
        { name: 'version', type: 'string' },
        { name: 'chainId', type: 'uint256' },
        { name: 'verifyingContract', type: 'address' },
      ],
      Person: [
        { name: 'name', type: 'string' },
        { name: 'wallet', type: 'address' },
      ],
      Mail: [
        { name: 'from', type: 'Person' },
        { name: 'to', type: 'Person' },
        { name: 'contents', type: 'string' },
      ],
    },
    primaryType: 'Mail',
    domain: {
      name: 'Ether Mail',
      version: '1',
      chainId: 1,
      verifyingContract: '0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC',
    },
    message: {
      from: { name: 'Cow', wallet: '0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826' },
      to: { name: 'Bob', wallet: '0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB' },
      contents: 'Hello, Bob!',
    },
  };

  it('reproduces every intermediate value of the specification', () => {
    expect(encodeType('Mail', MAIL.types)).toBe(
      'Mail(Person from,Person to,string contents)Person(string name,address wallet)',
    );
    expect(toHex(typeHash('Mail', MAIL.types))).toBe(
      '0xa0cedeb2dc280ba39b857546d74f5549c3a1d7bdc2dd96bf881f76108e23dac2',
    );
    expect(toHex(hashDomain(MAIL.domain))).toBe('0xf2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f');
    expect(toHex(hashStruct('Mail', MAIL.message, MAIL.types))).toBe(
      '0xc52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e',
    );
    expect(toHex(hashTypedData(MAIL))).toBe('0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2');
  });

  it("signs the Mail with the cow key exactly as the specification's signature", () => {
    expect(addressFromPrivateKey(COW_KEY)).toBe('0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826');
    const sig = signTypedData(MAIL, COW_KEY);
    expect(sig).toBe(
      '0x4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b915621c',
    );
    expect(recoverTypedDataSigner(MAIL, sig)).toBe('0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826');
  });

  it('derives the domain type when EIP712Domain is omitted', () => {
    const { EIP712Domain: _d, ...types } = MAIL.types;
    expect(hashTypedData({ ...MAIL, types })).toEqual(hashTypedData(MAIL));
  });

  it('refuses values that do not fit their types', () => {
    const withAmount: TypedData = {
      types: { T: [{ name: 'n', type: 'uint8' }] },
      primaryType: 'T',
      domain: { name: 'x' },
      message: { n: 256 },
    };
    expect(() => hashTypedData(withAmount)).toThrow(/does not fit uint8/);
    expect(() => hashTypedData({ ...withAmount, message: {} })).toThrow(/missing/);
    expect(() => hashTypedData({ ...withAmount, message: { n: 1.5 } })).toThrow(/integer/);
  });

  describe('payout statement', () => {
    const coordinatorKey = WEB3_KEY;
    const statement: PayoutStatement = {
      account: '0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826',
      vested: 12_345_678n,
      statementId: 3n,
      issuedAt: 1_767_225_600n,
    };
    const domain = { chainId: 1, verifyingContract: '0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC' };

    it('has the documented type string', () => {
      expect(encodeType('PayoutStatement', payoutTypedData(statement, domain).types)).toBe(
        'PayoutStatement(address account,uint256 vested,uint256 statementId,uint64 issuedAt)',
      );
    });

    it('signs, recovers the coordinator and fails for any altered field, domain or signer', () => {
      const signed = signPayoutStatement(statement, domain, coordinatorKey);
      expect(signed.signer).toBe(WEB3_ADDRESS);
      expect(signed.digest).toBe(toHex(hashPayoutStatement(statement, domain)));
      expect(verifyPayoutStatement(statement, domain, signed.signature, WEB3_ADDRESS)).toBe(true);
      expect(
        verifyPayoutStatement({ ...statement, vested: statement.vested + 1n }, domain, signed.signature, WEB3_ADDRESS),
      ).toBe(false);
      expect(verifyPayoutStatement({ ...statement, statementId: 4n }, domain, signed.signature, WEB3_ADDRESS)).toBe(
        false,
      );
      expect(verifyPayoutStatement(statement, { ...domain, chainId: 5 }, signed.signature, WEB3_ADDRESS)).toBe(false);
      expect(verifyPayoutStatement(statement, domain, signed.signature, statement.account)).toBe(false);
      expect(verifyPayoutStatement(statement, domain, '0x1234', WEB3_ADDRESS)).toBe(false);
    });

    it('matches the example vector of docs/LEDGER.md', () => {
      const signed = signPayoutStatement(statement, { chainId: 1 }, coordinatorKey);
      expect(toHex(typeHash('PayoutStatement', payoutTypedData(statement, domain).types))).toBe(
        '0x88db632385c34a655002df3c5804abe0c2a5389bb560efbe1161a50488da4149',
      );
      expect(signed.digest).toBe('0x3312dde6c0a5b88c4ba20a19db19bf4a84ac2f60f49c4963612b589f61313ad0');
      expect(signed.signature).toBe(
        '0x7212c1b8d455984952e7dbefad1c733e7cbe1d69fec4c39fa24f86d478db45111fb21662e6690e327470cb3197918b4bb183012dbf524c1167ffd2dcc18c8df11b',
      );
    });

    it('is deterministic: the same statement gives the same digest and signature', () => {
      const a = signPayoutStatement(statement, domain, coordinatorKey);
      const b = signPayoutStatement({ ...statement }, domain, coordinatorKey);
      expect(a.signature).toBe(b.signature);
      expect(a.digest).toBe(b.digest);
    });
  });
});
