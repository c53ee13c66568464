import { describe, expect, it } from 'vitest';
import { buildMnistDataset, mnistDatasetBytes } from '../coordinator/store/builtin/mnist.js';
import { sha256Hex, sha256HexAsync } from '../shared/hash.js';
import { decodeDataset, describeDataset, encodeDataset } from '../shared/train/dataset-format.js';
import type { Dataset, WeightSet } from '../shared/train/types.js';
import {
  addWeights,
  allFinite,
  cloneWeights,
  decodeWeights,
  encodeWeights,
  hashWeights,
  hashWeightsAsync,
  sameShapes,
  scaleWeights,
  subtractWeights,
  weightsNorm,
} from '../shared/train/weights-format.js';

function sampleWeights(): WeightSet {
  return {
    names: ['dense/kernel', 'dense/bias', 'scalar'],
    shapes: [[2, 3], [3], []],
    data: [Float32Array.from([1, -2, 3.5, 0, 1e-30, -0]), Float32Array.from([0.1, 0.2, 0.3]), Float32Array.from([7])],
  };
}

function sampleDataset(): Dataset {
  const examples = 5;
  return {
    name: 'tiny',
    featureShape: [2, 2],
    numClasses: 3,
    examples,
    trainExamples: 4,
    features: Float32Array.from({ length: examples * 4 }, (_, i) => i / 20),
    labels: Int32Array.from([0, 1, 2, 1, 0]),
  };
}

function withHeader(bytes: Uint8Array, edit: (h: Record<string, unknown>) => void): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const len = view.getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + len)));
  edit(header);
  const text = new TextEncoder().encode(JSON.stringify(header));
  const bodyStart = (8 + len + 3) & ~3;
  const newBodyStart = (8 + text.length + 3) & ~3;
  const out = new Uint8Array(newBodyStart + bytes.length - bodyStart);
  out.set(bytes.subarray(0, 4));
  new DataView(out.buffer).setUint32(4, text.length, true);
  out.set(text, 8);
  out.set(bytes.subarray(bodyStart), newBodyStart);
  return out;
}

