import type { LinkInput, LinkNonceView, LinkView } from './account-link-api.js';
import type { ApiError, DatasetView, JobSpec, JobView } from './job-spec.js';
import type { AccountView, CreditView, MarketView, NonceView } from './market-api.js';

/**
 * A small typed client of the coordinator's requester REST API (/api/v1), for the dashboard and for requesters'
 * own scripts. Runs wherever `fetch` exists (browsers, Node 18+). Every non-2xx answer becomes an ApiRequestError
 * carrying the API's {statusCode, error, message, field}, so a form can show the message next to `field`.
 */

/** Fields the API fills with defaults may be left out; `model` and `dataset` are required. */
export type JobSpecInput = Pick<JobSpec, 'model' | 'dataset'> & DeepPartial<Omit<JobSpec, 'model' | 'dataset'>>;
type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export interface ClientOptions {
  /** The coordinator's origin, e.g. http://localhost:8080 (a trailing slash or /api/v1 suffix is fine). */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <apiKey>` when set. */
  apiKey?: string;
  fetch?: typeof fetch;
}

export class ApiRequestError extends Error implements ApiError {
  readonly statusCode: number;
  readonly error: string;
  /** JSON pointer of the offending field, e.g. /optimizer/learningRate, when the API named one. */
  readonly field?: string;

  constructor(body: ApiError) {
    super(body.message);
    this.name = 'ApiRequestError';
    this.statusCode = body.statusCode;
    this.error = body.error;
    this.field = body.field;
  }
}

/** GET /auth/nonce: the schema's type (shared/protocol/market-api.ts NonceView). */
export type AuthNonce = NonceView;

export interface UploadOptions {
  signal?: AbortSignal;
}

export interface SwarmgradClient {
  readonly baseUrl: string;
  listJobs(): Promise<JobView[]>;
  getJob(id: string): Promise<JobView>;
  createJob(spec: JobSpecInput): Promise<JobView>;
  cancelJob(id: string): Promise<JobView>;
  /** Uploads a dataset file in the swarmgrad binary format (docs/DATASET_FORMAT.md). */
  uploadDataset(data: Blob | ArrayBuffer | Uint8Array, opts?: UploadOptions): Promise<DatasetView>;
  listDatasets(): Promise<DatasetView[]>;
  /**
   * URL for tf.loadLayersModel: the job's latest weights in tfjs layers format. The route needs the key: pass
   * `tf.io.http(modelUrl, { requestInit: { headers: client.authHeaders() } })`.
   */
  modelUrl(jobId: string): string;
  /** The headers that carry the key (empty without one), for fetches the client does not make itself. */
  authHeaders(): Record<string, string>;
  /** The model's model.json, fetched with the key, as a Blob to save. */
  downloadModel(jobId: string): Promise<Blob>;
  /** Sign-in, step 1: a fresh SIWE nonce and the domain, chain and URI the message must name. */
  authNonce(): Promise<AuthNonce>;
  /** Sign-in, step 2: the signed SIWE message for a session token (use it as `apiKey`). */
  signIn(message: string, signature: string): Promise<{ token: string; address: string; expiresAt: number }>;
  /** The OpenAPI document of the REST API. */
  openapi(): Promise<Record<string, unknown>>;
  /** The marketplace (public): active offers, their price distribution and the network's capacity. */
  market(): Promise<MarketView>;
  /** An account (public): balances by kind, trust, reliability, links and the newest `historyLimit` postings. */
  account(address: string, historyLimit?: number): Promise<AccountView>;
  /** A worker account's credits per accepted unit, newest first, each with its ledger event (public). */
  credits(address: string): Promise<{ items: CreditView[]; nextCursor: string | null }>;
  /** Account link, step 1: a single-use link nonce and what the link message must name. */
  linkNonce(): Promise<LinkNonceView>;
  /** Account link, step 2: the link message signed by both keys (docs/LEDGER.md, "Account links"). */
  linkAccounts(input: LinkInput): Promise<LinkView>;
}

export function createClient(opts: ClientOptions): SwarmgradClient {
  const baseUrl = opts.baseUrl.replace(/\/+$/, '').replace(/\/api\/v1$/, '');
  const doFetch = opts.fetch ?? ((input: RequestInfo | URL, init?: RequestInit) => fetch(input, init));
  const api = `${baseUrl}/api/v1`;

  const authHeaders = (): Record<string, string> => (opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {});

  async function request<T>(method: string, path: string, body?: BodyInit, contentType?: string): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (contentType) headers['content-type'] = contentType;
    Object.assign(headers, authHeaders());
    let res: Response;
    try {
      res = await doFetch(`${api}${path}`, { method, headers, body });
    } catch (err) {
      throw new ApiRequestError({
        statusCode: 0,
        error: 'Network Error',
        message: `cannot reach ${baseUrl}: ${err instanceof Error ? err.message : String(err)}`,
      });
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!res.ok) throw new ApiRequestError(toApiError(res, parsed, text));
    return parsed as T;
  }

  const id = (s: string) => encodeURIComponent(s);

  return {
    baseUrl,
    listJobs: () => request<JobView[]>('GET', '/jobs'),
    getJob: (jobId) => request<JobView>('GET', `/jobs/${id(jobId)}`),
    createJob: (spec) => request<JobView>('POST', '/jobs', JSON.stringify(spec), 'application/json'),
    cancelJob: (jobId) => request<JobView>('POST', `/jobs/${id(jobId)}/cancel`),
    uploadDataset: (data) => {
      const body: BodyInit = data instanceof Uint8Array ? (data as Uint8Array<ArrayBuffer>) : data;
      return request<DatasetView>('POST', '/datasets', body, 'application/octet-stream');
    },
    listDatasets: () => request<DatasetView[]>('GET', '/datasets'),
    modelUrl: (jobId) => `${api}/jobs/${id(jobId)}/model/model.json`,
    authHeaders,
    downloadModel: async (jobId) => {
      const res = await doFetch(`${api}/jobs/${id(jobId)}/model/model.json`, { headers: authHeaders() });
      if (!res.ok) {
        const text = await res.text();
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        throw new ApiRequestError(toApiError(res, parsed, text));
      }
      return res.blob();
    },
    authNonce: () => request<AuthNonce>('GET', '/auth/nonce'),
    signIn: (message, signature) =>
      request<{ token: string; address: string; expiresAt: number }>(
        'POST',
        '/auth/signin',
        JSON.stringify({ message, signature }),
        'application/json',
      ),
    openapi: () => request<Record<string, unknown>>('GET', '/openapi.json'),
    market: () => request<MarketView>('GET', '/market'),
    account: (address, historyLimit = 20) =>
      request<AccountView>('GET', `/accounts/${id(address)}?limit=${historyLimit}`),
    credits: (address) =>
      request<{ items: CreditView[]; nextCursor: string | null }>('GET', `/accounts/${id(address)}/credits`),
    linkNonce: () => request<LinkNonceView>('GET', '/accounts/link-nonce'),
    linkAccounts: (input) => request<LinkView>('POST', '/accounts/link', JSON.stringify(input), 'application/json'),
  };
}

function toApiError(res: Response, parsed: unknown, text: string): ApiError {
  const p = (parsed && typeof parsed === 'object' ? parsed : {}) as Partial<ApiError>;
  return {
    statusCode: typeof p.statusCode === 'number' ? p.statusCode : res.status,
    error: typeof p.error === 'string' ? p.error : res.statusText || 'Error',
    message: typeof p.message === 'string' ? p.message : text.slice(0, 300) || `HTTP ${res.status}`,
    field: typeof p.field === 'string' ? p.field : undefined,
  };
}
