import type { JobSpecInput } from '../../shared/protocol/api-client.js';

/**
 * The create-job form: its fields, the JSON pointer each one edits, and how an API error's `field` pointer finds
 * the form field to show the message next to.
 */
export interface FormValues {
  name: string;
  datasetSource: 'builtin' | 'upload' | 'existing';
  existingDataset: string;
  modelSource: 'template' | 'json';
  template: 'mlp' | 'cnn';
  hidden: string;
  modelJson: string;
  loss: string;
  optimizerType: string;
  learningRate: string;
  momentum: string;
  batchSize: string;
  localSteps: string;
  unitsPerRound: string;
  rounds: string;
  targetAccuracy: string;
  outerLearningRate: string;
  outerMomentum: string;
  nesterov: boolean;
  aggregation: string;
  minAuditProbability: string;
  seed: string;
}

export type FieldKey = keyof FormValues | 'datasetFile' | 'form';

/** Pointer of the spec (or the upload) each form field edits. */
export const FIELD_POINTERS: [FieldKey, string][] = [
  ['name', '/name'],
  ['datasetFile', '/body'],
  ['existingDataset', '/dataset'],
  ['modelJson', '/model'],
  ['loss', '/loss'],
  ['optimizerType', '/optimizer/type'],
  ['learningRate', '/optimizer/learningRate'],
  ['momentum', '/optimizer/momentum'],
  ['batchSize', '/batchSize'],
  ['localSteps', '/localSteps'],
  ['unitsPerRound', '/unitsPerRound'],
  ['rounds', '/rounds'],
  ['targetAccuracy', '/targetAccuracy'],
  ['outerLearningRate', '/outer/learningRate'],
  ['outerMomentum', '/outer/momentum'],
  ['nesterov', '/outer/nesterov'],
  ['aggregation', '/aggregation/method'],
  ['minAuditProbability', '/verification/minAuditProbability'],
  ['seed', '/seed'],
];

/**
 * The form field an error pointer belongs to: the field whose pointer is the longest prefix of it (so
 * /model/config/layers/2/class_name lands on the model), else the first field inside it (/optimizer lands on the
 * optimizer type), else the form as a whole.
 */
export function fieldForPointer(
  pointer: string | undefined,
  overrides: Partial<Record<string, FieldKey>> = {},
): FieldKey {
  if (!pointer) return 'form';
  const p = pointer.startsWith('/body/') ? pointer.slice(5) : pointer;
  if (overrides[p]) return overrides[p] as FieldKey;
  let best: [FieldKey, string] | null = null;
  for (const f of FIELD_POINTERS) {
    if ((p === f[1] || p.startsWith(`${f[1]}/`)) && (!best || f[1].length > best[1].length)) best = f;
  }
  if (best) return best[0];
  const inside = FIELD_POINTERS.find((f) => f[1].startsWith(`${p}/`));
  return inside ? inside[0] : 'form';
}

export const DEFAULT_VALUES: FormValues = {
  name: 'mnist job',
  datasetSource: 'builtin',
  existingDataset: '',
  modelSource: 'template',
  template: 'mlp',
  hidden: '128',
  modelJson: '',
  loss: 'categoricalCrossentropy',
  optimizerType: 'sgd',
  learningRate: '0.1',
  momentum: '',
  batchSize: '32',
  localSteps: '50',
  unitsPerRound: '4',
  rounds: '10',
  targetAccuracy: '',
  outerLearningRate: '0.7',
  outerMomentum: '0.9',
  nesterov: true,
  aggregation: 'mean',
  minAuditProbability: '0.05',
  seed: '1',
};

export class FormError extends Error {
  constructor(
    readonly field: FieldKey,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A number field as typed: empty means "let the API use its default"; anything else is sent as a number, or as
 * the raw text when it does not parse, so that the API's own validation names the field.
 */
function num(s: string): number | string | undefined {
  const t = s.trim();
  if (t === '') return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : t;
}

function prune<T extends Record<string, unknown>>(o: T): T {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

/** The job spec the form describes. `model` is the parsed JSON or the template; `dataset` is resolved by the caller. */
export function specFromForm(v: FormValues, model: object | string, dataset: string): JobSpecInput {
  const spec = prune({
    name: v.name.trim() || undefined,
    model,
    dataset,
    loss: v.loss,
    optimizer: prune({ type: v.optimizerType, learningRate: num(v.learningRate), momentum: num(v.momentum) }),
    batchSize: num(v.batchSize),
    localSteps: num(v.localSteps),
    unitsPerRound: num(v.unitsPerRound),
    rounds: num(v.rounds),
    targetAccuracy: num(v.targetAccuracy),
    outer: prune({ learningRate: num(v.outerLearningRate), momentum: num(v.outerMomentum), nesterov: v.nesterov }),
    aggregation: { method: v.aggregation },
    verification: prune({ minAuditProbability: num(v.minAuditProbability) }),
    seed: num(v.seed),
  });
  // Strings in number fields are deliberate (see num), so the static type is asserted here.
  return spec as unknown as JobSpecInput;
}

/** Parses the pasted model JSON; tfjs' toJSON() gives a string, so both an object and a JSON string work. */
export function parseModelJson(text: string): object {
  const t = text.trim();
  if (!t) throw new FormError('modelJson', 'paste the output of model.toJSON(), or choose a template');
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch (err) {
    throw new FormError('modelJson', `not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (typeof v === 'string') return parseModelJson(v);
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new FormError('modelJson', 'expected a JSON object');
  return v;
}