describe('SGW1 weights format', () => {
  it('round-trips bit-exactly, including -0 and denormals', () => {
    const w = sampleWeights();
    const back = decodeWeights(encodeWeights(w));
    expect(back.names).toEqual(w.names);
    expect(back.shapes).toEqual(w.shapes);
    for (let i = 0; i < w.data.length; i++) {
      expect(new Uint8Array(back.data[i].buffer)).toEqual(new Uint8Array(w.data[i].buffer));
    }
  });

  it('has the documented layout: magic, header length, JSON header, 4-byte alignment', () => {
    const bytes = encodeWeights(sampleWeights());
    expect(new TextDecoder().decode(bytes.subarray(0, 4))).toBe('SGW1');
    const len = new DataView(bytes.buffer).getUint32(4, true);
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + len));
    expect(header).toBe('{"names":["dense/kernel","dense/bias","scalar"],"shapes":[[2,3],[3],[]]}');
    const body = (8 + len + 3) & ~3;
    expect(bytes.length).toBe(body + 10 * 4);
    expect(new DataView(bytes.buffer).getFloat32(body + 8, true)).toBe(3.5);
  });

  it('hashes the same with WebCrypto as with the JS implementation', async () => {
    const bytes = encodeWeights(sampleWeights());
    expect(await sha256HexAsync(bytes)).toBe(sha256Hex(bytes));
    expect(await hashWeightsAsync(sampleWeights())).toBe(hashWeights(sampleWeights()));
    // Known-answer test: sha256("abc").
    expect(sha256Hex(new TextEncoder().encode('abc'))).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
  });

  it('hashes canonically: equal weights give equal hashes, one changed bit changes it', () => {
    const a = sampleWeights();
    expect(hashWeights(a)).toBe(hashWeights(cloneWeights(a)));
    expect(hashWeights(a)).toBe(sha256Hex(encodeWeights(a)));
    const b = cloneWeights(a);
    new Uint32Array(b.data[1].buffer)[0] ^= 1;
    expect(hashWeights(b)).not.toBe(hashWeights(a));
  });

  it('rejects malformed bytes with a clear error', () => {
    const good = encodeWeights(sampleWeights());
    const badMagic = good.slice();
    badMagic[0] = 'X'.charCodeAt(0);
    expect(() => decodeWeights(badMagic)).toThrow(/bad magic/);
    expect(() => decodeWeights(good.subarray(0, 5))).toThrow(/truncated/);
    expect(() => decodeWeights(good.subarray(0, good.length - 4))).toThrow(/truncated/);
    const trailing = new Uint8Array(good.length + 4);
    trailing.set(good);
    expect(() => decodeWeights(trailing)).toThrow(/trailing/);
    expect(() => decodeWeights(withHeader(good, (h) => (h.shapes as number[][]).pop()))).toThrow(/names but 2 shapes/);
    expect(() => decodeWeights(withHeader(good, (h) => ((h.shapes as number[][])[0] = [2, 4])))).toThrow(/truncated/);
    expect(() => decodeWeights(withHeader(good, (h) => ((h.shapes as unknown[])[0] = [-1])))).toThrow(/shapes/);
    const hugeHeader = good.slice();
    new DataView(hugeHeader.buffer).setUint32(4, 0xffffffff, true);
    expect(() => decodeWeights(hugeHeader)).toThrow(/header length/);
    const notJson = good.slice();
    notJson[8] = '!'.charCodeAt(0);
    expect(() => decodeWeights(notJson)).toThrow(/not valid UTF-8 JSON/);
  });

  it('refuses to encode inconsistent weight sets', () => {
    const w = sampleWeights();
    w.data[0] = new Float32Array(5);
    expect(() => encodeWeights(w)).toThrow(/has 5 values but shape \[2,3\] needs 6/);
  });

  it('arithmetic helpers work per element in float32', () => {
    const a = sampleWeights();
    const b = scaleWeights(a, 2);
    expect(Array.from(b.data[0])).toEqual([2, -4, 7, 0, Math.fround(2e-30), -0]);
    const d = subtractWeights(b, a);
    // (2a - a) == a, except that -0 - -0 is +0: compare values with signed zeros folded.
    expect(d.data.map((t) => Array.from(t, (v) => v + 0))).toEqual(a.data.map((t) => Array.from(t, (v) => v + 0)));
    expect(hashWeights(addWeights(a, a))).toBe(hashWeights(b));
    expect(weightsNorm({ names: ['x'], shapes: [[2]], data: [Float32Array.from([3, 4])] })).toBe(5);
    expect(allFinite(a)).toBe(true);
    const c = cloneWeights(a);
    c.data[2][0] = Number.NaN;
    expect(allFinite(c)).toBe(false);
    expect(a.data[2][0]).toBe(7);
    expect(sameShapes(a, c)).toBe(true);
    expect(sameShapes(a, { ...c, shapes: [[3, 2], [3], []] })).toBe(false);
    expect(() => subtractWeights(a, { names: [], shapes: [], data: [] })).toThrow(/differ/);
  });
});

