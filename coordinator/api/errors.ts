import type { FastifyError, FastifyInstance, FastifyRequest } from 'fastify';
import { InvalidAddressError } from '../../shared/identity/address.js';

/** Every error leaves as {statusCode, error, message, field?}: a client can point at the field to blame. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  402: 'Payment Required',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
};

interface AjvIssue {
  instancePath: string;
  message?: string;
  params?: { missingProperty?: string; additionalProperty?: string };
}

/** Turns an Ajv issue into a JSON pointer of the field and a sentence a person can act on. */
function describeValidation(v: AjvIssue, context: string): { field: string; message: string } {
  let field = v.instancePath || '';
  let message = v.message ?? 'is invalid';
  if (v.params?.missingProperty) {
    field = `${field}/${v.params.missingProperty}`;
    message = 'is required';
  } else if (v.params?.additionalProperty) {
    field = `${field}/${v.params.additionalProperty}`;
    message = 'is not a known field';
  }
  return { field: field || '/', message: `${context}${field || ''} ${message}` };
}

/** Where a string the request carried sits in it (params, query or body), as a JSON pointer. */
function locate(req: FastifyRequest, match: (s: string) => boolean): string | undefined {
  const walk = (v: unknown, path: string, depth: number): string | undefined => {
    if (typeof v === 'string') return match(v) ? path || '/' : undefined;
    if (depth > 32 || v === null || typeof v !== 'object' || Buffer.isBuffer(v)) return undefined;
    for (const [k, child] of Object.entries(v)) {
      if (match(k)) return `${path}/${k}`;
      const hit = walk(child, `${path}/${k}`, depth + 1);
      if (hit) return hit;
    }
    return undefined;
  };
  return walk(req.params, '', 0) ?? walk(req.query, '', 0) ?? walk(req.body, '', 0);
}

const hasNul = (s: string) => s.includes('\u0000');

/**
 * Input the store cannot hold: a NUL character in a path parameter, query or body string (PostgreSQL text refuses it;
 * it would surface as a 500 deep in a query). Refused up front with the field, for every route.
 */
export function rejectNulCharacters(app: FastifyInstance): void {
  app.addHook('preValidation', async (req) => {
    const field = locate(req, hasNul);
    if (field) throw new ApiError(400, `${field} contains a NUL character (\\u0000), which no field accepts`, field);
  });
}

/**
 * Failures to parse client input that surface after schema validation (an address that fails its EIP-55 checksum, a
 * string the store refuses as text): the client's fault, so 4xx with the field, never a 500.
 */
function inputFailure(err: unknown, req: FastifyRequest): { message: string; field?: string } | null {
  if (err instanceof InvalidAddressError) {
    const value = String(err.value);
    return { message: err.message, field: locate(req, (s) => s === value) };
  }
  // PostgreSQL data exceptions about characters of a text value (NUL, bad encoding), on PGlite and PostgreSQL alike.
  const code = (err as { code?: unknown })?.code;
  if (code === '22021' || code === '22P05') {
    return { message: 'a text value contains a character that cannot be stored', field: locate(req, hasNul) };
  }
  return null;
}

export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError & { field?: string }, req, reply) => {
    if (err.validation && err.validation.length > 0) {
      const d = describeValidation(err.validation[0] as AjvIssue, err.validationContext ?? 'body');
      return reply.status(400).send({ statusCode: 400, error: 'Bad Request', message: d.message, field: d.field });
    }
    const input = inputFailure(err, req);
    if (input) {
      const body: Record<string, unknown> = { statusCode: 400, error: 'Bad Request', message: input.message };
      if (input.field) body.field = input.field;
      return reply.status(400).send(body);
    }
    const status = err.statusCode && err.statusCode >= 400 ? err.statusCode : 500;
    if (status >= 500) req.log.error({ err }, 'request failed');
    const body: Record<string, unknown> = {
      statusCode: status,
      error: REASONS[status] ?? 'Error',
      message: status >= 500 ? 'internal error' : err.message,
    };
    if (err.field) body.field = err.field;
    return reply.status(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    reply.status(404).send({ statusCode: 404, error: 'Not Found', message: `no route ${req.method} ${req.url}` });
  });
}
