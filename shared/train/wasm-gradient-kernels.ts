import * as tf from '@tensorflow/tfjs';

/**
 * tfjs-backend-wasm 4.22 lacks some gradient kernels: Conv2DBackpropFilter (every Conv1D/Conv2D model), the depthwise
 * convolution gradients and UnsortedSegmentSum (the gradient of an Embedding lookup). Without them a convolutional
 * job could not be trained by a volunteer on wasm, and the coordinator, which referees on wasm, could not recompute
 * a segment of one, so its audits failed over and over.
 *
 * tfjs registers kernels per backend; this registers the missing ones for 'wasm' by running the cpu backend's own
 * kernel on the tensors' values and handing the result back to wasm. Slower than a native wasm kernel (a copy each
 * way), but correct and deterministic: the same JavaScript on every machine, so honest wasm results still agree bit
 * for bit. A kernel wasm gains in a later release is left alone.
 */
export const BRIDGED_WASM_KERNELS = [
  'Conv2DBackpropFilter',
  'DepthwiseConv2dNativeBackpropFilter',
  'DepthwiseConv2dNativeBackpropInput',
  'UnsortedSegmentSum',
] as const;

type DataId = object;
type Values = ReturnType<tf.KernelBackend['readSync']>;

/** The parts of MathBackendWasm the bridge uses. */
interface WasmBackendLike {
  readSync(dataId: DataId): Values;
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: Values): tf.TensorInfo;
}

/** The parts of MathBackendCPU the bridge uses. */
interface CpuBackendLike extends tf.KernelBackend {
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: Values): tf.TensorInfo;
}

function cpuBackend(): CpuBackendLike {
  // findBackend initialises a registered backend on first use (cpu initialises synchronously).
  const cpu = tf.engine().findBackend('cpu');
  if (!cpu) throw new Error('the cpu backend is not registered: it is needed for the bridged wasm gradient kernels');
  return cpu as CpuBackendLike;
}

/** Registers the bridged kernels that wasm lacks; returns the names registered by this call. */
export function registerWasmGradientKernels(): string[] {
  const added: string[] = [];
  for (const kernelName of BRIDGED_WASM_KERNELS) {
    const onCpu = tf.getKernel(kernelName, 'cpu');
    if (tf.getKernel(kernelName, 'wasm') || !onCpu) continue;
    tf.registerKernel({
      kernelName,
      backendName: 'wasm',
      kernelFunc: ({ inputs, attrs, backend }) => {
        const wasm = backend as unknown as WasmBackendLike;
        const cpu = cpuBackend();
        const cpuInputs: Record<string, tf.TensorInfo> = {};
        for (const [name, t] of Object.entries(inputs)) {
          if (t) cpuInputs[name] = cpu.makeTensorInfo(t.shape, t.dtype, wasm.readSync(t.dataId));
        }
        const made = Object.values(cpuInputs);
        try {
          const out = onCpu.kernelFunc({ inputs: cpuInputs, attrs, backend: cpu });
          const outs = Array.isArray(out) ? out : [out];
          made.push(...outs);
          const back = outs.map((o) => wasm.makeOutput(o.shape, o.dtype, undefined, cpu.readSync(o.dataId)));
          return Array.isArray(out) ? back : back[0];
        } finally {
          for (const t of made) cpu.disposeData(t.dataId);
        }
      },
    });
    added.push(kernelName);
  }
  return added;
}
