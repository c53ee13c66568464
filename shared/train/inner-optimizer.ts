import * as tf from '@tensorflow/tfjs';
import type { InnerOptimizer } from '../protocol/job-spec.js';

/**
 * The inner optimizers (sgd, momentum, adam) with their state held in plain variables we own.
 *
 * The update arithmetic is op for op that of tf.train.sgd / tf.train.momentum / tf.train.adam (a test checks
 * bit-equality), but tfjs' own optimizers cannot be resumed exactly: Adam's setWeights() recomputes beta^t with
 * pow(), which differs in the last bits from the running product it keeps while training. Owning the state makes
 * a checkpoint (weights + slots) resume bit-exactly, which dispute bisection depends on.
 */

/** Adam's epsilon is fixed rather than the backend's epsilon() so that every backend runs the same formula. */
export const ADAM_BETA1 = 0.9;
export const ADAM_BETA2 = 0.999;
export const ADAM_EPSILON = 1e-7;
export const DEFAULT_MOMENTUM = 0.9;
/**
 * Prefix of optimizer slot names in a training state. tfjs weight names start with a letter or digit, so a name
 * starting with '@' can never collide with a model weight.
 */
export const OPTIMIZER_SLOT_PREFIX = '@opt/';

/** A zero variable shaped like v. Inside tidy, or the initial tensor would outlive the variable. */
function zeroSlot(v: tf.Tensor): tf.Variable {
  return tf.tidy(() => tf.zerosLike(v).variable(false));
}

export interface SlotTensor {
  name: string;
  variable: tf.Variable;
}

export class InnerOptimizerState {
  readonly slots: SlotTensor[] = [];
  private readonly type: InnerOptimizer['type'];
  private readonly lr: number;
  private readonly momentum: number;
  private readonly negLr: tf.Scalar;
  private readonly momentumScalar: tf.Scalar | null = null;
  /** Per trainable variable: indices into `slots` (momentum: [acc]; adam: [m, v]). */
  private readonly slotIndex: number[][] = [];
  private accBeta1: tf.Variable | null = null;
  private accBeta2: tf.Variable | null = null;

  /** `names` are the stable names of `variables`, used to name the slots ('@opt/<name>/m', ...). */
  constructor(
    spec: InnerOptimizer,
    readonly variables: tf.Variable[],
    names: string[],
  ) {
    this.type = spec.type;
    this.lr = spec.learningRate;
    this.momentum = spec.momentum ?? DEFAULT_MOMENTUM;
    if (!(this.lr > 0) || !Number.isFinite(this.lr)) throw new Error('inner optimizer learningRate must be > 0');
    this.negLr = tf.keep(tf.scalar(-this.lr));
    if (this.type === 'momentum') {
      this.momentumScalar = tf.keep(tf.scalar(this.momentum));
      variables.forEach((v, i) => {
        this.slotIndex.push([this.slots.length]);
        this.slots.push({
          name: `${OPTIMIZER_SLOT_PREFIX}${names[i]}/momentum`,
          variable: zeroSlot(v),
        });
      });
    } else if (this.type === 'adam') {
      // Like tf.train.adam: accBeta starts at beta (not 1) and is multiplied after each step.
      this.accBeta1 = tf.tidy(() => tf.scalar(ADAM_BETA1).variable(false));
      this.accBeta2 = tf.tidy(() => tf.scalar(ADAM_BETA2).variable(false));
      variables.forEach((v, i) => {
        this.slotIndex.push([this.slots.length, this.slots.length + 1]);
        this.slots.push({ name: `${OPTIMIZER_SLOT_PREFIX}${names[i]}/m`, variable: zeroSlot(v) });
        this.slots.push({ name: `${OPTIMIZER_SLOT_PREFIX}${names[i]}/v`, variable: zeroSlot(v) });
      });
      this.slots.push({ name: `${OPTIMIZER_SLOT_PREFIX}accBeta1`, variable: this.accBeta1 });
      this.slots.push({ name: `${OPTIMIZER_SLOT_PREFIX}accBeta2`, variable: this.accBeta2 });
    } else if (this.type !== 'sgd') {
      throw new Error(`unknown inner optimizer "${String(this.type)}"`);
    }
  }

  /** Applies one update given gradients in `variables` order. Does not dispose the gradients. */
  apply(grads: tf.Tensor[]): void {
    tf.tidy(() => {
      if (this.type === 'sgd') {
        this.variables.forEach((value, i) => {
          value.assign(tf.add(tf.mul(this.negLr, grads[i]), value));
        });
      } else if (this.type === 'momentum') {
        this.variables.forEach((value, i) => {
          const acc = this.slots[this.slotIndex[i][0]].variable;
          const newAcc = tf.add(tf.mul(this.momentumScalar!, acc), grads[i]);
          acc.assign(newAcc);
          value.assign(tf.add(tf.mul(this.negLr, newAcc), value));
        });
      } else {
        const oneMinusAccBeta1 = tf.sub(1, this.accBeta1!);
        const oneMinusAccBeta2 = tf.sub(1, this.accBeta2!);
        this.variables.forEach((value, i) => {
          const m = this.slots[this.slotIndex[i][0]].variable;
          const v = this.slots[this.slotIndex[i][1]].variable;
          const g = grads[i];
          const newM = tf.add(tf.mul(m, ADAM_BETA1), tf.mul(g, 1 - ADAM_BETA1));
          const newV = tf.add(tf.mul(v, ADAM_BETA2), tf.mul(tf.square(g), 1 - ADAM_BETA2));
          const mHat = tf.div(newM, oneMinusAccBeta1);
          const vHat = tf.div(newV, oneMinusAccBeta2);
          m.assign(newM);
          v.assign(newV);
          value.assign(tf.add(tf.mul(tf.div(mHat, tf.add(tf.sqrt(vHat), ADAM_EPSILON)), -this.lr), value));
        });
        this.accBeta1!.assign(tf.mul(this.accBeta1!, ADAM_BETA1));
        this.accBeta2!.assign(tf.mul(this.accBeta2!, ADAM_BETA2));
      }
    });
  }

  /** Overwrites the slots from float32 data in `slots` order (shapes checked by the caller). */
  load(data: Float32Array[]): void {
    if (data.length !== this.slots.length) {
      throw new Error(`optimizer state has ${this.slots.length} slots, checkpoint gives ${data.length}`);
    }
    this.slots.forEach((slot, i) => {
      const t = tf.tensor(data[i], slot.variable.shape, 'float32');
      slot.variable.assign(t);
      t.dispose();
    });
  }

  dispose(): void {
    tf.dispose(this.slots.map((s) => s.variable));
    this.negLr.dispose();
    this.momentumScalar?.dispose();
  }
}
