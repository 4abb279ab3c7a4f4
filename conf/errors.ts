/**
 * Failures (not rejections) are errors with stable codes `FG_ERR_<AREA>_<WHAT>`, translated into the
 * contract's answers at one boundary (the request runner).
 */
export class FlashgateError extends Error {
  readonly code: string
  constructor (code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'FlashgateError'
    this.code = code
  }
}

/** The store could not answer: connection down, timeout, breaker open, script error. */
export class StoreError extends FlashgateError {
  constructor (code: 'FG_ERR_STORE_UNAVAILABLE' | 'FG_ERR_STORE_TIMEOUT' | 'FG_ERR_STORE_BREAKER_OPEN' | 'FG_ERR_STORE_SCRIPT', message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'StoreError'
  }
}

export class ConfigError extends FlashgateError {
  /** `FILE:LINE:COL: message` lines. */
  readonly problems: readonly string[]
  constructor (problems: readonly string[]) {
    super('FG_ERR_CONFIG_INVALID', problems.join('\n'))
    this.name = 'ConfigError'
    this.problems = problems
  }
}

export class UpstreamError extends FlashgateError {
  constructor (code: 'FG_ERR_UPSTREAM_CONNECT' | 'FG_ERR_UPSTREAM_TIMEOUT' | 'FG_ERR_UPSTREAM_RESET' | 'FG_ERR_UPSTREAM_NO_TARGET', message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'UpstreamError'
  }
}
