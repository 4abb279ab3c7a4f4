/**
 * Failures (not rejections) are errors with stable codes `FG_ERR_<AREA>_<WHAT>`, translated into the
 * contract's answers at one boundary (the request runner). Every code is in ERROR_CODES, and README's
 * "Error codes" documents each (test/errors-catalogue.test.ts holds the two together).
 */
export const ERROR_CODES = {
  FG_ERR_CONFIG_INVALID: 'the config was refused; the message is its FILE:LINE:COL lines',
  FG_ERR_STORE_UNAVAILABLE: 'the shared store is not connected or refused the call',
  FG_ERR_STORE_TIMEOUT: 'a store call got no answer within store.timeout',
  FG_ERR_STORE_BREAKER_OPEN: 'the store breaker is open after store.breaker_failures failures; no call was made',
  FG_ERR_STORE_SCRIPT: 'a store script answered something unreadable',
  FG_ERR_CAPTCHA_UNAVAILABLE: 'the captcha provider could not be reached',
  FG_ERR_CAPTCHA_TIMEOUT: 'the captcha provider did not answer in time',
  FG_ERR_CAPTCHA_BREAKER_OPEN: 'the captcha provider breaker is open; no call was made',
  FG_ERR_CAPTCHA_BAD_ANSWER: 'the captcha provider answered with no verdict (not 200, not JSON, no success)',
  FG_ERR_CLIENT_ABORTED: 'the client went away before the upstream answered'
} as const

export type ErrorCode = keyof typeof ERROR_CODES

export class FlashgateError extends Error {
  readonly code: ErrorCode
  constructor (code: ErrorCode, message: string, options?: { cause?: unknown }) {
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
