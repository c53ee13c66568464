import type { FastifyError, FastifyInstance } from 'fastify';

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

export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError & { field?: string }, req, reply) => {
    if (err.validation && err.validation.length > 0) {
      const d = describeValidation(err.validation[0] as AjvIssue, err.validationContext ?? 'body');
      return reply.status(400).send({ statusCode: 400, error: 'Bad Request', message: d.message, field: d.field });
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