describe('SGD1 dataset format', () => {
  it('round-trips float32 features exactly and is content-addressed', () => {
    const ds = sampleDataset();
    const bytes = encodeDataset(ds);
    const back = decodeDataset(bytes);
    expect(back).toEqual(ds);
    const info = describeDataset(bytes);
    expect(info).toMatchObject({
      name: 'tiny',
      examples: 5,
      trainExamples: 4,
      evalExamples: 1,
      featureDtype: 'float32',
      labelDtype: 'uint8',
      bytes: bytes.length,
    });
    expect(info.id).toBe(sha256Hex(bytes));
    expect(sha256Hex(encodeDataset(sampleDataset()))).toBe(info.id);
  });

  it('quantises uint8 features to the featureScale grid', () => {
    const ds = sampleDataset();
    const bytes = encodeDataset(ds, { featureDtype: 'uint8' });
    const back = decodeDataset(bytes);
    for (let i = 0; i < ds.features.length; i++) {
      expect(Math.abs(back.features[i] - ds.features[i])).toBeLessThanOrEqual(0.5 / 255 + 1e-7);
      expect(back.features[i]).toBe(Math.fround(Math.round(ds.features[i] * 255) * (1 / 255)));
    }
    expect(() => encodeDataset({ ...ds, features: ds.features.map((v) => v + 2) }, { featureDtype: 'uint8' })).toThrow(
      /does not fit uint8/,
    );
  });

  it('uses int32 labels when there are more than 256 classes', () => {
    const ds = { ...sampleDataset(), numClasses: 1000, labels: Int32Array.from([999, 1, 2, 300, 0]) };
    const bytes = encodeDataset(ds);
    expect(describeDataset(bytes).labelDtype).toBe('int32');
    expect(Array.from(decodeDataset(bytes).labels)).toEqual([999, 1, 2, 300, 0]);
  });

  it('rejects malformed files with the reason', () => {
    const good = encodeDataset(sampleDataset(), { featureDtype: 'uint8' });
    const bad = good.slice();
    bad[3] = 0x30;
    expect(() => decodeDataset(bad)).toThrow(/bad magic/);
    expect(() => decodeDataset(good.subarray(0, good.length - 1))).toThrow(/truncated/);
    expect(() => decodeDataset(withHeader(good, (h) => (h.examples = 6)))).toThrow(/needs \d+ bytes/);
    expect(() => decodeDataset(withHeader(good, (h) => (h.trainExamples = 9)))).toThrow(/trainExamples/);
    expect(() => decodeDataset(withHeader(good, (h) => (h.featureDtype = 'float16')))).toThrow(/featureDtype/);
    expect(() => decodeDataset(withHeader(good, (h) => (h.numClasses = 2)))).toThrow(/label 2 = 2 is outside/);
    expect(() => decodeDataset(withHeader(good, (h) => (h.featureShape = [0])))).toThrow(/featureShape/);
    expect(() => decodeDataset(withHeader(good, (h) => (h.featureScale = -1)))).toThrow(/featureScale/);
    expect(() => encodeDataset({ ...sampleDataset(), labels: Int32Array.from([0, 1, 3, 1, 0]) })).toThrow(
      /label 2 = 3/,
    );
  });
});

describe('built-in MNIST', () => {
  it('is 9,000 train then 1,000 held out (100 per digit), deterministic, and equal to its decoded bytes', () => {
    const ds = buildMnistDataset();
    expect(ds.examples).toBe(10_000);
    expect(ds.trainExamples).toBe(9_000);
    const heldPerDigit = new Array(10).fill(0);
    for (let i = 9_000; i < 10_000; i++) heldPerDigit[ds.labels[i]]++;
    expect(heldPerDigit).toEqual(new Array(10).fill(100));
    // Interleaved, not sorted by digit.
    expect(new Set(Array.from(ds.labels.subarray(0, 30))).size).toBeGreaterThan(5);
    const bytes = mnistDatasetBytes();
    expect(mnistDatasetBytes()).toBe(bytes);
    const info = describeDataset(bytes);
    expect(info).toMatchObject({ featureDtype: 'uint8', labelDtype: 'uint8', numClasses: 10, featureShape: [784] });
    const decoded = decodeDataset(bytes);
    expect(Buffer.from(decoded.features.buffer).equals(Buffer.from(ds.features.buffer))).toBe(true);
    expect(Array.from(decoded.labels)).toEqual(Array.from(ds.labels));
    expect(sha256Hex(encodeDataset(buildMnistDataset(), { featureDtype: 'uint8' }))).toBe(info.id);
  });
});
