/**
 * Typed ledger errors. Each carries a stable `code` and the HTTP status the API should answer with, so route
 * handlers map them without knowing ledger internals.
 */
export class LedgerError extends Error {
  constructor(
    readonly code: string,
    readonly httpStatus: number,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Not enough balance for a debit: HTTP 402 Payment Required. */
export class InsufficientFunds extends LedgerError {
  constructor(
    readonly accountId: string,
    readonly needed: number,
    readonly available: number,
  ) {
    super('insufficient_funds', 402, `${accountId} holds ${available} micro-credits, ${needed} needed`, {
      accountId,
      needed,
      available,
    });
  }
}

export class InvalidAmount extends LedgerError {
  constructor(field: string, value: unknown) {
    super(
      'invalid_amount',
      400,
      `${field} must be a non-negative safe integer of micro-credits, got ${String(value)}`,
      {
        field,
      },
    );
  }
}

export class InvalidArgument extends LedgerError {
  constructor(field: string, reason: string) {
    super('invalid_argument', 400, `${field}: ${reason}`, { field });
  }
}

export class UnknownJob extends LedgerError {
  constructor(readonly jobId: string) {
    super('unknown_job', 404, `no escrow exists for job ${jobId}`, { jobId });
  }
}

export class JobClosed extends LedgerError {
  constructor(readonly jobId: string) {
    super('job_closed', 409, `job ${jobId} is closed: its escrow was refunded`, { jobId });
  }
}

export class JobOwnerMismatch extends LedgerError {
  constructor(jobId: string, owner: string, requester: string) {
    super('job_owner_mismatch', 409, `job ${jobId} belongs to ${owner}, not ${requester}`, { jobId });
  }
}

/** The same event key arrived with different content: a bug or a replay with altered fields. */
export class EventConflict extends LedgerError {
  constructor(readonly eventKey: string) {
    super('event_conflict', 409, `event ${eventKey} was already recorded with different content`, { eventKey });
  }
}

/** A posting group that does not sum to zero or a balance CHECK that failed unexpectedly: a ledger bug. */
export class LedgerInvariantError extends LedgerError {
  constructor(message: string) {
    super('ledger_invariant', 500, message);
  }
}

/**
 * An account link that cannot be made: `already_linked` (From is linked to another wallet), `link_chain` (To is
 * itself linked on, or From already receives other links: links never form chains).
 */
export class LinkConflict extends LedgerError {
  constructor(
    code: 'already_linked' | 'link_chain',
    message: string,
    readonly field: 'from' | 'to',
  ) {
    super(code, 409, message, { field });
  }
}
